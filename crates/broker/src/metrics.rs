//! Broker-wide counters, read by `$SYS` and the Prometheus endpoint.
//!
//! Connections add to them once per batch of packets, not once per packet
//! ([`Tally`]), so that cores do not fight over these cache lines on the
//! hot path. Rare events (a connect, a disconnect, a dropped copy) add
//! directly, with relaxed atomics.
//!
//! The tally is the thread's, not the connection's: handling a batch of
//! packets never awaits, so the connection that counts into it flushes it
//! (`Tally::flush_thread`) before the thread does anything else, and an
//! idle connection carries no counters.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use ferrymq_codec::{QoS, ReasonCode};

use crate::protocol::Close;

/// Per-QoS counters, indexed by the QoS value (0, 1, 2).
pub type PerQos = [AtomicU64; 3];

#[derive(Debug, Default)]
pub struct Metrics {
    pub clients_connected: AtomicU64,
    /// Persistent sessions currently without a connection.
    pub clients_disconnected: AtomicU64,
    pub clients_maximum: AtomicU64,
    /// CONNECTs accepted since start.
    pub connections_total: AtomicU64,
    /// Sockets accepted by the listeners since start (before any handshake).
    pub sockets_accepted: AtomicU64,
    /// Parked sessions ended by their expiry interval.
    pub clients_expired: AtomicU64,
    /// MQTT packets of every type.
    pub messages_received: AtomicU64,
    pub messages_sent: AtomicU64,
    /// PUBLISH packets by QoS.
    pub publish_received: PerQos,
    pub publish_sent: PerQos,
    /// PUBLISH payload bytes by QoS (Mosquitto's `publish/bytes/...`).
    pub publish_bytes_received: PerQos,
    pub publish_bytes_sent: PerQos,
    /// Bytes on the wire (MQTT bytes; TLS and WebSocket framing excluded).
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// QoS 0 dropped because a subscriber's queue was full.
    pub dropped_qos0_full: AtomicU64,
    /// QoS 1/2 dropped because an offline session's queue was full
    /// (`max_queued_messages`, `max_queued_bytes`).
    pub dropped_queue_full: AtomicU64,
    /// QoS 1/2 dropped because an online session's queue was full and
    /// made no progress for `max_queue_stall_ms`.
    pub dropped_stalled: AtomicU64,
    /// Publishing connections not being read now because a subscriber
    /// they fed is full (or their store writes outran the disk).
    pub publishers_paused: AtomicU64,
    /// Times a publishing connection was paused so, since start.
    pub publisher_pauses: AtomicU64,
    /// Microseconds publishing connections spent paused, summed.
    pub publisher_paused_micros: AtomicU64,
    /// QoS 0 not queued for a persistent session that is offline.
    pub dropped_qos0_offline: AtomicU64,
    /// Messages whose expiry interval passed before they could be sent.
    pub dropped_expired: AtomicU64,
    /// Messages larger than a client's Maximum Packet Size.
    pub dropped_too_large: AtomicU64,
    /// Deliveries the ACL refused (read access).
    pub dropped_acl_read: AtomicU64,
    /// PUBLISHes the ACL refused (write access).
    pub denied_publish: AtomicU64,
    /// Connections closed for a protocol violation.
    pub protocol_errors: AtomicU64,
    pub refused: Refusals,
    pub disconnects: Disconnects,
}

/// CONNECTs refused, by reason.
#[derive(Debug, Default)]
pub struct Refusals {
    pub not_authorized: AtomicU64,
    pub client_id_not_valid: AtomicU64,
    pub unsupported_protocol_version: AtomicU64,
    pub bad_authentication_method: AtomicU64,
    pub server_busy: AtomicU64,
    pub other: AtomicU64,
    /// No valid CONNECT at all: timeout, a malformed or missing CONNECT,
    /// a failed TLS or WebSocket handshake.
    pub no_connect: AtomicU64,
    /// Closed at accept: the listener's `max_connections` were in use.
    pub listener_full: AtomicU64,
}

impl Refusals {
    pub fn counter(&self, reason: ReasonCode) -> &AtomicU64 {
        match reason {
            ReasonCode::NotAuthorized | ReasonCode::BadUserNameOrPassword => &self.not_authorized,
            ReasonCode::ClientIdentifierNotValid => &self.client_id_not_valid,
            ReasonCode::UnsupportedProtocolVersion => &self.unsupported_protocol_version,
            ReasonCode::BadAuthenticationMethod => &self.bad_authentication_method,
            ReasonCode::ServerBusy => &self.server_busy,
            _ => &self.other,
        }
    }

    /// (label, counter) for every reason.
    pub fn all(&self) -> [(&'static str, &AtomicU64); 8] {
        [
            ("not_authorized", &self.not_authorized),
            ("client_id_not_valid", &self.client_id_not_valid),
            (
                "unsupported_protocol_version",
                &self.unsupported_protocol_version,
            ),
            ("bad_authentication_method", &self.bad_authentication_method),
            ("server_busy", &self.server_busy),
            ("other", &self.other),
            ("no_connect", &self.no_connect),
            ("listener_full", &self.listener_full),
        ]
    }
}

/// Connections ended after a successful CONNECT, by reason.
#[derive(Debug, Default)]
pub struct Disconnects {
    pub client: AtomicU64,
    pub protocol_error: AtomicU64,
    pub connection_lost: AtomicU64,
    pub keepalive_timeout: AtomicU64,
    pub taken_over: AtomicU64,
    pub server_shutdown: AtomicU64,
    pub administrative: AtomicU64,
    /// A PUBLISH arrived while the heap was at `memory_limit`.
    pub memory_limit: AtomicU64,
}

impl Disconnects {
    pub fn counter(&self, close: &Close) -> &AtomicU64 {
        match close {
            Close::Disconnect { .. } => &self.client,
            Close::Violation { .. } => &self.protocol_error,
            Close::Lost(_) => &self.connection_lost,
            Close::KeepAliveTimeout => &self.keepalive_timeout,
            Close::TakenOver => &self.taken_over,
            Close::ServerShutdown => &self.server_shutdown,
            Close::Administrative => &self.administrative,
            Close::MemoryLimit => &self.memory_limit,
        }
    }

    /// (label, counter) for every reason.
    pub fn all(&self) -> [(&'static str, &AtomicU64); 8] {
        [
            ("client_disconnect", &self.client),
            ("protocol_error", &self.protocol_error),
            ("connection_lost", &self.connection_lost),
            ("keepalive_timeout", &self.keepalive_timeout),
            ("session_taken_over", &self.taken_over),
            ("server_shutdown", &self.server_shutdown),
            ("administrative_action", &self.administrative),
            ("memory_limit", &self.memory_limit),
        ]
    }
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

    /// The sum over QoS levels.
    pub fn sum(counters: &PerQos) -> u64 {
        counters.iter().map(Metrics::get).sum()
    }

    pub fn client_connected(&self) {
        let now = self.clients_connected.fetch_add(1, Ordering::Relaxed) + 1;
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        self.clients_maximum.fetch_max(now, Ordering::Relaxed);
    }

    /// Every way a message can be lost on its way to a subscriber, the
    /// sum Mosquitto reports as `publish/messages/dropped`, and more.
    pub fn drops(&self) -> [(&'static str, &AtomicU64); 7] {
        [
            ("queue_full", &self.dropped_queue_full),
            ("stalled", &self.dropped_stalled),
            ("qos0_queue_full", &self.dropped_qos0_full),
            ("qos0_offline", &self.dropped_qos0_offline),
            ("expired", &self.dropped_expired),
            ("too_large", &self.dropped_too_large),
            ("acl_denied", &self.dropped_acl_read),
        ]
    }
}

/// Tallies of the packets a thread handled since its last flush into
/// [`Metrics`] (see the module documentation). Counts are `u32`: a batch
/// never handles four billion packets.
#[derive(Debug, Default)]
pub struct Tally {
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub publish_bytes_received: [u64; 3],
    pub publish_bytes_sent: [u64; 3],
    pub messages_received: u32,
    pub messages_sent: u32,
    pub publish_received: [u32; 3],
    pub publish_sent: [u32; 3],
    pub dropped_expired: u32,
    pub dropped_too_large: u32,
    pub dropped_acl_read: u32,
    pub denied_publish: u32,
}

thread_local! {
    static TALLY: RefCell<Tally> = const { RefCell::new(Tally::ZERO) };
}

impl Tally {
    const ZERO: Tally = Tally {
        bytes_received: 0,
        bytes_sent: 0,
        publish_bytes_received: [0; 3],
        publish_bytes_sent: [0; 3],
        messages_received: 0,
        messages_sent: 0,
        publish_received: [0; 3],
        publish_sent: [0; 3],
        dropped_expired: 0,
        dropped_too_large: 0,
        dropped_acl_read: 0,
        denied_publish: 0,
    };

    /// Counts into this thread's tally. `count` must not count again.
    pub fn count(count: impl FnOnce(&mut Tally)) {
        TALLY.with_borrow_mut(count);
    }

    /// Adds this thread's tally to `m`: before the thread awaits, and
    /// before the replies a batch produced go out, so that a client that
    /// sees its answer also sees it counted in `$SYS` and `/metrics`.
    pub fn flush_thread(m: &Metrics) {
        TALLY.with_borrow_mut(|t| t.flush(m));
    }

    /// Counts one PUBLISH received with `payload` bytes.
    pub fn publish_in(&mut self, qos: QoS, payload: usize) {
        let i = qos as usize;
        if let Some(n) = self.publish_received.get_mut(i) {
            *n += 1;
        }
        if let Some(n) = self.publish_bytes_received.get_mut(i) {
            *n += payload as u64;
        }
    }

    /// Counts one PUBLISH sent with `payload` bytes.
    pub fn publish_out(&mut self, qos: QoS, payload: usize) {
        let i = qos as usize;
        if let Some(n) = self.publish_sent.get_mut(i) {
            *n += 1;
        }
        if let Some(n) = self.publish_bytes_sent.get_mut(i) {
            *n += payload as u64;
        }
    }

    pub fn flush(&mut self, m: &Metrics) {
        Metrics::add(&m.messages_received, self.messages_received.into());
        Metrics::add(&m.messages_sent, self.messages_sent.into());
        Metrics::add(&m.bytes_received, self.bytes_received);
        Metrics::add(&m.bytes_sent, self.bytes_sent);
        let counts = [
            (&m.publish_received, self.publish_received),
            (&m.publish_sent, self.publish_sent),
        ];
        for (counters, tally) in counts {
            for (c, n) in counters.iter().zip(tally) {
                Metrics::add(c, n.into());
            }
        }
        let bytes = [
            (&m.publish_bytes_received, self.publish_bytes_received),
            (&m.publish_bytes_sent, self.publish_bytes_sent),
        ];
        for (counters, tally) in bytes {
            for (c, n) in counters.iter().zip(tally) {
                Metrics::add(c, n);
            }
        }
        Metrics::add(&m.dropped_expired, self.dropped_expired.into());
        Metrics::add(&m.dropped_too_large, self.dropped_too_large.into());
        Metrics::add(&m.dropped_acl_read, self.dropped_acl_read.into());
        Metrics::add(&m.denied_publish, self.denied_publish.into());
        *self = Tally::default();
    }
}
