//! Group commit, in two threads. The writer thread writes batches to the
//! store (to the OS, not yet the disk); the sync thread makes them durable
//! (fsync) and says so. Batches that arrive while an fsync runs are
//! written meanwhile (the fjall store syncs its journal outside the
//! engine's lock) and made durable together by the next one: many
//! messages from many connections share one fsync, and writing a batch
//! does not wait for the disk.
//!
//! Submitting returns a sequence number; the `durable` watch says up to
//! which number everything is on disk. Numbers are handed out under the
//! same lock as the channel send, so the writer sees them in order.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;
use tracing::error;

use crate::{Op, Store};

/// Ops applied per fsync at most; more wait for the next one.
const MAX_OPS_PER_COMMIT: usize = 64 * 1024;
/// Spent batches kept for reuse, and the largest capacity kept.
const SPARE_BATCHES: usize = 64;
const SPARE_CAPACITY: usize = 4096;

/// Emptied batches, handed back to submitters: a batch allocated on a
/// connection's thread and freed on the writer's costs glibc more than
/// the writes themselves (large allocations consolidate the free lists).
type Spare = Arc<Mutex<Vec<Vec<Op>>>>;

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
    spare: Spare,
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

/// Commit counters for metrics. Written by the sync thread once per
/// commit (not per op), read by the metrics endpoint.
#[derive(Debug, Default)]
pub struct Stats {
    pub commits: std::sync::atomic::AtomicU64,
    pub ops: std::sync::atomic::AtomicU64,
    /// Sum of commit times (the fsync that makes a group durable).
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

    /// An empty batch to fill, with the capacity of a spent one if any.
    pub fn spare_ops(&self) -> Vec<Op> {
        self.spare.lock().pop().unwrap_or_default()
    }

    /// Hands back a batch taken with [`spare_ops`](Self::spare_ops) and
    /// left empty, so that an idle connection does not keep its capacity.
    pub fn return_ops(&self, batch: Vec<Op>) {
        recycle(&self.spare, batch);
    }

    /// A receiver of the highest durable sequence number.
    pub fn durable(&self) -> watch::Receiver<u64> {
        self.durable.clone()
    }

    pub fn is_durable(&self, seq: u64) -> bool {
        *self.durable.borrow() >= seq
    }

    /// Waits until `seq` is durable: false if it never will be (the store
    /// failed and its threads stopped).
    pub async fn wait(&self, seq: u64) -> bool {
        let mut rx = self.durable.clone();
        let durable = rx.wait_for(|d| *d >= seq).await.is_ok();
        durable
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

/// The threads' owner.
#[derive(Debug)]
pub struct Writer;

impl Writer {
    /// Starts the writer and sync threads for `store`. With a non-zero
    /// `window`, the sync thread waits that long after it sees a write
    /// before it fsyncs, so that more writes share the fsync (fewer fsyncs,
    /// longer waits for acknowledgements); with zero, an fsync starts as
    /// soon as the previous one ends and whatever was written meanwhile
    /// shares it.
    pub fn spawn(store: Arc<dyn Store>, window: Duration) -> WriterHandle {
        let (tx, rx) = mpsc::channel::<(u64, Vec<Op>)>();
        let (durable_tx, durable) = watch::channel(0u64);
        let stats = Arc::new(Stats::default());
        let spare = Spare::default();
        let handoff = Arc::new(Handoff::default());
        let spawned = {
            let (store, spare, handoff) = (store.clone(), spare.clone(), handoff.clone());
            std::thread::Builder::new()
                .name("ferrymq-store".into())
                .spawn(move || write(&*store, &rx, &spare, &handoff))
        }
        .and_then(|_| {
            let stats = stats.clone();
            std::thread::Builder::new()
                .name("ferrymq-sync".into())
                .spawn(move || sync(&*store, &handoff, &durable_tx, &stats, window))
        });
        if let Err(e) = spawned {
            error!("cannot start the store threads: {e}");
        }
        WriterHandle {
            sender: Arc::new(Mutex::new(Sender { next: 0, tx })),
            durable,
            stats,
            spare,
        }
    }
}

/// What the writer thread has written, for the sync thread.
#[derive(Default)]
struct Handoff {
    state: Mutex<Written>,
    ready: Condvar,
}

#[derive(Default)]
struct Written {
    /// Every submission up to this number is written.
    seq: u64,
    /// Ops written since the last sync took the count.
    ops: u64,
    /// The writer thread has stopped.
    done: bool,
}

impl Handoff {
    fn publish(&self, update: impl FnOnce(&mut Written)) {
        update(&mut self.state.lock());
        self.ready.notify_one();
    }
}

/// Keeps `batch`'s allocation for a later batch, if there is room.
fn recycle(spare: &Spare, mut batch: Vec<Op>) {
    let mut spare = spare.lock();
    if spare.len() < SPARE_BATCHES && batch.capacity() <= SPARE_CAPACITY {
        batch.clear();
        spare.push(batch);
    }
}

/// Tells the sync thread the writer has stopped, however it stops (a
/// panic included), so that it syncs what was written and ends.
struct Done<'a>(&'a Handoff);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.publish(|w| w.done = true);
    }
}

fn write(store: &dyn Store, rx: &mpsc::Receiver<(u64, Vec<Op>)>, spare: &Spare, handoff: &Handoff) {
    let _done = Done(handoff);
    let mut ops = Vec::new();
    let recycle = |batch| recycle(spare, batch);
    while let Ok((mut last, mut first)) = rx.recv() {
        ops.clear();
        ops.append(&mut first);
        recycle(first);
        while ops.len() < MAX_OPS_PER_COMMIT {
            match rx.try_recv() {
                Ok((seq, mut more)) => {
                    last = seq;
                    ops.append(&mut more);
                    recycle(more);
                }
                Err(_) => break,
            }
        }
        if let Err(e) = store.write(&ops) {
            // Poisoned, loudly: nothing after this point is acknowledged.
            error!("store write failed, no further acknowledgements will be sent: {e}");
            handoff.publish(|w| w.done = true);
            for (_, _) in rx.iter() {}
            return;
        }
        let count = ops.len() as u64;
        handoff.publish(|w| {
            w.seq = last;
            w.ops += count;
        });
    }
}

fn sync(
    store: &dyn Store,
    handoff: &Handoff,
    durable: &watch::Sender<u64>,
    stats: &Stats,
    window: Duration,
) {
    let mut synced = 0;
    loop {
        let (target, ops) = {
            let mut w = handoff.state.lock();
            while w.seq == synced && !w.done {
                handoff.ready.wait(&mut w);
            }
            if w.seq == synced {
                return;
            }
            if !window.is_zero() && !w.done {
                // The commit window: a deliberate wait, for more writes.
                let until = Instant::now() + window;
                while !w.done && !handoff.ready.wait_until(&mut w, until).timed_out() {}
            }
            (w.seq, std::mem::take(&mut w.ops))
        };
        // Everything up to `target` was written before this sync began.
        let started = Instant::now();
        if let Err(e) = store.sync() {
            error!("store sync failed, no further acknowledgements will be sent: {e}");
            return;
        }
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        stats.record_commit(micros, ops);
        synced = target;
        durable.send_replace(target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    #[tokio::test]
    async fn a_commit_window_gathers_the_writes_it_sees_into_one_sync() {
        use std::sync::atomic::Ordering::Relaxed;
        let window = Duration::from_millis(200);
        let handle = Writer::spawn(Arc::new(MemoryStore::default()), window);
        let op = |seq| Op::PutQueued {
            client_id: "c".into(),
            seq,
            record: bytes::Bytes::new(),
        };
        let started = Instant::now();
        let first = handle.submit(vec![op(0)]);
        assert!(handle.wait(first).await);
        assert!(started.elapsed() >= window, "{:?}", started.elapsed());
        assert_eq!(handle.stats().commits.load(Relaxed), 1);
        // Ten writes in a row, well within one window: one sync.
        let mut last = 0;
        for seq in 1..=10 {
            last = handle.submit(vec![op(seq)]);
        }
        assert!(handle.wait(last).await);
        assert_eq!(handle.stats().commits.load(Relaxed), 2);
        assert_eq!(handle.stats().ops.load(Relaxed), 11);
    }

    #[tokio::test]
    async fn submissions_become_durable_in_order() {
        let store = Arc::new(MemoryStore::default());
        let handle = Writer::spawn(store.clone(), Duration::ZERO);
        let mut last = 0;
        for i in 0..100u64 {
            last = handle.submit(vec![Op::PutQueued {
                client_id: "c".into(),
                seq: i,
                record: bytes::Bytes::new(),
            }]);
        }
        let durable = tokio::time::timeout(std::time::Duration::from_secs(5), handle.wait(last))
            .await
            .unwrap();
        assert!(durable);
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
