//! One handler per packet type a client may send, in the spirit of Mosquitto's
//! `handle_*.c`. Each acts on the [`Client`] and its session, and returns a [`Close`] when
//! the packet ends the connection.

pub mod ack;
pub mod connect;
pub mod publish;
pub mod subscribe;
pub mod unsubscribe;

use crate::client::{Client, Close};
use crate::codec::reason;
use crate::codec::{Disconnect, Packet};

/// Hands a packet received after CONNECT to its handler.
///
/// `#[inline]`: called from one place, the connection's decode loop, once per packet.
/// Without the hint it stayed inlined only while the two happened to land in the same
/// codegen unit; once issue 14's modules moved the partition, the call and the move of
/// the decoded packet into it cost 33 instructions per QoS 1 message (callgrind).
#[inline]
pub fn dispatch(client: &mut Client, packet: Packet) -> Result<(), Close> {
    match packet {
        // A second CONNECT is a protocol violation [MQTT-3.1.0-2].
        Packet::Connect(_) => Err(Close::protocol("second CONNECT on a connection")),
        Packet::Publish(p) => publish::handle(client, p),
        Packet::PubAck(a) => ack::puback(client, a.pkid),
        Packet::PubRec(a) => ack::pubrec(client, a),
        Packet::PubRel(a) => ack::pubrel(client, a.pkid),
        Packet::PubComp(a) => ack::pubcomp(client, a.pkid),
        Packet::Subscribe(s) => subscribe::handle(client, s),
        Packet::Unsubscribe(u) => unsubscribe::handle(client, u),
        // [MQTT-3.12.4-1]
        Packet::PingReq => {
            client.out.pingresp();
            Ok(())
        }
        Packet::Disconnect(d) => disconnect(client, d),
        // midge offers no enhanced authentication, so no AUTH exchange can be under way.
        Packet::Auth(_) => Err(Close::protocol("AUTH without enhanced authentication")),
    }
}

/// DISCONNECT: the will is discarded and the connection closed [MQTT-3.14.4-1/3], except
/// that an MQTT 5.0 client may ask for its will (reason 0x04) and change its Session
/// Expiry Interval, though not from 0 to anything else [MQTT-3.14.2-2].
fn disconnect(client: &mut Client, d: Disconnect) -> Result<(), Close> {
    if let (Some(v5), Some(expiry)) = (client.v5.as_mut(), d.session_expiry) {
        if v5.session_expiry == 0 && expiry != 0 {
            return Err(Close::protocol(
                "DISCONNECT sets a Session Expiry Interval after CONNECT set 0 [MQTT-3.14.2-2]",
            ));
        }
        // No more than max_session_expiry_interval here either.
        let (expiry, _) =
            crate::expiry::granted(expiry, client.broker.config().max_session_expiry_interval);
        v5.session_expiry = expiry;
        client.broker.set_session_expiry(&client.session, expiry);
    }
    if client.is_v5() && d.reason == reason::DISCONNECT_WITH_WILL {
        return Err(Close::DisconnectedWithWill);
    }
    client.will = None;
    Err(Close::Disconnected)
}
