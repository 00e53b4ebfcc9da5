//! `$SYS/broker/...`: the broker's state as retained messages under
//! Mosquitto's topic names (mosquitto(8), "SYS TOPICS"), refreshed every
//! `sys_interval`.
//!
//! `heap/current` and `heap/maximum` are published when the heap is
//! counted ([`crate::heap::Counting`], as the `ferrymq` binary does;
//! Mosquitto has them when built with memory tracking). Not published: the
//! per-bridge `connection/...` topics (no bridges yet).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ferrymq_codec::{Properties, QoS, TopicName};
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::census::Census;
use crate::message::Message;
use crate::metrics::Metrics;

/// Publishes one `$SYS` value as a retained QoS 0 message.
fn publish(broker: &Broker, topic: &str, value: String) {
    let Ok(topic) = TopicName::new(topic) else {
        return;
    };
    broker.publish(Arc::new(Message {
        topic,
        payload: Bytes::from(value),
        qos: QoS::AtMostOnce,
        retain: true,
        properties: Properties::new(),
        received: Instant::now(),
        origin: 0,
        source: None,
    }));
}

/// The `load/...` series: what each counts and its topic below `load/`.
const LOAD_SERIES: [&str; 9] = [
    "messages/received",
    "messages/sent",
    "publish/dropped",
    "publish/received",
    "publish/sent",
    "bytes/received",
    "bytes/sent",
    "sockets",
    "connections",
];

/// The averaging windows of the load series, in seconds, and their names.
const LOAD_WINDOWS: [(f64, &str); 3] = [(60.0, "1min"), (300.0, "5min"), (900.0, "15min")];

/// Mosquitto's load averages: per series, the rate per minute over the last
/// interval, smoothed by an exponentially decaying moving average over 1, 5
/// and 15 minutes (`new = rate + e^(-dt/window) * (old - rate)`), as a Unix
/// load average is.
#[derive(Debug)]
pub struct Loads {
    /// The counters at the previous update, and when.
    last: [u64; 9],
    at: Instant,
    /// Per series, per window.
    averages: [[f64; 3]; 9],
}

impl Loads {
    /// Starts from zero at `started` (the broker's start: every counter
    /// was zero then).
    pub fn new(started: Instant) -> Loads {
        Loads {
            last: [0; 9],
            at: started,
            averages: [[0.0; 3]; 9],
        }
    }

    /// Folds in the counters as they are `now`.
    pub fn update(&mut self, counters: [u64; 9], now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        if dt <= 0.0 {
            return;
        }
        for ((average, last), current) in self.averages.iter_mut().zip(&self.last).zip(counters) {
            let per_minute = current.saturating_sub(*last) as f64 * 60.0 / dt;
            for (value, (window, _)) in average.iter_mut().zip(LOAD_WINDOWS) {
                let decay = (-dt / window).exp();
                *value = per_minute + decay * (*value - per_minute);
            }
        }
        self.last = counters;
        self.at = now;
    }

    /// (topic, value as Mosquitto formats it) for every series and window.
    pub fn topics(&self) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(27);
        for (series, average) in LOAD_SERIES.iter().zip(&self.averages) {
            for ((_, window), value) in LOAD_WINDOWS.iter().zip(average) {
                out.push((
                    format!("$SYS/broker/load/{series}/{window}"),
                    format!("{value:.2}"),
                ));
            }
        }
        out
    }
}

/// Messages Mosquitto counts as dropped: copies lost to full queues
/// (offline, or online and stalled).
fn publish_dropped(m: &Metrics) -> u64 {
    Metrics::get(&m.dropped_qos0_full)
        + Metrics::get(&m.dropped_queue_full)
        + Metrics::get(&m.dropped_stalled)
}

/// The counters behind [`LOAD_SERIES`], in that order.
fn load_counters(m: &Metrics) -> [u64; 9] {
    [
        Metrics::get(&m.messages_received),
        Metrics::get(&m.messages_sent),
        publish_dropped(m),
        Metrics::sum(&m.publish_received),
        Metrics::sum(&m.publish_sent),
        Metrics::get(&m.bytes_received),
        Metrics::get(&m.bytes_sent),
        Metrics::get(&m.sockets_accepted),
        Metrics::get(&m.connections_total),
    ]
}

/// Every `$SYS` topic and its value now (load averages as `loads` holds
/// them).
pub fn topics(broker: &Broker, loads: &Loads) -> Vec<(String, String)> {
    let m = &broker.metrics;
    let census = Census::take(broker);
    let connected = Metrics::get(&m.clients_connected);
    let disconnected = census.sessions.saturating_sub(connected);
    // Mosquitto's message store holds retained messages and those queued
    // for clients; ours: the retained ones plus the queued copies.
    let stored = census.retained + census.queued;
    let stored_bytes = census.retained_bytes + census.queued_bytes;
    let values: [(&str, String); 24] = [
        (
            "version",
            format!("ferrymq version {}", env!("CARGO_PKG_VERSION")),
        ),
        (
            "uptime",
            format!("{} seconds", broker.started.elapsed().as_secs()),
        ),
        ("clients/connected", connected.to_string()),
        ("clients/active", connected.to_string()),
        ("clients/disconnected", disconnected.to_string()),
        ("clients/inactive", disconnected.to_string()),
        ("clients/total", census.sessions.to_string()),
        (
            "clients/maximum",
            Metrics::get(&m.clients_maximum).to_string(),
        ),
        (
            "clients/expired",
            Metrics::get(&m.clients_expired).to_string(),
        ),
        (
            "messages/received",
            Metrics::get(&m.messages_received).to_string(),
        ),
        ("messages/sent", Metrics::get(&m.messages_sent).to_string()),
        ("messages/stored", stored.to_string()),
        ("store/messages/count", stored.to_string()),
        ("store/messages/bytes", stored_bytes.to_string()),
        (
            "publish/messages/received",
            Metrics::sum(&m.publish_received).to_string(),
        ),
        (
            "publish/messages/sent",
            Metrics::sum(&m.publish_sent).to_string(),
        ),
        ("publish/messages/dropped", publish_dropped(m).to_string()),
        (
            "publish/bytes/received",
            Metrics::sum(&m.publish_bytes_received).to_string(),
        ),
        (
            "publish/bytes/sent",
            Metrics::sum(&m.publish_bytes_sent).to_string(),
        ),
        (
            "bytes/received",
            Metrics::get(&m.bytes_received).to_string(),
        ),
        ("bytes/sent", Metrics::get(&m.bytes_sent).to_string()),
        ("subscriptions/count", census.subscriptions.to_string()),
        (
            "shared_subscriptions/count",
            census.shared_subscriptions.to_string(),
        ),
        ("retained messages/count", census.retained.to_string()),
    ];
    let mut out: Vec<(String, String)> = values
        .into_iter()
        .map(|(topic, value)| (format!("$SYS/broker/{topic}"), value))
        .collect();
    // ferrymq's own: overload and flow control (see the README's
    // "Overload"), drops by cause.
    let paused_seconds = Metrics::get(&m.publisher_paused_micros) as f64 / 1e6;
    let flow = [
        (
            "flow/publishers/paused",
            Metrics::get(&m.publishers_paused).to_string(),
        ),
        ("flow/pauses", Metrics::get(&m.publisher_pauses).to_string()),
        ("flow/paused/seconds", format!("{paused_seconds:.3}")),
        (
            "store/messages/high_water",
            census.queued_high_water.to_string(),
        ),
    ];
    out.extend(
        flow.into_iter()
            .map(|(t, v)| (format!("$SYS/broker/{t}"), v)),
    );
    for (cause, counter) in m.drops() {
        out.push((
            format!("$SYS/broker/publish/messages/dropped/{cause}"),
            Metrics::get(counter).to_string(),
        ));
    }
    if crate::heap::current() > 0 {
        out.push((
            "$SYS/broker/heap/current".into(),
            crate::heap::current().to_string(),
        ));
        out.push((
            "$SYS/broker/heap/maximum".into(),
            crate::heap::peak().to_string(),
        ));
    }
    out.extend(loads.topics());
    out
}

/// Publishes every `$SYS` topic once, after folding the counters into
/// `loads`.
pub fn publish_all(broker: &Broker, loads: &mut Loads) {
    loads.update(load_counters(&broker.metrics), Instant::now());
    for (topic, value) in topics(broker, loads) {
        publish(broker, &topic, value);
    }
}

/// Refreshes `$SYS` every `sys_interval` until shutdown.
pub async fn run(broker: Arc<Broker>, shutdown: CancellationToken) {
    let period = broker.config.sys_interval;
    if period.is_zero() {
        return;
    }
    let mut loads = Loads::new(broker.started);
    let mut ticker = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = ticker.tick() => publish_all(&broker, &mut loads),
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_steady_rate_converges_on_its_per_minute_value() {
        let start = Instant::now();
        let mut loads = Loads::new(start);
        // 10 messages a second, updated every 10 s for three hours (twelve
        // time constants of the 15-minute average).
        for i in 1..=1080u64 {
            let mut counters = [0; 9];
            counters[0] = i * 100;
            loads.update(counters, start + Duration::from_secs(i * 10));
        }
        for value in loads.averages[0] {
            assert!((value - 600.0).abs() < 1.0, "{value}");
        }
        assert_eq!(loads.averages[1], [0.0; 3]);
    }

    #[test]
    fn one_minute_average_after_one_minute_is_one_minus_one_over_e() {
        let start = Instant::now();
        let mut loads = Loads::new(start);
        let mut counters = [0; 9];
        counters[8] = 60;
        loads.update(counters, start + Duration::from_secs(60));
        // 60 per minute for one minute from 0: 60 * (1 - e^-1) ≈ 37.93.
        let topics = loads.topics();
        let one_min = topics
            .iter()
            .find(|(t, _)| t == "$SYS/broker/load/connections/1min")
            .map(|(_, v)| v.as_str());
        assert_eq!(one_min, Some("37.93"));
    }
}
