//! Topic index benchmarks: matching against 100k subscriptions (a mix of
//! exact and wildcard filters), and matching while other threads subscribe
//! and unsubscribe.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ferrymq_broker::router::{Router, Subscriber};

#[derive(Clone)]
struct Sub(u64);

impl Subscriber for Sub {
    type Key = u64;
    fn key(&self) -> &u64 {
        &self.0
    }
}

/// 100k filters shaped like a fleet: `site/{s}/device/{d}/{metric}` exact
/// filters, plus per-site and per-device wildcards and a few global ones.
fn fleet(router: &Router<Sub>) -> Vec<String> {
    let mut id = 0u64;
    let mut sub = |f: &str| {
        router.subscribe(f, Sub(id));
        id += 1;
    };
    let mut topics = Vec::new();
    for s in 0..100 {
        sub(&format!("site/{s}/#"));
        for d in 0..100 {
            for m in [
                "temp", "humidity", "power", "status", "rssi", "uptime", "fw", "err",
            ] {
                let t = format!("site/{s}/device/{d}/{m}");
                sub(&t);
                if d % 10 == 0 {
                    topics.push(t);
                }
            }
            sub(&format!("site/{s}/device/{d}/+"));
            sub(&format!("site/{s}/device/+/status"));
        }
    }
    sub("+/+/device/+/err");
    sub("#");
    topics
}

fn matching(c: &mut Criterion) {
    let router = Router::new();
    let topics = fleet(&router);
    assert!(router.len() >= 100_000, "{} subscriptions", router.len());
    let mut g = c.benchmark_group("router");
    g.throughput(Throughput::Elements(topics.len() as u64));
    g.bench_function("match_100k_subs", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            for t in &topics {
                out.clear();
                router.matches(black_box(t), &mut out);
                black_box(out.len());
            }
        })
    });
    g.bench_function("match_100k_subs_with_churn", |b| {
        let stop = Arc::new(AtomicBool::new(false));
        let router = Arc::new(Router::new());
        let topics = fleet(&router);
        let churn = {
            let router = router.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let f = format!("site/{}/device/{}/+", n % 100, n % 97);
                    router.subscribe(&f, Sub(1_000_000 + n));
                    router.unsubscribe(&f, &(1_000_000 + n));
                    n += 1;
                }
                n
            })
        };
        let mut out = Vec::new();
        b.iter(|| {
            for t in &topics {
                out.clear();
                router.matches(black_box(t), &mut out);
                black_box(out.len());
            }
        });
        stop.store(true, Ordering::Relaxed);
        let churned = churn.join().unwrap_or(0);
        eprintln!("churn thread: {churned} subscribe+unsubscribe pairs during the measurement");
    });
    g.finish();

    let mut g = c.benchmark_group("router_churn");
    g.throughput(Throughput::Elements(1));
    g.bench_function("subscribe_unsubscribe_wildcard", |b| {
        let router = Router::new();
        fleet(&router);
        let mut n = 0u64;
        b.iter(|| {
            let f = format!("site/{}/device/{}/+", n % 100, n % 97);
            router.subscribe(&f, Sub(1_000_000 + n));
            router.unsubscribe(&f, &(1_000_000 + n));
            n += 1;
        })
    });
    g.finish();
}

criterion_group!(benches, matching);
criterion_main!(benches);
