//! The two loops that make the load: a publisher (flood or fixed rate, QoS 0/1/2 with an
//! inflight window) and a subscriber (acknowledges, counts, measures latency). Each owns
//! one connection in one task; nothing is shared per message but a relaxed counter per
//! read batch.

use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};

use crate::client::{BoxError, Conn};
use crate::proto::{self, Incoming};
use crate::stats::{self, Histogram, Tracker, HEADER};

/// Where each message of a publisher goes.
#[derive(Debug, Clone)]
pub enum Topics {
    /// Always the same topic.
    Fixed(String),
    /// `prefix/<seq / 1000>/<seq % 1000>`: one new topic per message (retained scenario).
    Tree(String),
    /// A pseudo-random one of the `n` topics of [`scale_topic`], each matching exactly one
    /// of the filters of [`scale_filter`].
    Scale { n: u64, seed: u64 },
}

/// Filter number `j` of the subscription-scale scenario: four shapes with wildcards, all
/// distinct, such that topic `j` of [`scale_topic`] matches filter `j` and no other.
pub fn scale_filter(j: u64) -> String {
    let (g, k) = (j / 1000, j % 1000);
    match j % 4 {
        0 => format!("s/{g}/{k}/+"),
        1 => format!("s/{g}/{k}/x/#"),
        2 => format!("s/+/{k}/{g}"),
        _ => format!("s/{g}/+/y{k}"),
    }
}

pub fn scale_topic(j: u64, out: &mut Vec<u8>) {
    use std::io::Write;
    let (g, k) = (j / 1000, j % 1000);
    let _ = match j % 4 {
        0 => write!(out, "s/{g}/{k}/v"),
        1 => write!(out, "s/{g}/{k}/x/z"),
        2 => write!(out, "s/p/{k}/{g}"),
        _ => write!(out, "s/{g}/a/y{k}"),
    };
}

impl Topics {
    fn write(&mut self, seq: u64, out: &mut Vec<u8>) {
        out.clear();
        match self {
            Topics::Fixed(t) => out.extend_from_slice(t.as_bytes()),
            Topics::Tree(prefix) => {
                use std::io::Write;
                let _ = write!(out, "{prefix}/{}/{}", seq / 1000, seq % 1000);
            }
            Topics::Scale { n, seed } => {
                // xorshift64*: cheap, deterministic per publisher.
                *seed ^= *seed >> 12;
                *seed ^= *seed << 25;
                *seed ^= *seed >> 27;
                let r = seed.wrapping_mul(0x2545_F491_4F6C_DD1D);
                scale_topic(r % (*n).max(1), out);
            }
        }
    }
}

/// One publisher's job.
#[derive(Debug, Clone)]
pub struct PubJob {
    /// Written into every payload; must be unique among the publishers of a run.
    pub id: u32,
    pub topics: Topics,
    pub qos: u8,
    pub retain: bool,
    /// Payload bytes (at least [`HEADER`]).
    pub size: usize,
    /// Messages to send at most.
    pub count: u64,
    /// Messages per second for this publisher; `None`: as fast as the window and the
    /// socket allow.
    pub rate: Option<f64>,
    /// QoS 1/2 messages sent and not yet acknowledged, at most.
    pub window: usize,
    /// Stop sending at this instant even if `count` is not reached.
    pub send_until: Instant,
    /// Stop waiting for acknowledgements at this instant.
    pub give_up_at: Instant,
    pub keep_alive: Duration,
}

#[derive(Debug, Default, Clone)]
pub struct PubStats {
    pub sent: u64,
    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) received.
    pub acked: u64,
    pub started: Option<Instant>,
    pub finished: Option<Instant>,
    pub error: Option<String>,
}

/// Largest write we assemble before handing it to the socket.
const WRITE_BATCH: usize = 64 * 1024;

/// Publishes as `job` says, then waits for the outstanding acknowledgements.
pub async fn publish(mut conn: Conn, mut job: PubJob) -> (Conn, PubStats) {
    let mut st = PubStats::default();
    if let Err(e) = publish_loop(&mut conn, &mut job, &mut st).await {
        st.error = Some(e.to_string());
    }
    st.finished = Some(Instant::now());
    (conn, st)
}

async fn publish_loop(
    conn: &mut Conn,
    job: &mut PubJob,
    st: &mut PubStats,
) -> Result<(), BoxError> {
    let size = job.size.max(HEADER);
    let frame_guess = size + 64;
    let batch_max = (WRITE_BATCH / frame_guess).clamp(1, 256) as u64;
    let mut payload = vec![0u8; size];
    let mut topic = Vec::with_capacity(64);
    // Packet id states: 0 free, 1 waiting for PUBACK/PUBREC, 2 waiting for PUBCOMP.
    let mut state = vec![0u8; 65_536];
    let mut next_id: u16 = 1;
    let mut inflight = 0usize;
    let window = job.window.clamp(1, 65_535);
    let start = Instant::now();
    st.started = Some(start);
    let mut last_write = start;
    let ping_every = job.keep_alive / 2;

    loop {
        let now = Instant::now();
        let sending = st.sent < job.count && now < job.send_until;
        let mut due_later = None;
        if sending {
            let mut n = batch_max.min(job.count - st.sent);
            if job.qos > 0 {
                n = n.min((window - inflight) as u64);
            }
            if let Some(rate) = job.rate {
                let due = ((now - start).as_secs_f64() * rate) as u64 + 1;
                n = n.min(due.saturating_sub(st.sent));
                if n == 0 {
                    let next = Duration::from_secs_f64((st.sent as f64) / rate);
                    due_later = Some(start + next);
                }
            }
            if n > 0 {
                let ts = stats::now_ns();
                for _ in 0..n {
                    let mut pkid = 0;
                    if job.qos > 0 {
                        if state[usize::from(next_id)] != 0 {
                            break; // the id wrapped onto one still in flight
                        }
                        pkid = next_id;
                        state[usize::from(pkid)] = 1;
                        inflight += 1;
                        next_id = if next_id == u16::MAX { 1 } else { next_id + 1 };
                    }
                    job.topics.write(st.sent, &mut topic);
                    stats::write_header(&mut payload, job.id, st.sent, ts);
                    proto::publish_header(
                        &mut conn.wbuf,
                        conn.version,
                        &topic,
                        job.qos,
                        job.retain,
                        pkid,
                        size,
                    );
                    conn.wbuf.extend_from_slice(&payload);
                    st.sent += 1;
                }
                // A broker that stops reading must not hold us past the deadline.
                tokio::time::timeout_at(job.give_up_at, conn.flush())
                    .await
                    .map_err(|_| "broker stopped reading (write timed out)")??;
                last_write = Instant::now();
            }
        }
        if !sending && inflight == 0 {
            return Ok(());
        }
        let now = Instant::now();
        if ping_every > Duration::ZERO && now - last_write >= ping_every {
            proto::pingreq(&mut conn.wbuf);
            conn.flush().await?;
            last_write = now;
        }

        // Acknowledgements: wait for them when the window is full or nothing is left to
        // send, wait for them or the next send time when rate-limited, else just take
        // what has already arrived.
        let must_wait = job.qos > 0 && (inflight >= window || !sending);
        if must_wait || due_later.is_some() {
            let until = if must_wait {
                job.give_up_at
            } else {
                due_later.unwrap_or(now).min(job.give_up_at)
            };
            if must_wait && Instant::now() >= job.give_up_at {
                return Err(format!("{inflight} acknowledgements missing at the deadline").into());
            }
            conn.read_until(Some(until)).await?;
        } else if job.qos > 0 {
            conn.read_until(None).await?;
        }
        let mut used = 0;
        while let Some((p, n)) = proto::decode(&conn.rbuf[used..], conn.version)? {
            used += n;
            match p {
                Incoming::PubAck(id) if job.qos == 1 && state[usize::from(id)] == 1 => {
                    state[usize::from(id)] = 0;
                    inflight -= 1;
                    st.acked += 1;
                }
                Incoming::PubRec(id) if job.qos == 2 && state[usize::from(id)] == 1 => {
                    state[usize::from(id)] = 2;
                    proto::ack(&mut conn.wbuf, proto::PUBREL, id);
                }
                Incoming::PubComp(id) if state[usize::from(id)] == 2 => {
                    state[usize::from(id)] = 0;
                    inflight -= 1;
                    st.acked += 1;
                }
                Incoming::PingResp => {}
                Incoming::Disconnect(code) => {
                    return Err(format!("broker sent DISCONNECT ({code:#04x})").into())
                }
                other => return Err(format!("unexpected packet for a publisher: {other:?}").into()),
            }
        }
        conn.rbuf.advance(used);
        if !conn.wbuf.is_empty() {
            conn.flush().await?;
            last_write = Instant::now();
        }
    }
}

/// What a subscriber saw.
#[derive(Clone, Default)]
pub struct SubStats {
    pub received: u64,
    pub bytes: u64,
    pub retained: u64,
    pub tracker: Tracker,
    pub latency: Histogram,
    /// Wall-clock ns of the first and last message read.
    pub first_ns: u64,
    pub last_ns: u64,
    pub error: Option<String>,
}

impl SubStats {
    /// Handles one packet; acknowledgements go to `out`. `now` is the read time.
    #[inline]
    pub fn on_packet(
        &mut self,
        p: &Incoming<'_>,
        now: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        match *p {
            Incoming::Publish {
                qos,
                retain,
                pkid,
                payload,
                ..
            } => {
                self.received += 1;
                self.bytes += payload.len() as u64;
                if retain {
                    self.retained += 1;
                }
                if self.first_ns == 0 {
                    self.first_ns = now;
                }
                self.last_ns = now;
                match stats::read_header(payload) {
                    Some((publisher, seq, sent)) => {
                        self.tracker.record(publisher, seq);
                        // Retained copies were sent long ago: no latency for them.
                        if !retain {
                            self.latency.record(now.saturating_sub(sent));
                        }
                    }
                    None => self.tracker.foreign += 1,
                }
                match qos {
                    1 => proto::ack(out, proto::PUBACK, pkid),
                    2 => proto::ack(out, proto::PUBREC, pkid),
                    _ => {}
                }
            }
            Incoming::PubRel(id) => proto::ack(out, proto::PUBCOMP, id),
            Incoming::PingResp | Incoming::SubAck { .. } | Incoming::UnsubAck => {}
            Incoming::Disconnect(code) => {
                return Err(format!("broker sent DISCONNECT ({code:#04x})"))
            }
            ref other => return Err(format!("unexpected packet for a subscriber: {other:?}")),
        }
        Ok(())
    }
}

/// Receives until `stop` turns true (or the connection ends), acknowledging as it goes.
/// `progress` is increased by the number of messages of each read.
pub async fn receive(
    mut conn: Conn,
    mut st: SubStats,
    mut stop: watch::Receiver<bool>,
    progress: Arc<AtomicU64>,
    keep_alive: Duration,
) -> (Conn, SubStats) {
    let ping_every = if keep_alive.is_zero() {
        Duration::from_secs(3600)
    } else {
        keep_alive / 2
    };
    let mut ping = pin!(sleep_until(Instant::now() + ping_every));
    // Messages that were read along with the SUBACKs.
    if let Err(e) = drain_buffer(&mut conn, &mut st, &progress).await {
        st.error = Some(e);
        return (conn, st);
    }
    loop {
        if *stop.borrow() {
            break;
        }
        conn.reserve_for_frame();
        tokio::select! {
            biased;
            r = conn.stream.read_buf(&mut conn.rbuf) => match r {
                Ok(0) => {
                    st.error = Some("connection closed by broker".into());
                    break;
                }
                Ok(_) => {
                    if let Err(e) = drain_buffer(&mut conn, &mut st, &progress).await {
                        st.error = Some(e);
                        break;
                    }
                }
                Err(e) => {
                    st.error = Some(e.to_string());
                    break;
                }
            },
            r = stop.changed() => if r.is_err() { break },
            _ = &mut ping => {
                proto::pingreq(&mut conn.wbuf);
                if let Err(e) = conn.flush().await {
                    st.error = Some(e.to_string());
                    break;
                }
                ping.as_mut().reset(Instant::now() + ping_every);
            }
        }
    }
    (conn, st)
}

async fn drain_buffer(
    conn: &mut Conn,
    st: &mut SubStats,
    progress: &AtomicU64,
) -> Result<(), String> {
    let now = stats::now_ns();
    let before = st.received;
    let mut used = 0;
    loop {
        match proto::decode(&conn.rbuf[used..], conn.version) {
            Ok(Some((p, n))) => {
                used += n;
                st.on_packet(&p, now, &mut conn.wbuf)?;
            }
            Ok(None) => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    conn.rbuf.advance(used);
    if st.received > before {
        progress.fetch_add(st.received - before, Ordering::Relaxed);
    }
    conn.flush().await.map_err(|e| e.to_string())
}
