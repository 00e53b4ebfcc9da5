//! Group commit: one thread applies batches to the store. Batches that
//! arrive while an fsync is running are applied together by the next one,
//! so many messages from many connections share one fsync.
//!
//! Submitting returns a sequence number; the `durable` watch says up to
//! which number everything is on disk. Numbers are handed out under the
//! same lock as the channel send, so the writer sees them in order.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::watch;
use tracing::error;

use crate::{Op, Store};

/// Ops applied per fsync at most; more wait for the next one.
const MAX_OPS_PER_COMMIT: usize = 64 * 1024;

struct Sender {
    next: u64,
    tx: mpsc::Sender<(u64, Vec<Op>)>,
}

/// The submitting side, cheap to clone.
#[derive(Clone)]
pub struct WriterHandle {
    sender: Arc<Mutex<Sender>>,
    durable: watch::Receiver<u64>,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for WriterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterHandle")
            .field("durable", &*self.durable.borrow())
            .finish()
    }
}

/// Upper bounds, in microseconds, of the commit-latency histogram's
/// buckets (Prometheus `le`); the last bucket, +Inf, is implied.
pub const COMMIT_BUCKETS_MICROS: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// Commit counters for metrics. Written by the writer thread once per
/// commit (not per op), read by the metrics endpoint.
#[derive(Debug, Default)]
pub struct Stats {
    pub commits: std::sync::atomic::AtomicU64,
    pub ops: std::sync::atomic::AtomicU64,
    /// Sum of commit times (apply and fsync).
    pub commit_micros: std::sync::atomic::AtomicU64,
    /// Commits per latency bucket (not cumulative): index `i` counts
    /// commits up to `COMMIT_BUCKETS_MICROS[i]`, the last one the rest.
    pub commit_buckets: [std::sync::atomic::AtomicU64; COMMIT_BUCKETS_MICROS.len() + 1],
}

impl Stats {
    /// Records one commit that took `micros`.
    pub fn record_commit(&self, micros: u64, ops: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.commits.fetch_add(1, Relaxed);
        self.ops.fetch_add(ops, Relaxed);
        self.commit_micros.fetch_add(micros, Relaxed);
        let bucket = COMMIT_BUCKETS_MICROS
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(COMMIT_BUCKETS_MICROS.len());
        if let Some(counter) = self.commit_buckets.get(bucket) {
            counter.fetch_add(1, Relaxed);
        }
    }
}

impl WriterHandle {
    /// Queues `ops` and returns the sequence number to wait for. Never
    /// blocks: the channel is unbounded, and bounded in practice by the
    /// clients waiting for acknowledgements that only the writer releases.
    pub fn submit(&self, ops: Vec<Op>) -> u64 {
        let mut sender = self.sender.lock();
        sender.next += 1;
        let seq = sender.next;
        if sender.tx.send((seq, ops)).is_err() {
            error!("store writer is gone: acknowledgements will not be sent");
        }
        seq
    }

    /// A receiver of the highest durable sequence number.
    pub fn durable(&self) -> watch::Receiver<u64> {
        self.durable.clone()
    }

    pub fn is_durable(&self, seq: u64) -> bool {
        *self.durable.borrow() >= seq
    }

    /// Waits until `seq` is durable.
    pub async fn wait(&self, seq: u64) {
        let mut rx = self.durable.clone();
        let _ = rx.wait_for(|d| *d >= seq).await;
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

/// The writer thread's owner.
#[derive(Debug)]
pub struct Writer;

impl Writer {
    /// Starts the writer thread for `store`.
    pub fn spawn(store: Arc<dyn Store>) -> WriterHandle {
        let (tx, rx) = mpsc::channel::<(u64, Vec<Op>)>();
        let (durable_tx, durable) = watch::channel(0u64);
        let stats = Arc::new(Stats::default());
        let thread_stats = stats.clone();
        let spawned = std::thread::Builder::new()
            .name("ferrymq-store".into())
            .spawn(move || run(store, rx, durable_tx, thread_stats));
        if let Err(e) = spawned {
            error!("cannot start the store writer thread: {e}");
        }
        WriterHandle {
            sender: Arc::new(Mutex::new(Sender { next: 0, tx })),
            durable,
            stats,
        }
    }
}

fn run(
    store: Arc<dyn Store>,
    rx: mpsc::Receiver<(u64, Vec<Op>)>,
    durable: watch::Sender<u64>,
    stats: Arc<Stats>,
) {
    let mut ops = Vec::new();
    while let Ok((mut last, first)) = rx.recv() {
        ops.clear();
        ops.extend(first);
        while ops.len() < MAX_OPS_PER_COMMIT {
            match rx.try_recv() {
                Ok((seq, more)) => {
                    last = seq;
                    ops.extend(more);
                }
                Err(_) => break,
            }
        }
        let started = Instant::now();
        if let Err(e) = store.apply(&ops) {
            // Poisoned, loudly: nothing after this point is acknowledged.
            error!("store commit failed, no further acknowledgements will be sent: {e}");
            for (_, _) in rx.iter() {}
            return;
        }
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        stats.record_commit(micros, ops.len() as u64);
        durable.send_replace(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    #[tokio::test]
    async fn submissions_become_durable_in_order() {
        let store = Arc::new(MemoryStore::default());
        let handle = Writer::spawn(store.clone());
        let mut last = 0;
        for i in 0..100u64 {
            last = handle.submit(vec![Op::PutQueued {
                client_id: "c".into(),
                seq: i,
                record: bytes::Bytes::new(),
            }]);
        }
        tokio::time::timeout(std::time::Duration::from_secs(5), handle.wait(last))
            .await
            .unwrap();
        assert_eq!(store.load().unwrap().queued.len(), 100);
        assert!(
            handle
                .stats()
                .commits
                .load(std::sync::atomic::Ordering::Relaxed)
                <= 100
        );
    }
}
