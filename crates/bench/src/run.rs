//! The three commands: connect the clients, run them while the progress
//! display ticks, stop them, drain, and add up.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

use crate::args::{qos, topic_for, Common, ConnArgs, PubArgs, SubArgs};
use crate::conn::{Conn, Target};
use crate::load::{
    connect_all, hold, publisher, subscriber, PubPlan, PubReport, Shared, SubReport,
};
use crate::payload::now_ns;
use crate::stats::{rate, rss_bytes, Latency, SeqSet};
use crate::summary::{ConnectStats, Summary};

/// How often the progress display and the end conditions are checked.
const TICK: Duration = Duration::from_millis(200);

/// How long subscribers may stay silent at the end before the messages
/// still owed to them count as undelivered.
const QUIET_END: Duration = Duration::from_secs(1);

/// Longest wait for subscribers to catch up at the end.
const DRAIN_MAX: Duration = Duration::from_secs(15);

/// A run ends at its duration, at Ctrl-C, or when the publishers are done;
/// a run in which nothing moves for this long ends with an error.
const STALL: Duration = Duration::from_secs(10);

fn client_ids(common: &Common, role: &str, count: usize) -> Vec<String> {
    let pid = std::process::id();
    (1..=count)
        .map(|n| format!("{}-{role}-{pid}-{n}", common.prefix))
        .collect()
}

fn base_summary(command: &str, target: &Target) -> Summary {
    Summary {
        command: command.into(),
        target: target.describe(),
        protocol: format!("{:?}", target.protocol),
        ..Summary::default()
    }
}

fn connect_stats(attempted: usize, connected: u64, elapsed: Duration) -> ConnectStats {
    ConnectStats {
        attempted: attempted as u64,
        connected,
        failed: attempted as u64 - connected.min(attempted as u64),
        seconds: elapsed.as_secs_f64(),
        per_second: rate(connected, elapsed),
    }
}

/// The live display on stderr (hidden when stderr is not a terminal).
struct Progress {
    bar: ProgressBar,
    last: (u64, u64, Instant),
}

impl Progress {
    fn new(quiet: bool) -> Progress {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new_spinner()
        };
        if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}") {
            bar.set_style(style);
        }
        Progress {
            bar,
            last: (0, 0, Instant::now()),
        }
    }

    fn update(&mut self, shared: &Shared, of: usize) {
        let (sent, received) = (
            shared.sent.load(Ordering::Relaxed),
            shared.received.load(Ordering::Relaxed),
        );
        let elapsed = self.last.2.elapsed();
        let msg = format!(
            "connected {}/{of}  sent {:.0}/s  received {:.0}/s  errors {}",
            shared.connected.load(Ordering::Relaxed),
            rate(sent - self.last.0, elapsed),
            rate(received - self.last.1, elapsed),
            shared.errors.load(Ordering::Relaxed),
        );
        self.bar.set_message(msg);
        self.bar.tick();
        self.last = (sent, received, Instant::now());
    }
}

/// Waits for the end of the run: duration, Ctrl-C, `finished` turning
/// true, or a stall. Returns why it ended.
async fn run_until(
    common: &Common,
    shared: &Shared,
    progress: &mut Progress,
    clients: usize,
    stall_detection: bool,
    mut finished: impl FnMut() -> bool,
) -> Option<String> {
    let started = Instant::now();
    let deadline = common.duration.map(Duration::from_secs_f64);
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    let mut ticker = tokio::time::interval(TICK);
    let mut moved = (0, 0, Instant::now());
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shared.publisher_done.notified() => {}
            _ = &mut ctrl_c => return None,
        }
        progress.update(shared, clients);
        if deadline.is_some_and(|d| started.elapsed() >= d) || finished() {
            return None;
        }
        let now = (
            shared.sent.load(Ordering::Relaxed),
            shared.received.load(Ordering::Relaxed),
        );
        if now != (moved.0, moved.1) {
            moved = (now.0, now.1, Instant::now());
        } else if stall_detection && moved.2.elapsed() >= STALL {
            return Some(format!(
                "nothing was sent or received for {} s: ending the run",
                STALL.as_secs()
            ));
        }
    }
}

/// Snapshot of the counters at the start of the measured interval.
struct Mark {
    at: Instant,
    sent: u64,
    acked: u64,
    received: u64,
}

impl Mark {
    fn take(shared: &Shared) -> Mark {
        Mark {
            at: Instant::now(),
            sent: shared.sent.load(Ordering::Relaxed),
            acked: shared.acked.load(Ordering::Relaxed),
            received: shared.received.load(Ordering::Relaxed),
        }
    }
}

/// Spawns a task that takes the warm-up mark when the warm-up is over.
fn warmup_mark(common: &Common, shared: &Arc<Shared>) -> tokio::task::JoinHandle<Mark> {
    let warmup = Duration::from_secs_f64(common.warmup.max(0.0));
    let from_ns = now_ns() + warmup.as_nanos() as u64;
    shared.measure_from_ns.store(from_ns, Ordering::Relaxed);
    let shared = shared.clone();
    tokio::spawn(async move {
        tokio::time::sleep(warmup).await;
        Mark::take(&shared)
    })
}

pub async fn run_pub(args: PubArgs) -> anyhow::Result<Summary> {
    let common = &args.common;
    let target = Target::from_args(common)?;
    if args.size > 0 && args.size < crate::payload::STAMP_LEN {
        eprintln!(
            "note: payloads under {} bytes carry no stamp: no latency and no loss figures",
            crate::payload::STAMP_LEN
        );
    }
    let shared = Arc::new(Shared::new(args.subscribers));
    let mut progress = Progress::new(common.quiet);
    let interval = Duration::from_millis(common.interval_ms);
    let connect_started = Instant::now();

    // Subscribers first, subscribed before anything is published.
    let sub_filter = args
        .sub_topic
        .clone()
        .unwrap_or_else(|| args.topic.replace("%i", "+"));
    let sub_qos = qos(args.sub_qos.unwrap_or(args.qos));
    let mut subs = connect_all(
        &target,
        client_ids(common, "sub", args.subscribers),
        interval,
        common.connect_concurrency,
        &shared,
    )
    .await;
    for (n, conn) in subs.iter_mut().enumerate() {
        if let Some(c) = conn {
            if let Err(e) = c.subscribe(&topic_for(&sub_filter, n + 1), sub_qos).await {
                shared.error(format!("subscriber {n}: {e:#}"));
                *conn = None;
            }
        }
    }
    let pubs = connect_all(
        &target,
        client_ids(common, "pub", common.count),
        interval,
        common.connect_concurrency,
        &shared,
    )
    .await;
    let connect = connect_stats(
        args.subscribers + common.count,
        shared.connected.load(Ordering::Relaxed),
        connect_started.elapsed(),
    );
    if pubs.iter().all(Option::is_none) {
        bail!("no publisher could connect: {:?}", shared.error_samples());
    }
    if subs.iter().any(Option::is_none) {
        bail!(
            "not every subscriber could connect and subscribe: {:?}",
            shared.error_samples()
        );
    }

    let (stop_subs, stop_subs_rx) = watch::channel(false);
    let (stop_pubs, stop_pubs_rx) = watch::channel(false);
    let publishers = common.count;
    let sub_tasks: Vec<_> = subs
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(n, conn)| {
            tokio::spawn(subscriber(
                conn,
                n,
                publishers,
                shared.clone(),
                stop_subs_rx.clone(),
            ))
        })
        .collect();
    let per_publisher_rate = match (args.rate, args.publish_interval_ms) {
        (Some(total), _) => Some(total / publishers as f64),
        (None, Some(ms)) if ms > 0.0 => Some(1000.0 / ms),
        _ => None,
    };
    let warm = warmup_mark(common, &shared);
    let pub_tasks: Vec<_> = pubs
        .into_iter()
        .enumerate()
        .filter_map(|(n, conn)| Some((n, conn?)))
        .map(|(n, conn)| {
            let plan = PubPlan {
                index: n as u32,
                topic: Bytes::from(topic_for(&args.topic, n + 1)),
                qos: qos(args.qos),
                size: args.size,
                limit: args.limit,
                rate: per_publisher_rate,
                inflight: args
                    .inflight
                    .unwrap_or(if args.qos == 2 { 20 } else { 256 }),
                max_ahead: if args.subscribers > 0 {
                    args.max_ahead
                } else {
                    0
                },
            };
            tokio::spawn(publisher(conn, plan, shared.clone(), stop_pubs_rx.clone()))
        })
        .collect();

    let stalled = run_until(
        common,
        &shared,
        &mut progress,
        args.subscribers + publishers,
        true,
        || shared.publishers_done.load(Ordering::Acquire) >= pub_tasks.len() as u64,
    )
    .await;
    let end = Mark::take(&shared);
    let _ = stop_pubs.send(true);
    let mut reports: Vec<PubReport> = Vec::new();
    for task in pub_tasks {
        reports.push(task.await.unwrap_or_default());
    }
    let sent_total: u64 = reports.iter().map(|r| r.sent).sum();
    // Let the subscribers catch up with what was sent, as long as they
    // keep making progress.
    let drain_started = Instant::now();
    let mut last = (shared.received.load(Ordering::Relaxed), Instant::now());
    while !shared
        .sub_received
        .iter()
        .all(|r| r.load(Ordering::Relaxed) >= sent_total)
        && last.1.elapsed() < QUIET_END
        && drain_started.elapsed() < DRAIN_MAX
    {
        let _ = tokio::time::timeout(TICK, shared.progress.notified()).await;
        let now = shared.received.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        }
        progress.update(&shared, args.subscribers + publishers);
    }
    let _ = stop_subs.send(true);
    let mut sub_reports: Vec<SubReport> = Vec::new();
    for task in sub_tasks {
        sub_reports.push(task.await.unwrap_or_default());
    }
    progress.bar.finish_and_clear();
    if let Some(why) = stalled {
        shared.error(why);
    }

    let start = warm.await.unwrap_or_else(|_| Mark::take(&shared));
    let window = end.at.saturating_duration_since(start.at);
    let acked: Vec<SeqSet> = reports.iter().map(|r| r.acked.clone()).collect();
    let confirmed = args.qos > 0;
    let mut summary = base_summary("pub", &target);
    summary.qos = Some(args.qos);
    summary.payload_bytes = Some(args.size);
    summary.publishers = Some(publishers);
    summary.subscribers = Some(args.subscribers);
    summary.connect = connect;
    summary.seconds = window.as_secs_f64();
    summary.sent = Some(sent_total);
    summary.sent_per_second = Some(rate(end.sent.saturating_sub(start.sent), window));
    if confirmed {
        summary.acked = Some(acked.iter().map(SeqSet::len).sum());
        summary.acked_per_second = Some(rate(end.acked.saturating_sub(start.acked), window));
        summary.rejected = Some(reports.iter().map(|r| r.rejected).sum());
    }
    if args.subscribers > 0 {
        add_receipts(
            &mut summary,
            &sub_reports,
            window,
            end.received,
            start.received,
        );
        if args.size >= crate::payload::STAMP_LEN {
            let owed = sent_total * sub_reports.len() as u64;
            let distinct: u64 = sub_reports.iter().map(|r| r.receipts.distinct()).sum();
            summary.undelivered = Some(owed.saturating_sub(distinct));
            if confirmed && sub_qos != ferrymq_codec::QoS::AtMostOnce {
                summary.lost_acked =
                    Some(sub_reports.iter().map(|r| r.receipts.lost(&acked)).sum());
            }
        }
    }
    summary.errors = shared.errors.load(Ordering::Relaxed);
    summary.error_samples = shared.error_samples();
    Ok(summary)
}

/// Adds what subscribers saw: deliveries, rate, latency, duplicates.
fn add_receipts(
    summary: &mut Summary,
    reports: &[SubReport],
    window: Duration,
    end_received: u64,
    start_received: u64,
) {
    let mut latency = Latency::new();
    for r in reports {
        latency.merge(&r.latency);
    }
    summary.received = Some(reports.iter().map(|r| r.received).sum());
    summary.received_per_second = Some(rate(end_received.saturating_sub(start_received), window));
    summary.latency_us = latency.summary();
    summary.duplicates = Some(reports.iter().map(|r| r.receipts.duplicates).sum());
    summary.out_of_order = Some(reports.iter().map(|r| r.receipts.out_of_order).sum());
    summary.unstamped = Some(reports.iter().map(|r| r.receipts.unstamped).sum());
}

/// Stamps from more publishers than this are counted but not tracked.
const SUB_MAX_PUBLISHERS: usize = 100_000;

pub async fn run_sub(args: SubArgs) -> anyhow::Result<Summary> {
    let common = &args.common;
    let target = Target::from_args(common)?;
    let shared = Arc::new(Shared::new(common.count));
    let mut progress = Progress::new(common.quiet);
    let started = Instant::now();
    let mut subs = connect_all(
        &target,
        client_ids(common, "sub", common.count),
        Duration::from_millis(common.interval_ms),
        common.connect_concurrency,
        &shared,
    )
    .await;
    for (n, conn) in subs.iter_mut().enumerate() {
        if let Some(c) = conn {
            if let Err(e) = c
                .subscribe(&topic_for(&args.topic, n + 1), qos(args.qos))
                .await
            {
                shared.error(format!("subscriber {n}: {e:#}"));
                *conn = None;
            }
        }
    }
    let connect = connect_stats(
        common.count,
        shared.connected.load(Ordering::Relaxed),
        started.elapsed(),
    );
    if subs.iter().all(Option::is_none) {
        bail!("no subscriber could connect: {:?}", shared.error_samples());
    }
    let (stop, stop_rx) = watch::channel(false);
    let warm = warmup_mark(common, &shared);
    let tasks: Vec<_> = subs
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(n, conn)| {
            tokio::spawn(subscriber(
                conn,
                n,
                SUB_MAX_PUBLISHERS,
                shared.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    // Subscribers wait for publishers elsewhere: silence is not a stall.
    let stalled = run_until(common, &shared, &mut progress, common.count, false, || {
        tasks.iter().all(|t| t.is_finished())
    })
    .await;
    let end = Mark::take(&shared);
    let _ = stop.send(true);
    let mut reports = Vec::new();
    for task in tasks {
        reports.push(task.await.unwrap_or_default());
    }
    progress.bar.finish_and_clear();
    if let Some(why) = stalled {
        shared.error(why);
    }
    let start = warm.await.unwrap_or_else(|_| Mark::take(&shared));
    let window = end.at.saturating_duration_since(start.at);
    let mut summary = base_summary("sub", &target);
    summary.qos = Some(args.qos);
    summary.subscribers = Some(common.count);
    summary.connect = connect;
    summary.seconds = window.as_secs_f64();
    add_receipts(&mut summary, &reports, window, end.received, start.received);
    summary.gaps = Some(reports.iter().map(|r| r.receipts.gaps()).sum());
    summary.errors = shared.errors.load(Ordering::Relaxed);
    summary.error_samples = shared.error_samples();
    Ok(summary)
}

/// Subscribes every connection to `filters` (`%i`: its number, from 1),
/// all connections at once; a connection whose SUBSCRIBE fails is counted
/// as an error and kept.
async fn subscribe_all(conns: Vec<Conn>, filters: &[String], shared: &Arc<Shared>) -> Vec<Conn> {
    if filters.is_empty() {
        return conns;
    }
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut conn)| {
            let filters: Vec<String> = filters.iter().map(|f| topic_for(f, i + 1)).collect();
            let shared = shared.clone();
            tokio::spawn(async move {
                for filter in &filters {
                    if let Err(e) = conn
                        .subscribe(filter, ferrymq_codec::QoS::AtLeastOnce)
                        .await
                    {
                        shared.error(format!("subscribe {filter}: {e:#}"));
                    }
                }
                conn
            })
        })
        .collect();
    let mut conns = Vec::with_capacity(tasks.len());
    for task in tasks {
        if let Ok(conn) = task.await {
            conns.push(conn);
        }
    }
    conns
}

pub async fn run_conn(args: ConnArgs) -> anyhow::Result<Summary> {
    let common = &args.common;
    let mut target = Target::from_args(common)?;
    // Idle clients read a PINGRESP now and then: a small buffer each keeps
    // the generator's own memory low with thousands of them.
    target.read_chunk = 256;
    let shared = Arc::new(Shared::new(0));
    let mut progress = Progress::new(common.quiet);
    let before = args.broker_pid.and_then(rss_bytes);
    let started = Instant::now();
    let connecting = connect_all(
        &target,
        client_ids(common, "conn", common.count),
        Duration::from_millis(common.interval_ms),
        common.connect_concurrency,
        &shared,
    );
    let conns: Vec<Conn> = {
        let mut connecting = std::pin::pin!(connecting);
        let mut ticker = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                conns = &mut connecting => break conns.into_iter().flatten().collect(),
                _ = ticker.tick() => progress.update(&shared, common.count),
            }
        }
    };
    let elapsed = started.elapsed();
    let connected = conns.len() as u64;
    let conns = subscribe_all(conns, &args.subscribe, &shared).await;
    let after = args.broker_pid.and_then(rss_bytes);
    let (stop, stop_rx) = watch::channel(false);
    let held: Vec<_> = conns
        .into_iter()
        .map(|c| tokio::spawn(hold(c, shared.clone(), stop_rx.clone())))
        .collect();
    if common.duration.is_none_or(|d| d > 0.0) {
        run_until(common, &shared, &mut progress, common.count, false, || {
            false
        })
        .await;
    }
    let _ = stop.send(true);
    for task in held {
        let _ = task.await;
    }
    progress.bar.finish_and_clear();
    let mut summary = base_summary("conn", &target);
    summary.connect = connect_stats(common.count, connected, elapsed);
    summary.broker_rss_before_bytes = before;
    summary.broker_rss_after_bytes = after;
    if let (Some(b), Some(a)) = (before, after) {
        if connected > 0 {
            summary.broker_rss_per_connection_bytes =
                Some(a.saturating_sub(b) as f64 / connected as f64);
        }
    }
    summary.errors = shared.errors.load(Ordering::Relaxed);
    summary.error_samples = shared.error_samples();
    Ok(summary)
}
