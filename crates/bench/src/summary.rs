//! The end-of-run report: one JSON object (`--json`) or a short table.

use serde::Serialize;

use crate::stats::LatencySummary;

#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnectStats {
    pub attempted: u64,
    pub connected: u64,
    pub failed: u64,
    /// From the first connect to the last CONNACK (or failure).
    pub seconds: f64,
    pub per_second: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub command: String,
    pub target: String,
    pub protocol: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qos: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publishers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscribers: Option<usize>,
    pub connect: ConnectStats,
    /// Length of the measured interval (warm-up left out).
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_per_second: Option<f64>,
    /// QoS 1/2 messages the broker acknowledged (PUBACK, or PUBREC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acked: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acked_per_second: Option<f64>,
    /// Deliveries counted by the subscribers (one message to 50
    /// subscribers is 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received_per_second: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<LatencySummary>,
    /// Deliveries owed to the subscribers that never came, acknowledged or
    /// not (QoS 0 may legitimately be dropped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undelivered: Option<u64>,
    /// Deliveries of messages the broker acknowledged that never came,
    /// to subscribers at QoS 1 or 2: a broken promise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost_acked: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicates: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_of_order: Option<u64>,
    /// Messages missing inside a publisher's sequence (`bench sub`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gaps: Option<u64>,
    /// Received messages without a bench stamp.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unstamped: Option<u64>,
    /// Acknowledgements carrying an error reason code (MQTT 5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<u64>,
    pub errors: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub error_samples: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_rss_before_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_rss_after_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_rss_per_connection_bytes: Option<f64>,
}

impl Summary {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The summary for a person.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut line = |label: &str, value: String| {
            out.push_str(&format!("{label:<22}{value}\n"));
        };
        line("target", format!("{} ({})", self.target, self.protocol));
        let c = &self.connect;
        line(
            "connections",
            format!(
                "{} of {} in {:.2} s ({:.0}/s), {} failed",
                c.connected, c.attempted, c.seconds, c.per_second, c.failed
            ),
        );
        if let (Some(before), Some(after)) =
            (self.broker_rss_before_bytes, self.broker_rss_after_bytes)
        {
            line(
                "broker memory",
                format!(
                    "{:.1} MiB -> {:.1} MiB, {:.0} B per connection",
                    before as f64 / 1048576.0,
                    after as f64 / 1048576.0,
                    self.broker_rss_per_connection_bytes.unwrap_or(0.0)
                ),
            );
        }
        if self.sent.is_some() || self.received.is_some() {
            line("measured", format!("{:.2} s", self.seconds));
        }
        if let (Some(n), Some(r)) = (self.sent, self.sent_per_second) {
            line("sent", format!("{n} ({r:.0} msg/s)"));
        }
        if let (Some(n), Some(r)) = (self.acked, self.acked_per_second) {
            line("acknowledged", format!("{n} ({r:.0} msg/s)"));
        }
        if let (Some(n), Some(r)) = (self.received, self.received_per_second) {
            line("received", format!("{n} ({r:.0} msg/s)"));
        }
        if let Some(l) = &self.latency_us {
            line(
                "latency (µs)",
                format!(
                    "p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}  ({} samples)",
                    l.p50, l.p90, l.p99, l.p999, l.max, l.count
                ),
            );
        }
        let counts = [
            ("lost (acknowledged)", self.lost_acked),
            ("undelivered", self.undelivered),
            ("gaps", self.gaps),
            ("duplicates", self.duplicates),
            ("out of order", self.out_of_order),
            ("unstamped", self.unstamped),
            ("rejected", self.rejected),
        ];
        for (label, value) in counts {
            if let Some(v) = value {
                line(label, v.to_string());
            }
        }
        line("errors", self.errors.to_string());
        for sample in &self.error_samples {
            line("", sample.clone());
        }
        out
    }
}
