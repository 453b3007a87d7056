//! The raw MQTT test client: a socket speaking the bytes of [`super::packets`], 3.1.1 or
//! 5.0, with the verbs the protocol tests share (connect, subscribe, publish with its
//! acknowledgements, expect a packet, expect quiet, expect the close).
//!
//! It blocks (std `TcpStream`, every read bounded), so that the synchronous tests and the
//! threads of the crash test can use it as they are. Async tests that use it next to
//! rumqttc run on the multi-thread runtime: the test body, which blocks here, runs on the
//! test's own thread while rumqttc's event loops run on the runtime's worker.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::packets::*;
use super::{close_count, wait_closes, Broker, Login};

/// How long anything that must arrive may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// What came within a wait.
#[derive(Debug)]
pub enum Next {
    Packet(Pkt),
    Closed,
    Quiet,
}

/// A raw MQTT connection. It buffers what it reads, so a timeout never loses half a
/// packet; PUBLISHes met while waiting for a control packet ([`Raw::control`]) are kept,
/// in order, for the next [`Raw::recv`].
pub struct Raw {
    pub s: TcpStream,
    buf: Vec<u8>,
    pending: VecDeque<Pkt>,
    /// The connection speaks MQTT 5.0 (set by the CONNECT it sent).
    pub v5: bool,
    /// The client id, for messages.
    pub id: String,
    /// The broker closed the connection.
    pub closed: bool,
}

impl Raw {
    /// A TCP connection to the broker, nothing sent yet.
    pub fn open(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect_timeout(&addr, WAIT).expect("TCP connect to midge");
        s.set_nodelay(true).expect("nodelay");
        Raw {
            s,
            buf: Vec::new(),
            pending: VecDeque::new(),
            v5: false,
            id: String::new(),
            closed: false,
        }
    }

    /// A raw client over a 3.1.1 connection opened elsewhere.
    pub fn from_stream(s: TcpStream, id: &str) -> Raw {
        Raw {
            s,
            buf: Vec::new(),
            pending: VecDeque::new(),
            v5: false,
            id: id.to_owned(),
            closed: false,
        }
    }

    /// Opens a connection, sends `connect` and returns the first packet back (normally
    /// the CONNACK, whatever its code).
    pub fn handshake(addr: SocketAddr, connect: &[u8]) -> (Raw, Pkt) {
        let mut r = Raw::open(addr);
        // The protocol level follows the fixed header and "\0\x04MQTT".
        r.v5 = frame_at(connect).is_some_and(|(head, _)| connect.get(head + 6) == Some(&5));
        r.send(connect);
        let ack = r.recv();
        (r, ack)
    }

    /// An MQTT 3.1.1 connection that must be accepted; returns it and session present.
    pub fn connect(
        b: &Broker,
        id: &str,
        clean: bool,
        keep_alive: u16,
        will: Option<&Will>,
    ) -> (Raw, bool) {
        let (mut r, ack) = Raw::handshake(b.addr(), &connect311(id, clean, keep_alive, will));
        r.id = id.to_owned();
        assert_eq!(
            ack.kind(),
            CONNACK,
            "first packet for {id:?} must be CONNACK: {ack:?}"
        );
        assert_eq!(ack.byte1, 0x20);
        assert_eq!(ack.body.len(), 2, "CONNACK remaining length: {ack:?}");
        assert_eq!(ack.body[1], 0, "CONNACK return code for {id:?}");
        assert!(ack.body[0] <= 1, "reserved CONNACK flags set: {ack:?}");
        (r, ack.body[0] == 1)
    }

    /// A 3.1.1 clean-session connection with keep-alive 60 and no will.
    pub fn clean(b: &Broker, id: &str) -> Raw {
        Raw::connect(b, id, true, 60, None).0
    }

    /// An MQTT 5.0 connection (keep-alive 60, no will) that must be accepted; returns it
    /// and session present.
    pub fn connect5(addr: SocketAddr, id: &str, clean_start: bool, props: &[Prop]) -> (Raw, bool) {
        let (mut r, ack) = Raw::handshake(addr, &connect5(id, clean_start, 60, props, None));
        r.id = id.to_owned();
        let (session_present, reason, _) = ack.connack();
        assert_eq!(reason, 0, "CONNACK reason code for {id}: {ack:?}");
        (r, session_present)
    }

    /// Connects with `login` (either version) and reads the CONNACK, whatever its code:
    /// (connection, session present, return or reason code).
    pub fn login(addr: SocketAddr, login: &Login) -> (Raw, bool, u8) {
        let (mut r, ack) = Raw::handshake(addr, &login.bytes());
        r.id = login.client_id.to_owned();
        assert_eq!(ack.byte1, 0x20, "expected CONNACK, got {ack:?}");
        assert!(ack.body.len() >= 2, "CONNACK body {ack:?}");
        (r, ack.body[0] & 1 == 1, ack.body[1])
    }

    /// An accepted 5.0 connection with Clean Start.
    pub fn connected5(addr: SocketAddr, id: &str, props: &[Prop]) -> Raw {
        Raw::connect5(addr, id, true, props).0
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write to midge");
    }

    /// Sends PUBACK, PUBREC, PUBREL or PUBCOMP for `pkid`.
    pub fn ack(&mut self, kind: u8, pkid: u16) {
        self.send(&ack_bytes(kind, pkid));
    }

    /// The next packet from the socket (not from the kept PUBLISHes) within `d`.
    fn read_within(&mut self, d: Duration) -> Next {
        let deadline = Instant::now() + d;
        loop {
            if let Some(p) = Pkt::take(&mut self.buf, self.v5) {
                return Next::Packet(p);
            }
            if self.closed {
                return Next::Closed;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Next::Quiet;
            }
            self.s
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("set read timeout");
            let mut tmp = [0u8; 16384];
            match self.s.read(&mut tmp) {
                Ok(0) => {
                    self.closed = true;
                    return Next::Closed;
                }
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Next::Quiet
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.closed = true;
                    return Next::Closed;
                }
            }
        }
    }

    /// The next packet (a kept PUBLISH first) within `d`.
    pub fn next_within(&mut self, d: Duration) -> Next {
        match self.pending.pop_front() {
            Some(p) => Next::Packet(p),
            None => self.read_within(d),
        }
    }

    fn must(&mut self, next: Next) -> Pkt {
        match next {
            Next::Packet(p) => p,
            Next::Closed => panic!(
                "{}: broker closed the connection while a packet was expected",
                self.id
            ),
            Next::Quiet => panic!("{}: no packet from the broker within {WAIT:?}", self.id),
        }
    }

    /// The next packet; panics if none comes within [`WAIT`] or the broker closes.
    pub fn recv(&mut self) -> Pkt {
        let next = self.next_within(WAIT);
        self.must(next)
    }

    /// The next packet from the socket, passing over the kept PUBLISHes.
    pub fn read(&mut self) -> Pkt {
        let next = self.read_within(WAIT);
        self.must(next)
    }

    /// The next packet that is not a PUBLISH; PUBLISHes met on the way are kept.
    pub fn control(&mut self) -> Pkt {
        loop {
            let p = self.read();
            if p.kind() == PUBLISH {
                self.pending.push_back(p);
            } else {
                return p;
            }
        }
    }

    /// The next PUBLISH (not acknowledged); panics on any other packet.
    pub fn recv_publish(&mut self) -> RawPub {
        self.recv().publish()
    }

    /// A packet if one arrives within `within` (`None` also when the broker closed).
    pub fn try_read(&mut self, within: Duration) -> Option<Pkt> {
        match self.next_within(within) {
            Next::Packet(p) => Some(p),
            Next::Closed | Next::Quiet => None,
        }
    }

    /// Asserts that nothing arrives (and the connection stays open) for `d`.
    pub fn expect_quiet(&mut self, d: Duration, what: &str) {
        match self.next_within(d) {
            Next::Quiet => {}
            Next::Packet(p) => panic!("{}: {what}: expected nothing, got {p:?}", self.id),
            Next::Closed => panic!(
                "{}: {what}: expected nothing, but the broker closed the connection",
                self.id
            ),
        }
    }

    /// Asserts the broker closes the connection within `d`; returns what it sent first.
    pub fn expect_closed(&mut self, d: Duration) -> Vec<Pkt> {
        let deadline = Instant::now() + d;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_within(left) {
                Next::Closed => return got,
                Next::Packet(p) => got.push(p),
                Next::Quiet => panic!(
                    "{}: broker did not close the connection within {d:?} (sent {got:?})",
                    self.id
                ),
            }
        }
    }

    /// Reads until the broker closes; returns the reason of the DISCONNECT it sent last.
    pub fn disconnect_reason(&mut self) -> u8 {
        let packets = self.expect_closed(WAIT);
        packets
            .iter()
            .rev()
            .find(|p| p.kind() == DISCONNECT)
            .unwrap_or_else(|| panic!("no DISCONNECT before the close: {packets:?}"))
            .disconnect_reason()
    }

    /// SUBSCRIBE with (filter, QoS or 5.0 options) pairs; the SUBACK must be the next
    /// packet, with this packet id and one code a filter. Returns the codes.
    pub fn subscribe(&mut self, pkid: u16, filters: &[(&str, u8)]) -> Vec<u8> {
        let bytes = if self.v5 {
            subscribe5(pkid, filters, None)
        } else {
            subscribe311(pkid, filters)
        };
        self.send(&bytes);
        let p = self.recv();
        assert_eq!(
            (p.kind(), p.byte1),
            (SUBACK, 0x90),
            "expected SUBACK, got {p:?}"
        );
        assert_eq!(p.pkid(), pkid, "SUBACK packet id [MQTT-3.8.4-2]");
        let codes = p.reasons();
        assert_eq!(codes.len(), filters.len(), "SUBACK codes {codes:?}");
        codes
    }

    /// SUBSCRIBE with (filter, QoS or 5.0 options) pairs and, on 5.0, an optional
    /// subscription identifier; PUBLISHes that arrive before the SUBACK are kept. Returns
    /// the return or reason codes.
    pub fn subscribe_keeping(
        &mut self,
        pkid: u16,
        filters: &[(&str, u8)],
        sub_id: Option<u32>,
    ) -> Vec<u8> {
        let bytes = if self.v5 {
            subscribe5(pkid, filters, sub_id)
        } else {
            assert!(sub_id.is_none(), "subscription identifiers are 5.0 only");
            subscribe311(pkid, filters)
        };
        self.send(&bytes);
        let ack = self.control();
        assert_eq!(ack.kind(), SUBACK, "SUBACK expected: {ack:?}");
        assert_eq!(ack.pkid(), pkid, "SUBACK packet id: {ack:?}");
        ack.reasons()
    }

    /// Publishes (3.1.1, or 5.0 without properties) and completes the flow: PUBACK for
    /// QoS 1, PUBREC / PUBREL / PUBCOMP for QoS 2 (each the next packet, each a success),
    /// nothing for QoS 0.
    pub fn publish(&mut self, topic: &str, payload: &str, qos: u8, pkid: u16, retain: bool) {
        let bytes = if self.v5 {
            assert!(!retain, "5.0 retained publishes are not used here");
            publish5(topic, qos, pkid, false, &[], payload.as_bytes())
        } else {
            publish311(topic, payload.as_bytes(), qos, pkid, retain, false)
        };
        self.send(&bytes);
        match qos {
            0 => {}
            1 => self.recv().assert_ack(PUBACK, pkid),
            _ => {
                self.recv().assert_ack(PUBREC, pkid);
                self.ack(PUBREL, pkid);
                self.recv().assert_ack(PUBCOMP, pkid);
            }
        }
    }

    /// Publishes at QoS 1 with 5.0 properties and returns the PUBACK's reason code;
    /// PUBLISHes that arrive first are kept.
    pub fn publish_qos1(&mut self, topic: &str, pkid: u16, props: &[Prop], payload: &[u8]) -> u8 {
        self.send(&publish5(topic, 1, pkid, false, props, payload));
        let ack = self.control();
        assert_eq!(ack.kind(), PUBACK, "PUBACK expected: {ack:?}");
        let (id, reason) = ack.ack();
        assert_eq!(id, pkid);
        reason
    }

    /// Publishes at QoS 2 (5.0) with the full flow; PUBLISHes that arrive meanwhile are
    /// kept.
    pub fn publish_qos2(&mut self, topic: &str, pkid: u16, payload: &[u8]) {
        self.send(&publish5(topic, 2, pkid, false, &[], payload));
        let rec = self.control();
        assert_eq!(rec.kind(), PUBREC, "PUBREC expected: {rec:?}");
        self.ack(PUBREL, pkid);
        let comp = self.control();
        assert_eq!(comp.kind(), PUBCOMP, "PUBCOMP expected: {comp:?}");
    }

    /// PINGREQ; the next packet must be the PINGRESP.
    pub fn ping(&mut self) {
        self.send(&PINGREQ_BYTES);
        let p = self.recv();
        assert_eq!(
            (p.byte1, p.body.len()),
            (0xD0, 0),
            "{}: expected PINGRESP, got {p:?}",
            self.id
        );
    }

    /// Receives PUBLISHes, acknowledging each at once (PUBACK; PUBREC, then PUBCOMP for the
    /// PUBREL), until `last` returns true for one and then nothing comes for `quiet`.
    /// Returns them in arrival order. Bounded by `limit` in time and by a packet count.
    pub fn drain_until(
        &mut self,
        last: impl Fn(&RawPub) -> bool,
        limit: Duration,
        quiet: Duration,
    ) -> Vec<RawPub> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        let mut done = false;
        for _ in 0..2_000_000 {
            let wait = if done {
                quiet
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            match self.next_within(wait) {
                Next::Packet(p) if p.kind() == PUBLISH => {
                    let publish = p.publish();
                    match publish.qos {
                        1 => self.ack(PUBACK, publish.pkid),
                        2 => self.ack(PUBREC, publish.pkid),
                        _ => {}
                    }
                    done |= last(&publish);
                    got.push(publish);
                }
                Next::Packet(p) if p.kind() == PUBREL => self.ack(PUBCOMP, p.pkid()),
                Next::Packet(p) => panic!("{}: unexpected packet {p:?}", self.id),
                Next::Closed => panic!(
                    "{}: midge closed the connection after {} PUBLISHes",
                    self.id,
                    got.len()
                ),
                Next::Quiet if done => return got,
                Next::Quiet => panic!(
                    "{}: the awaited last message did not arrive within {limit:?}; got {} \
                     PUBLISHes, the last ones: {:?}",
                    self.id,
                    got.len(),
                    got.iter()
                        .rev()
                        .take(5)
                        .map(RawPub::text)
                        .collect::<Vec<_>>()
                ),
            }
        }
        panic!("{}: more than 2,000,000 packets while draining", self.id);
    }

    /// DISCONNECT, then waits until midge has logged the end of this connection, so that
    /// the session is offline before the test goes on. (The log cuts client ids over 64
    /// bytes: those cannot be waited for by id.)
    pub fn go_offline(mut self, b: &Broker) {
        let before = close_count(b, &self.id);
        self.send(&DISCONNECT_BYTES);
        drop(self.s);
        wait_closes(b, &self.id, before + 1);
    }

    /// PUBLISHes (topic, payload) received until none comes for `quiet` or `max` have
    /// come; QoS 1 ones are acknowledged. Other packets are passed over.
    pub fn publishes(&mut self, quiet: Duration, max: usize) -> Vec<(String, Vec<u8>)> {
        let mut got = Vec::new();
        while got.len() < max {
            let Some(p) = self.try_read(quiet) else {
                break;
            };
            if p.kind() != PUBLISH {
                continue;
            }
            let publish = p.publish();
            if publish.qos == 1 {
                self.ack(PUBACK, publish.pkid);
            }
            got.push((publish.topic, publish.payload));
        }
        got
    }

    /// Publishes at QoS 1; the next packet that is not a PUBLISH must be its PUBACK (on
    /// 3.1.1 exactly so). PUBLISHes that arrive first are kept. Returns the PUBACK's body.
    pub fn publish_acked(
        &mut self,
        topic: &str,
        payload: &[u8],
        pkid: u16,
        retain: bool,
    ) -> Vec<u8> {
        let props5: Option<&[u8]> = if self.v5 { Some(&[]) } else { None };
        self.send(&publish_bytes(
            props5,
            topic.as_bytes(),
            1,
            pkid,
            retain,
            false,
            payload,
        ));
        let ack = self.control();
        if self.v5 {
            assert_eq!((ack.kind(), ack.pkid()), (PUBACK, pkid), "PUBACK: {ack:?}");
        } else {
            ack.assert_ack(PUBACK, pkid);
        }
        ack.body
    }

    /// Reads PUBLISHes (kept ones first), acknowledging QoS 1 ones, until one on `until`
    /// arrives; returns the topics and payloads seen, the sentinel last. Other packets are
    /// passed over.
    pub fn received_until(&mut self, until: &str) -> Vec<(String, String)> {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        while let Some(p) = self.try_read(deadline.saturating_duration_since(Instant::now())) {
            if p.kind() != PUBLISH {
                continue;
            }
            let publish = p.publish();
            if publish.qos == 1 {
                self.ack(PUBACK, publish.pkid);
            }
            let done = publish.topic == until;
            seen.push((publish.topic.clone(), publish.text()));
            if done {
                return seen;
            }
        }
        panic!(
            "{}: no message on {until} within the wait; seen {seen:?}",
            self.id
        );
    }

    /// Waits for the PUBACK of `pkid`, passing over anything else, and returns its body.
    pub fn wait_puback(&mut self, pkid: u16) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let p = self
                .try_read(left)
                .unwrap_or_else(|| panic!("{}: no PUBACK for {pkid}", self.id));
            if p.byte1 == 0x40 && p.body[..2] == pkid.to_be_bytes() {
                return p.body;
            }
        }
    }

    /// PINGREQ answered by PINGRESP (other packets are passed over): the connection is up
    /// and served.
    pub fn assert_alive(&mut self, what: &str) {
        self.send(&PINGREQ_BYTES);
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.try_read(left) {
                Some(p) if p.byte1 == 0xD0 => return,
                Some(_) => continue,
                None => panic!("{what}: no PINGRESP (closed: {})", self.closed),
            }
        }
    }
}
