//! One handler per packet type a client may send, in the spirit of Mosquitto's
//! `handle_*.c`. Each acts on the [`Client`] and its session, and returns a [`Close`] when
//! the packet ends the connection.

pub mod ack;
pub mod connect;
pub mod publish;
pub mod subscribe;
pub mod unsubscribe;

use crate::codec::{self, Packet};
use crate::connection::{Client, Close};

/// Hands a packet received after CONNECT to its handler.
pub fn dispatch(client: &mut Client, packet: Packet) -> Result<(), Close> {
    match packet {
        // A second CONNECT is a protocol violation [MQTT-3.1.0-2].
        Packet::Connect(_) => Err(Close::protocol("second CONNECT on a connection")),
        Packet::Publish(p) => publish::handle(client, p),
        Packet::PubAck(a) => ack::puback(client, a.pkid),
        Packet::PubRec(a) => ack::pubrec(client, a.pkid),
        Packet::PubRel(a) => ack::pubrel(client, a.pkid),
        Packet::PubComp(a) => ack::pubcomp(client, a.pkid),
        Packet::Subscribe(s) => subscribe::handle(client, s),
        Packet::Unsubscribe(u) => unsubscribe::handle(client, u),
        // [MQTT-3.12.4-1]
        Packet::PingReq => {
            codec::encode_pingresp(client.out.buf());
            Ok(())
        }
        // The will is discarded and the connection closed [MQTT-3.14.4-1/3].
        Packet::Disconnect(_) => {
            client.will = None;
            Err(Close::Disconnected)
        }
        // midge offers no enhanced authentication, so no AUTH exchange can be under way.
        Packet::Auth(_) => Err(Close::protocol("AUTH without enhanced authentication")),
    }
}
