//! Store faults: a torn last record, corruption in the middle of a segment, a read-only
//! store directory, a full disk, and two brokers on one store.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::common::packets::*;
use super::common::raw::{Next, Raw};
use super::common::{free_port, Broker, TempDir};
use super::*;

// ---------------------------------------------------------------------------------------
// Mounts for fault injection (root / CAP_SYS_ADMIN)
// ---------------------------------------------------------------------------------------

/// A tmpfs mounted on a directory for the life of the value; unmounted on drop, also when
/// the test panics. Declare it after the directory it sits in and before the broker that
/// uses it, so that the broker is killed first and the directory removed last.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// `options` e.g. "size=2m" or "ro,size=1m". A failed mount fails the test: it needs
    /// root (or CAP_SYS_ADMIN) and never skips.
    fn mount(path: &Path, options: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("create mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(path)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `mount` ({e}): this test mounts a small tmpfs to inject store \
                     faults; it needs util-linux's mount and root (or CAP_SYS_ADMIN)"
                )
            });
        assert!(
            out.status.success(),
            "`mount -t tmpfs -o {options} tmpfs {}` failed ({}): {}\nThis test needs root (or \
             CAP_SYS_ADMIN) to mount a small tmpfs for the store; run it as root, or in a \
             container started with --cap-add SYS_ADMIN. It is not skipped.",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a process that has not exited yet): detach it lazily.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Makes `dir` unwritable for this process: `chmod 555` when that is enough (not root),
/// else a read-only tmpfs mounted over it. Checked by trying to create a file.
enum ReadOnly {
    Chmod(PathBuf),
    Mount { _tmpfs: Tmpfs },
}

impl ReadOnly {
    fn make(dir: &Path) -> ReadOnly {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir).expect("create dir");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).expect("chmod");
        let probe = dir.join("probe");
        let ro = if std::fs::write(&probe, b"x").is_err() {
            ReadOnly::Chmod(dir.to_path_buf())
        } else {
            // Root ignores permission bits: use a read-only filesystem instead.
            let _ = std::fs::remove_file(&probe);
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            ReadOnly::Mount {
                _tmpfs: Tmpfs::mount(dir, "ro,size=1m"),
            }
        };
        assert!(
            std::fs::write(&probe, b"x").is_err(),
            "{} is still writable after making it read-only",
            dir.display()
        );
        ro
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        if let ReadOnly::Chmod(dir) = self {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Fault injection
// ---------------------------------------------------------------------------------------

/// Publishes `n` QoS 1 messages "<prefix>-<i>" to `topic` (each acknowledged).
fn publish_numbered(b: &Broker, topic: &str, prefix: &str, n: u16) {
    let (mut p, _) = Raw::connect(b, &format!("{prefix}-pub"), true, 60, None);
    for i in 1..=n {
        p.publish(topic, &format!("{prefix}-{i}"), 1, i, false);
    }
    p.go_offline(b);
}

/// A last record cut short (a write torn by a crash) is cut off with a warning (the event
/// `store_torn_tail`, naming the segment); the start goes on and the records before it
/// are all there.
#[test]
fn torn_last_record_is_cut_off_and_logged() {
    let mut b = durable_broker("");
    let (mut sub, _) = Raw::connect(&b, "cut-sub", false, 60, None);
    assert_eq!(sub.subscribe(1, &[("cut/#", 1)]), [1]);
    sub.go_offline(&b);
    publish_numbered(&b, "cut/x", "cut", 10);
    let status = b.terminate().expect("exit after SIGTERM");
    assert!(status.success(), "SIGTERM exit status {status}");

    // Cut the last segment's last record in the middle: 3 bytes before the end of its
    // data (a preallocated segment's zero-filled end is not data).
    let dir = store_dir(&b);
    let last = segments(&dir)
        .pop()
        .unwrap_or_else(|| panic!("no NNNNNNNN.log segment in {}", dir.display()));
    let bytes = std::fs::read(&last).expect("read segment");
    let used = used_len(&bytes);
    assert!(
        used > 8,
        "the last segment {} holds no record to tear; segments: {}",
        last.display(),
        describe_segments(&dir)
    );
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .expect("open segment");
    f.set_len((used - 3) as u64).expect("truncate segment");
    drop(f);

    let from = b.log().len();
    b.spawn();
    let log = b.log();
    let since = &log[from..];
    let cut_file = last.display().to_string();
    assert!(
        torn_warnings(since)
            .iter()
            .any(|l| log_field(l, "file") == Some(cut_file.as_str())),
        "no store_torn_tail event naming {cut_file} after cutting 3 bytes off it:\n{since}"
    );
    loaded_since(&b, from);

    // Everything before the torn record is delivered, in order; at most the last
    // message (if the torn record was its) is missing.
    let (mut sub, present) = Raw::connect(&b, "cut-sub", false, 60, None);
    assert!(
        present,
        "the session was written long before the torn record"
    );
    let mut got = Vec::new();
    while let Next::Packet(p) = sub.next_within(QUIET) {
        let m = p.publish();
        sub.send(&ack_bytes(PUBACK, m.pkid));
        got.push(m.text());
        assert!(
            got.len() <= 20,
            "more messages than were published: {got:?}"
        );
    }
    let all: Vec<String> = (1..=10).map(|i| format!("cut-{i}")).collect();
    assert!(
        got == all || got == all[..9],
        "messages before the torn record, in order: {got:?}"
    );

    // The cut is final: the store works and the next start finds nothing torn.
    publish_numbered(&b, "cut/x", "again", 1);
    let m = sub.recv_publish();
    assert_eq!(m.text(), "again-1");
    sub.send(&ack_bytes(PUBACK, m.pkid));
    drop(sub);
    let from = b.log().len();
    terminate_and_restart(&mut b);
    let log = b.log();
    assert_eq!(
        torn_warnings(&log[from..]),
        Vec::<&str>::new(),
        "a second start still finds a torn record"
    );
}

/// Damage in the middle of a segment with valid records after it is corruption, not a
/// torn tail: midge refuses to start (exit 1) naming the segment file and the record's
/// offset, and changes nothing; with the store moved aside it starts empty.
#[test]
fn corrupt_store_stops_the_start_naming_file_and_offset() {
    let mut b = durable_broker("");
    let (mut sub, _) = Raw::connect(&b, "bad-sub", false, 60, None);
    assert_eq!(sub.subscribe(1, &[("bad/#", 1)]), [1]);
    sub.go_offline(&b);
    publish_numbered(&b, "bad/x", "bad", 40);
    let status = b.terminate().expect("exit after SIGTERM");
    assert!(status.success(), "SIGTERM exit status {status}");

    // Flip 4 bytes in the middle of the largest segment's data.
    let dir = store_dir(&b);
    let seg = segments(&dir)
        .into_iter()
        .max_by_key(|p| std::fs::read(p).map(|b| used_len(&b)).unwrap_or(0))
        .unwrap_or_else(|| panic!("no NNNNNNNN.log segment in {}", dir.display()));
    let mut bytes = std::fs::read(&seg).expect("read segment");
    let used = used_len(&bytes);
    assert!(
        used > 1000,
        "40 stored messages should make more than 1000 bytes of records; segments: {}",
        describe_segments(&dir)
    );
    let at = used / 2;
    for byte in &mut bytes[at..at + 4] {
        *byte ^= 0xA5;
    }
    std::fs::write(&seg, &bytes).expect("write damaged segment");

    let (status, err) = run_expecting_refusal(&b.config_path, b.port);
    assert_eq!(
        status.code(),
        Some(1),
        "a corrupt store must stop the start with exit status 1; stderr:\n{err}"
    );
    let line = refusal_line(&err);
    let seg_s = seg.display().to_string();
    assert!(
        line.contains(&seg_s),
        "the message names the segment {seg_s}: {line}"
    );
    let offset: usize = line
        .split("corrupt record at offset ")
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or_else(|| panic!("no \"corrupt record at offset <N>\" in: {line}"));
    assert!(
        offset <= at + 3,
        "the damaged record starts at or before the flipped bytes {at}..{}: offset {offset}",
        at + 4
    );
    assert!(!err.contains("panicked"), "midge panicked:\n{err}");
    assert_eq!(
        std::fs::read(&seg).expect("read segment"),
        bytes,
        "a refused start must not change the damaged segment"
    );

    // Moved aside, the store is started empty.
    let aside = b.dir.path().join("data.damaged");
    std::fs::rename(&dir, &aside).expect("mv data data.damaged");
    let from = b.log().len();
    b.spawn();
    let loaded = loaded_since(&b, from);
    assert_eq!(
        (loaded.sessions, loaded.queued, loaded.retained),
        (0, 0, 0),
        "an empty store: {}",
        loaded.line
    );
    let (_sub, present) = Raw::connect(&b, "bad-sub", false, 60, None);
    assert!(!present, "the damaged store's session is not there");
    assert!(aside.join(seg.file_name().unwrap()).exists());
}

/// A store directory that cannot be written refuses the start (exit 1), naming it.
#[test]
fn read_only_store_directory_refuses_to_start() {
    let scratch = TempDir::new("ro-store");
    let store = scratch.path().join("store");
    let _ro = ReadOnly::make(&store);
    let config = scratch.path().join("midge.toml");
    let port = free_port();
    std::fs::write(
        &config,
        format!(
            "{BASE}[persistence]\npath = \"{}\"\nsync = \"always\"\n\n[[listener]]\n\
             bind = \"127.0.0.1\"\nport = {port}\n",
            store.display()
        ),
    )
    .expect("write config");
    let (status, err) = run_expecting_refusal(&config, port);
    assert_eq!(
        status.code(),
        Some(1),
        "a read-only store directory must stop the start with exit status 1; stderr:\n{err}"
    );
    let line = refusal_line(&err);
    assert!(
        line.contains(&store.display().to_string()),
        "the message names the store directory {}: {line}",
        store.display()
    );
    assert!(!err.contains("panicked"), "midge panicked:\n{err}");
}

/// A store on a 2 MiB tmpfs fills up: the 3.1.1 publisher of the message that could not
/// be stored is disconnected without its PUBACK, a 5.0 publisher gets reason 0x80 / 0x97
/// (PUBACK and PUBREC) and stays connected, an error naming the store is logged, and
/// QoS 0 and clean-session traffic goes on: nobody else is disconnected and the process
/// keeps running.
#[test]
fn full_disk_is_never_acknowledged_and_others_keep_working() {
    let scratch = TempDir::new("full-disk");
    let mnt = scratch.path().join("mnt");
    let _tmpfs = Tmpfs::mount(&mnt, "size=2m");
    let store = mnt.join("store");
    let mut b = Broker::start(&format!(
        "{BASE}[persistence]\npath = \"{}\"\nsync = \"always\"\n",
        store.display()
    ));

    // A persistent subscriber, offline: what is published to full/# must be stored.
    let (mut sub, _) = Raw::connect(&b, "full-sub", false, 60, None);
    assert_eq!(sub.subscribe(1, &[("full/#", 1)]), [1]);
    sub.go_offline(&b);
    // A clean-session QoS 0 pair, connected throughout.
    let (mut live_sub, _) = Raw::connect(&b, "live-sub", true, 60, None);
    assert_eq!(live_sub.subscribe(1, &[("live/#", 0)]), [0]);
    let (mut live_pub, _) = Raw::connect(&b, "live-pub", true, 60, None);
    live_pub.publish("live/x", "before", 0, 0, false);
    assert_eq!(live_sub.recv_publish().text(), "before");

    // Fill the store with 64 KiB messages until one cannot be stored (2 MiB: at most ~32).
    let payload = "x".repeat(64 * 1024);
    let (mut filler, _) = Raw::connect(&b, "fill-311", true, 60, None);
    let mut acked = 0;
    let mut refused = None;
    for i in 1..=200u16 {
        let bytes = publish311("full/data", payload.as_bytes(), 1, i, false, false);
        if filler.s.write_all(&bytes).is_err() {
            refused = Some(i);
            break;
        }
        match filler.next_within(WAIT) {
            Next::Packet(p) => {
                p.assert_ack(PUBACK, i);
                acked += 1;
            }
            Next::Closed => {
                refused = Some(i);
                break;
            }
            Next::Quiet => panic!(
                "message {i}: neither a PUBACK nor a disconnect within {WAIT:?}; log:\n{}",
                b.log_tail(30)
            ),
        }
    }
    let refused = refused
        .unwrap_or_else(|| panic!("200 messages of 64 KiB were all acknowledged on a 2 MiB store"));
    assert!(
        acked >= 1,
        "the store refused the very first message: the test never saw it working"
    );
    println!("3.1.1 publisher: {acked} acknowledged, disconnected at message {refused}");
    assert!(b.is_running(), "midge exited when the store filled up");
    assert!(
        b.wait_event("store_failed", WAIT),
        "no store_failed error; log:\n{}",
        b.log_tail(30)
    );

    // A 5.0 publisher is told: reason 0x80 or 0x97, and keeps its connection.
    let (mut v5, _) = Raw::connect5(b.addr(), "fill-5", true, &session_expiry(None));
    let mut refused5 = None;
    for i in 1..=200u16 {
        v5.send(&publish5("full/data", 1, i, false, &[], payload.as_bytes()));
        let ack = v5.recv();
        assert_eq!((ack.kind(), ack.pkid()), (PUBACK, i), "{ack:?}");
        match ack.reason5() {
            0 => {}
            0x80 | 0x97 => {
                refused5 = Some(ack.reason5());
                break;
            }
            other => panic!("PUBACK reason {other:#04x}: expected 0, 0x80 or 0x97"),
        }
    }
    assert!(
        refused5.is_some(),
        "a 5.0 QoS 1 publisher never got 0x80 / 0x97 from a full store"
    );
    v5.send(&publish5(
        "full/data",
        2,
        500,
        false,
        &[],
        payload.as_bytes(),
    ));
    let rec = v5.recv();
    assert_eq!((rec.kind(), rec.pkid()), (PUBREC, 500), "{rec:?}");
    assert!(
        matches!(rec.reason5(), 0x80 | 0x97),
        "a QoS 2 message that cannot be stored: PUBREC reason 0x80 or 0x97, got {rec:?}"
    );
    v5.ping();

    // Everything else goes on.
    assert!(b.is_running(), "midge exited");
    live_pub.publish("live/x", "after", 0, 0, false);
    assert_eq!(live_sub.recv_publish().text(), "after");
    // QoS 1 to an online clean session only: nothing to store, acknowledged as usual.
    live_pub.publish("live/y", "clean qos 1", 1, 1, false);
    assert_eq!(live_sub.recv_publish().text(), "clean qos 1");
    live_sub.ping();
    live_pub.ping();
    let (mut fresh, _) = Raw::connect(&b, "late-client", true, 60, None);
    fresh.ping();
}

/// One midge per store: a second one on the same directory refuses to start (exit 1,
/// naming the directory) and leaves the store alone; the lock goes with the process, so a
/// restart after SIGKILL is not refused.
#[test]
fn second_broker_on_the_same_store_refuses_to_start() {
    let mut a = durable_broker("");
    let store = store_dir(&a);
    assert!(
        store.join("lock").exists(),
        "no lock file in {}",
        store.display()
    );
    let (mut sub, _) = Raw::connect(&a, "lock-sub", false, 60, None);
    assert_eq!(sub.subscribe(1, &[("lock/#", 1)]), [1]);
    sub.go_offline(&a);
    publish_numbered(&a, "lock/x", "lock", 1);

    let scratch = TempDir::new("second");
    let config = scratch.path().join("midge.toml");
    let port = free_port();
    std::fs::write(
        &config,
        format!(
            "{BASE}[persistence]\npath = \"{}\"\n\n[[listener]]\nbind = \"127.0.0.1\"\nport = {port}\n",
            store.display()
        ),
    )
    .expect("write config");
    let (status, err) = run_expecting_refusal(&config, port);
    assert_eq!(
        status.code(),
        Some(1),
        "a second midge on the same store must exit 1; stderr:\n{err}"
    );
    let line = refusal_line(&err);
    assert!(
        line.contains(&store.display().to_string()),
        "the message names the store {}: {line}",
        store.display()
    );

    // The first one is unaffected, and so is its store.
    assert!(a.is_running());
    publish_numbered(&a, "lock/x", "still", 1);
    let loaded = kill_and_restart(&mut a);
    assert_eq!(loaded.queued, 2, "{}", loaded.line);
    let (mut sub, present) = Raw::connect(&a, "lock-sub", false, 60, None);
    assert!(present);
    let got: Vec<String> = sub
        .drain_until(|m| m.text() == "still-1", WAIT, QUIET)
        .iter()
        .map(RawPub::text)
        .collect();
    assert_eq!(got, ["lock-1", "still-1"]);
}
