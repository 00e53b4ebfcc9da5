//! The version-neutral application message that travels from a publisher
//! to subscribers, and one delivery of it to one session.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ferrymq_codec::{PacketId, Properties, Protocol, Publish, QoS, TopicName};

/// A published message, shared by every session it is routed to.
#[derive(Debug)]
pub struct Message {
    pub topic: TopicName,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// MQTT 5 properties to forward (never Topic Alias or Subscription
    /// Identifier: those belong to one hop).
    pub properties: Properties,
    /// When the broker received it, for message expiry.
    pub received: Instant,
}

impl Message {
    pub fn from_publish(publish: Publish, received: Instant) -> Message {
        let mut properties = publish.properties;
        if !properties.is_empty() {
            properties.remove(ferrymq_codec::property::id::TOPIC_ALIAS);
            properties.remove(ferrymq_codec::property::id::SUBSCRIPTION_IDENTIFIER);
        }
        Message {
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties,
            received,
        }
    }
}

/// One message on its way to one session.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Arc<Message>,
    /// min(published QoS, granted QoS).
    pub qos: QoS,
    /// The RETAIN flag to send: set for retained messages sent because of a
    /// new subscription, clear for live messages.
    pub retain: bool,
}

impl Delivery {
    /// The PUBLISH packet for this delivery.
    pub fn to_publish(
        &self,
        packet_id: Option<PacketId>,
        dup: bool,
        protocol: Protocol,
    ) -> Publish {
        Publish {
            dup,
            qos: self.qos,
            retain: self.retain,
            topic: self.message.topic.clone(),
            packet_id,
            properties: if protocol.is_v5() {
                self.message.properties.clone()
            } else {
                Properties::new()
            },
            payload: self.message.payload.clone(),
        }
    }
}
