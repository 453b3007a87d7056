//! One spooled queue entry as it is written in a spool file: a frame (the log's format:
//! length, checksum, body) whose body is the entry's place and delivery details followed
//! by its message, encoded as the log's Message record.
//!
//! Body: `seq` u64, `qos` u8, `retain` u8, the subscription identifiers (u16 count, u32
//! each), the shared subscription name (u16 length, bytes), then the Message record.
//! Each spool holds its own copy of a message: a backlog is read back one session at a
//! time, in order, so the copy is what makes that read sequential.

use std::sync::Arc;

use crate::codec::{self, QoS};
use crate::message::{DeliveryProps, Message};

use super::super::log::segment::{frame_at, push_frame};
use super::super::record::Record;
use super::super::state::{decode_message, message_record};

/// A spooled entry read back.
#[derive(Debug)]
pub struct SpoolItem {
    pub seq: u64,
    pub message: Arc<Message>,
    pub qos: QoS,
    pub retain: bool,
    pub extra: Option<Box<DeliveryProps>>,
    /// Sent before with this packet id (and, for QoS 2, whether its PUBREC came): it
    /// goes back into the inflight window, to be sent again with DUP [MQTT-4.4.0-1].
    pub sent: Option<(u16, bool)>,
}

/// Appends the frame of one entry to `out`; returns its length in bytes, or `None` for an
/// entry too large to store (nothing is appended).
pub fn encode(
    out: &mut Vec<u8>,
    seq: u64,
    message: &Message,
    qos: QoS,
    retain: bool,
    extra: Option<&DeliveryProps>,
) -> Option<usize> {
    let start = out.len();
    let sub_ids = extra.map_or(&[][..], |e| &e.sub_ids[..]);
    let shared = extra.and_then(|e| e.shared.as_deref()).unwrap_or("");
    // Subscription identifiers are at most 32 per delivery and group names are short
    // strings from a filter; anything longer cannot be framed and is refused.
    let (Ok(n_ids), Ok(shared_len)) = (u16::try_from(sub_ids.len()), u16::try_from(shared.len()))
    else {
        return None;
    };
    let framed = push_frame(out, |b| {
        b.extend_from_slice(&seq.to_le_bytes());
        b.push(qos as u8);
        b.push(u8::from(retain));
        b.extend_from_slice(&n_ids.to_le_bytes());
        for id in sub_ids {
            b.extend_from_slice(&id.to_le_bytes());
        }
        b.extend_from_slice(&shared_len.to_le_bytes());
        b.extend_from_slice(shared.as_bytes());
        message_record(message).encode(b);
    });
    framed.ok().map(|_| out.len() - start)
}

/// The sequence number of the frame at `at` in `bytes` and the offset after it, without
/// decoding the message (to skip entries that are gone). `Err`: `bytes` ends inside the
/// frame or the frame is damaged (the caller tells which from where it read).
pub fn peek(bytes: &[u8], at: usize) -> Result<(u64, usize), &'static str> {
    let (body, next) = frame_at(bytes, at)?;
    let seq = body.get(..8).ok_or("entry cut short")?;
    let mut a = [0u8; 8];
    a.copy_from_slice(seq);
    Ok((u64::from_le_bytes(a), next))
}

/// Decodes the frame at `at`: the entry and the offset after it.
pub fn decode(bytes: &[u8], at: usize) -> Result<(SpoolItem, usize), String> {
    let (body, next) = frame_at(bytes, at).map_err(str::to_owned)?;
    let mut r = body;
    let mut take = |n: usize| -> Result<&[u8], String> {
        if r.len() < n {
            return Err("spool entry cut short".into());
        }
        let (head, rest) = r.split_at(n);
        r = rest;
        Ok(head)
    };
    let seq = u64::from_le_bytes(fixed(take(8)?));
    let qos = codec::qos_from_u8(take(1)?[0]).ok_or("spool entry: bad QoS")?;
    let retain = take(1)?[0] != 0;
    let n_ids = u16::from_le_bytes(fixed(take(2)?)) as usize;
    let sub_ids = take(n_ids * 4)?
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(fixed(c)))
        .collect();
    let shared_len = u16::from_le_bytes(fixed(take(2)?)) as usize;
    let shared = std::str::from_utf8(take(shared_len)?)
        .map_err(|_| "spool entry: group name is not UTF-8")?;
    let shared = (!shared.is_empty()).then(|| Arc::from(shared));
    let record = Record::decode(r)?;
    let message = decode_message(&record)?;
    Ok((
        SpoolItem {
            seq,
            message: Arc::new(message),
            qos,
            retain,
            extra: DeliveryProps::boxed(sub_ids, shared),
            sent: None,
        },
        next,
    ))
}

fn fixed<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn an_entry_comes_back_as_it_went_in() {
        let msg = Message::with_props(
            "a/b",
            Bytes::from_static(b"payload"),
            QoS::ExactlyOnce,
            true,
            None,
        );
        let extra = DeliveryProps::boxed(vec![3, 9], Some(Arc::from("$share/g/a/#")));
        let mut buf = Vec::new();
        let n1 = encode(
            &mut buf,
            41,
            &msg,
            QoS::AtLeastOnce,
            false,
            extra.as_deref(),
        )
        .unwrap();
        let n2 = encode(&mut buf, 42, &msg, QoS::ExactlyOnce, true, None).unwrap();
        assert_eq!(buf.len(), n1 + n2);
        assert_eq!(peek(&buf, 0).unwrap(), (41, n1));
        let (a, next) = decode(&buf, 0).unwrap();
        assert_eq!((a.seq, a.qos, a.retain), (41, QoS::AtLeastOnce, false));
        assert_eq!(
            a.extra.as_deref().map(|e| e.sub_ids.to_vec()),
            Some(vec![3, 9])
        );
        assert_eq!(&*a.message.topic, "a/b");
        assert_eq!(&a.message.payload[..], b"payload");
        let (b, end) = decode(&buf, next).unwrap();
        assert_eq!((b.seq, b.retain, end), (42, true, buf.len()));
        assert!(b.extra.is_none());
    }

    #[test]
    fn a_damaged_or_cut_entry_is_an_error_not_a_panic() {
        let msg = Message::with_props("t", Bytes::new(), QoS::AtLeastOnce, false, None);
        let mut buf = Vec::new();
        encode(&mut buf, 1, &msg, QoS::AtLeastOnce, false, None).unwrap();
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut], 0).is_err(), "cut at {cut}");
            assert!(peek(&buf[..cut], 0).is_err(), "cut at {cut}");
        }
        let last = buf.len() - 1;
        buf[last] ^= 0xFF;
        assert!(decode(&buf, 0).is_err());
    }
}
