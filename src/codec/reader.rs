//! A bounds-checked cursor over the body of one frame.
//!
//! Every read checks that the bytes are there first and reports a missing field as
//! `Malformed` with the caller's text, so parsers never index, never panic and never
//! allocate more than the bytes actually received.

use bytes::{Buf, Bytes};

use super::DecodeError;

pub(super) struct Reader {
    buf: Bytes,
    /// MQTT 5.0 frame: string errors cite the 5.0 statement ids.
    v5: bool,
}

impl Reader {
    pub(super) fn new(buf: Bytes) -> Self {
        Reader { buf, v5: false }
    }

    pub(super) fn new_v5(buf: Bytes) -> Self {
        Reader { buf, v5: true }
    }

    /// From here on the frame is known to be MQTT 5.0 (a CONNECT once its level is read).
    pub(super) fn set_v5(&mut self) {
        self.v5 = true;
    }

    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(super) fn u8(&mut self, missing: &'static str) -> Result<u8, DecodeError> {
        let Some(&byte) = self.buf.first() else {
            return Err(DecodeError::Malformed(missing));
        };
        self.buf.advance(1);
        Ok(byte)
    }

    pub(super) fn u16(&mut self, missing: &'static str) -> Result<u16, DecodeError> {
        let Some(&bytes) = self.buf.first_chunk::<2>() else {
            return Err(DecodeError::Malformed(missing));
        };
        self.buf.advance(2);
        Ok(u16::from_be_bytes(bytes))
    }

    /// A Four Byte Integer (MQTT 5.0 §1.5.3).
    pub(super) fn u32(&mut self, missing: &'static str) -> Result<u32, DecodeError> {
        let Some(&bytes) = self.buf.first_chunk::<4>() else {
            return Err(DecodeError::Malformed(missing));
        };
        self.buf.advance(4);
        Ok(u32::from_be_bytes(bytes))
    }

    /// Binary data: a big-endian u16 length, then that many bytes (a slice of the frame).
    pub(super) fn binary(&mut self, missing: &'static str) -> Result<Bytes, DecodeError> {
        let len = usize::from(self.u16(missing)?);
        if len > self.buf.len() {
            return Err(DecodeError::Malformed(missing));
        }
        Ok(self.buf.split_to(len))
    }

    /// A UTF-8 encoded string: valid UTF-8 [MQTT-1.5.3-1] (which also rules out the
    /// surrogates U+D800..U+DFFF) without U+0000 [MQTT-1.5.3-2]; in MQTT 5.0 the same
    /// rules are [MQTT-1.5.4-1] and [MQTT-1.5.4-2].
    pub(super) fn string(&mut self, missing: &'static str) -> Result<String, DecodeError> {
        let raw = self.binary(missing)?;
        let (nul, bad) = self.string_errors();
        utf8(&raw, nul, bad).map(str::to_owned)
    }

    fn string_errors(&self) -> (&'static str, &'static str) {
        string_errors(self.v5)
    }

    /// A string that is checked like [`Reader::string`] but not kept (no allocation).
    pub(super) fn skip_string(&mut self, missing: &'static str) -> Result<(), DecodeError> {
        let raw = self.binary(missing)?;
        let (nul, bad) = self.string_errors();
        utf8(&raw, nul, bad).map(drop)
    }

    /// A UTF-8 String Pair (MQTT 5.0 §1.5.7): both strings follow the string rules
    /// [MQTT-1.5.7-1]. `None` when `keep` is false: checked, not allocated.
    pub(super) fn string_pair(
        &mut self,
        keep: bool,
        missing: &'static str,
    ) -> Result<Option<(String, String)>, DecodeError> {
        let name = self.binary(missing)?;
        let value = self.binary(missing)?;
        let nul = "user property contains U+0000 [MQTT-1.5.7-1]";
        let bad = "user property is not valid UTF-8 [MQTT-1.5.7-1]";
        let name = utf8(&name, nul, bad)?;
        let value = utf8(&value, nul, bad)?;
        Ok(keep.then(|| (name.to_owned(), value.to_owned())))
    }

    /// A UTF-8 String Pair checked like [`Reader::string_pair`], appended to `out` as it
    /// is on the wire (both length prefixes included), without any other allocation.
    pub(super) fn string_pair_into(
        &mut self,
        out: &mut Vec<u8>,
        missing: &'static str,
    ) -> Result<(), DecodeError> {
        let nul = "user property contains U+0000 [MQTT-1.5.7-1]";
        let bad = "user property is not valid UTF-8 [MQTT-1.5.7-1]";
        for _ in 0..2 {
            let raw = self.binary(missing)?;
            utf8(&raw, nul, bad)?;
            // `binary` read at most 65,535 bytes: the length fits its two bytes.
            out.extend_from_slice(&(raw.len() as u16).to_be_bytes());
            out.extend_from_slice(&raw);
        }
        Ok(())
    }

    /// A variable byte integer (at most four bytes, [MQTT-1.5.5-1] of MQTT 5.0).
    pub(super) fn varint(&mut self, missing: &'static str) -> Result<usize, DecodeError> {
        let mut value = 0usize;
        for i in 0..4 {
            let byte = self.u8(missing)?;
            value |= usize::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::Malformed(
            "variable byte integer longer than four bytes [MQTT-1.5.5-1]",
        ))
    }

    /// Splits off the next `len` bytes as a reader of their own; `beyond` if fewer are
    /// left.
    pub(super) fn take(&mut self, len: usize, beyond: &'static str) -> Result<Reader, DecodeError> {
        if len > self.buf.len() {
            return Err(DecodeError::Malformed(beyond));
        }
        Ok(Reader {
            buf: self.buf.split_to(len),
            v5: self.v5,
        })
    }

    /// Everything left, as a slice of the frame.
    pub(super) fn rest(self) -> Bytes {
        self.buf
    }

    /// Fails with `trailing` if any byte is left.
    pub(super) fn finish(&self, trailing: &'static str) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(trailing))
        }
    }
}

/// `raw` as a `&str` if it is well-formed UTF-8 without U+0000.
/// The statements a string that breaks the rules is reported under: MQTT 5.0's own ids
/// for a 5.0 frame.
pub(super) fn string_errors(v5: bool) -> (&'static str, &'static str) {
    if v5 {
        (
            "string contains U+0000 [MQTT-1.5.4-2]",
            "string is not valid UTF-8 [MQTT-1.5.4-1]",
        )
    } else {
        (
            "string contains U+0000 [MQTT-1.5.3-2]",
            "string is not valid UTF-8 [MQTT-1.5.3-1]",
        )
    }
}

pub(super) fn utf8<'a>(
    raw: &'a [u8],
    nul: &'static str,
    bad: &'static str,
) -> Result<&'a str, DecodeError> {
    if raw.contains(&0) {
        return Err(DecodeError::Malformed(nul));
    }
    std::str::from_utf8(raw).map_err(|_| DecodeError::Malformed(bad))
}
