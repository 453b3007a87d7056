//! The offline-backlog scenario's two loops: a publisher that fills the offline sessions'
//! queues (QoS 1 or 2, pipelined, recording which messages the broker acknowledged) and a
//! returning session that drains its queue (acknowledging, recording what arrived).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};

use super::backlog_track::{Bits, SessionTrack, Shape};
use crate::client::{BoxError, Conn};
use crate::proto::{self, Incoming};
use crate::stats::{self, HEADER};

/// One publisher's part of the backlog.
pub struct PubPart {
    pub shape: Shape,
    pub index: usize,
    pub qos: u8,
    pub size: usize,
    pub window: usize,
    /// Stop sending at this instant (or when `stop` is set).
    pub send_until: Instant,
    /// Stop waiting for acknowledgements at this instant.
    pub give_up_at: Instant,
    pub stop: Arc<AtomicBool>,
    /// Acknowledged messages of all publishers, for progress reports.
    pub acked_all: Arc<AtomicU64>,
}

/// What one publisher did: its streams' acknowledged messages.
pub struct PubOut {
    pub sent: u64,
    pub acked: u64,
    /// `(stream, acknowledged sequence numbers)`.
    pub acked_bits: Vec<(usize, Bits)>,
    pub error: Option<String>,
}

/// Packet id state: free, waiting for PUBACK / PUBREC, waiting for PUBCOMP.
const FREE: u8 = 0;
const WAIT_ACK: u8 = 1;
const WAIT_COMP: u8 = 2;

pub async fn publish(mut conn: Conn, part: PubPart) -> (Conn, PubOut) {
    let streams = part.shape.streams_of(part.index);
    let mut out = PubOut {
        sent: 0,
        acked: 0,
        acked_bits: streams
            .iter()
            .map(|&s| (s, Bits::new(part.shape.stream_len(s))))
            .collect(),
        error: None,
    };
    if let Err(e) = publish_loop(&mut conn, &part, &streams, &mut out).await {
        out.error = Some(e.to_string());
    }
    (conn, out)
}

async fn publish_loop(
    conn: &mut Conn,
    part: &PubPart,
    streams: &[usize],
    out: &mut PubOut,
) -> Result<(), BoxError> {
    let topics: Vec<String> = streams.iter().map(|&s| part.shape.topic(s)).collect();
    let lens: Vec<u64> = streams.iter().map(|&s| part.shape.stream_len(s)).collect();
    let total: u64 = lens.iter().sum();
    let size = part.size.max(HEADER);
    let mut payload = vec![0u8; size];
    // Per packet id: state, and the (index into `streams`, sequence number) it carries.
    let mut state = vec![FREE; 65_536];
    let mut carries = vec![(0u32, 0u64); 65_536];
    let window = part.window.clamp(1, 65_535);
    let (mut inflight, mut next_id) = (0usize, 1u16);
    // Message k of this publisher: round k / n over its n streams, stream k % n (streams
    // alternate, as the messages of many sessions arriving together would).
    let n = streams.len().max(1) as u64;
    let mut k = 0u64;
    loop {
        let now = Instant::now();
        let sending = k < total && now < part.send_until && !part.stop.load(Ordering::Relaxed);
        if sending {
            let ts = stats::now_ns();
            let mut batch = 0;
            while k < total && inflight < window && batch < 256 {
                let (j, seq) = ((k % n) as usize, k / n);
                if seq >= lens[j] {
                    k += 1;
                    continue; // a stream shorter than the others
                }
                if state[usize::from(next_id)] != FREE {
                    break; // the id wrapped onto one still in flight
                }
                k += 1;
                let pkid = next_id;
                next_id = if next_id == u16::MAX { 1 } else { next_id + 1 };
                state[usize::from(pkid)] = WAIT_ACK;
                carries[usize::from(pkid)] = (j as u32, seq);
                inflight += 1;
                stats::write_header(&mut payload, streams[j] as u32, seq, ts);
                proto::publish_header(
                    &mut conn.wbuf,
                    conn.version,
                    topics[j].as_bytes(),
                    part.qos,
                    false,
                    pkid,
                    size,
                );
                conn.wbuf.extend_from_slice(&payload);
                out.sent += 1;
                batch += 1;
            }
            tokio::time::timeout_at(part.give_up_at, conn.flush())
                .await
                .map_err(|_| "broker stopped reading (write timed out)")??;
        }
        if !sending && inflight == 0 {
            return Ok(());
        }
        if Instant::now() >= part.give_up_at {
            return Err(format!("{inflight} acknowledgements missing at the deadline").into());
        }
        // Wait for acknowledgements when the window is full or nothing is left to send,
        // else take what has arrived.
        let wait = inflight >= window || !sending;
        conn.read_until(wait.then_some(part.give_up_at)).await?;
        let mut used = 0;
        let mut acked = 0;
        while let Some((p, len)) = proto::decode(&conn.rbuf[used..], conn.version)? {
            used += len;
            let done = match p {
                Incoming::PubAck(id) if part.qos == 1 && state[usize::from(id)] == WAIT_ACK => {
                    Some(id)
                }
                Incoming::PubRec(id) if part.qos == 2 && state[usize::from(id)] == WAIT_ACK => {
                    state[usize::from(id)] = WAIT_COMP;
                    proto::ack(&mut conn.wbuf, proto::PUBREL, id);
                    None
                }
                Incoming::PubComp(id) if state[usize::from(id)] == WAIT_COMP => Some(id),
                Incoming::PingResp => None,
                Incoming::Disconnect(code) => {
                    return Err(format!("broker sent DISCONNECT ({code:#04x})").into())
                }
                other => return Err(format!("unexpected packet for a publisher: {other:?}").into()),
            };
            if let Some(id) = done {
                state[usize::from(id)] = FREE;
                inflight -= 1;
                let (j, seq) = carries[usize::from(id)];
                out.acked_bits[j as usize].1.insert(seq);
                acked += 1;
            }
        }
        conn.rbuf.advance(used);
        out.acked += acked;
        part.acked_all.fetch_add(acked, Ordering::Relaxed);
        conn.flush().await?;
    }
}

/// Receives a returning session's queue until `stop`, acknowledging every message.
/// `progress` counts first deliveries of acknowledged messages.
pub async fn drain(
    mut conn: Conn,
    mut track: SessionTrack,
    acked: Arc<Vec<Bits>>,
    mut stop: watch::Receiver<bool>,
    progress: Arc<AtomicU64>,
    keep_alive: Duration,
) -> (Conn, SessionTrack, Option<String>) {
    let ping_every = (keep_alive / 2).max(Duration::from_secs(1));
    let mut next_ping = Instant::now() + ping_every;
    let mut error = None;
    loop {
        // Also what came with the CONNACK.
        match take(&mut conn, &mut track, &acked) {
            Ok(n) => {
                if n > 0 {
                    progress.fetch_add(n, Ordering::Relaxed);
                }
            }
            Err(e) => {
                error = Some(e);
                break;
            }
        }
        if !conn.wbuf.is_empty() {
            if let Err(e) = conn.flush().await {
                error = Some(e.to_string());
                break;
            }
            next_ping = Instant::now() + ping_every;
        }
        if *stop.borrow() {
            break;
        }
        conn.reserve_for_frame();
        tokio::select! {
            biased;
            r = conn.stream.read_buf(&mut conn.rbuf) => match r {
                Ok(0) => {
                    error = Some("connection closed by broker".into());
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            },
            r = stop.changed() => if r.is_err() { break },
            _ = sleep_until(next_ping) => {
                proto::pingreq(&mut conn.wbuf);
            }
        }
    }
    (conn, track, error)
}

/// Handles the whole packets in the read buffer; returns the first deliveries of
/// acknowledged messages among them.
fn take(conn: &mut Conn, track: &mut SessionTrack, acked: &[Bits]) -> Result<u64, String> {
    let now = stats::now_ns();
    let mut used = 0;
    let mut fresh = 0;
    while let Some((p, n)) =
        proto::decode(&conn.rbuf[used..], conn.version).map_err(|e| e.to_string())?
    {
        used += n;
        match p {
            Incoming::Publish {
                qos,
                dup,
                pkid,
                payload,
                ..
            } => {
                match stats::read_header(payload) {
                    Some((stream, seq, _)) => {
                        fresh += u64::from(track.record(stream, seq, dup, acked, now));
                    }
                    None => {
                        track.received += 1;
                        track.foreign += 1;
                    }
                }
                match qos {
                    1 => proto::ack(&mut conn.wbuf, proto::PUBACK, pkid),
                    2 => proto::ack(&mut conn.wbuf, proto::PUBREC, pkid),
                    _ => {}
                }
            }
            Incoming::PubRel(id) => proto::ack(&mut conn.wbuf, proto::PUBCOMP, id),
            Incoming::PingResp | Incoming::SubAck { .. } => {}
            Incoming::Disconnect(code) => {
                return Err(format!("broker sent DISCONNECT ({code:#04x})"))
            }
            other => return Err(format!("unexpected packet for a subscriber: {other:?}")),
        }
    }
    conn.rbuf.advance(used);
    Ok(fresh)
}
