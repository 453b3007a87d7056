//! PUBACK, PUBREC, PUBREL and PUBCOMP: the acknowledgement half of QoS 1 and QoS 2.

use std::time::Instant;

use crate::client::{Client, Close};
use crate::codec::reason;
use crate::codec::{Ack, AckKind};
use crate::log_limit::{field, LogLimit};

/// PUBACK from the subscriber: QoS 1 delivery done (or, 5.0, refused), the window slot
/// is free.
pub fn puback(client: &mut Client, pkid: u16) -> Result<(), Close> {
    let handle = client.session.store_handle();
    if !client.session.state.lock().puback(pkid, handle) {
        unknown_id(client, "PUBACK", pkid);
    }
    Ok(())
}

/// At most this many PUBACKs are handled under one lock of the session (see
/// [`pubacks`]): a bound on how long a client sending many holds it.
const MAX_ACK_RUN: usize = 256;

/// The run of PUBACKs `buf` starts with, most of what a QoS 1 subscriber sends, handled
/// straight from the read buffer: each is [`puback`], under one lock of the session.
/// Decoding each into a `Packet` and taking the lock for each cost ~200 instructions a
/// PUBACK (callgrind). The bytes are exactly a PUBACK in either version (see
/// [`codec::leading_pubacks`]), within any `max_packet` (the server's maximum packet
/// size) of 2 or more. Returns how many it handled: the caller consumes 4 bytes each.
///
/// [`codec::leading_pubacks`]: crate::codec::leading_pubacks
pub fn pubacks(client: &mut Client, buf: &[u8], max_packet: usize) -> usize {
    if max_packet < 2 {
        return 0;
    }
    let n = crate::codec::leading_pubacks(buf, MAX_ACK_RUN);
    if n == 0 {
        return 0;
    }
    let handle = client.session.store_handle();
    let mut unknown = Vec::new();
    {
        let mut st = client.session.state.lock();
        for f in buf.chunks_exact(4).take(n) {
            if let [_, _, hi, lo] = *f {
                let pkid = u16::from_be_bytes([hi, lo]);
                if !st.puback(pkid, handle) {
                    unknown.push(pkid);
                }
            }
        }
    }
    for pkid in unknown {
        unknown_id(client, "PUBACK", pkid);
    }
    n
}

/// PUBREC from the subscriber: answer PUBREL [MQTT-4.3.3-1]. An unknown id (a duplicate
/// PUBREC after a retransmission) is answered too, so the client can finish its flow
/// (MQTT 5.0: with 0x92). A 5.0 PUBREC with an error reason code ends the flow: the
/// message is done, no PUBREL follows [MQTT-4.3.3-?].
pub fn pubrec(client: &mut Client, ack: Ack) -> Result<(), Close> {
    let pkid = ack.pkid;
    let handle = client.session.store_handle();
    if client.is_v5() && ack.reason >= 0x80 {
        client.session.state.lock().refused(pkid, handle);
        return Ok(());
    }
    let (known, hold) = client
        .session
        .state
        .lock()
        .pubrec(pkid, Instant::now(), handle);
    if hold != 0 {
        // The PUBREL goes out once the store has the message as released.
        client.broker.wake_when_durable(hold, &client.session);
        return Ok(());
    }
    if !known {
        unknown_id(client, "PUBREC", pkid);
    }
    answer(client, AckKind::PubRel, pkid, known);
    Ok(())
}

/// PUBREL from the publisher: the QoS 2 message was delivered when its PUBLISH arrived;
/// forget its packet id and answer PUBCOMP [MQTT-4.3.3-2] (MQTT 5.0: 0x92 for an id it
/// did not know). For a persistent session the PUBCOMP waits until the store has
/// forgotten the id too: a client that got PUBCOMP may reuse the id at once, and a
/// restart must not take its next message for a re-send of this one.
pub fn pubrel(client: &mut Client, pkid: u16) -> Result<(), Close> {
    let handle = client.session.store_handle();
    let (known, stored) = client.session.state.lock().release_qos2(pkid, handle);
    if let Some(v5) = client.v5.as_mut() {
        v5.qos2_in.remove(&pkid);
    }
    if stored.failed {
        return Err(Close::StoreFailed);
    }
    let ack = Ack {
        pkid,
        reason: known_reason(known),
    };
    client.acknowledge(AckKind::PubComp, ack, Vec::new(), stored.commit);
    Ok(())
}

/// The PUBREL or PUBCOMP a QoS 2 step is answered with; 0x92 (5.0) when the packet id
/// was not known.
fn answer(client: &mut Client, kind: AckKind, pkid: u16, known: bool) {
    let reason = known_reason(known);
    client.out.ack(kind, Ack { pkid, reason });
}

fn known_reason(known: bool) -> u8 {
    if known {
        reason::SUCCESS
    } else {
        reason::PACKET_ID_NOT_FOUND
    }
}

/// PUBCOMP from the subscriber: QoS 2 delivery done.
pub fn pubcomp(client: &mut Client, pkid: u16) -> Result<(), Close> {
    let handle = client.session.store_handle();
    if !client.session.state.lock().pubcomp(pkid, handle) {
        unknown_id(client, "PUBCOMP", pkid);
    }
    Ok(())
}

/// One debug line (rate-limited: a client may send any packet id) for an acknowledgement
/// that matches nothing in flight, usually a duplicate after a retransmission.
fn unknown_id(client: &Client, packet: &'static str, pkid: u16) {
    static LOG: LogLimit = LogLimit::new(10_000);
    if let Some(suppressed) = LOG.allow() {
        tracing::debug!(
            client_id = ?field(client.client_id()),
            pkid,
            suppressed,
            "{packet} for unknown packet id"
        );
    }
}
