//! A work queue on MQTT 5.0: an uploader hands out jobs, a pool of workers shares them, a
//! tracker watches them complete. One binary, three roles:
//!
//!     cargo run --example work_queue -- --role worker --id w1          # start 1..n workers
//!     cargo run --example work_queue -- --role worker --id w2
//!     cargo run --example work_queue -- --role tracker --expect 10     # optional
//!     cargo run --example work_queue -- --role uploader --jobs 10
//!
//! Flags: `--host` (127.0.0.1), `--port` (1883), `--id` (`<role>-<pid>`, also the client id),
//! `--jobs` (uploader, 10), `--work-ms` (worker, 100), `--max-jobs` (worker, 0 = until
//! killed), `--expect` (tracker, 10).
//!
//! Jobs go to `jobs/resize`. The workers subscribe to `$share/workers/jobs/resize`, a
//! shared subscription: the broker gives each job to one member of the group `workers`, not
//! to all of them. A worker reports each finished job on `jobs/done`, which the tracker
//! prints. Start the workers before the uploader: a job published while nobody is
//! subscribed has nowhere to go and is dropped (its PUBACK says "no matching subscribers").

use std::collections::HashSet;
use std::error::Error;
use std::io::Write;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, Publish, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use rumqttc::Outgoing;
use tokio::sync::mpsc;

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

const JOBS: &str = "jobs/resize";
const WORKERS: &str = "$share/workers/jobs/resize";
const DONE: &str = "jobs/done";

struct Args {
    role: String,
    host: String,
    port: u16,
    id: String,
    jobs: u64,
    work: Duration,
    max_jobs: u64,
    expect: usize,
}

fn args() -> std::result::Result<Args, String> {
    let mut a = Args {
        role: String::new(),
        host: "127.0.0.1".into(),
        port: 1883,
        id: String::new(),
        jobs: 10,
        work: Duration::from_millis(100),
        max_jobs: 0,
        expect: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: std::num::ParseIntError| format!("{flag}: {e}");
        match flag.as_str() {
            "--role" => a.role = value,
            "--host" => a.host = value,
            "--port" => a.port = value.parse().map_err(bad)?,
            "--id" => a.id = value,
            "--jobs" => a.jobs = value.parse().map_err(bad)?,
            "--work-ms" => a.work = Duration::from_millis(value.parse().map_err(bad)?),
            "--max-jobs" => a.max_jobs = value.parse().map_err(bad)?,
            "--expect" => a.expect = value.parse().map_err(bad)?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if !["uploader", "worker", "tracker"].contains(&a.role.as_str()) {
        return Err("--role must be uploader, worker or tracker".into());
    }
    if a.id.is_empty() {
        a.id = format!("{}-{}", a.role, std::process::id());
    }
    Ok(a)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("work_queue: {e}");
            std::process::exit(2);
        }
    };
    let run = match a.role.as_str() {
        "uploader" => uploader(&a).await,
        "worker" => worker(&a).await,
        _ => tracker(&a).await,
    };
    if let Err(e) = run {
        eprintln!("work_queue {}: {e}", a.id);
        std::process::exit(1);
    }
}

/// Prints a line at once, even when stdout is a pipe (another program may be waiting for it).
fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Publishes `--jobs` resize jobs to `jobs/resize` at QoS 1, one at a time, each after the
/// broker acknowledged the previous one.
///
/// A job is a few bytes, `{"file_id": 7, "type": "resize"}`: the image itself is not in the
/// message. A broker refuses any packet larger than its `max_packet_size` (8 MiB in midge by
/// default; a client may announce a smaller limit for what it receives), and big payloads
/// would sit in the queue of every worker that has not taken them yet. So the uploader first
/// puts the file into object storage (S3, MinIO, a shared disk) and the job carries only its
/// id or URL; the worker fetches the file from there.
async fn uploader(a: &Args) -> Result<()> {
    let (client, mut eventloop) = AsyncClient::new(MqttOptions::new(&a.id, &a.host, a.port), 10);
    let mut acked = 0;
    for file_id in 1..=a.jobs {
        let job = format!(r#"{{"file_id": {file_id}, "type": "resize"}}"#);
        client.publish(JOBS, QoS::AtLeastOnce, false, job).await?;
        // Drive the connection until this job's PUBACK arrives.
        let reason = loop {
            if let Event::Incoming(Packet::PubAck(ack)) = eventloop.poll().await? {
                break ack.reason;
            }
        };
        acked += 1;
        match reason {
            PubAckReason::Success => say(format!("uploader: job {file_id} accepted")),
            PubAckReason::NoMatchingSubscribers => say(format!(
                "uploader: job {file_id} accepted, but no worker is subscribed"
            )),
            other => say(format!("uploader: job {file_id} refused: {other:?}")),
        }
    }
    client.disconnect().await?;
    while !matches!(
        eventloop.poll().await?,
        Event::Outgoing(Outgoing::Disconnect)
    ) {}
    say(format!("uploader: {acked} of {} jobs acknowledged", a.jobs));
    Ok(())
}

/// Takes jobs from the shared subscription, one at a time, until killed or `--max-jobs`.
async fn worker(a: &Args) -> Result<()> {
    let mut options = MqttOptions::new(&a.id, &a.host, a.port);
    options.set_clean_start(true);
    // Acknowledge a job only once it is processed, not when it arrives. If this worker dies
    // halfway, the job is still unacknowledged, so the broker gives it to another member of
    // the group: every job is processed at least once (possibly twice, if the worker dies
    // between reporting it done and acknowledging it, so processing should be idempotent).
    options.set_manual_acks(true);
    // Receive Maximum 1: the broker sends this worker no second job while the first one is
    // unacknowledged. Jobs wait at the broker, not in a busy worker's queue, and go to
    // whichever worker is free: adding workers spreads the load, a slow worker takes fewer.
    options.set_receive_maximum(Some(1));
    let (client, eventloop) = AsyncClient::new(options, 10);
    client.subscribe(WORKERS, QoS::AtLeastOnce).await?;

    // The connection runs on its own task, so keep-alives go on while a job is worked on.
    let (jobs_tx, mut jobs) = mpsc::unbounded_channel();
    let network = tokio::spawn(receive(eventloop, jobs_tx, a.id.clone()));

    let mut done = 0;
    while let Some(job) = jobs.recv().await {
        let Some(file_id) = field(&job.payload, "file_id") else {
            eprintln!("worker {}: malformed job {:?}, dropped", a.id, job.payload);
            client.ack(&job).await?;
            continue;
        };
        say(format!("worker {} started job {file_id}", a.id));
        tokio::time::sleep(a.work).await; // fetch the file, resize it, store the result
        let report = format!(r#"{{"file_id": {file_id}, "worker": "{}"}}"#, a.id);
        client
            .publish(DONE, QoS::AtLeastOnce, false, report)
            .await?;
        // After the report: requests leave in order on one connection, so the broker has the
        // report before it sees the acknowledgement that retires the job.
        client.ack(&job).await?;
        say(format!("worker {} finished job {file_id}", a.id));
        done += 1;
        if done == a.max_jobs {
            break; // a job that arrived meanwhile is unacknowledged: another worker gets it
        }
    }
    // Here after `--max-jobs`, or when the connection failed (`receive` returns the error).
    // A worker does not reconnect by itself; run it under a supervisor that restarts it.
    let _ = client.disconnect().await;
    network.await?
}

/// Polls a worker's connection and hands each job to the worker loop.
async fn receive(
    mut eventloop: rumqttc::v5::EventLoop,
    jobs: mpsc::UnboundedSender<Publish>,
    id: String,
) -> Result<()> {
    loop {
        match eventloop.poll().await? {
            Event::Incoming(Packet::Publish(job)) => jobs.send(job)?,
            Event::Incoming(Packet::SubAck(ack)) => match ack.return_codes.first() {
                Some(SubscribeReasonCode::Success(_)) => {
                    say(format!("worker {id} waiting for jobs on {WORKERS}"))
                }
                other => return Err(format!("subscription refused: {other:?}").into()),
            },
            Event::Outgoing(Outgoing::Disconnect) => return Ok(()),
            _ => {}
        }
    }
}

/// Prints every report on `jobs/done`; exits once `--expect` distinct jobs are done.
async fn tracker(a: &Args) -> Result<()> {
    let (client, mut eventloop) = AsyncClient::new(MqttOptions::new(&a.id, &a.host, a.port), 10);
    client.subscribe(DONE, QoS::AtLeastOnce).await?;
    let mut done = HashSet::new();
    loop {
        match eventloop.poll().await? {
            Event::Incoming(Packet::SubAck(_)) => say(format!("tracker waiting for {DONE}")),
            Event::Incoming(Packet::Publish(report)) => {
                let file_id = field(&report.payload, "file_id").unwrap_or("?");
                let by = field(&report.payload, "worker").unwrap_or("?");
                say(format!("tracker: job {file_id} done by {by}"));
                // A job may be reported twice (at-least-once): count each file once.
                done.insert(file_id.to_string());
                if done.len() == a.expect {
                    say(format!("tracker: all {} jobs done", a.expect));
                    client.disconnect().await?;
                }
            }
            Event::Outgoing(Outgoing::Disconnect) => return Ok(()),
            _ => {}
        }
    }
}

/// The value of `"key": value` in a small flat JSON object (numbers and plain strings).
/// Enough for this example; a real service would use serde_json.
fn field<'a>(json: &'a [u8], key: &str) -> Option<&'a str> {
    let json = std::str::from_utf8(json).ok()?;
    let at = json.find(&format!("\"{key}\""))? + key.len() + 2;
    let value = json[at..].trim_start().strip_prefix(':')?;
    let end = value.find([',', '}'])?;
    Some(value[..end].trim().trim_matches('"')).filter(|v| !v.is_empty())
}
