//! Topic matching: the subscription trie with 100,000 filters (a quarter of them with a
//! `+` or `#`), and the plain `topic::matches` filter check.
//!
//!     cargo bench --bench topic_match
//!
//! Not run by `cargo test` or CI; see docs/BENCHMARKS.md.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use midge::router::trie::SubscriptionTrie;
use midge::topic::matches;

const SUBSCRIPTIONS: u64 = 100_000;

/// A fleet of devices: `site/<s>/dev/<d>/<metric>` exact filters, with every fourth
/// filter widened by a wildcard in one of three places.
fn filter(i: u64) -> String {
    let (site, dev, metric) = (
        i / 1000,
        i % 1000,
        ["temp", "hum", "co2", "batt"][(i % 4) as usize],
    );
    match i % 8 {
        1 => format!("site/{site}/dev/+/{metric}"),
        3 => format!("site/{site}/dev/{dev}/#"),
        5 => format!("site/+/dev/{dev}/{metric}"),
        _ => format!("site/{site}/dev/{dev}/{metric}"),
    }
}

fn trie() -> SubscriptionTrie<u32> {
    let mut t = SubscriptionTrie::default();
    for i in 0..SUBSCRIPTIONS {
        t.insert(&filter(i), i, 1);
    }
    // A few catch-all subscribers, as dashboards and bridges have.
    t.insert("#", SUBSCRIPTIONS, 0);
    t.insert("site/+/dev/+/temp", SUBSCRIPTIONS + 1, 0);
    t
}

fn count(t: &SubscriptionTrie<u32>, topic: &str) -> usize {
    let mut n = 0;
    t.for_each_match(topic, |id, v| {
        black_box((id, v));
        n += 1;
    });
    n
}

fn bench_trie(c: &mut Criterion) {
    let t = trie();
    assert_eq!(t.len() as u64, SUBSCRIPTIONS + 2);
    let mut g = c.benchmark_group("trie_100k");
    g.throughput(Throughput::Elements(1));
    // A device topic: matched by that device's `/#` filter and by the two catch-alls.
    let topic = "site/42/dev/123/temp";
    assert_eq!(count(&t, topic), 3);
    g.bench_function("match_typical", |b| b.iter(|| count(&t, black_box(topic))));
    let miss = "site/42/dev/123/pressure";
    g.bench_function("match_few", |b| b.iter(|| count(&t, black_box(miss))));
    let none = "$SYS/broker/load";
    g.bench_function("match_dollar_none", |b| {
        b.iter(|| count(&t, black_box(none)))
    });
    let deep = "site/42/dev/123/temp/raw/adc/0";
    g.bench_function("match_deep_hash", |b| b.iter(|| count(&t, black_box(deep))));
    // Subscription churn on the big trie: add and remove one filter.
    let mut churn = trie();
    g.bench_function("insert_remove", |b| {
        b.iter(|| {
            churn.insert(black_box("site/7/dev/9999/temp"), u64::MAX, 1);
            churn.remove(black_box("site/7/dev/9999/temp"), u64::MAX)
        })
    });
    g.finish();

    c.bench_function("trie_100k/build", |b| {
        b.iter_batched(|| (), |()| trie(), BatchSize::PerIteration)
    });
}

fn bench_matches(c: &mut Criterion) {
    let mut g = c.benchmark_group("topic_matches");
    let cases = [
        ("exact", "site/42/dev/123/temp", "site/42/dev/123/temp"),
        ("plus", "site/+/dev/+/temp", "site/42/dev/123/temp"),
        ("hash", "site/42/#", "site/42/dev/123/temp"),
        (
            "mismatch_early",
            "home/42/dev/123/temp",
            "site/42/dev/123/temp",
        ),
    ];
    for (name, f, t) in cases {
        g.bench_function(name, |b| b.iter(|| matches(black_box(f), black_box(t))));
    }
    g.finish();
}

criterion_group!(benches, bench_trie, bench_matches);
criterion_main!(benches);
