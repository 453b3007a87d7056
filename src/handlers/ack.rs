//! PUBACK, PUBREC, PUBREL and PUBCOMP: the acknowledgement half of QoS 1 and QoS 2.

use std::time::Instant;

use crate::codec;
use crate::connection::{Client, Close};

/// PUBACK from the subscriber: QoS 1 delivery done, the window slot is free.
pub fn puback(client: &mut Client, pkid: u16) -> Result<(), Close> {
    if !client.session.state.lock().puback(pkid) {
        tracing::debug!(
            client_id = client.client_id(),
            pkid,
            "PUBACK for unknown packet id"
        );
    }
    Ok(())
}

/// PUBREC from the subscriber: answer PUBREL [MQTT-4.3.3-1]. An unknown id (a duplicate
/// PUBREC after a retransmission) is answered too, so the client can finish its flow.
pub fn pubrec(client: &mut Client, pkid: u16) -> Result<(), Close> {
    if !client.session.state.lock().pubrec(pkid, Instant::now()) {
        tracing::debug!(
            client_id = client.client_id(),
            pkid,
            "PUBREC for unknown packet id"
        );
    }
    codec::encode_pubrel(client.out.buf(), pkid);
    Ok(())
}

/// PUBREL from the publisher: the QoS 2 message was delivered when its PUBLISH arrived;
/// forget its packet id and answer PUBCOMP [MQTT-4.3.3-2].
pub fn pubrel(client: &mut Client, pkid: u16) -> Result<(), Close> {
    client.session.state.lock().incoming_qos2_remove(pkid);
    codec::encode_pubcomp(client.out.buf(), pkid);
    Ok(())
}

/// PUBCOMP from the subscriber: QoS 2 delivery done.
pub fn pubcomp(client: &mut Client, pkid: u16) -> Result<(), Close> {
    if !client.session.state.lock().pubcomp(pkid) {
        tracing::debug!(
            client_id = client.client_id(),
            pkid,
            "PUBCOMP for unknown packet id"
        );
    }
    Ok(())
}
