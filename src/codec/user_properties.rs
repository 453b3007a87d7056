//! MQTT 5.0 User Properties of an application message, kept as their wire encoding.
//!
//! A user property can be 5 bytes on the wire (identifier, two empty strings); held as a
//! `(String, String)` pair it would cost 48 bytes plus two allocations, a tenfold
//! amplification a publisher could aim at retained messages, queues and wills. So the
//! properties are validated once at decode and kept as one exact-size buffer of their
//! wire encoding (identifier byte included), which the encoder writes back verbatim:
//! memory is the wire size, and forwarding costs one copy.

use bytes::{Buf, Bytes};

use super::properties::USER_PROPERTY;

/// The user properties of a message, in the order received [MQTT-3.3.2-18].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct UserProperties {
    /// `0x26, len, name, len, value` per property; valid UTF-8 without U+0000 (checked
    /// by the decoder, or built from `&str` by [`UserProperties::from_iter`]).
    wire: Bytes,
    count: u32,
}

impl UserProperties {
    /// From the wire bytes the decoder validated and counted.
    pub(super) fn from_wire(wire: Vec<u8>, count: u32) -> UserProperties {
        // An exact-size allocation: what is held is what was sent.
        UserProperties {
            wire: Bytes::from(wire.into_boxed_slice()),
            count,
        }
    }

    /// How many properties there are.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The properties as they are written into a property block.
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// Heap bytes the properties hold.
    pub fn held_bytes(&self) -> usize {
        self.wire.len()
    }

    /// The `(name, value)` pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let mut rest: &[u8] = &self.wire;
        std::iter::from_fn(move || {
            // Built only from validated strings: a failure here would be a bug, and ends
            // the iteration rather than panicking.
            rest.first().filter(|&&id| id == USER_PROPERTY)?;
            rest.advance(1);
            let name = take_str(&mut rest)?;
            let value = take_str(&mut rest)?;
            Some((name, value))
        })
    }
}

fn take_str<'a>(rest: &mut &'a [u8]) -> Option<&'a str> {
    let (len, tail) = rest.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    let s = tail.get(..len)?;
    *rest = &tail[len..];
    std::str::from_utf8(s).ok()
}

/// Builds properties from pairs (server-made messages, tests). A pair MQTT cannot
/// express (a string over 65,535 bytes) is left out.
impl<N: AsRef<str>, V: AsRef<str>> FromIterator<(N, V)> for UserProperties {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(pairs: I) -> UserProperties {
        let mut wire = Vec::new();
        let mut count = 0u32;
        for (name, value) in pairs {
            let (name, value) = (name.as_ref().as_bytes(), value.as_ref().as_bytes());
            let (Ok(n), Ok(v)) = (u16::try_from(name.len()), u16::try_from(value.len())) else {
                continue;
            };
            wire.push(USER_PROPERTY);
            wire.extend_from_slice(&n.to_be_bytes());
            wire.extend_from_slice(name);
            wire.extend_from_slice(&v.to_be_bytes());
            wire.extend_from_slice(value);
            count += 1;
        }
        UserProperties::from_wire(wire, count)
    }
}

impl From<Vec<(String, String)>> for UserProperties {
    fn from(pairs: Vec<(String, String)>) -> UserProperties {
        pairs.into_iter().collect()
    }
}

impl std::fmt::Debug for UserProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_through_the_wire_form_at_wire_size() {
        let props: UserProperties = [("a", ""), ("", "☃"), ("a", "2")].into_iter().collect();
        assert_eq!(props.len(), 3);
        assert_eq!(
            props.iter().collect::<Vec<_>>(),
            [("a", ""), ("", "☃"), ("a", "2")]
        );
        // 5 bytes of framing per property, plus the strings.
        assert_eq!(props.held_bytes(), 3 * 5 + 1 + 3 + 1 + 1);
        assert_eq!(props.wire()[..4], [USER_PROPERTY, 0, 1, b'a']);
        assert!(UserProperties::default().is_empty());
    }

    #[test]
    fn a_pair_mqtt_cannot_express_is_left_out() {
        let long = "x".repeat(65_536);
        let props: UserProperties = [("k", long.as_str()), ("k", "v")].into_iter().collect();
        assert_eq!(props.iter().collect::<Vec<_>>(), [("k", "v")]);
    }
}
