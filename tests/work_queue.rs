//! examples/work_queue.rs against midge: three workers share `$share/workers/jobs/resize`
//! with manual acknowledgements and Receive Maximum 1, one of them is killed (SIGKILL) in
//! the middle of its job, and every job still completes, on the workers that are left.
//! `cargo test` builds the examples next to the test binaries (target/<profile>/examples/).

mod common;

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

const JOBS: u64 = 12;
const WORKERS: [&str; 3] = ["w1", "w2", "w3"];

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/<this test> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().expect("current exe");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "example binary {} not built: plain `cargo test` builds the examples, \
         with `--test work_queue` first run `cargo build --example work_queue`",
        path.display()
    );
    path
}

/// The example's processes, each named by its `--id`; every one is killed and reaped on
/// drop, also when an assertion fails.
struct Processes {
    children: Vec<(String, Child)>,
    /// Every line any of them printed, as (id, line); stderr lines start with "stderr: ".
    lines: Sender<(String, String)>,
}

impl Processes {
    fn start(&mut self, port: u16, id: &str, args: &[&str]) {
        let mut child = Command::new(example("work_queue"))
            .args(["--port", &port.to_string(), "--id", id])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the work_queue example");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        self.forward(id, stdout, "");
        self.forward(id, stderr, "stderr: ");
        self.children.push((id.to_string(), child));
    }

    /// Reads a pipe on its own thread, so a child never blocks on a full pipe and the test
    /// never blocks on a silent child.
    fn forward(&self, id: &str, pipe: impl Read + Send + 'static, prefix: &'static str) {
        let (id, tx) = (id.to_string(), self.lines.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if tx.send((id.clone(), format!("{prefix}{line}"))).is_err() {
                    break;
                }
            }
        });
    }

    fn kill(&mut self, id: &str) {
        if let Some((_, child)) = self.children.iter_mut().find(|(name, _)| name == id) {
            let _ = child.kill(); // SIGKILL: no DISCONNECT, no chance to acknowledge
            let _ = child.wait();
        }
    }

    fn running(&mut self, id: &str) -> bool {
        self.children
            .iter_mut()
            .any(|(name, child)| name == id && matches!(child.try_wait(), Ok(None)))
    }

    /// Waits (bounded) for a process to exit and returns whether it exited with success.
    fn exited_ok(&mut self, id: &str, timeout: Duration) -> bool {
        let (_, child) = self
            .children
            .iter_mut()
            .find(|(name, _)| name == id)
            .expect("known process");
        matches!(common::wait_child(child, timeout), Some(s) if s.success())
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Everything printed so far, for failure messages.
struct Transcript {
    rx: Receiver<(String, String)>,
    seen: Vec<(String, String)>,
}

impl Transcript {
    /// The next line, or None once `deadline` passes.
    fn next(&mut self, deadline: Instant) -> Option<(String, String)> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(line) => {
                self.seen.push(line.clone());
                Some(line)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    fn text(&mut self) -> String {
        while let Ok(line) = self.rx.try_recv() {
            self.seen.push(line);
        }
        self.seen
            .iter()
            .map(|(id, line)| format!("  [{id}] {line}\n"))
            .collect()
    }
}

/// midge's `subscribed` event for `client_id`'s subscription to its jobs filter: the
/// tracker reads `jobs/done`, the workers share `jobs/resize`.
fn subscribed(broker: &common::Broker, client_id: &str) -> bool {
    let filter = if client_id == "tracker" {
        "jobs/done"
    } else {
        "$share/workers/jobs/resize"
    };
    broker.event_count(
        "subscribed",
        &[("client_id", client_id), ("filter", filter)],
    ) > 0
}

/// The number after `word` in a line such as "worker w1 started job 7".
fn number_after(line: &str, word: &str) -> Option<u64> {
    let rest = &line[line.find(word)? + word.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn work_queue_killed_worker_job_is_redelivered_and_every_job_completes() {
    let broker = common::Broker::start("");
    let (tx, rx) = mpsc::channel();
    let mut procs = Processes {
        children: Vec::new(),
        lines: tx,
    };
    let mut out = Transcript {
        rx,
        seen: Vec::new(),
    };

    // The tracker and three workers, each subscribed before any job is published.
    procs.start(
        broker.port,
        "tracker",
        &["--role", "tracker", "--expect", &JOBS.to_string()],
    );
    for w in WORKERS {
        procs.start(broker.port, w, &["--role", "worker", "--work-ms", "300"]);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in ["tracker"].iter().chain(&WORKERS) {
        while !subscribed(&broker, id) {
            assert!(
                Instant::now() < deadline && procs.running(id),
                "{id} never subscribed; example output:\n{}\nmidge log:\n{}",
                out.text(),
                broker.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    procs.start(
        broker.port,
        "uploader",
        &["--role", "uploader", "--jobs", &JOBS.to_string()],
    );

    // Kill the first worker that starts a job, in the middle of it (the job takes 300 ms),
    // then wait for the tracker to see every job done and the uploader to finish.
    let mut killed: Option<(String, u64)> = None;
    let mut finished_by = HashSet::new();
    let mut done_by = Vec::new(); // (file id, worker) as the tracker reports them
    let (mut all_done, mut uploaded) = (false, false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(all_done && uploaded) {
        let Some((id, line)) = out.next(deadline) else {
            break;
        };
        if WORKERS.contains(&id.as_str()) {
            if let Some(job) = number_after(&line, "started job") {
                if killed.is_none() {
                    procs.kill(&id);
                    killed = Some((id.clone(), job));
                }
            }
            if line.contains("finished job") {
                finished_by.insert(id.clone());
            }
        }
        if id == "tracker" {
            if let Some(job) = number_after(&line, "job") {
                let by = line.rsplit(' ').next().unwrap_or_default().to_string();
                done_by.push((job, by));
            }
            all_done |= line.contains(&format!("all {JOBS} jobs done"));
        }
        if id == "uploader" {
            uploaded |= line.contains(&format!("{JOBS} of {JOBS} jobs acknowledged"));
        }
    }
    let transcript = out.text();
    let log = broker.log();

    let (victim, victim_job) =
        killed.unwrap_or_else(|| panic!("no worker started a job:\n{transcript}\n{log}"));
    assert!(
        uploaded,
        "the uploader did not get all {JOBS} PUBACKs:\n{transcript}"
    );
    assert!(
        procs.exited_ok("uploader", Duration::from_secs(10)),
        "uploader failed:\n{transcript}"
    );
    let done: BTreeSet<u64> = done_by.iter().map(|(job, _)| *job).collect();
    let expected: BTreeSet<u64> = (1..=JOBS).collect();
    assert_eq!(
        done, expected,
        "jobs the tracker saw done (worker {victim} was killed during job {victim_job}):\n\
         {transcript}\nmidge log:\n{log}"
    );
    assert!(
        all_done,
        "the tracker did not report all {JOBS} jobs done:\n{transcript}"
    );
    assert!(
        procs.exited_ok("tracker", Duration::from_secs(10)),
        "tracker failed:\n{transcript}"
    );
    // The killed worker never finished its job: another member of the group did.
    assert!(
        !transcript.contains(&format!("[{victim}] worker {victim} finished job")),
        "{victim} finished a job before it was killed, so nothing was redelivered:\n{transcript}"
    );
    assert!(
        done_by
            .iter()
            .any(|(job, by)| *job == victim_job && *by != victim),
        "job {victim_job} of the killed worker {victim} was not completed by another worker:\n\
         {transcript}"
    );
    // The load was shared: both surviving workers finished jobs.
    assert!(
        finished_by.len() >= 2,
        "only {finished_by:?} finished jobs:\n{transcript}"
    );
}
