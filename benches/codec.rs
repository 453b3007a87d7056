//! The wire format: decoding an incoming PUBLISH and encoding an outgoing one.
//!
//!     cargo bench --bench codec
//!
//! Not run by `cargo test` or CI; see docs/BENCHMARKS.md.

use std::hint::black_box;

use bytes::{BufMut, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use midge::codec::{decode, encode_publish, Packet, QoS};

const MAX_PACKET: usize = 8 * 1024 * 1024;

/// A PUBLISH as a client sends it, written out by hand (not with midge's encoder, so the
/// decoder is checked against an independent writer).
fn publish_bytes(topic: &str, payload: &[u8], qos: u8, pkid: u16) -> Vec<u8> {
    let remaining = 2 + topic.len() + if qos > 0 { 2 } else { 0 } + payload.len();
    let mut b = BytesMut::new();
    b.put_u8(0x30 | (qos << 1));
    let mut n = remaining;
    loop {
        let byte = (n & 0x7F) as u8;
        n >>= 7;
        b.put_u8(if n > 0 { byte | 0x80 } else { byte });
        if n == 0 {
            break;
        }
    }
    b.put_u16(topic.len() as u16);
    b.put_slice(topic.as_bytes());
    if qos > 0 {
        b.put_u16(pkid);
    }
    b.put_slice(payload);
    b.to_vec()
}

fn bench_decode(c: &mut Criterion) {
    let topic = "site/42/dev/123/temp";
    let mut g = c.benchmark_group("decode_publish");
    for (name, qos, size) in [
        ("qos0_64B", 0u8, 64usize),
        ("qos1_64B", 1, 64),
        ("qos1_4KiB", 1, 4096),
    ] {
        let frame = publish_bytes(topic, &vec![0xA5; size], qos, 7);
        match decode(&mut BytesMut::from(&frame[..]), MAX_PACKET) {
            Ok(Some(Packet::Publish(p))) => assert_eq!(p.payload.len(), size),
            other => panic!("benchmark frame does not decode: {other:?}"),
        }
        g.throughput(Throughput::Elements(1));
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || BytesMut::from(&frame[..]),
                |buf| decode(black_box(buf), MAX_PACKET),
                BatchSize::SmallInput,
            )
        });
    }
    // A read buffer holding 1000 back-to-back packets, as a busy publisher's socket has.
    let one = publish_bytes(topic, &[0x5A; 64], 1, 7);
    let many: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
    g.throughput(Throughput::Elements(1000));
    g.bench_function("qos1_64B_x1000_from_one_buffer", |b| {
        b.iter_batched_ref(
            || BytesMut::from(&many[..]),
            |buf| {
                let mut n = 0;
                while let Ok(Some(p)) = decode(buf, MAX_PACKET) {
                    black_box(p);
                    n += 1;
                }
                n
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn bench_encode(c: &mut Criterion) {
    let topic = "site/42/dev/123/temp";
    let mut g = c.benchmark_group("encode_publish");
    for (name, qos, size) in [
        ("qos0_64B", QoS::AtMostOnce, 64usize),
        ("qos1_64B", QoS::AtLeastOnce, 64),
        ("qos1_4KiB", QoS::AtLeastOnce, 4096),
    ] {
        let payload = vec![0xA5; size];
        let mut buf = BytesMut::with_capacity(64 * 1024);
        g.throughput(Throughput::Elements(1));
        g.bench_function(name, |b| {
            b.iter(|| {
                buf.clear();
                encode_publish(
                    &mut buf,
                    black_box(topic),
                    black_box(&payload),
                    qos,
                    7,
                    false,
                    false,
                );
                buf.len()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_decode, bench_encode);
criterion_main!(benches);
