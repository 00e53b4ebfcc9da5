//! Session state ([MQTT-4.1]): what the broker keeps about a client across
//! its connections.
//!
//! A session has one owner at a time: its connection task while connected,
//! the registry's parked slot while away. The owner mutates it without a
//! lock. Other tasks reach a session only through [`SessionShared`]: its
//! mailbox, which the router holds.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use ferrymq_codec::{PacketId, QoS, SubscriptionOptions};

use crate::mailbox::Mailbox;
use crate::message::Delivery;
use crate::router::Subscriber;
use crate::shared::SharedGroup;

/// The part of a session other tasks may touch.
#[derive(Debug)]
pub struct SessionShared {
    /// Unique per session incarnation; the router's key.
    pub id: u64,
    pub client_id: Arc<str>,
    /// Inline: one allocation holds a session's identity and its queue.
    pub mailbox: Mailbox,
    /// Whether deliveries to this session are written to the store: it
    /// outlives its connection and persistence is on.
    pub durable: std::sync::atomic::AtomicBool,
}

/// One entry of the topic index: a session and its options for a filter.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub session: Arc<SessionShared>,
    pub options: SubscriptionOptions,
    /// MQTT 5 Subscription Identifier, sent back with each match.
    pub identifier: Option<u32>,
    /// The shared-subscription group, for `$share/{group}/{filter}`.
    pub share: Option<Arc<SharedGroup>>,
    key: SubscriptionKey,
}

/// A session may hold one ordinary subscription and one per share group on
/// the same filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubscriptionKey {
    pub session: u64,
    pub group: Option<Arc<str>>,
}

impl Subscription {
    pub fn new(
        session: Arc<SessionShared>,
        options: SubscriptionOptions,
        identifier: Option<u32>,
        share: Option<Arc<SharedGroup>>,
    ) -> Subscription {
        let key = SubscriptionKey {
            session: session.id,
            group: share.as_ref().map(|g| g.name.clone()),
        };
        Subscription {
            session,
            options,
            identifier,
            share,
            key,
        }
    }
}

impl Subscriber for Subscription {
    type Key = SubscriptionKey;
    fn key(&self) -> &SubscriptionKey {
        &self.key
    }
}

/// A will published later unless the client returns first
/// ([MQTT-3.1.3-9]). Cancelling it with `publish_now` set publishes it at
/// once instead: the session ended before the delay did.
#[derive(Debug, Clone)]
pub struct DelayedWill {
    pub cancel: tokio_util::sync::CancellationToken,
    pub publish_now: Arc<std::sync::atomic::AtomicBool>,
    /// The will, as it will be published.
    pub message: Arc<crate::message::Message>,
    /// When it is due, as Unix milliseconds (for the store).
    pub publish_at_unix_ms: u64,
}

impl DelayedWill {
    /// The client came back: the will is not published.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// The session ended: publish the will now.
    pub fn fire(&self) {
        self.publish_now
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.cancel.cancel();
    }
}

/// What a PUBREC did.
#[derive(Debug)]
pub enum PubRec {
    /// The message moved on to PUBREL (a copy of its new state).
    Released(Inflight),
    /// Already released: PUBREL is sent again.
    Repeated,
    Unknown,
}

/// What a session remembers of one of its subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionRecord {
    pub options: SubscriptionOptions,
    pub identifier: Option<u32>,
}

/// Where an outbound QoS 1/2 message stands ([MQTT-4.3]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundState {
    /// QoS 1 PUBLISH sent, waiting for PUBACK.
    AwaitingPubAck,
    /// QoS 2 PUBLISH sent, waiting for PUBREC.
    AwaitingPubRec,
    /// PUBREL sent, waiting for PUBCOMP.
    AwaitingPubComp,
}

#[derive(Debug, Clone)]
pub struct Inflight {
    pub packet_id: PacketId,
    pub delivery: Delivery,
    pub state: OutboundState,
}

/// The owned part of a session.
#[derive(Debug)]
pub struct SessionState {
    pub shared: Arc<SessionShared>,
    /// Seconds the session outlives its connection: 0 ends it with the
    /// connection, `u32::MAX` never (3.x Clean Session 0).
    pub expiry_interval: u32,
    /// A will waiting out its Will Delay Interval while the client is away.
    /// Boxed: only a parked session may have one.
    pub delayed_will: Option<Box<DelayedWill>>,
    /// Filter (as subscribed, `$share/...` included) → its options.
    pub subscriptions: HashMap<String, SubscriptionRecord>,
    /// Outbound QoS 1/2 messages not yet acknowledged, in send order.
    pub inflight: VecDeque<Inflight>,
    /// In-flight messages of an earlier connection that the current one
    /// has not resent yet: its Receive Maximum was smaller than what was
    /// in flight. They keep their packet ids, and go out (DUP) before
    /// anything new as the window opens; they follow `inflight` in order.
    /// Boxed: only a session resumed with a smaller window has any.
    #[allow(clippy::box_collection)] // boxed for the idle cost
    pub resend: Option<Box<VecDeque<Inflight>>>,
    /// Inbound QoS 2 packet ids received and not yet released by PUBREL:
    /// a PUBLISH with one of these is a resend and is not routed again.
    pub inbound_qos2: PacketIds,
    /// The store submission that carried this session's last writes: an
    /// acknowledgement with no writes of its own still waits for it.
    pub last_store_seq: u64,
    next_packet_id: u16,
}

/// A set of packet ids, allocated on its first id: most sessions never
/// receive a QoS 2 PUBLISH, and an empty `HashSet` is 48 bytes of each.
#[derive(Debug, Default, Clone)]
#[allow(clippy::box_collection)] // boxed for the idle cost: see above
pub struct PacketIds(Option<Box<HashSet<u16>>>);

impl PacketIds {
    pub fn insert(&mut self, id: u16) -> bool {
        self.0.get_or_insert_with(Box::default).insert(id)
    }

    pub fn remove(&mut self, id: &u16) -> bool {
        self.0.as_mut().is_some_and(|ids| ids.remove(id))
    }

    pub fn contains(&self, id: &u16) -> bool {
        self.0.as_ref().is_some_and(|ids| ids.contains(id))
    }

    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |ids| ids.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SessionState {
    pub fn new(shared: Arc<SessionShared>, expiry_interval: u32) -> SessionState {
        SessionState {
            shared,
            expiry_interval,
            delayed_will: None,
            subscriptions: HashMap::new(),
            inflight: VecDeque::new(),
            resend: None,
            inbound_qos2: PacketIds::default(),
            last_store_seq: 0,
            next_packet_id: 1,
        }
    }

    /// A packet identifier not used by any message in flight
    /// ([MQTT-2.2.1-3]); `None` when all 65,535 are taken.
    pub fn allocate_packet_id(&mut self) -> Option<PacketId> {
        for _ in 0..=u16::MAX {
            let candidate = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if let Some(id) = PacketId::new(candidate) {
                let in_use = |m: &Inflight| m.packet_id == id;
                if !self.inflight.iter().any(in_use)
                    && !self.resend.iter().flat_map(|r| r.iter()).any(in_use)
                {
                    return Some(id);
                }
            }
        }
        None
    }

    pub fn send(&mut self, packet_id: PacketId, delivery: Delivery) {
        let state = if delivery.qos == QoS::ExactlyOnce {
            OutboundState::AwaitingPubRec
        } else {
            OutboundState::AwaitingPubAck
        };
        self.inflight.push_back(Inflight {
            packet_id,
            delivery,
            state,
        });
    }

    fn position(&self, packet_id: PacketId, state: OutboundState) -> Option<usize> {
        self.inflight
            .iter()
            .position(|m| m.packet_id == packet_id && m.state == state)
    }

    /// Where the message in flight under `packet_id` stands, if any.
    pub fn stage_of(&self, packet_id: PacketId) -> Option<OutboundState> {
        self.inflight
            .iter()
            .chain(self.resend.iter().flat_map(|r| r.iter()))
            .find(|m| m.packet_id == packet_id)
            .map(|m| m.state)
    }

    /// PUBACK: the QoS 1 message is done. False if no such message.
    pub fn puback(&mut self, packet_id: PacketId) -> Option<Inflight> {
        let i = self.position(packet_id, OutboundState::AwaitingPubAck)?;
        self.inflight.remove(i)
    }

    /// PUBREC: the message is stored at the client; PUBREL follows. A
    /// repeated PUBREC for a message already released is answered again.
    pub fn pubrec(&mut self, packet_id: PacketId) -> PubRec {
        if let Some(i) = self.position(packet_id, OutboundState::AwaitingPubRec) {
            if let Some(m) = self.inflight.get_mut(i) {
                m.state = OutboundState::AwaitingPubComp;
                return PubRec::Released(m.clone());
            }
        }
        if self
            .position(packet_id, OutboundState::AwaitingPubComp)
            .is_some()
        {
            PubRec::Repeated
        } else {
            PubRec::Unknown
        }
    }

    /// PUBCOMP: the QoS 2 exchange is over.
    pub fn pubcomp(&mut self, packet_id: PacketId) -> Option<Inflight> {
        let i = self.position(packet_id, OutboundState::AwaitingPubComp)?;
        self.inflight.remove(i)
    }

    /// Puts what waits to be resent back in flight, in order: the
    /// session's whole in-flight state, as a connection ends or resumes.
    pub fn merge_resend(&mut self) {
        if let Some(mut resend) = self.resend.take() {
            self.inflight.append(&mut resend);
        }
    }

    /// Sets aside what is in flight beyond the first `keep`, to be resent
    /// as the window opens.
    pub fn set_aside(&mut self, keep: usize) {
        let rest = self.inflight.split_off(keep.min(self.inflight.len()));
        self.resend = (!rest.is_empty()).then(|| Box::new(rest));
    }

    /// The next message set aside to be resent.
    pub fn next_resend(&mut self) -> Option<Inflight> {
        let resend = self.resend.as_mut()?;
        let next = resend.pop_front();
        if resend.is_empty() {
            self.resend = None;
        }
        next
    }

    pub fn has_resend(&self) -> bool {
        self.resend.is_some()
    }

    /// Whether the session outlives its connection.
    pub fn is_persistent(&self) -> bool {
        self.expiry_interval > 0
    }

    /// Messages counted against the in-flight window.
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use bytes::Bytes;
    use ferrymq_codec::{Properties, TopicName};
    use std::time::Instant;

    fn session() -> SessionState {
        let shared = Arc::new(SessionShared {
            id: 1,
            client_id: "c".into(),
            mailbox: Mailbox::new(10),
            durable: Default::default(),
        });
        SessionState::new(shared, u32::MAX)
    }

    fn delivery(qos: QoS) -> Delivery {
        let message = Arc::new(Message {
            topic: TopicName::new("t").unwrap(),
            payload: Bytes::new(),
            qos,
            retain: false,
            properties: Properties::new(),
            received: Instant::now(),
            origin: 0,
            source: None,
        });
        Delivery::new(message, qos, false)
    }

    #[test]
    fn packet_ids_skip_those_in_flight_and_wrap() {
        let mut s = session();
        let a = s.allocate_packet_id().unwrap();
        s.send(a, delivery(QoS::AtLeastOnce));
        s.next_packet_id = a.get();
        let b = s.allocate_packet_id().unwrap();
        assert_ne!(a, b);
        s.next_packet_id = u16::MAX;
        assert_eq!(s.allocate_packet_id().unwrap().get(), u16::MAX);
        assert_eq!(s.allocate_packet_id().unwrap().get(), 2);
    }

    #[test]
    fn qos2_state_machine() {
        let mut s = session();
        let id = s.allocate_packet_id().unwrap();
        s.send(id, delivery(QoS::ExactlyOnce));
        assert!(
            s.puback(id).is_none(),
            "PUBACK does not complete a QoS 2 message"
        );
        assert!(s.pubcomp(id).is_none(), "PUBCOMP before PUBREC is unknown");
        assert!(matches!(s.pubrec(id), PubRec::Released(_)));
        assert!(matches!(s.pubrec(id), PubRec::Repeated), "answered again");
        assert!(s.pubcomp(id).is_some());
        assert_eq!(s.inflight_len(), 0);
    }
}
