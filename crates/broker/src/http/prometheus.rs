//! `/metrics`: the counters and a [`Census`] in the Prometheus text format
//! (version 0.0.4), every name prefixed `ferrymq_`, each family with its
//! HELP and TYPE lines.

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;

use crate::broker::Broker;
use crate::census::Census;
use crate::metrics::{Metrics, PerQos};

/// Builds the exposition text.
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP ferrymq_{name} {help}");
        let _ = writeln!(self.out, "# TYPE ferrymq_{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = write!(self.out, "ferrymq_{name}");
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A family with one unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    fn labelled(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        label: &str,
        values: &[(&str, &AtomicU64)],
    ) {
        self.family(name, kind, help);
        for (value, counter) in values {
            self.sample(name, &[(label, value)], Metrics::get(counter));
        }
    }

    fn per_qos(&mut self, name: &str, help: &str, counters: &PerQos) {
        self.family(name, "counter", help);
        for (qos, counter) in ["0", "1", "2"].iter().zip(counters) {
            self.sample(name, &[("qos", qos)], Metrics::get(counter));
        }
    }
}

/// Label values escaped as the format asks (backslash, quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The whole exposition.
pub fn render(broker: &Broker) -> String {
    let m = &broker.metrics;
    let census = Census::take(broker);
    let mut e = Exposition {
        out: String::with_capacity(8 * 1024),
    };
    e.family("build_info", "gauge", "The running ferrymq version.");
    e.sample("build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1);
    e.single(
        "uptime_seconds",
        "gauge",
        "Seconds since the broker started.",
        broker.started.elapsed().as_secs(),
    );

    // Connections and sessions.
    e.single(
        "connections",
        "gauge",
        "MQTT clients connected now.",
        Metrics::get(&m.clients_connected),
    );
    e.single(
        "connections_maximum",
        "gauge",
        "Most MQTT clients connected at once since start.",
        Metrics::get(&m.clients_maximum),
    );
    e.single(
        "sessions",
        "gauge",
        "Sessions, connected and parked (persistent sessions whose client is away).",
        census.sessions,
    );
    e.single(
        "sockets_accepted_total",
        "counter",
        "TCP connections accepted by the MQTT listeners, before any handshake.",
        Metrics::get(&m.sockets_accepted),
    );
    e.single(
        "connects_total",
        "counter",
        "CONNECTs accepted.",
        Metrics::get(&m.connections_total),
    );
    e.labelled(
        "connects_refused_total",
        "counter",
        "Connections refused before or at CONNECT, by reason (no_connect: no valid CONNECT, \
         or a failed PROXY/TLS/WebSocket handshake; listener_full: the listener's \
         max_connections were in use).",
        "reason",
        &m.refused.all(),
    );
    e.labelled(
        "disconnects_total",
        "counter",
        "Connections ended after CONNECT, by reason.",
        "reason",
        &m.disconnects.all(),
    );
    e.single(
        "sessions_expired_total",
        "counter",
        "Parked sessions ended by their expiry interval.",
        Metrics::get(&m.clients_expired),
    );

    // Traffic.
    e.single(
        "packets_received_total",
        "counter",
        "MQTT packets received, of every type.",
        Metrics::get(&m.messages_received),
    );
    e.single(
        "packets_sent_total",
        "counter",
        "MQTT packets sent, of every type.",
        Metrics::get(&m.messages_sent),
    );
    e.single(
        "bytes_received_total",
        "counter",
        "MQTT bytes received (TLS and WebSocket framing not counted).",
        Metrics::get(&m.bytes_received),
    );
    e.single(
        "bytes_sent_total",
        "counter",
        "MQTT bytes sent (TLS and WebSocket framing not counted).",
        Metrics::get(&m.bytes_sent),
    );
    e.per_qos(
        "messages_received_total",
        "PUBLISH packets received, by QoS.",
        &m.publish_received,
    );
    e.per_qos(
        "messages_sent_total",
        "PUBLISH packets sent, by QoS (the delivered QoS).",
        &m.publish_sent,
    );
    e.per_qos(
        "message_bytes_received_total",
        "Payload bytes of the PUBLISH packets received, by QoS.",
        &m.publish_bytes_received,
    );
    e.per_qos(
        "message_bytes_sent_total",
        "Payload bytes of the PUBLISH packets sent, by QoS.",
        &m.publish_bytes_sent,
    );
    e.labelled(
        "messages_dropped_total",
        "counter",
        "Copies of messages not delivered to a subscriber, by reason: queue_full (QoS 1/2 \
         for an offline session whose queue is full), stalled (QoS 1/2 for an online \
         session whose full queue made no progress for max_queue_stall_ms), \
         qos0_queue_full (QoS 0 dropped or evicted by a full queue), qos0_offline (QoS 0 \
         for an offline session), expired, too_large (above the client's Maximum Packet \
         Size), acl_denied.",
        "reason",
        &m.drops(),
    );
    e.single(
        "publishers_paused",
        "gauge",
        "Publishing connections not read now: a subscriber they feed has a full queue (they go \
         at its pace), or their store writes outran the disk.",
        Metrics::get(&m.publishers_paused),
    );
    e.single(
        "publisher_pauses_total",
        "counter",
        "Times a publishing connection was paused so.",
        Metrics::get(&m.publisher_pauses),
    );
    e.single(
        "publisher_paused_seconds_total",
        "counter",
        "Time publishing connections spent paused, summed over connections.",
        Metrics::get(&m.publisher_paused_micros) as f64 / 1e6,
    );
    e.single(
        "publish_denied_total",
        "counter",
        "PUBLISH packets the ACL refused.",
        Metrics::get(&m.denied_publish),
    );

    // State.
    e.single(
        "queued_messages",
        "gauge",
        "Messages waiting in session queues (online and offline), counted per session.",
        census.queued,
    );
    e.single(
        "queued_messages_max",
        "gauge",
        "Messages in the deepest session queue.",
        census.queued_max,
    );
    e.single(
        "queued_messages_high_water",
        "gauge",
        "The most messages any present session's queue has held at once.",
        census.queued_high_water,
    );
    e.single(
        "queued_bytes",
        "gauge",
        "Bytes of the messages waiting in session queues (topic, payload and properties, as \
         max_queued_bytes counts them).",
        census.queued_bytes,
    );
    e.single(
        "subscriptions",
        "gauge",
        "Subscriptions (filter and session pairs), shared ones included.",
        census.subscriptions,
    );
    e.single(
        "shared_subscriptions",
        "gauge",
        "Subscriptions in share groups ($share/...).",
        census.shared_subscriptions,
    );
    e.single(
        "retained_messages",
        "gauge",
        "Retained messages, $SYS included.",
        census.retained,
    );
    e.single(
        "retained_bytes",
        "gauge",
        "Payload bytes of the retained messages.",
        census.retained_bytes,
    );

    // The store's group-commit writer.
    if let Some(p) = &broker.persist {
        let stats = p.writer.stats();
        e.family(
            "store_commit_seconds",
            "histogram",
            "Time of each group commit of the store (the fsync that makes a group of writes durable).",
        );
        let mut cumulative = 0;
        for (bound, counter) in ferrymq_store::COMMIT_BUCKETS_MICROS
            .iter()
            .zip(&stats.commit_buckets)
        {
            cumulative += Metrics::get(counter);
            let le = format!("{}", *bound as f64 / 1e6);
            e.sample("store_commit_seconds_bucket", &[("le", &le)], cumulative);
        }
        // +Inf and the count from the buckets themselves (the overflow one
        // included), so the histogram is consistent even mid-commit.
        let overflow = stats.commit_buckets.last().map_or(0, Metrics::get);
        let commits = cumulative + overflow;
        e.sample("store_commit_seconds_bucket", &[("le", "+Inf")], commits);
        e.sample(
            "store_commit_seconds_sum",
            &[],
            Metrics::get(&stats.commit_micros) as f64 / 1e6,
        );
        e.sample("store_commit_seconds_count", &[], commits);
        e.single(
            "store_ops_total",
            "counter",
            "Store writes committed (one message, session or retained record each).",
            Metrics::get(&stats.ops),
        );
    }
    e.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
