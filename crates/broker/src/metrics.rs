//! Broker-wide counters, read by `$SYS` and (later) the metrics endpoint.
//!
//! Connection tasks add to them once per batch of packets, not once per
//! packet, so that cores do not fight over these cache lines on the hot path.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub clients_connected: AtomicU64,
    /// Persistent sessions currently without a connection.
    pub clients_disconnected: AtomicU64,
    pub clients_maximum: AtomicU64,
    pub connections_total: AtomicU64,
    pub messages_received: AtomicU64,
    pub messages_sent: AtomicU64,
    pub publish_received: AtomicU64,
    pub publish_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// QoS 0 dropped because a subscriber's queue was full.
    pub dropped_qos0_full: AtomicU64,
    /// QoS 1/2 dropped because a session's queue reached `max_queued_messages`.
    pub dropped_queue_full: AtomicU64,
    /// Connections closed for a protocol violation.
    pub protocol_errors: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        if n != 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn client_connected(&self) {
        let now = self.clients_connected.fetch_add(1, Ordering::Relaxed) + 1;
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        self.clients_maximum.fetch_max(now, Ordering::Relaxed);
    }
}

/// Per-connection tallies, flushed into [`Metrics`] in batches.
#[derive(Debug, Default)]
pub struct Tally {
    pub messages_received: u64,
    pub messages_sent: u64,
    pub publish_received: u64,
    pub publish_sent: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

impl Tally {
    pub fn flush(&mut self, m: &Metrics) {
        Metrics::add(&m.messages_received, self.messages_received);
        Metrics::add(&m.messages_sent, self.messages_sent);
        Metrics::add(&m.publish_received, self.publish_received);
        Metrics::add(&m.publish_sent, self.publish_sent);
        Metrics::add(&m.bytes_received, self.bytes_received);
        Metrics::add(&m.bytes_sent, self.bytes_sent);
        *self = Tally::default();
    }
}
