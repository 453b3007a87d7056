//! A bounds-checked cursor over the body of one frame.
//!
//! Every read checks that the bytes are there first and reports a missing field as
//! `Malformed` with the caller's text, so parsers never index, never panic and never
//! allocate more than the bytes actually received.

use bytes::{Buf, Bytes};

use super::DecodeError;

pub(super) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub(super) fn new(buf: Bytes) -> Self {
        Reader { buf }
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
        let Some(&[hi, lo]) = self.buf.first_chunk::<2>() else {
            return Err(DecodeError::Malformed(missing));
        };
        self.buf.advance(2);
        Ok(u16::from_be_bytes([hi, lo]))
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
    /// surrogates U+D800..U+DFFF) without U+0000 [MQTT-1.5.3-2].
    pub(super) fn string(&mut self, missing: &'static str) -> Result<String, DecodeError> {
        let raw = self.binary(missing)?;
        if raw.contains(&0) {
            return Err(DecodeError::Malformed(
                "string contains U+0000 [MQTT-1.5.3-2]",
            ));
        }
        match std::str::from_utf8(&raw) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(DecodeError::Malformed(
                "string is not valid UTF-8 [MQTT-1.5.3-1]",
            )),
        }
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
            "variable byte integer longer than four bytes",
        ))
    }

    /// Skips an MQTT 5.0 property block (a length, then that many bytes), checking only
    /// that it fits the frame.
    pub(super) fn skip_properties(&mut self, missing: &'static str) -> Result<(), DecodeError> {
        let len = self.varint(missing)?;
        if len > self.buf.len() {
            return Err(DecodeError::Malformed(missing));
        }
        self.buf.advance(len);
        Ok(())
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
