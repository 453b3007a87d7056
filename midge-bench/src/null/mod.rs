//! `midge-bench null-broker`: the least work an MQTT 3.1.1 server can do for the
//! scenarios, to measure the ceiling of this load generator on this machine: a rate the
//! scenarios do not reach against it is out of any broker's reach here whenever the load
//! generator's own CPU is what limits it (its share is printed with every scenario); where
//! the null broker's thread is the limit instead, a broker using more cores could do more.
//!
//! One thread and one epoll set (mio, edge-triggered). Per connection: a read buffer
//! and an output queue ([`out::Out`]). A round of the loop reads every readable socket
//! (until a short read: the next bytes bring a new edge), answers and forwards each whole
//! packet by appending to the output queues, and then writes each queue that got
//! something once (one write or writev per connection per round). PUBLISH is answered
//! (PUBACK) at once and copied to the matching subscriptions with the flags and packet id
//! patched; payloads of [`SHARE_AT`] bytes and more are not copied at all but queued by
//! reference to the reader's buffer. Subscriber PUBACKs are read and dropped: nothing is
//! kept in flight, queued for later, retained or stored, no keep-alive is enforced and no
//! client id is looked at. The only limit: while a connection has more than `--queue-kib`
//! queued, the others are not read (a publisher faster than its subscribers would
//! otherwise grow the queues by hundreds of MiB, and fresh memory costs page faults that
//! a bounded, reused buffer does not). Meant for loopback runs only: it listens on
//! 127.0.0.1 only.

mod out;
mod threads;
mod wire;

use std::collections::HashMap;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use clap::{Args, ValueEnum};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::client::BoxError;
use crate::proto;
use out::Out;
use wire::{Bad, Packet, Pub};

#[derive(Args)]
pub struct NullArgs {
    /// How it waits for its sockets: `epoll` sleeps in epoll_wait as a broker would;
    /// `spin` polls without ever sleeping (a whole core, for the lowest latency a broker
    /// on this machine could have); `threads`: a blocking thread per connection that
    /// writes each packet straight to its targets (for latency, not throughput).
    #[arg(long, value_enum, default_value_t = Wait::Epoll)]
    wait: Wait,
    /// Output queued for one connection beyond which the epoll loop stops reading the
    /// connections that are not behind themselves, until every queue is below a quarter
    /// of it; 0: never (queues grow without bound).
    #[arg(long, default_value_t = 1024)]
    queue_kib: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Wait {
    Epoll,
    Spin,
    Threads,
}

/// PUBLISH frames this large are forwarded by reference rather than copied.
const SHARE_AT: usize = 16 * 1024;
/// First read buffer of a connection (small: thousands of idle clients), and its
/// largest growth step while reads keep filling it.
const FIRST_READ: usize = 4 * 1024;
const MAX_READ: usize = 256 * 1024;
/// Below this much free room the read buffer is grown before reading.
const MIN_ROOM: usize = 1024;
/// Topics whose subscriber list is cached at most (a scenario with a new topic per
/// message must not grow the cache forever).
const MAX_ROUTES: usize = 10_000;

const LISTENER: Token = Token(usize::MAX);

struct Conn {
    stream: TcpStream,
    rbuf: BytesMut,
    /// Room to read into next (doubles while reads fill the buffer).
    read_hint: usize,
    /// Bytes still missing from the partial frame at the front of `rbuf`.
    missing: usize,
    out: Out,
    /// On the dirty list: output appended this round.
    dirty: bool,
    /// The last write was short: wait for the writable edge.
    blocked: bool,
    /// More than `Broker::high` queued (counted in `Broker::congested`).
    congested: bool,
    /// Not read while others are congested (on `Broker::paused`).
    paused: bool,
    connected: bool,
    last_pkid: u16,
}

impl Conn {
    fn next_pkid(&mut self) -> u16 {
        self.last_pkid = self.last_pkid.checked_add(1).unwrap_or(1);
        self.last_pkid
    }
}

struct Sub {
    conn: usize,
    filter: Vec<u8>,
    qos: u8,
}

struct Broker {
    poll: Poll,
    listener: TcpListener,
    /// Indexed by token; `None` for a free slot.
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Closed this round: their slots are reused from the next round on (a later event of
    /// this round must not reach a new connection in the same slot).
    closed: Vec<usize>,
    subs: Vec<Sub>,
    /// Topic → (connection, granted QoS) of every matching subscription; emptied
    /// whenever a subscription comes or goes.
    routes: HashMap<Vec<u8>, Vec<(usize, u8)>>,
    dirty: Vec<usize>,
    /// Queued bytes that make a connection congested (0: no limit).
    high: usize,
    /// Connections with more than `high` queued.
    congested: usize,
    /// Connections whose reading waits until `congested` is 0.
    paused: Vec<usize>,
}

/// Runs the null broker on 127.0.0.1:`port` (0: any free port) until it is killed. The
/// address goes to standard output once it listens.
pub fn cmd_null_broker(port: u16, a: &NullArgs) -> Result<(), BoxError> {
    if a.wait == Wait::Threads {
        let listener = threads::listen(port)?;
        println!("null-broker listening on {}", listener.local_addr()?);
        io::stdout().flush()?;
        return threads::run(listener);
    }
    let mut listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("null-broker listening on {}", listener.local_addr()?);
    io::stdout().flush()?;
    let mut b = Broker {
        poll,
        listener,
        conns: Vec::new(),
        free: Vec::new(),
        closed: Vec::new(),
        subs: Vec::new(),
        routes: HashMap::new(),
        dirty: Vec::new(),
        high: a.queue_kib * 1024,
        congested: 0,
        paused: Vec::new(),
    };
    let timeout = match a.wait {
        Wait::Spin => Some(Duration::ZERO),
        _ => None,
    };
    b.run(timeout)
}

impl Broker {
    fn run(&mut self, timeout: Option<Duration>) -> Result<(), BoxError> {
        let mut events = Events::with_capacity(1024);
        loop {
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            for ev in events.iter() {
                let i = ev.token().0;
                if ev.token() == LISTENER {
                    self.accept();
                    continue;
                }
                if ev.is_writable() {
                    if let Some(c) = self.conn(i) {
                        c.blocked = false;
                        if !c.dirty && !c.out.is_empty() {
                            c.dirty = true;
                            self.dirty.push(i);
                        }
                    }
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    self.read(i);
                }
            }
            self.flush_dirty();
            // Backpressure released: read what waited (and write what that brings).
            while self.congested == 0 && !self.paused.is_empty() {
                for i in std::mem::take(&mut self.paused) {
                    if let Some(c) = self.conn(i) {
                        c.paused = false;
                    }
                    self.read(i);
                }
                self.flush_dirty();
            }
            self.free.append(&mut self.closed);
        }
    }

    fn conn(&mut self, i: usize) -> Option<&mut Conn> {
        self.conns.get_mut(i).and_then(Option::as_mut)
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    // Every answer and forward is written at the end of a round, once:
                    // nothing to gain from Nagle's delay.
                    let _ = stream.set_nodelay(true);
                    let i = match self.free.pop() {
                        Some(i) => i,
                        None => {
                            self.conns.push(None);
                            self.conns.len() - 1
                        }
                    };
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, Token(i), interest)
                        .is_err()
                    {
                        self.free.push(i);
                        continue;
                    }
                    self.conns[i] = Some(Conn {
                        stream,
                        rbuf: BytesMut::new(),
                        read_hint: FIRST_READ,
                        missing: 0,
                        out: Out::default(),
                        dirty: false,
                        blocked: false,
                        congested: false,
                        paused: false,
                        connected: false,
                        last_pkid: 0,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of file descriptors, most likely: the client waits in the
                    // backlog until the next connection's edge.
                    eprintln!("null-broker: accept: {e}");
                    return;
                }
            }
        }
    }

    fn close(&mut self, i: usize) {
        // Dropping the stream closes it, which also takes it out of the epoll set.
        if let Some(c) = self.conns.get_mut(i).and_then(Option::take) {
            if c.congested {
                self.congested -= 1;
            }
            let before = self.subs.len();
            self.subs.retain(|s| s.conn != i);
            if self.subs.len() != before {
                self.routes.clear();
            }
            self.closed.push(i);
        }
    }

    /// Reads what connection `i` has and handles every whole packet in it.
    fn read(&mut self, i: usize) {
        loop {
            let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) else {
                return;
            };
            // Backpressure: while some queue is too long, read only from the connections
            // behind on their own output (their acknowledgements let them catch up).
            if self.congested > 0 && !c.congested {
                if !c.paused {
                    c.paused = true;
                    self.paused.push(i);
                }
                return;
            }
            let room = c.rbuf.capacity() - c.rbuf.len();
            if room < MIN_ROOM || room < c.missing {
                let hint = c.read_hint;
                c.rbuf.reserve(hint.max(c.missing));
            }
            let spare = c.rbuf.spare_capacity_mut();
            let space = spare.len();
            // SAFETY: read(2) writes at most `space` bytes at the start of the spare
            // capacity, which `spare` owns for this call.
            let n = unsafe { libc::read(c.stream.as_raw_fd(), spare.as_mut_ptr().cast(), space) };
            if n < 0 {
                match io::Error::last_os_error().kind() {
                    io::ErrorKind::WouldBlock => return,
                    io::ErrorKind::Interrupted => continue,
                    _ => return self.close(i),
                }
            }
            if n == 0 {
                return self.close(i);
            }
            let n = n as usize;
            let len = c.rbuf.len();
            // SAFETY: the kernel initialized the first `n` bytes of the spare capacity.
            unsafe { c.rbuf.set_len(len + n) };
            if n == space && c.read_hint < MAX_READ {
                c.read_hint *= 2;
            }
            // Out of the connection while its packets are handled: forwarding writes to
            // other connections' queues, and to its own when it subscribes to itself.
            let mut rbuf = std::mem::take(&mut c.rbuf);
            match self.packets(i, &mut rbuf) {
                Ok(Some(missing)) => {
                    let Some(c) = self.conn(i) else { return };
                    // A connection that never filled its first buffer keeps none between
                    // reads: thousands of idle clients then cost no read buffer each.
                    if !rbuf.is_empty() || c.read_hint > FIRST_READ {
                        c.rbuf = rbuf;
                    }
                    c.missing = missing;
                }
                // DISCONNECT.
                Ok(None) => return self.close(i),
                Err(Bad(why)) => {
                    if cfg!(debug_assertions) {
                        eprintln!("null-broker: closing a connection: {why}");
                    }
                    return self.close(i);
                }
            }
            if n < space {
                // The socket is drained; more bytes bring a new edge.
                return;
            }
        }
    }

    /// Handles the whole packets at the front of `rbuf`: `Ok(Some(bytes still missing
    /// from the partial packet left))`, `Ok(None)` after a DISCONNECT.
    fn packets(&mut self, i: usize, rbuf: &mut BytesMut) -> Result<Option<usize>, Bad> {
        loop {
            let total = match proto::frame_len(rbuf) {
                Ok(Some(t)) => t,
                Ok(None) => return Ok(Some(0)),
                Err(_) => return Err(Bad("remaining length longer than 4 bytes")),
            };
            if rbuf.len() < total {
                return Ok(Some(total - rbuf.len()));
            }
            let open = if rbuf[0] >> 4 == 3 && total >= SHARE_AT {
                let frame = rbuf.split_to(total).freeze();
                self.packet(i, &frame, Some(&frame))?
            } else {
                let open = self.packet(i, &rbuf[..total], None)?;
                rbuf.advance(total);
                open
            };
            if !open {
                return Ok(None);
            }
        }
    }

    /// One packet from connection `i`; `shared` is the frame as `Bytes` when its payload
    /// is to be forwarded by reference. `Ok(false)`: the client disconnected.
    fn packet(&mut self, i: usize, frame: &[u8], shared: Option<&Bytes>) -> Result<bool, Bad> {
        let p = wire::parse(frame)?;
        let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) else {
            return Ok(false);
        };
        match (&p, c.connected) {
            (Packet::Connect, true) => return Err(Bad("second CONNECT")),
            (Packet::Connect, false) => {}
            (_, false) => return Err(Bad("first packet is not CONNECT")),
            (_, true) => {}
        }
        let tail = &mut c.out.tail;
        match p {
            Packet::Connect => {
                c.connected = true;
                tail.extend_from_slice(&wire::CONNACK);
            }
            Packet::Publish(pb) => {
                if pb.qos == 1 {
                    wire::puback(tail, pb.pkid);
                    if !c.dirty {
                        c.dirty = true;
                        self.dirty.push(i);
                    }
                }
                self.forward(frame, &pb, shared);
                return Ok(true);
            }
            Packet::PubAck => return Ok(true),
            Packet::Subscribe { pkid, filters } => {
                wire::suback(tail, pkid, filters.iter().map(|f| f.1));
                for (f, qos) in filters {
                    // The same filter again replaces the subscription.
                    self.subs.retain(|s| s.conn != i || s.filter != f);
                    self.subs.push(Sub {
                        conn: i,
                        filter: f.to_vec(),
                        qos,
                    });
                }
                self.routes.clear();
            }
            Packet::Unsubscribe { pkid, filters } => {
                wire::unsuback(tail, pkid);
                self.subs
                    .retain(|s| s.conn != i || !filters.contains(&s.filter.as_slice()));
                self.routes.clear();
            }
            Packet::PingReq => tail.extend_from_slice(&wire::PINGRESP),
            Packet::Disconnect => return Ok(false),
        }
        if let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(i);
            }
            if self.high > 0 && !c.congested && c.out.len() > self.high {
                c.congested = true;
                self.congested += 1;
            }
        }
        Ok(true)
    }

    /// Appends PUBLISH `frame` (decoded as `pb`) to the queue of every connection with a
    /// matching subscription, at the lower of the two QoS.
    fn forward(&mut self, frame: &[u8], pb: &Pub<'_>, shared: Option<&Bytes>) {
        let targets = match self.routes.get(pb.topic) {
            Some(t) => t,
            None => {
                let mut t: Vec<(usize, u8)> = self
                    .subs
                    .iter()
                    .filter(|s| wire::matches(&s.filter, pb.topic))
                    .map(|s| (s.conn, s.qos))
                    .collect();
                // Overlapping subscriptions of one client: one copy, at the highest QoS.
                t.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
                t.dedup_by_key(|e| e.0);
                if self.routes.len() >= MAX_ROUTES {
                    self.routes.clear();
                }
                self.routes.entry(pb.topic.to_vec()).or_insert(t)
            }
        };
        for &(ci, granted) in targets {
            let Some(c) = self.conns.get_mut(ci).and_then(Option::as_mut) else {
                continue;
            };
            let qos = pb.qos.min(granted);
            let pkid = if qos > 0 { c.next_pkid() } else { 0 };
            wire::forward_header(&mut c.out.tail, frame, pb, qos, pkid);
            match shared {
                Some(b) => c.out.push_shared(b.slice(pb.payload_at..)),
                None => c.out.tail.extend_from_slice(&frame[pb.payload_at..]),
            }
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(ci);
            }
            if self.high > 0 && !c.congested && c.out.len() > self.high {
                c.congested = true;
                self.congested += 1;
            }
        }
    }

    /// Writes every queue that got something this round (or became writable again).
    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &i in &dirty {
            let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            c.dirty = false;
            if c.blocked {
                continue;
            }
            match c.out.write_to(&c.stream) {
                Ok(true) => {}
                Ok(false) => c.blocked = true,
                Err(_) => {
                    self.close(i);
                    continue;
                }
            }
            if c.congested && c.out.len() <= self.high / 4 {
                c.congested = false;
                self.congested -= 1;
            }
        }
        dirty.clear();
        self.dirty = dirty;
    }
}
