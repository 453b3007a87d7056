//! What the harness watches while an attack runs: the broker's resident memory (sampled,
//! with a safety cap that kills the broker rather than the machine) and a healthy client
//! that connects, subscribes, publishes QoS 1 to itself and waits for its message, again
//! and again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::raw::{Raw, Read, PUBACK, PUBLISH, SUBACK};
use crate::procs;
use crate::proto::{self, ConnectFields, Version};

/// Samples VmRSS every 50 ms into `peak_kib`; kills the broker (SIGKILL) once it passes
/// `cap_kib` and sets `capped`. A thread of its own, so that a busy attacker cannot make
/// it miss the peak.
pub struct RssWatch {
    pub peak_kib: Arc<AtomicU64>,
    pub capped: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl RssWatch {
    pub fn start(pid: u32, cap_kib: u64) -> RssWatch {
        let peak_kib = Arc::new(AtomicU64::new(procs::status_kib(pid, "VmRSS").unwrap_or(0)));
        let capped = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, c, s) = (peak_kib.clone(), capped.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Some(rss) = procs::status_kib(pid, "VmRSS") else {
                    return;
                };
                p.fetch_max(rss, Ordering::Relaxed);
                if rss > cap_kib {
                    c.store(true, Ordering::Relaxed);
                    // SAFETY: kill(2) on the broker this harness started.
                    unsafe {
                        libc::kill(pid as libc::pid_t, libc::SIGKILL);
                    }
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssWatch {
            peak_kib,
            capped,
            stop,
            thread,
        }
    }

    pub fn finish(self) -> (u64, bool) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        (
            self.peak_kib.load(Ordering::Relaxed),
            self.capped.load(Ordering::Relaxed),
        )
    }
}

/// How long one healthy round trip may take before it counts as failed.
pub const PROBE_LIMIT: Duration = Duration::from_secs(5);

/// One healthy client round trip: TCP connect, CONNECT/CONNACK (with `creds` when the
/// broker has a password file), SUBSCRIBE to its own topic, PUBLISH QoS 1 to it, PUBACK
/// and the message back, DISCONNECT. The time it took, or why it failed.
pub async fn probe(
    addr: SocketAddr,
    creds: Option<(&str, &str)>,
    n: u64,
) -> Result<Duration, String> {
    let t0 = Instant::now();
    let until = t0 + PROBE_LIMIT;
    let id = format!("healthy-{n}");
    let f = ConnectFields {
        client_id: id.as_bytes(),
        clean: true,
        keep_alive: 60,
        username: creds.map(|c| c.0),
        password: creds.map(|c| c.1.as_bytes()),
        props: &[],
    };
    let fut = async {
        // The healthy client is another device than the attacker: its own loopback
        // address (brokers may share out per-address resources, as midge's password
        // checks are).
        let from = Some(std::net::IpAddr::from([127, 0, 0, 3]));
        let (mut c, code) = Raw::connect_from(addr, Version::V311, &f, PROBE_LIMIT, from).await?;
        if code != 0 {
            return Err(format!("CONNACK {code:#04x}"));
        }
        let topic = format!("healthy/{n}");
        let mut b = Vec::new();
        proto::subscribe(&mut b, Version::V311, 1, &[topic.as_str()], 1);
        proto::publish_with(
            &mut b,
            Version::V311,
            topic.as_bytes(),
            1,
            false,
            2,
            &[],
            b"ping",
        );
        c.send(&b).await?;
        let (mut subacked, mut acked, mut got) = (false, false, false);
        while !(subacked && acked && got) {
            match c.read_until(until).await {
                Read::Got(p) => match p.kind() {
                    SUBACK => subacked = true,
                    PUBACK => acked = true,
                    PUBLISH => {
                        got = true;
                        if (p.first >> 1) & 3 == 1 {
                            // Topic (length-prefixed), then the packet id.
                            let tlen = usize::from(u16::from_be_bytes([p.body[0], p.body[1]]));
                            if let Some(id) = p.body.get(2 + tlen..4 + tlen) {
                                let mut a = Vec::new();
                                proto::ack(
                                    &mut a,
                                    proto::PUBACK,
                                    u16::from_be_bytes([id[0], id[1]]),
                                );
                                let _ = c.send(&a).await;
                            }
                        }
                    }
                    _ => {}
                },
                other => return Err(super::raw::describe(&other)),
            }
        }
        let mut bye = Vec::new();
        proto::disconnect(&mut bye);
        let _ = c.send(&bye).await;
        Ok(t0.elapsed())
    };
    match tokio::time::timeout_at(until, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("no round trip within {PROBE_LIMIT:?}")),
    }
}

/// Healthy round trips during the attack.
#[derive(Debug, Default, Clone)]
pub struct Health {
    pub ok_ms: Vec<f64>,
    pub failed: usize,
    pub first_error: Option<String>,
}

impl Health {
    pub fn p50(&self) -> Option<f64> {
        quantile(&self.ok_ms, 0.5)
    }
    pub fn max(&self) -> Option<f64> {
        self.ok_ms.iter().copied().reduce(f64::max)
    }
}

pub fn quantile(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    Some(s[((s.len() - 1) as f64 * q).round() as usize])
}

/// Runs healthy round trips back to back (one every 250 ms at most) until `stop`, on a
/// thread and runtime of its own: the attacker's work must not delay it, only the
/// broker's.
pub fn prober(
    addr: SocketAddr,
    creds: Option<(String, String)>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Health> {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return Health::default();
        };
        rt.block_on(async move {
            let mut h = Health::default();
            let mut n = 1000;
            // At least one round trip, however short the attack.
            loop {
                let t = Instant::now();
                n += 1;
                match probe(
                    addr,
                    creds.as_ref().map(|c| (c.0.as_str(), c.1.as_str())),
                    n,
                )
                .await
                {
                    Ok(d) => h.ok_ms.push(d.as_secs_f64() * 1e3),
                    Err(e) => {
                        h.failed += 1;
                        h.first_error.get_or_insert(e);
                    }
                }
                tokio::time::sleep_until(t + Duration::from_millis(250)).await;
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            h
        })
    })
}
