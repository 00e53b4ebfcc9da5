//! The version-neutral application message that travels from a publisher
//! to subscribers, and one delivery of it to one session.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrymq_codec::property::id;
use ferrymq_codec::{PacketId, Properties, Property, Protocol, Publish, QoS, TopicName};

use crate::shared::SharedGroup;

/// A published message, shared by every session it is routed to.
#[derive(Debug)]
pub struct Message {
    pub topic: TopicName,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// MQTT 5 properties to forward, in order (never Topic Alias or
    /// Subscription Identifier: those belong to one hop).
    pub properties: Properties,
    /// When the broker received it: message expiry counts from here.
    pub received: Instant,
    /// The publishing session, for No Local; 0 for the broker's own.
    pub origin: u64,
    /// Who published it, kept on retained messages while ACLs are in use,
    /// for `check_retain_source`; `None` for the broker's own.
    pub source: Option<Arc<Source>>,
}

/// The client that published a retained message: whether it still may
/// write the topic is checked before the message goes to a new subscriber
/// (`check_retain_source`, on by default as in Mosquitto).
#[derive(Debug, PartialEq, Eq)]
pub struct Source {
    pub client_id: Arc<str>,
    pub username: Option<Arc<str>>,
}

impl Message {
    pub fn from_publish(publish: Publish, received: Instant, origin: u64) -> Message {
        let mut properties = publish.properties;
        if !properties.is_empty() {
            properties.remove(id::TOPIC_ALIAS);
            properties.remove(id::SUBSCRIPTION_IDENTIFIER);
        }
        Message {
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties,
            received,
            origin,
            source: None,
        }
    }

    /// The message expiry left at `now`; `Some(0)` means expired.
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        let interval = self.properties.message_expiry_interval()?;
        let elapsed = now.saturating_duration_since(self.received);
        Some(
            Duration::from_secs(u64::from(interval))
                .saturating_sub(elapsed)
                .as_secs_f64()
                .ceil() as u32,
        )
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        self.remaining_expiry(now) == Some(0)
    }

    /// The same message with topic, payload and properties in allocations
    /// of its own. A decoded message is a slice of the read buffer it
    /// arrived in and keeps all of it alive; a message that waits long (in
    /// a deep or offline queue, or retained) should cost what it counts.
    pub fn detached(&self) -> Message {
        Message {
            topic: self.topic.detached(),
            payload: bytes::Bytes::copy_from_slice(&self.payload),
            qos: self.qos,
            retain: self.retain,
            properties: self.properties.detached(),
            received: self.received,
            origin: self.origin,
            source: self.source.clone(),
        }
    }

    /// The bytes a queue counts for this message against
    /// `max_queued_bytes`: topic, payload and properties.
    pub fn size(&self) -> usize {
        let properties = if self.properties.is_empty() {
            0
        } else {
            ferrymq_codec::encode::properties_len(&self.properties)
        };
        self.topic.len() + self.payload.len() + properties
    }
}

/// One message on its way to one session.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Arc<Message>,
    /// min(published QoS, granted QoS).
    pub qos: QoS,
    /// The RETAIN flag to send: set for retained messages sent because of a
    /// new subscription, and for live ones under Retain As Published.
    pub retain: bool,
    /// Subscription Identifiers of every matching subscription (MQTT 5).
    pub subscription_ids: Vec<u32>,
    /// Set when the message reached the session through a share group, so
    /// it can be handed to another member if this one leaves.
    pub shared: Option<Arc<SharedGroup>>,
    /// Its key in the store, when it was written there.
    pub durable: Option<u64>,
}

impl Delivery {
    pub fn new(message: Arc<Message>, qos: QoS, retain: bool) -> Delivery {
        Delivery {
            message,
            qos,
            retain,
            subscription_ids: Vec::new(),
            shared: None,
            durable: None,
        }
    }

    /// The PUBLISH packet for this delivery at `now`: MQTT 5 gets the
    /// remaining message expiry and the subscription identifiers.
    pub fn to_publish(
        &self,
        packet_id: Option<PacketId>,
        dup: bool,
        protocol: Protocol,
        now: Instant,
    ) -> Publish {
        let mut properties = Properties::new();
        if protocol.is_v5() {
            properties = self.message.properties.clone();
            if let Some(left) = self.message.remaining_expiry(now) {
                properties.set(Property::MessageExpiryInterval(left.max(1)));
            }
            for &id in &self.subscription_ids {
                properties.push(Property::SubscriptionIdentifier(id));
            }
        }
        Publish {
            dup,
            qos: self.qos,
            retain: self.retain,
            topic: self.message.topic.clone(),
            packet_id,
            properties,
            payload: self.message.payload.clone(),
        }
    }
}
