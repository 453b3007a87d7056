//! The durable store over a real directory: reclaiming, stats, formats, sizes.
use super::*;
use crate::codec::QoS;
use crate::message::Message;
use bytes::Bytes;
use std::sync::Arc;

fn config(dir: &std::path::Path) -> Persistence {
    Persistence {
        enabled: true,
        path: Some(dir.to_path_buf()),
        sync: SyncMode::Never,
        sync_interval_ms: 1000,
        max_disk_bytes: crate::config::DiskLimit::Share(90),
    }
}

/// Bytes of the files in `dir` (the log's; the spool directory's are not counted).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Records a QoS 1 message on `topic` queued for `session` as `seq`, in memory or (with
/// `spool`) in its spool: the commit, if the store wrote one.
fn enqueue(
    store: &DurableStore,
    session: u64,
    seq: u64,
    topic: &str,
    payload: Bytes,
    spool: bool,
) -> Option<Commit> {
    let msg = Arc::new(Message::with_props(
        topic,
        payload,
        QoS::AtLeastOnce,
        false,
        None,
    ));
    store
        .record(StoreEvent::Enqueued {
            session,
            seq,
            message: &msg,
            qos: QoS::AtLeastOnce,
            retain: false,
            extra: None,
            spool,
        })
        .unwrap()
}

/// Records a QoS 1 message queued for `session` as `seq`, then sent with a packet id
/// made from `seq`: the commit of the send, if the store wrote it.
fn store_and_send(
    store: &DurableStore,
    session: u64,
    seq: u64,
    topic: &str,
    payload: &Bytes,
) -> Option<Commit> {
    enqueue(store, session, seq, topic, payload.clone(), false);
    let pkid = u16::try_from(seq % 60_000).unwrap() + 1;
    store
        .record(StoreEvent::Sent { session, seq, pkid })
        .unwrap()
}

#[test]
fn delivered_messages_are_reclaimed_and_the_undelivered_survive() {
    let dir = std::env::temp_dir().join(format!("midge-durable-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut store, _) = DurableStore::open(&config(&dir)).unwrap();
    store.compact_min = 64 * 1024;
    let session = 1;
    fn rec(s: &DurableStore, e: StoreEvent<'_>) -> Option<Commit> {
        s.record(e).unwrap()
    }
    rec(
        &store,
        StoreEvent::SessionOpened {
            session,
            client_id: "sub",
            owner: None,
            expiry: u32::MAX,
        },
    );
    // 20 MiB pass through; everything but the last 10 messages is acknowledged.
    let payload = Bytes::from(vec![7u8; 1024]);
    let mut last = 0;
    for seq in 1..=20_000u64 {
        last = store_and_send(&store, session, seq, &format!("t/{seq}"), &payload).unwrap_or(last);
        if seq <= 19_990 {
            rec(&store, StoreEvent::Removed { session, seq });
        }
    }
    store.log.wait(last).unwrap();
    let size = dir_bytes(&dir);
    assert!(
        size < 2 * 1024 * 1024,
        "store holds {size} bytes after 20 MiB passed"
    );
    let stats = store.stats().expect("a durable store has stats");
    assert!(stats.compactions > 0, "{stats:?}");
    assert_eq!(stats.bytes_on_disk, size, "{stats:?}");
    store.close().unwrap();
    drop(store);
    let (store, loaded) = DurableStore::open(&config(&dir)).unwrap();
    assert_eq!((loaded.sessions, loaded.queued), (1, 10));
    let st = store.state();
    let queue = &st.sessions[&session].queue;
    assert_eq!(
        queue.keys().copied().collect::<Vec<_>>(),
        (19_991..=20_000).collect::<Vec<_>>()
    );
    assert!(queue.values().all(|e| e.pkid.is_some()));
    drop(st);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stats_count_commits_fsyncs_batches_and_segments() {
    let dir = std::env::temp_dir().join(format!("midge-durable-stats-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut p = config(&dir);
    p.sync = SyncMode::Always;
    let (store, _) = DurableStore::open(&p).unwrap();
    for session in 1..=3 {
        let commit = store
            .record(StoreEvent::SessionOpened {
                session,
                client_id: "c",
                owner: None,
                expiry: u32::MAX,
            })
            .unwrap()
            .unwrap();
        store.log.wait(commit).unwrap();
    }
    let s = store.stats().expect("a durable store has stats");
    // One write per wait above (group commit: each waited for alone).
    assert!(s.commits >= 3, "{s:?}");
    assert_eq!(s.batch_bytes.count, s.commits, "{s:?}");
    assert!(s.fsync_seconds.count >= 3, "{s:?}");
    assert_eq!(s.segments, 1, "{s:?}");
    assert_eq!(s.bytes_on_disk, dir_bytes(&dir) - lock_bytes(&dir), "{s:?}");
    assert_eq!((s.compactions, s.failures, s.failed), (0, 0, false));
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bytes of the files in `dir` that are not segments (the lock file).
fn lock_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".log"))
        .filter(|e| e.metadata().unwrap().is_file())
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn a_format_1_store_is_refused_with_a_message_not_misread() {
    let dir = std::env::temp_dir().join(format!("midge-durable-v1-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    {
        let (store, _) = DurableStore::open(&config(&dir)).unwrap();
        // Format 1's SessionOpened: tag 1, the client id, the expiry.
        let old = [1, 3, 0, 0, 0, b'd', b'e', b'v', 0xFF, 0xFF, 0xFF, 0xFF];
        let c = store.log.append(&[&old]).unwrap();
        store.log.wait(c).unwrap();
        store.close().unwrap();
    }
    let e = DurableStore::open(&config(&dir)).err().expect("refused");
    assert!(
        e.contains("store format 1") && e.contains("00000001.log"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bytes the log grows by per 64-byte QoS 1 message delivered to a persistent
/// session (stored, sent, acknowledged), with a client id of `id_len` bytes.
fn log_bytes_per_message(id_len: usize) -> u64 {
    let dir = std::env::temp_dir().join(format!(
        "midge-durable-size-{}-{id_len}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let (store, _) = DurableStore::open(&config(&dir)).unwrap();
    let client_id = "c".repeat(id_len);
    let client_id = client_id.as_str();
    let session = 1;
    let mut last = store
        .record(StoreEvent::SessionOpened {
            session,
            client_id,
            owner: Some("alice"),
            expiry: u32::MAX,
        })
        .unwrap()
        .unwrap();
    store.log.wait(last).unwrap();
    let before = dir_bytes(&dir);
    const N: u64 = 100;
    let payload = Bytes::from(vec![7u8; 64]);
    for seq in 1..=N {
        store_and_send(
            &store,
            session,
            seq,
            "sensors/dev-0001/temperature",
            &payload,
        )
        .expect("a commit");
        last = store
            .record(StoreEvent::Removed { session, seq })
            .unwrap()
            .unwrap();
    }
    store.log.wait(last).unwrap();
    let per = (dir_bytes(&dir) - before) / N;
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    per
}

#[test]
fn log_bytes_per_message_do_not_grow_with_the_client_id() {
    let short = log_bytes_per_message(16);
    let long = log_bytes_per_message(60 * 1024);
    eprintln!("log bytes per 64-byte QoS 1 message: client id 16 B: {short}, 60 KiB: {long}");
    // The session is named by number: the client id is written once, when the
    // session opens. (Store format 1 wrote it in three records per message: 262
    // bytes with a 16-byte id, 184534 with a 60 KiB one.)
    assert_eq!(short, long);
    assert!(short < 256, "{short} bytes per message");
}

/// Spools `seqs` for `session` as the session layer does.
fn spool_each(store: &DurableStore, session: u64, seqs: std::ops::RangeInclusive<u64>) -> Commit {
    let mut last = 0;
    for seq in seqs {
        let payload = Bytes::from(format!("m{seq}"));
        last = enqueue(store, session, seq, "spool/t", payload, true).expect("a commit");
    }
    last
}

/// Loads everything `session` has waiting: the payloads in order.
fn drain(store: &DurableStore, session: u64) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let batch = store.spool_load(session, 100).unwrap();
        if batch.items.is_empty() {
            assert_eq!(batch.left, 0);
            return got;
        }
        for item in batch.items {
            got.push(String::from_utf8(item.message.payload.to_vec()).unwrap());
        }
    }
}

fn opened(store: &DurableStore, session: u64) {
    store
        .record(StoreEvent::SessionOpened {
            session,
            client_id: "spooler",
            owner: None,
            expiry: u32::MAX,
        })
        .unwrap();
}

#[test]
fn spooled_messages_survive_a_crash_that_loses_the_spool_buffer() {
    let dir = std::env::temp_dir().join(format!("midge-durable-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    {
        let (store, _) = DurableStore::open(&config(&dir)).unwrap();
        opened(&store, 1);
        let c = spool_each(&store, 1, 1..=500);
        store.log.wait(c).unwrap();
        // The state holds positions, not messages.
        let st = store.state();
        assert!(
            st.messages.is_empty(),
            "spooled messages are not kept in the state"
        );
        assert_eq!(st.sessions[&1].spool.as_ref().unwrap().present.len(), 500);
        drop(st);
        // Dropped without close: like kill -9, the spool's buffer is lost.
    }
    let (store, loaded) = DurableStore::open(&config(&dir)).unwrap();
    assert_eq!(loaded.queued, 500);
    let got = drain(&store, 1);
    assert_eq!(got, (1..=500).map(|s| format!("m{s}")).collect::<Vec<_>>());
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_compaction_keeps_the_backlog_in_its_spool_and_deletes_what_was_delivered() {
    let dir = std::env::temp_dir().join(format!("midge-durable-spool-c-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    {
        let (mut store, _) = DurableStore::open(&config(&dir)).unwrap();
        store.compact_min = 64 * 1024;
        store.inner.lock().spools.chunk_bytes = 16 * 1024;
        opened(&store, 1);
        opened(&store, 2);
        // Session 1 takes 20,000 and acknowledges all but the last 100; session 2 keeps
        // a backlog of 3,000 through every compaction.
        spool_each(&store, 2, 1..=3000);
        for seq in 1..=20_000u64 {
            spool_each(&store, 1, seq..=seq);
            if seq <= 19_900 {
                store.spool_load(1, 1).unwrap();
                store
                    .record(StoreEvent::Removed { session: 1, seq })
                    .unwrap();
            }
        }
        let stats = store.stats().unwrap();
        assert!(stats.compactions > 2, "{stats:?}");
        // Session 1's consumed chunks are gone; the log stays small.
        assert!(stats.bytes_on_disk < 1024 * 1024, "{stats:?}");
        assert!(
            stats.spool_files < 3000 * 60 / (16 * 1024) + 10,
            "{stats:?}"
        );
        store.close().unwrap();
    }
    let (store, loaded) = DurableStore::open(&config(&dir)).unwrap();
    assert_eq!(loaded.queued, 3100);
    assert_eq!(drain(&store, 2).len(), 3000);
    assert_eq!(
        drain(&store, 1),
        (19_901..=20_000)
            .map(|s| format!("m{s}"))
            .collect::<Vec<_>>()
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Positions only go up: with everything acknowledged and compacted away, a restarted
/// session still numbers its spool after the highest position it ever spooled (a file
/// must never hold two entries of one position).
#[test]
fn a_spool_s_highest_position_survives_compaction_and_restart() {
    let dir = std::env::temp_dir().join(format!("midge-durable-spool-h-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    {
        let (store, _) = DurableStore::open(&config(&dir)).unwrap();
        opened(&store, 1);
        spool_each(&store, 1, 1..=50);
        drain(&store, 1);
        for seq in 1..=50 {
            store
                .record(StoreEvent::Removed { session: 1, seq })
                .unwrap();
        }
        let mut inner = store.inner.lock();
        store.checkpoint(&mut inner, false).unwrap();
        drop(inner);
        store.close().unwrap();
    }
    let (store, loaded) = DurableStore::open(&config(&dir)).unwrap();
    assert_eq!(loaded.queued, 0);
    assert_eq!(store.state().sessions[&1].spool.as_ref().unwrap().last, 50);
    assert_eq!(
        store.stats().unwrap().spool_files,
        0,
        "nothing held, no files"
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
