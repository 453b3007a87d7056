//! `null-broker --wait threads`: the null broker with one blocking thread per connection
//! instead of one epoll loop, for the latency rows. A reader thread sleeps in read(2) and
//! writes each answer and forward itself, straight to the target sockets: no event loop
//! between a publisher's bytes and the subscriber's socket, but one write per packet
//! (which the epoll loop batches), so it is no throughput ceiling.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};

use super::wire::{self, Bad, Packet};
use crate::client::BoxError;
use crate::proto;

/// A connection's sending side: the socket and its last QoS 1 packet id.
struct Writer {
    stream: TcpStream,
    last_pkid: u16,
}

type SharedWriter = Arc<Mutex<Writer>>;

#[derive(Default)]
struct Shared {
    /// (connection, filter, granted QoS).
    subs: Vec<(u64, Vec<u8>, u8)>,
    writers: HashMap<u64, SharedWriter>,
}

/// A poisoned lock only means another connection's thread panicked: its data is still
/// usable for the others.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn run(listener: TcpListener) -> Result<(), BoxError> {
    let shared = Arc::new(Mutex::new(Shared::default()));
    for (id, stream) in (0u64..).zip(listener.incoming()) {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                eprintln!("null-broker: accept: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(w) = stream.try_clone() else { continue };
        let writer = Arc::new(Mutex::new(Writer {
            stream: w,
            last_pkid: 0,
        }));
        lock(&shared).writers.insert(id, writer.clone());
        let shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let _ = serve(id, stream, &writer, &shared);
                {
                    let mut s = lock(&shared);
                    s.writers.remove(&id);
                    s.subs.retain(|sub| sub.0 != id);
                }
                // The clone in `writer` would keep the socket open.
                let _ = lock(&writer).stream.shutdown(Shutdown::Both);
            });
        if let Err(e) = spawned {
            eprintln!("null-broker: no thread for a connection: {e}");
        }
    }
    Ok(())
}

/// Reads and handles connection `id`'s packets until it ends.
fn serve(
    id: u64,
    mut stream: TcpStream,
    me: &SharedWriter,
    shared: &Mutex<Shared>,
) -> Result<(), Bad> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(256);
    let mut connected = false;
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Ok(()),
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut used = 0;
        while let Some(total) = proto::frame_len(&buf[used..]).map_err(|_| Bad("length"))? {
            let Some(frame) = buf.get(used..used + total) else {
                break;
            };
            used += total;
            let p = wire::parse(frame)?;
            if matches!(p, Packet::Connect) == connected {
                return Err(Bad("CONNECT not first, or twice"));
            }
            out.clear();
            match p {
                Packet::Connect => {
                    connected = true;
                    out.extend_from_slice(&wire::CONNACK);
                }
                Packet::Publish(pb) => {
                    if pb.qos == 1 {
                        wire::puback(&mut out, pb.pkid);
                        send(me, &out)?;
                        out.clear();
                    }
                    let targets: Vec<(SharedWriter, u8)> = {
                        let s = lock(shared);
                        s.subs
                            .iter()
                            .filter(|sub| wire::matches(&sub.1, pb.topic))
                            .filter_map(|sub| Some((s.writers.get(&sub.0)?.clone(), sub.2)))
                            .collect()
                    };
                    for (w, granted) in targets {
                        let qos = pb.qos.min(granted);
                        let mut w = lock(&w);
                        w.last_pkid = w.last_pkid.checked_add(1).unwrap_or(1);
                        out.clear();
                        wire::forward_header(&mut out, frame, &pb, qos, w.last_pkid);
                        out.extend_from_slice(&frame[pb.payload_at..]);
                        // A subscriber gone meanwhile is its own thread's business.
                        let _ = w.stream.write_all(&out);
                    }
                    continue;
                }
                Packet::PubAck => continue,
                Packet::Subscribe { pkid, filters } => {
                    wire::suback(&mut out, pkid, filters.iter().map(|f| f.1));
                    let mut s = lock(shared);
                    for (f, qos) in filters {
                        s.subs.retain(|sub| sub.0 != id || sub.1 != f);
                        s.subs.push((id, f.to_vec(), qos));
                    }
                }
                Packet::Unsubscribe { pkid, filters } => {
                    wire::unsuback(&mut out, pkid);
                    lock(shared)
                        .subs
                        .retain(|sub| sub.0 != id || !filters.contains(&sub.1.as_slice()));
                }
                Packet::PingReq => out.extend_from_slice(&wire::PINGRESP),
                Packet::Disconnect => return Ok(()),
            }
            send(me, &out)?;
        }
        buf.drain(..used);
    }
}

fn send(w: &SharedWriter, bytes: &[u8]) -> Result<(), Bad> {
    lock(w)
        .stream
        .write_all(bytes)
        .map_err(|_| Bad("write failed"))
}

/// The listener for this variant: std's, blocking.
pub fn listen(port: u16) -> io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
}
