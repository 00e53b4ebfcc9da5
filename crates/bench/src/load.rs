//! The clients of a run: connecting them, the publisher and subscriber
//! loops, and the counters they share with the runner.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ferrymq_codec::{encode, Packet, PubResponse, QoS};
use tokio::io::AsyncWriteExt;
use tokio::sync::{watch, Notify, Semaphore};

use crate::conn::{Conn, Target};
use crate::payload::{now_ns, put_publish, Stamp};
use crate::stats::{Latency, Receipts, SeqSet};

/// Messages a publisher writes with one system call when nothing holds it
/// back.
const BATCH: u64 = 64;

/// How long publishers wait for outstanding acknowledgements at the end.
const ACK_DRAIN: Duration = Duration::from_secs(3);

/// Counters every client adds to, read by the progress display and the
/// runner. Updated once per batch, not per message.
#[derive(Debug, Default)]
pub struct Shared {
    pub connected: AtomicU64,
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub received: AtomicU64,
    pub errors: AtomicU64,
    /// Deliveries per subscriber, for the run-ahead bound.
    pub sub_received: Box<[AtomicU64]>,
    /// Signalled when a subscriber has received more.
    pub progress: Notify,
    /// Publishers done, and a signal each time one is, so a run with a
    /// message limit ends when the last one is, not at the next tick.
    pub publishers_done: AtomicU64,
    pub publisher_done: Notify,
    /// Messages stamped before this (ns since the epoch) are warm-up: left
    /// out of latency.
    pub measure_from_ns: AtomicU64,
    samples: Mutex<Vec<String>>,
}

impl Shared {
    pub fn new(subscribers: usize) -> Shared {
        Shared {
            sub_received: (0..subscribers).map(|_| AtomicU64::new(0)).collect(),
            ..Shared::default()
        }
    }

    /// Counts an error and keeps the first few messages for the summary.
    pub fn error(&self, message: impl Into<String>) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut samples) = self.samples.lock() {
            if samples.len() < 5 {
                samples.push(message.into());
            }
        }
    }

    pub fn error_samples(&self) -> Vec<String> {
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Deliveries of the subscriber that has had the fewest.
    pub fn slowest_subscriber(&self) -> Option<u64> {
        self.sub_received
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .min()
    }
}

/// Connects one client per id, in order: one every `interval`, or as fast
/// as the broker answers with `concurrency` handshakes in flight. Failures
/// are counted in `shared` and leave `None` in their place.
pub async fn connect_all(
    target: &Target,
    ids: Vec<String>,
    interval: Duration,
    concurrency: usize,
    shared: &Arc<Shared>,
) -> Vec<Option<Conn>> {
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(ids.len());
    for (n, id) in ids.into_iter().enumerate() {
        if !interval.is_zero() {
            tokio::time::sleep_until(started + interval * n as u32).await;
        }
        let Ok(permit) = gate.clone().acquire_owned().await else {
            break;
        };
        let (target, shared) = (target.clone(), shared.clone());
        tasks.push(tokio::spawn(async move {
            let result = Conn::connect(&target, &id).await;
            drop(permit);
            match result {
                Ok(conn) => {
                    shared.connected.fetch_add(1, Ordering::Relaxed);
                    Some(conn)
                }
                Err(e) => {
                    shared.error(format!("{id}: {e:#}"));
                    None
                }
            }
        }));
    }
    let mut conns = Vec::with_capacity(tasks.len());
    for task in tasks {
        conns.push(task.await.ok().flatten());
    }
    conns
}

/// What one publisher does.
#[derive(Debug, Clone)]
pub struct PubPlan {
    /// The stamp's publisher number.
    pub index: u32,
    pub topic: Bytes,
    pub qos: QoS,
    pub size: usize,
    /// Messages to send, then stop (0: no limit).
    pub limit: u64,
    /// Messages per second of this publisher (None: as fast as allowed).
    pub rate: Option<f64>,
    pub inflight: u16,
    /// Bound on all publishers' messages beyond the slowest subscriber's
    /// deliveries (0: none).
    pub max_ahead: u64,
}

/// What one publisher did.
#[derive(Debug, Default)]
pub struct PubReport {
    pub sent: u64,
    /// Sequence numbers the broker acknowledged.
    pub acked: SeqSet,
    /// Acknowledgements with an error reason code.
    pub rejected: u64,
}

/// Publishes until `stop` (or the plan's limit), then waits a bounded time
/// for outstanding acknowledgements.
pub async fn publisher(
    mut conn: Conn,
    plan: PubPlan,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> PubReport {
    let mut report = PubReport::default();
    let confirmed = plan.qos != QoS::AtMostOnce;
    let window = u64::from(plan.inflight.min(conn.receive_maximum).max(1));
    // Packet id -> sequence number, to know which message an ack is for.
    let mut seq_of_id = if confirmed {
        vec![0u32; 65_536]
    } else {
        Vec::new()
    };
    let mut next_id: u16 = 0;
    let mut in_flight: u64 = 0;
    let mut out = BytesMut::with_capacity(BATCH as usize * (plan.size + plan.topic.len() + 16));
    let mut releases = BytesMut::new();
    let started = Instant::now();
    let mut last_write = Instant::now();
    let keep_alive = keep_alive_period(&conn);
    let mut drain_until: Option<tokio::time::Instant> = None;
    loop {
        if drain_until.is_none() && *stop.borrow() {
            drain_until = Some(tokio::time::Instant::now() + ACK_DRAIN);
        }
        let limited = plan.limit > 0 && report.sent >= plan.limit;
        let mut n = if drain_until.is_some() || limited {
            0
        } else {
            BATCH
        };
        if confirmed {
            n = n.min(window.saturating_sub(in_flight));
        }
        if plan.limit > 0 {
            n = n.min(plan.limit.saturating_sub(report.sent));
        }
        let mut next_due = None;
        if let Some(rate) = plan.rate {
            let due = (started.elapsed().as_secs_f64() * rate) as u64 + 1;
            n = n.min(due.saturating_sub(report.sent));
            next_due = Some(started + Duration::from_secs_f64((report.sent + n + 1) as f64 / rate));
        }
        // The run-ahead bound is claimed, not just read: publishers on
        // other threads see the claim at once, so together they never pass
        // the bound (reading and adding after the write let each of them
        // take the same room, and the broker's queue overflowed).
        let mut held_by_subscribers = false;
        let mut claimed = false;
        if plan.max_ahead > 0 && n > 0 {
            if let Some(slowest) = shared.slowest_subscriber() {
                let bound = slowest + plan.max_ahead;
                let wanted = n;
                let claim = shared
                    .sent
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |sent| {
                        let take = wanted.min(bound.saturating_sub(sent));
                        (take > 0).then_some(sent + take)
                    });
                n = match claim {
                    Ok(before) => wanted.min(bound.saturating_sub(before)),
                    Err(_) => 0,
                };
                held_by_subscribers = n < wanted;
                claimed = true;
            }
        }
        if n > 0 {
            let sent_at_ns = now_ns();
            for _ in 0..n {
                let seq = report.sent as u32;
                if confirmed {
                    next_id = next_id % u16::MAX + 1;
                    if let Some(slot) = seq_of_id.get_mut(usize::from(next_id)) {
                        *slot = seq;
                    }
                }
                let stamp = Stamp {
                    sent_at_ns,
                    publisher: plan.index,
                    seq,
                };
                put_publish(
                    &mut out,
                    conn.protocol,
                    plan.qos,
                    &plan.topic,
                    next_id,
                    plan.size,
                    stamp,
                );
                report.sent += 1;
            }
            if let Err(e) = conn.wr.write_all(&out).await {
                shared.error(format!("publisher {}: writing: {e}", plan.index));
                break;
            }
            out.clear();
            last_write = Instant::now();
            if !claimed {
                shared.sent.fetch_add(n, Ordering::Relaxed);
            }
            if confirmed {
                in_flight += n;
            }
            continue;
        }
        let done = drain_until.is_some() || limited;
        if done && in_flight == 0 {
            break;
        }
        if keep_alive.is_some_and(|k| last_write.elapsed() >= k) {
            if conn.wr.write_all(&[0xC0, 0]).await.is_err() {
                break;
            }
            last_write = Instant::now();
        }
        let wake = drain_until.unwrap_or_else(|| {
            let soon = tokio::time::Instant::now() + Duration::from_millis(5);
            next_due.map_or(soon, |due| tokio::time::Instant::from_std(due).min(soon))
        });
        tokio::select! {
            read = conn.read(), if confirmed && in_flight > 0 => {
                if let Err(e) = read {
                    shared.error(format!("publisher {}: {e:#}", plan.index));
                    break;
                }
                match take_acks(&mut conn, &seq_of_id, &mut report, &mut releases) {
                    Ok((acked, completed)) => {
                        in_flight = in_flight.saturating_sub(completed);
                        shared.acked.fetch_add(acked, Ordering::Relaxed);
                    }
                    Err(e) => {
                        shared.error(format!("publisher {}: {e:#}", plan.index));
                        break;
                    }
                }
                if !releases.is_empty() {
                    if let Err(e) = conn.wr.write_all(&releases).await {
                        shared.error(format!("publisher {}: writing: {e}", plan.index));
                        break;
                    }
                    releases.clear();
                }
            }
            () = shared.progress.notified(), if held_by_subscribers => {}
            _ = stop.changed(), if drain_until.is_none() => {}
            () = tokio::time::sleep_until(wake) => {
                if drain_until.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    shared.error(format!(
                        "publisher {}: {in_flight} messages still unacknowledged at the end",
                        plan.index
                    ));
                    break;
                }
            }
        }
    }
    let _ = conn.wr.write_all(&[0xE0, 0]).await;
    shared.publishers_done.fetch_add(1, Ordering::Release);
    shared.publisher_done.notify_one();
    report
}

/// Reads the acknowledgements in the buffer: returns (messages newly
/// acknowledged, messages whose exchange is complete) and queues PUBREL
/// for each PUBREC.
fn take_acks(
    conn: &mut Conn,
    seq_of_id: &[u32],
    report: &mut PubReport,
    releases: &mut BytesMut,
) -> anyhow::Result<(u64, u64)> {
    let (mut acked, mut completed) = (0, 0);
    while let Some(packet) = conn.decode()? {
        let mut ack = |r: &PubResponse, report: &mut PubReport| {
            if r.reason.is_error() {
                report.rejected += 1;
                false
            } else {
                if let Some(seq) = seq_of_id.get(usize::from(r.packet_id.get())) {
                    report.acked.insert(*seq);
                }
                acked += 1;
                true
            }
        };
        match packet {
            Packet::PubAck(r) => {
                ack(&r, report);
                completed += 1;
            }
            Packet::PubRec(r) => {
                if ack(&r, report) {
                    encode(
                        &Packet::PubRel(PubResponse::new(r.packet_id)),
                        conn.protocol,
                        releases,
                    )?;
                } else {
                    completed += 1;
                }
            }
            Packet::PubComp(_) => completed += 1,
            Packet::Disconnect(d) => anyhow::bail!("the broker disconnected: {:?}", d.reason),
            _ => {}
        }
    }
    Ok((acked, completed))
}

/// Half the keep-alive: when an otherwise silent client sends PINGREQ.
fn keep_alive_period(conn: &Conn) -> Option<Duration> {
    (conn.keep_alive > 0).then(|| Duration::from_secs(u64::from(conn.keep_alive)) / 2)
}

/// What one subscriber saw.
#[derive(Debug, Default)]
pub struct SubReport {
    pub received: u64,
    pub receipts: Receipts,
    pub latency: Latency,
}

/// Receives and acknowledges until `stop`, recording stamps and latency.
pub async fn subscriber(
    mut conn: Conn,
    index: usize,
    max_publishers: usize,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> SubReport {
    let mut report = SubReport {
        receipts: Receipts::new(max_publishers),
        ..SubReport::default()
    };
    let mut acks = BytesMut::new();
    let mut ping = keep_alive_period(&conn).map(|period| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    loop {
        tokio::select! {
            read = conn.read() => {
                if let Err(e) = read {
                    if !*stop.borrow() {
                        shared.error(format!("subscriber {index}: {e:#}"));
                    }
                    break;
                }
            }
            _ = stop.changed() => break,
            _ = async { match ping.as_mut() { Some(t) => t.tick().await, None => std::future::pending().await } } => {
                acks.extend_from_slice(&[0xC0, 0]);
            }
        }
        let now = now_ns();
        let measure_from = shared.measure_from_ns.load(Ordering::Relaxed);
        let mut n = 0;
        loop {
            let packet = match conn.decode() {
                Ok(Some(packet)) => packet,
                Ok(None) => break,
                Err(e) => {
                    shared.error(format!("subscriber {index}: {e:#}"));
                    return report;
                }
            };
            match packet {
                Packet::Publish(p) => {
                    n += 1;
                    match Stamp::read(&p.payload) {
                        Some(stamp) => {
                            report.receipts.record(stamp.publisher, stamp.seq);
                            if stamp.sent_at_ns >= measure_from {
                                report
                                    .latency
                                    .record_ns(now.saturating_sub(stamp.sent_at_ns));
                            }
                        }
                        None => report.receipts.unstamped += 1,
                    }
                    let reply = match (p.qos, p.packet_id) {
                        (QoS::AtLeastOnce, Some(id)) => Some(Packet::PubAck(PubResponse::new(id))),
                        (QoS::ExactlyOnce, Some(id)) => Some(Packet::PubRec(PubResponse::new(id))),
                        _ => None,
                    };
                    if let Some(reply) = reply {
                        let _ = encode(&reply, conn.protocol, &mut acks);
                    }
                }
                Packet::PubRel(r) => {
                    let _ = encode(
                        &Packet::PubComp(PubResponse::new(r.packet_id)),
                        conn.protocol,
                        &mut acks,
                    );
                }
                Packet::Disconnect(d) => {
                    shared.error(format!(
                        "subscriber {index}: the broker disconnected: {:?}",
                        d.reason
                    ));
                    return report;
                }
                _ => {}
            }
        }
        if !acks.is_empty() {
            if let Err(e) = conn.wr.write_all(&acks).await {
                shared.error(format!("subscriber {index}: writing: {e}"));
                break;
            }
            acks.clear();
        }
        if n > 0 {
            report.received += n;
            if let Some(mine) = shared.sub_received.get(index) {
                mine.fetch_add(n, Ordering::Relaxed);
            }
            shared.received.fetch_add(n, Ordering::Relaxed);
            shared.progress.notify_waiters();
        }
    }
    let _ = conn.wr.write_all(&[0xE0, 0]).await;
    report
}

/// Holds an idle connection open, answering keep-alive, until `stop`.
pub async fn hold(mut conn: Conn, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let period = keep_alive_period(&conn);
    loop {
        let ping = async {
            match period {
                Some(p) => tokio::time::sleep(p).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read = conn.read() => {
                match read {
                    Err(e) => {
                        shared.error(format!("idle connection: {e:#}"));
                        shared.connected.fetch_sub(1, Ordering::Relaxed);
                        return;
                    }
                    // PINGRESP and anything else are read and let go.
                    Ok(_) => while let Ok(Some(_)) = conn.decode() {},
                }
            }
            () = ping => {
                if conn.wr.write_all(&[0xC0, 0]).await.is_err() {
                    return;
                }
            }
            _ = stop.changed() => break,
        }
    }
    let _ = conn.wr.write_all(&[0xE0, 0]).await;
}
