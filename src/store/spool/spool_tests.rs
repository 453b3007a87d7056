//! Spool files: appending across chunks, reading back in batches, skipping what is gone,
//! dropping consumed chunks, and opening after a crash.

use super::*;
use crate::codec::QoS;
use crate::message::Message;
use bytes::Bytes;
use std::sync::Arc;

const S: SessionId = 7;

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("midge-spool-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn message(n: u64) -> Arc<Message> {
    Arc::new(Message::with_props(
        format!("t/{n}").as_str(),
        Bytes::from(format!("payload-{n}")),
        QoS::AtLeastOnce,
        false,
        None,
    ))
}

/// Spools positions `seqs` for session `S`, as the store does, keeping the image.
fn spool(spools: &mut Spools, image: &mut SpoolImage, seqs: impl IntoIterator<Item = u64>) {
    let mut frame = Vec::new();
    for seq in seqs {
        frame.clear();
        entry::encode(
            &mut frame,
            seq,
            &message(seq),
            QoS::AtLeastOnce,
            false,
            None,
        )
        .unwrap();
        spools.append(S, seq, &frame).unwrap();
        assert!(image.push(seq));
    }
}

/// Loads everything left, a batch of `max` at a time: the positions and packet ids.
fn load_all(spools: &mut Spools, image: &SpoolImage, max: usize) -> Vec<(u64, Option<u16>)> {
    let mut got = Vec::new();
    loop {
        let plan = spools.plan(S, image).unwrap();
        let batch = read(&plan, max);
        assert!(batch.items.len() <= max);
        for item in &batch.items {
            assert_eq!(
                &item.message.payload[..],
                format!("payload-{}", item.seq).as_bytes()
            );
            got.push((item.seq, item.sent.map(|s| s.0)));
        }
        let moved = batch.moved(&plan);
        let left = spools.advance(S, &batch, image);
        if !moved && batch.items.is_empty() {
            assert_eq!(left, 0, "nothing read, yet {left} left");
            return got;
        }
    }
}

#[test]
fn entries_come_back_in_order_across_chunks_and_batches() {
    let dir = Dir::new("order");
    let mut spools = Spools::new(dir.0.clone());
    spools.chunk_bytes = 1024;
    let mut image = SpoolImage::default();
    spool(&mut spools, &mut image, 1..=300);
    assert!(spools.chunks(S).len() > 5, "{:?}", spools.chunks(S));
    let got = load_all(&mut spools, &image, 7);
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        (1..=300).collect::<Vec<_>>()
    );
    // Nothing more until more is spooled; then only the new entries.
    spool(&mut spools, &mut image, 301..=305);
    assert_eq!(spools.left(S, &image), 5);
    let more = load_all(&mut spools, &image, 100);
    assert_eq!(
        more.iter().map(|g| g.0).collect::<Vec<_>>(),
        vec![301, 302, 303, 304, 305]
    );
}

#[test]
fn a_rewind_brings_back_what_is_held_with_packet_ids_and_skips_what_is_gone() {
    let dir = Dir::new("rewind");
    let mut spools = Spools::new(dir.0.clone());
    spools.chunk_bytes = 1024;
    let mut image = SpoolImage::default();
    spool(&mut spools, &mut image, 1..=100);
    load_all(&mut spools, &image, 50);
    // Acknowledged out of order, two sent and waiting.
    for seq in (1..=60).chain([62, 64]) {
        assert!(image.remove(seq));
        spools.removed(S, seq);
    }
    assert!(image.sent(61, 9) && image.sent(63, 10) && image.released(63));
    spools.rewind(S);
    assert_eq!(spools.left(S, &image), 38);
    let got = load_all(&mut spools, &image, 1000);
    let expected: Vec<(u64, Option<u16>)> = (61..=100)
        .filter(|s| ![62, 64].contains(s))
        .map(|s| {
            (
                s,
                [(61, 9), (63, 10)].iter().find(|p| p.0 == s).map(|p| p.1),
            )
        })
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn a_checkpoint_lets_consumed_chunks_go_but_never_the_last() {
    let dir = Dir::new("doom");
    let mut spools = Spools::new(dir.0.clone());
    spools.chunk_bytes = 1024;
    let mut image = SpoolImage::default();
    spool(&mut spools, &mut image, 1..=200);
    let chunks = spools.chunks(S);
    for seq in 1..=200 {
        image.remove(seq);
        spools.removed(S, seq);
    }
    let present = image.present.clone();
    let sync = spools
        .prepare_checkpoint(&|_| Some(present.clone()))
        .unwrap();
    assert!(sync, "written since the last checkpoint");
    // All of them, the last too: nothing is held.
    let doomed = spools.take_doomed();
    assert_eq!(doomed.len(), chunks.len());
    assert!(spools.chunks(S).is_empty());
    assert_eq!(spools.bytes(), 0);
    assert_eq!(spools.held_bytes(S), 0);
    // Nothing written since: no sync needed, nothing more to delete.
    assert!(!spools
        .prepare_checkpoint(&|_| Some(present.clone()))
        .unwrap());
    // The next entry starts a new chunk, after every position used.
    assert!(!image.push(150), "positions only go up");
    spool(&mut spools, &mut image, [201]);
    assert_eq!(spools.chunks(S)[0].first, 201);
}

#[test]
fn the_bytes_held_follow_what_is_still_queued() {
    let dir = Dir::new("bytes");
    let mut spools = Spools::new(dir.0.clone());
    let mut image = SpoolImage::default();
    spool(&mut spools, &mut image, 1..=100);
    let all = spools.held_bytes(S);
    assert!(all > 100 * 40, "{all}");
    for seq in 1..=50 {
        image.remove(seq);
        spools.removed(S, seq);
    }
    assert_eq!(spools.held_bytes(S), all / 2);
    spools.discard(S);
    assert_eq!((spools.held_bytes(S), spools.disk_usage()), (0, (0, 0)));
}

#[test]
fn open_cuts_a_torn_entry_writes_what_the_log_has_and_drops_strays() {
    let dir = Dir::new("open");
    let mut image = SpoolImage::default();
    {
        let mut spools = Spools::new(dir.0.clone());
        spool(&mut spools, &mut image, 1..=10);
        spools.flush_all().unwrap();
    }
    // A crash cut the last entry in half, and the buffer with 11..=12 was lost; the
    // log replays 9..=12. A file of a session the state does not hold is a stray.
    let path = chunk_path(&dir.0, S, 1);
    let len = std::fs::metadata(&path).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let stray = chunk_path(&dir.0, 99, 1);
    std::fs::write(&stray, b"junk").unwrap();
    for seq in 11..=12 {
        assert!(image.push(seq));
    }
    for seq in 9..=12 {
        image.replayed.push(image::Replayed {
            seq,
            message: message(seq),
            qos: 1,
            retain: false,
            sub_ids: Vec::new(),
            shared: None,
        });
    }
    let mut spools = Spools::open(&dir.0, vec![(S, &mut image)]).unwrap();
    assert!(!stray.exists());
    assert!(image.replayed.is_empty());
    let got = load_all(&mut spools, &image, 100);
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        (1..=12).collect::<Vec<_>>()
    );
}

#[test]
fn spool_file_names_round_trip() {
    let p = chunk_path(Path::new("/x"), 0xAB, 0x1234);
    let name = p.file_name().unwrap().to_str().unwrap();
    assert_eq!(parse_chunk_name(name), Some((0xAB, 0x1234)));
    assert_eq!(parse_chunk_name("00000001.log"), None);
    assert_eq!(parse_chunk_name("zz-zz.q"), None);
}
