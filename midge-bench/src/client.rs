//! One MQTT connection over a raw tokio socket: connect (optionally from one of several
//! loopback source addresses), CONNECT/CONNACK, SUBSCRIBE/SUBACK, DISCONNECT.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::proto::{self, Incoming, Version};

/// How to reach the broker and how to present ourselves.
#[derive(Debug, Clone)]
pub struct Opts {
    pub host: IpAddr,
    pub port: u16,
    pub version: Version,
    pub keep_alive: u16,
    /// Local addresses to bind before connecting, used round-robin by connection index;
    /// empty: let the kernel choose. Each source address has its own ~28k ephemeral ports.
    pub sources: Vec<IpAddr>,
    /// Limit for TCP connect, CONNACK and SUBACK each.
    pub timeout: Duration,
}

impl Opts {
    /// `127.0.0.2 ..= 127.0.0.(n+1)` for a loopback broker, nothing otherwise.
    pub fn loopback_sources(host: IpAddr, n: usize) -> Vec<IpAddr> {
        if !host.is_loopback() || !host.is_ipv4() {
            return Vec::new();
        }
        (0..n.min(250))
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8)))
            .collect()
    }
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn err(msg: impl Into<String>) -> BoxError {
    msg.into().into()
}

pub struct Conn {
    pub stream: TcpStream,
    pub rbuf: BytesMut,
    pub wbuf: Vec<u8>,
    pub version: Version,
}

/// Read buffer room for message traffic.
pub const READ_CHUNK: usize = 64 * 1024;
/// Read buffer room for handshakes (CONNACK, SUBACK).
const SMALL_CHUNK: usize = 1024;

impl Conn {
    /// TCP connect (from source address `index % sources`), CONNECT with a clean session,
    /// wait for CONNACK 0.
    pub async fn connect(opts: &Opts, client_id: &str, index: usize) -> Result<Conn, BoxError> {
        Ok(Conn::connect_session(opts, client_id, index, true).await?.0)
    }

    /// [`Conn::connect`] with the clean session flag (3.1.1) / Clean Start (5.0) as given;
    /// also returns the CONNACK's Session Present flag.
    pub async fn connect_session(
        opts: &Opts,
        client_id: &str,
        index: usize,
        clean: bool,
    ) -> Result<(Conn, bool), BoxError> {
        let addr = SocketAddr::new(opts.host, opts.port);
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if !opts.sources.is_empty() {
            let src = opts.sources[index % opts.sources.len()];
            socket
                .bind(SocketAddr::new(src, 0))
                .map_err(|e| err(format!("bind {src}: {e}")))?;
        }
        let stream = timeout(opts.timeout, socket.connect(addr))
            .await
            .map_err(|_| err("TCP connect timed out"))??;
        stream.set_nodelay(true)?;
        let mut conn = Conn {
            stream,
            // Small until there is traffic: thousands of idle connections must not cost
            // the load generator (and the page faults of the first run) 64 KiB each.
            rbuf: BytesMut::with_capacity(SMALL_CHUNK),
            wbuf: Vec::with_capacity(256),
            version: opts.version,
        };
        proto::connect(
            &mut conn.wbuf,
            opts.version,
            client_id,
            clean,
            opts.keep_alive,
        );
        conn.flush().await?;
        let (code, present) = timeout(opts.timeout, conn.read_connack())
            .await
            .map_err(|_| err("no CONNACK in time"))??;
        if code != 0 {
            return Err(err(format!("CONNACK refused with code {code:#04x}")));
        }
        Ok((conn, present))
    }

    /// `(return / reason code, session present)` of the CONNACK.
    async fn read_connack(&mut self) -> Result<(u8, bool), BoxError> {
        loop {
            if let Some((p, n)) = proto::decode(&self.rbuf, self.version)? {
                let r = match p {
                    Incoming::ConnAck {
                        code,
                        session_present,
                    } => (code, session_present),
                    other => return Err(err(format!("expected CONNACK, got {other:?}"))),
                };
                self.rbuf.advance(n);
                return Ok(r);
            }
            self.fill().await?;
        }
    }

    /// Reads more bytes; an error at end of stream.
    pub async fn fill(&mut self) -> Result<usize, BoxError> {
        self.reserve_room(SMALL_CHUNK);
        let n = self.stream.read_buf(&mut self.rbuf).await?;
        if n == 0 {
            return Err(err("connection closed by broker"));
        }
        Ok(n)
    }

    /// Reads what the broker has sent into `rbuf` (with room for a full frame): waits for
    /// it until `until` when given, else takes only what has arrived already. Fails if
    /// the broker closed the connection.
    pub async fn read_until(
        &mut self,
        until: Option<tokio::time::Instant>,
    ) -> Result<(), BoxError> {
        self.reserve_for_frame();
        match until {
            Some(until) => tokio::select! {
                r = self.stream.read_buf(&mut self.rbuf) => {
                    if r? == 0 {
                        return Err(err("connection closed by broker"));
                    }
                }
                _ = tokio::time::sleep_until(until) => {}
            },
            None => match self.stream.try_read_buf(&mut self.rbuf) {
                Ok(0) => return Err(err("connection closed by broker")),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            },
        }
        Ok(())
    }

    /// Makes room for the next read of message traffic: a full chunk, or the rest of a
    /// large frame.
    pub fn reserve_for_frame(&mut self) {
        self.reserve_room(READ_CHUNK);
    }

    fn reserve_room(&mut self, chunk: usize) {
        let want = match proto::frame_len(&self.rbuf) {
            Ok(Some(len)) if len > self.rbuf.len() => (len - self.rbuf.len()).max(chunk),
            _ => chunk,
        };
        if self.rbuf.capacity() - self.rbuf.len() < want / 4 {
            self.rbuf.reserve(want);
        }
    }

    /// Writes out and clears `wbuf`.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Sends DISCONNECT and waits (briefly) for the broker to close first, so the
    /// TIME_WAIT state lands on the broker's side and our source ports stay free.
    pub async fn close(mut self) {
        self.wbuf.clear();
        proto::disconnect(&mut self.wbuf);
        if self.flush().await.is_err() {
            return;
        }
        let _ = timeout(Duration::from_secs(3), async {
            let mut sink = [0u8; 4096];
            loop {
                match self.stream.read(&mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
}

/// Filters per SUBSCRIBE packet when subscribing to many at once.
pub const FILTERS_PER_PACKET: usize = 100;

/// Sends SUBSCRIBE packets for `filters` (pipelined, [`FILTERS_PER_PACKET`] per packet)
/// and returns how many filters were refused. Packets arriving before the last SUBACK
/// are handed to `on_other` (retained messages may come first).
pub async fn subscribe<S: AsRef<str>>(
    conn: &mut Conn,
    filters: &[S],
    qos: u8,
    wait: Duration,
    mut on_other: impl FnMut(&Incoming<'_>, &mut Vec<u8>),
) -> Result<usize, BoxError> {
    let mut pending = 0usize;
    for (i, chunk) in filters.chunks(FILTERS_PER_PACKET).enumerate() {
        proto::subscribe(
            &mut conn.wbuf,
            conn.version,
            (i % 65_535 + 1) as u16,
            chunk,
            qos,
        );
        pending += 1;
        if conn.wbuf.len() > 64 * 1024 {
            conn.flush().await?;
        }
    }
    conn.flush().await?;
    let mut refused = 0;
    let deadline = tokio::time::Instant::now() + wait;
    while pending > 0 {
        let mut used = 0;
        while pending > 0 {
            let Some((p, n)) = proto::decode(&conn.rbuf[used..], conn.version)? else {
                break;
            };
            used += n;
            match p {
                Incoming::SubAck { codes, .. } => {
                    pending -= 1;
                    refused += codes.iter().filter(|&&c| c >= 0x80).count();
                }
                other => on_other(&other, &mut conn.wbuf),
            }
        }
        conn.rbuf.advance(used);
        conn.flush().await?;
        if pending > 0 {
            tokio::time::timeout_at(deadline, conn.fill())
                .await
                .map_err(|_| err(format!("{pending} SUBACKs missing after {wait:?}")))??;
        }
    }
    Ok(refused)
}

/// Opens `n` connections, at most `concurrency` handshakes at a time; client ids come
/// from `id(i)`. Results are in index order.
pub async fn connect_many(
    opts: &Arc<Opts>,
    n: usize,
    concurrency: usize,
    id: impl Fn(usize) -> String,
) -> Vec<Result<Conn, BoxError>> {
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.expect("semaphore open");
        let opts = opts.clone();
        let cid = id(i);
        set.spawn(async move {
            let r = Conn::connect(&opts, &cid, i).await;
            drop(permit);
            (i, r)
        });
    }
    let mut out: Vec<Option<Result<Conn, BoxError>>> = (0..n).map(|_| None).collect();
    while let Some(r) = set.join_next().await {
        match r {
            Ok((i, r)) => out[i] = Some(r),
            Err(e) => {
                // A panicked handshake: record it against the first empty slot.
                if let Some(slot) = out.iter_mut().find(|s| s.is_none()) {
                    *slot = Some(Err(err(format!("connect task failed: {e}"))));
                }
            }
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(err("connect task lost"))))
        .collect()
}

/// Closes every connection (DISCONNECT, wait for the broker's close), `concurrency` at
/// a time.
pub async fn close_all(conns: Vec<Conn>, concurrency: usize) {
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    for c in conns {
        let permit = sem.clone().acquire_owned().await.expect("semaphore open");
        set.spawn(async move {
            c.close().await;
            drop(permit);
        });
    }
    while set.join_next().await.is_some() {}
}
