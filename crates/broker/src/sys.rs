//! `$SYS/broker/...`: the broker's state as retained messages under
//! Mosquitto's topic names, refreshed every `sys_interval`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ferrymq_codec::{Properties, QoS, TopicName};
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
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
    }));
}

/// Publishes every `$SYS` topic once.
pub fn publish_all(broker: &Broker) {
    let m = &broker.metrics;
    let connected = Metrics::get(&m.clients_connected);
    let sessions = broker.registry.len() as u64;
    let disconnected = sessions.saturating_sub(connected);
    let values: [(&str, String); 17] = [
        (
            "$SYS/broker/version",
            format!("ferrymq version {}", env!("CARGO_PKG_VERSION")),
        ),
        (
            "$SYS/broker/uptime",
            format!("{} seconds", broker.started.elapsed().as_secs()),
        ),
        ("$SYS/broker/clients/connected", connected.to_string()),
        ("$SYS/broker/clients/active", connected.to_string()),
        ("$SYS/broker/clients/disconnected", disconnected.to_string()),
        ("$SYS/broker/clients/inactive", disconnected.to_string()),
        ("$SYS/broker/clients/total", sessions.to_string()),
        (
            "$SYS/broker/clients/maximum",
            Metrics::get(&m.clients_maximum).to_string(),
        ),
        (
            "$SYS/broker/messages/received",
            Metrics::get(&m.messages_received).to_string(),
        ),
        (
            "$SYS/broker/messages/sent",
            Metrics::get(&m.messages_sent).to_string(),
        ),
        (
            "$SYS/broker/publish/messages/received",
            Metrics::get(&m.publish_received).to_string(),
        ),
        (
            "$SYS/broker/publish/messages/sent",
            Metrics::get(&m.publish_sent).to_string(),
        ),
        (
            "$SYS/broker/publish/messages/dropped",
            (Metrics::get(&m.dropped_qos0_full) + Metrics::get(&m.dropped_queue_full)).to_string(),
        ),
        (
            "$SYS/broker/bytes/received",
            Metrics::get(&m.bytes_received).to_string(),
        ),
        (
            "$SYS/broker/bytes/sent",
            Metrics::get(&m.bytes_sent).to_string(),
        ),
        (
            "$SYS/broker/subscriptions/count",
            broker.router.len().to_string(),
        ),
        (
            "$SYS/broker/retained messages/count",
            broker.retained.len().to_string(),
        ),
    ];
    for (topic, value) in values {
        publish(broker, topic, value);
    }
}

/// Refreshes `$SYS` every `sys_interval` until shutdown.
pub async fn run(broker: Arc<Broker>, shutdown: CancellationToken) {
    let period = broker.config.sys_interval;
    if period.is_zero() {
        return;
    }
    let mut ticker = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = ticker.tick() => publish_all(&broker),
            () = shutdown.cancelled() => return,
        }
    }
}
