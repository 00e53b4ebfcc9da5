//! The protocol logic of one client connection after CONNECT: packets in,
//! packets out, with no socket in sight. The network driver
//! (`net::driver`) feeds it decoded packets and writes what it puts in
//! `out`; the CONNECT handshake itself is in `handshake`.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use ferrymq_codec::property::id;
use ferrymq_codec::{
    encode, encoded_len, Disconnect, Packet, PacketId, Properties, Protocol, PubResponse, Publish,
    QoS, ReasonCode, Will,
};
use tracing::{debug, trace};

use crate::alias;
use crate::broker::{Broker, Fanout};
use crate::message::{Delivery, Message, Source};
use crate::metrics::{Metrics, Tally};
use crate::persist::{self, Stage};
use crate::session::SessionShared;
use crate::session::{Inflight, OutboundState, PubRec, SessionState};
use ferrymq_auth::Access;
use ferrymq_store::Op;
use std::collections::VecDeque;

/// Why a connection ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Close {
    /// The client sent DISCONNECT. `publish_will` is MQTT 5's reason 0x04.
    Disconnect {
        publish_will: bool,
    },
    /// The client broke the protocol; MQTT 5 clients are told `reason`.
    Violation {
        reason: ReasonCode,
        detail: String,
    },
    /// The socket closed or failed without DISCONNECT.
    Lost(String),
    KeepAliveTimeout,
    TakenOver,
    ServerShutdown,
    /// Disconnected through the admin API.
    Administrative,
    /// A PUBLISH arrived while the heap was at `memory_limit`: it is not
    /// routed nor acknowledged, and the publisher is disconnected (as
    /// Mosquitto does when an allocation fails past the limit), to send it
    /// again later.
    MemoryLimit,
}

impl Close {
    pub fn violation(reason: ReasonCode, detail: impl Into<String>) -> Close {
        Close::Violation {
            reason,
            detail: detail.into(),
        }
    }

    /// Whether the will is published ([MQTT-3.1.2-8]): on every end but a
    /// DISCONNECT (unless MQTT 5's "with will") and a broker shutdown.
    pub fn publishes_will(&self) -> bool {
        match self {
            Close::Disconnect { publish_will } => *publish_will,
            Close::ServerShutdown => false,
            _ => true,
        }
    }

    /// The reason code of the DISCONNECT an MQTT 5 client is sent, if any.
    pub fn server_disconnect(&self) -> Option<ReasonCode> {
        match self {
            Close::Violation { reason, .. } => Some(*reason),
            Close::KeepAliveTimeout => Some(ReasonCode::KeepAliveTimeout),
            Close::TakenOver => Some(ReasonCode::SessionTakenOver),
            Close::ServerShutdown => Some(ReasonCode::ServerShuttingDown),
            Close::Administrative => Some(ReasonCode::AdministrativeAction),
            Close::MemoryLimit => Some(ReasonCode::QuotaExceeded),
            Close::Disconnect { .. } | Close::Lost(_) => None,
        }
    }
}

impl std::fmt::Display for Close {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Close::Disconnect { .. } => f.write_str("client sent DISCONNECT"),
            Close::Violation { reason, detail } => write!(f, "{reason}: {detail}"),
            Close::Lost(why) => write!(f, "connection lost: {why}"),
            Close::KeepAliveTimeout => f.write_str("keep-alive timeout"),
            Close::TakenOver => f.write_str("session taken over"),
            Close::ServerShutdown => f.write_str("server shutting down"),
            Close::Administrative => f.write_str("disconnected by an administrator"),
            Close::MemoryLimit => f.write_str("PUBLISH with the heap at memory_limit"),
        }
    }
}

/// The sequence number of an acknowledgement whose writes are gathered but
/// not yet submitted to the store.
const UNSUBMITTED: u64 = u64::MAX;

/// Stop filling the write buffer from the mailbox past this many bytes.
pub const WRITE_HIGH_WATER: usize = 64 * 1024;

/// Stop taking deliveries from the mailbox while this many wait for the
/// store behind a QoS 2 message (see [`Connection::held`]).
const HELD_HIGH_WATER: usize = 1024;

/// The two queues of packets that wait for the store.
#[derive(Clone, Copy)]
enum Queue {
    Acks,
    Held,
}

/// One connected client.
#[derive(Debug)]
pub struct Connection {
    pub broker: Arc<Broker>,
    /// The listener the client came through: its settings (`max_qos`,
    /// `mount_point`, ...) and its password file, ACL and anonymous
    /// access (the broker's own unless `per_listener_settings true`).
    pub endpoint: Arc<crate::net::listener::Endpoint>,
    pub protocol: Protocol,
    pub session: SessionState,
    /// The authenticated user name, for ACL checks.
    pub username: Option<Arc<str>>,
    /// Boxed: 96 bytes most connections never use.
    pub will: Option<Box<Will>>,
    /// Packets waiting to be written.
    pub out: BytesMut,
    /// Outbound in-flight window: min(our limit, client's Receive Maximum).
    pub max_inflight: u16,
    /// Largest packet the client accepts (MQTT 5 Maximum Packet Size).
    pub client_max_packet: Option<u32>,
    /// Topic aliases the client sets (MQTT 5).
    pub aliases_in: alias::Inbound,
    /// Topic aliases we set towards the client (MQTT 5).
    pub aliases_out: alias::Outbound,
    /// Inbound QoS 2 messages awaiting PUBREL we accept at once: the
    /// Receive Maximum we announced.
    pub receive_maximum: u16,
    /// MQTT 5 Request Problem Information: reason strings on acks allowed.
    pub problem_information: bool,
    /// Store writes gathered while handling packets, submitted in one go.
    pub store_ops: Vec<Op>,
    /// What waits for the store or for room in a queue, if anything.
    pub waiting: Option<Box<Waiting>>,
}

/// What a connection holds only while it waits: for the store, or for
/// room in the queues it feeds. Boxed on first use and let go once empty
/// ([`Connection::let_go`]): an idle connection carries none of it.
#[derive(Debug, Default)]
pub struct Waiting {
    /// Acknowledgements waiting for the store, with the sequence number
    /// each waits for, in the order they must go out.
    pending_acks: VecDeque<(u64, Packet)>,
    /// Outbound PUBLISH and PUBREL packets waiting for the store: a QoS 2
    /// message to a durable session leaves only once the record of its
    /// packet id (or of its release) is durable, so that after a crash it
    /// is resent with the same id, and never as a PUBLISH once PUBREL went
    /// out ([MQTT-4.3.3]); every delivery behind it waits too, so that
    /// none overtakes it (topic aliases, order).
    held: VecDeque<(u64, Packet)>,
    /// Why the connection is not read (see [`Connection::blocked`]): the
    /// full queues of online subscribers it fed, and the store submission
    /// it waits for when its writes outran the disk.
    waiting_on: Vec<Arc<SessionShared>>,
    store_wait: Option<u64>,
    /// Since when the connection is paused, for the metrics.
    paused_at: Option<Instant>,
}

impl Waiting {
    fn is_empty(&self) -> bool {
        self.pending_acks.is_empty()
            && self.held.is_empty()
            && self.waiting_on.is_empty()
            && self.store_wait.is_none()
            && self.paused_at.is_none()
    }

    fn paused(&self) -> bool {
        !self.waiting_on.is_empty() || self.store_wait.is_some()
    }
}

impl Connection {
    /// Appends `packet` to the output buffer.
    pub fn send(&mut self, packet: &Packet) {
        match encode(packet, self.protocol, &mut self.out) {
            Ok(n) => {
                Tally::count(|t| {
                    t.messages_sent += 1;
                    t.bytes_sent += n as u64;
                });
            }
            // Only a packet we built wrongly can fail to encode.
            Err(e) => debug!(error = %e, "dropping unencodable packet"),
        }
    }

    fn v5(&self) -> bool {
        self.protocol.is_v5()
    }

    /// Resends, after a session resumes, what was in flight ([MQTT-4.4.0-1]):
    /// PUBLISH with DUP for unacknowledged messages, PUBREL where PUBREC came,
    /// as far as this connection's Receive Maximum allows; the rest waits
    /// in [`SessionState::resend`] and goes out first as the window opens.
    pub fn resend_inflight(&mut self, now: Instant) {
        self.session.merge_resend();
        let keep = usize::from(self.max_inflight).min(self.session.inflight.len());
        self.session.set_aside(keep);
        let pending: Vec<_> = self.session.inflight.iter().cloned().collect();
        let mut gone = Vec::new();
        for m in pending {
            if !self.resend_one(&m, now) {
                gone.push(m.packet_id);
            }
        }
        self.session
            .inflight
            .retain(|m| !gone.contains(&m.packet_id));
    }

    /// Resends one message of an earlier connection, behind the session's
    /// last store writes if they are not yet durable (that connection's
    /// stage records). False if it is too large for this client, which
    /// then never gets it ([MQTT-3.1.2-25]): it is done with.
    fn resend_one(&mut self, m: &Inflight, now: Instant) -> bool {
        let packet = match m.state {
            OutboundState::AwaitingPubComp => Packet::PubRel(PubResponse::new(m.packet_id)),
            _ => {
                let mut publish =
                    m.delivery
                        .to_publish(Some(m.packet_id), true, self.protocol, now);
                if !self.unmount(&mut publish) {
                    self.forget(&m.delivery);
                    return false;
                }
                if !self.fits(&publish) {
                    trace!(
                        "in-flight message larger than the client's Maximum Packet Size dropped"
                    );
                    Tally::count(|t| t.dropped_too_large += 1);
                    self.forget(&m.delivery);
                    return false;
                }
                self.aliases_out.apply(&mut publish);
                Packet::Publish(publish)
            }
        };
        let last = self.session.last_store_seq;
        match &self.broker.persist {
            Some(p) if last != 0 && !p.writer.is_durable(last) => {
                p.wake_when_durable(last, &self.session.shared);
                let held = &mut self.waiting.get_or_insert_with(Box::default).held;
                let seq = held.back().map_or(last, |(s, _)| (*s).max(last));
                held.push_back((seq, packet));
            }
            _ => self.send_ordered(false, packet),
        }
        true
    }

    /// The message a PUBLISH of this client becomes: a retained one
    /// remembers who sent it while ACLs may be checked against it.
    #[inline]
    fn message(&self, publish: Publish, now: Instant) -> Arc<Message> {
        let retain = publish.retain;
        let mut message = Message::from_publish(publish, now, self.session.shared.id);
        if retain {
            message.source = self.source();
        }
        Arc::new(message)
    }

    /// This client as the source of a retained message, when
    /// `check_retain_source` will look at it (it has no use without an ACL).
    pub fn source(&self) -> Option<Arc<Source>> {
        (self.broker.config.check_retain_source && self.endpoint.security.has_acl()).then(|| {
            Arc::new(Source {
                client_id: self.session.shared.client_id.clone(),
                username: self.username.clone(),
            })
        })
    }

    /// The listener's `mount_point`, if it has one.
    pub(crate) fn mount(&self) -> Option<&str> {
        self.endpoint.settings.mount_point.as_deref()
    }

    /// Takes the listener's mount point off an outgoing message's topic;
    /// false for a topic outside it (or nothing but it), which this client
    /// is not sent, as Mosquitto does.
    #[inline]
    fn unmount(&self, publish: &mut Publish) -> bool {
        let Some(mount) = self.mount() else {
            return true;
        };
        match publish.topic.strip_prefix(mount) {
            Some(topic) => {
                publish.topic = topic;
                true
            }
            None => false,
        }
    }

    /// Whether `publish` fits the client's Maximum Packet Size, checked
    /// with the full topic and room for a Topic Alias, before an alias is
    /// assigned.
    #[inline]
    fn fits(&self, publish: &Publish) -> bool {
        let Some(max) = self.client_max_packet else {
            return true;
        };
        let len = encoded_len(&Packet::Publish(publish.clone()), self.protocol);
        len.is_ok_and(|n| n as u64 + 3 <= u64::from(max))
    }

    /// Sends an outbound PUBLISH or PUBREL: after the store if `wrote`
    /// (its stage record is in `store_ops`), or if a packet before it
    /// waits (see [`Connection::held`]).
    #[inline]
    fn send_ordered(&mut self, wrote: bool, packet: Packet) {
        if !wrote && self.waiting.as_ref().is_none_or(|w| w.held.is_empty()) {
            return self.send(&packet);
        }
        let held = &mut self.waiting.get_or_insert_with(Box::default).held;
        let seq = if wrote {
            UNSUBMITTED
        } else {
            held.back().map_or(UNSUBMITTED, |(s, _)| *s)
        };
        held.push_back((seq, packet));
    }

    /// Moves queued deliveries into the output buffer while the in-flight
    /// window and the buffer allow. Order is kept: a QoS 1/2 message that
    /// must wait for the window holds back the messages behind it.
    ///
    /// Returns true when it stopped because the buffer is full: the caller
    /// must come back once it has written, since the mailbox only wakes the
    /// task when a push finds it empty.
    pub fn drain_mailbox(&mut self, now: Instant) -> bool {
        let shared = self.session.shared.clone();
        let mailbox = &shared.mailbox;
        let mut took = false;
        let more = loop {
            if self.out.len() >= WRITE_HIGH_WATER {
                break !mailbox.is_empty() || self.session.has_resend();
            }
            if self
                .waiting
                .as_ref()
                .is_some_and(|w| w.held.len() >= HELD_HIGH_WATER)
            {
                // The store's wake-up brings the task back.
                break false;
            }
            let window_open = self.session.inflight_len() < usize::from(self.max_inflight);
            // What an earlier connection had in flight goes first.
            if window_open {
                if let Some(m) = self.session.next_resend() {
                    if self.resend_one(&m, now) {
                        self.session.inflight.push_back(m);
                    }
                    continue;
                }
            }
            let Some(delivery) = mailbox.pop_if(|d| d.qos == QoS::AtMostOnce || window_open) else {
                break false;
            };
            took = true;
            self.deliver(delivery, now);
        };
        if took {
            mailbox.progressed(now);
        }
        more
    }

    fn deliver(&mut self, delivery: Delivery, now: Instant) {
        // A message whose expiry passed before onward delivery started is
        // not sent ([MQTT-3.3.2-5]).
        if delivery.message.is_expired(now) {
            trace!("expired message dropped");
            Tally::count(|t| t.dropped_expired += 1);
            self.forget(&delivery);
            return;
        }
        // Checked at delivery, so retained and `$SYS` messages and a
        // reloaded ACL apply to existing subscriptions too.
        if self.endpoint.security.has_acl() && !self.may(&delivery.message.topic, Access::Read) {
            Tally::count(|t| t.dropped_acl_read += 1);
            self.forget(&delivery);
            return;
        }
        let packet_id = if delivery.qos == QoS::AtMostOnce {
            None
        } else {
            match self.session.allocate_packet_id() {
                Some(id) => Some(id),
                None => return,
            }
        };
        let mut publish = delivery.to_publish(packet_id, false, self.protocol, now);
        if !self.unmount(&mut publish) {
            self.forget(&delivery);
            return;
        }
        if !self.fits(&publish) {
            // A message too large for this client is dropped for it alone
            // ([MQTT-3.1.2-25]).
            trace!("message larger than the client's Maximum Packet Size dropped");
            Tally::count(|t| t.dropped_too_large += 1);
            self.forget(&delivery);
            return;
        }
        self.aliases_out.apply(&mut publish);
        let mut wrote = false;
        if let Some(id) = packet_id {
            if delivery.qos == QoS::ExactlyOnce {
                // A restart resends with the same packet id, so the client
                // can recognise the duplicate.
                wrote = delivery.durable.is_some();
                self.remember(&delivery, Stage::Sent(id));
            }
            self.session.send(id, delivery);
        }
        Tally::count(|t| t.publish_out(publish.qos, publish.payload.len()));
        self.send_ordered(wrote, Packet::Publish(publish));
    }

    /// Handles one packet from the client.
    pub fn on_packet(&mut self, packet: Packet, now: Instant) -> Result<(), Close> {
        match packet {
            Packet::Publish(p) => self.on_publish(p, now),
            Packet::PubAck(r) => {
                self.check_ack_kind(r.packet_id, &[OutboundState::AwaitingPubAck], "PUBACK")?;
                match self.session.puback(r.packet_id) {
                    Some(done) => self.forget(&done.delivery),
                    None => trace!(packet_id = r.packet_id, "PUBACK for unknown packet id"),
                }
                Ok(())
            }
            Packet::PubRec(r) => {
                let qos2 = [
                    OutboundState::AwaitingPubRec,
                    OutboundState::AwaitingPubComp,
                ];
                self.check_ack_kind(r.packet_id, &qos2, "PUBREC")?;
                let mut rel = PubResponse::new(r.packet_id);
                let outcome = self.session.pubrec(r.packet_id);
                if r.reason.is_error() {
                    // MQTT 5: a PUBREC with an error ends the exchange.
                    if let Some(done) = self.session.pubcomp(r.packet_id) {
                        self.forget(&done.delivery);
                    }
                    return Ok(());
                }
                let mut wrote = false;
                match outcome {
                    PubRec::Released(m) => {
                        wrote = m.delivery.durable.is_some();
                        self.remember(&m.delivery, Stage::Released(m.packet_id));
                    }
                    PubRec::Repeated => {}
                    PubRec::Unknown => rel.reason = ReasonCode::PacketIdentifierNotFound,
                }
                self.send_ordered(wrote, Packet::PubRel(rel));
                Ok(())
            }
            Packet::PubComp(r) => {
                self.check_ack_kind(r.packet_id, &[OutboundState::AwaitingPubComp], "PUBCOMP")?;
                if let Some(done) = self.session.pubcomp(r.packet_id) {
                    self.forget(&done.delivery);
                }
                Ok(())
            }
            Packet::PubRel(r) => {
                let mut comp = PubResponse::new(r.packet_id);
                if self.session.inbound_qos2.remove(&r.packet_id.get()) {
                    if self.durable() {
                        self.store_ops.push(Op::DeleteInbound {
                            client_id: self.session.shared.client_id.clone(),
                            packet_id: r.packet_id.get(),
                        });
                    }
                } else {
                    comp.reason = ReasonCode::PacketIdentifierNotFound;
                }
                // PUBCOMP goes out in order behind acknowledgements still
                // waiting for the store, and behind the id's removal: a
                // restart must not take a new message reusing the id for
                // a resend.
                let wrote = comp.reason == ReasonCode::Success && self.durable();
                self.queue_ack(wrote, Packet::PubComp(comp));
                Ok(())
            }
            Packet::Subscribe(s) => self.on_subscribe(s),
            Packet::Unsubscribe(u) => {
                self.on_unsubscribe(u);
                Ok(())
            }
            Packet::PingReq => {
                self.send(&Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(d) => Err(self.on_disconnect(d)),
            Packet::Connect(_) => Err(Close::violation(
                ReasonCode::ProtocolError,
                "second CONNECT",
            )),
            Packet::Auth(_) => Err(Close::violation(
                ReasonCode::ProtocolError,
                "AUTH without an authentication method",
            )),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                Err(Close::violation(
                    ReasonCode::ProtocolError,
                    format!("{} from a client", packet.packet_type()),
                ))
            }
        }
    }

    /// An acknowledgement for a message in flight must be the one its
    /// stage calls for: PUBACK for QoS 1, PUBREC then PUBCOMP for QoS 2.
    /// Another is a protocol violation (Mosquitto closes too); one for an
    /// id not in flight is ignored (a late duplicate).
    fn check_ack_kind(
        &self,
        packet_id: PacketId,
        expected: &[OutboundState],
        ack: &str,
    ) -> Result<(), Close> {
        match self.session.stage_of(packet_id) {
            Some(stage) if !expected.contains(&stage) => Err(Close::violation(
                ReasonCode::ProtocolError,
                format!("{ack} for packet id {packet_id} in stage {stage:?}"),
            )),
            _ => Ok(()),
        }
    }

    fn on_publish(&mut self, mut publish: Publish, now: Instant) -> Result<(), Close> {
        Tally::count(|t| t.publish_in(publish.qos, publish.payload.len()));
        if crate::heap::over(self.broker.config.memory_limit) {
            return Err(Close::MemoryLimit);
        }
        if publish
            .properties
            .subscription_identifiers()
            .next()
            .is_some()
        {
            // [MQTT-3.3.4-6]: a client's PUBLISH carries none.
            return Err(Close::violation(
                ReasonCode::ProtocolError,
                "Subscription Identifier in a PUBLISH from a client",
            ));
        }
        self.aliases_in.resolve(&mut publish)?;
        if let Some(mounted) = self.mount().map(|m| publish.topic.prefixed(m)) {
            match mounted {
                Ok(topic) => publish.topic = topic,
                Err(_) => {
                    debug!("PUBLISH too long under the listener's mount_point dropped");
                    self.ack_unrouted(&publish, ReasonCode::TopicNameInvalid);
                    return Ok(());
                }
            }
        }
        self.check_publish_limits(&publish)?;
        if crate::router::level_count(&publish.topic) > self.broker.config.max_topic_levels {
            // Not routed, so that no index or retained tree grows that
            // deep; MQTT 5 is told 0x90 Topic Name invalid.
            debug!("PUBLISH with more topic levels than max_topic_levels dropped");
            self.ack_unrouted(&publish, ReasonCode::TopicNameInvalid);
            return Ok(());
        }
        let limit = self.broker.config.message_size_limit;
        if limit > 0 && publish.payload.len() > limit {
            // `message_size_limit`: not routed, but the QoS exchange
            // completes. MQTT 5 is told 0x97 Quota exceeded: the standard's
            // code for "an implementation or administrative limit" that a
            // PUBACK/PUBREC may carry (Mosquitto sends 0x95 Packet too
            // large, which [MQTT-3.4.2.1] does not allow there). 3.x cannot
            // be told: acknowledged as usual, as Mosquitto does.
            debug!(topic = %publish.topic, size = publish.payload.len(), "PUBLISH above message_size_limit dropped");
            self.ack_unrouted(&publish, ReasonCode::QuotaExceeded);
            return Ok(());
        }
        if !self.may(&publish.topic, Access::Write) {
            // 3.x: dropped silently (acknowledged as usual); 5.0: refused
            // with 0x87 ([MQTT-3.3.5-2]).
            debug!(topic = %publish.topic, "PUBLISH denied ($SYS, $share or the ACL)");
            Tally::count(|t| t.denied_publish += 1);
            self.ack_unrouted(&publish, ReasonCode::NotAuthorized);
            return Ok(());
        }
        // The deliveries' store writes join the connection's batch directly.
        let mut fanout = Fanout {
            ops: self.take_store_ops(),
            ..Fanout::default()
        };
        let before = fanout.ops.len();
        match (publish.qos, publish.packet_id) {
            (QoS::AtMostOnce, _) => {
                // Nothing waits for these writes (an upgraded QoS): they go
                // with the batch.
                let message = self.message(publish, now);
                self.broker
                    .publish_from(message, &mut fanout, Some(&self.session.shared));
                self.after_publish(&mut fanout);
                self.store_ops = fanout.ops;
            }
            (QoS::AtLeastOnce, Some(id)) => {
                let message = self.message(publish, now);
                let routed =
                    self.broker
                        .publish_from(message, &mut fanout, Some(&self.session.shared));
                let ack = Packet::PubAck(self.ack(id, routed, fanout.dropped));
                let wrote = fanout.ops.len() > before;
                self.after_publish(&mut fanout);
                self.store_ops = fanout.ops;
                self.queue_ack(wrote, ack);
            }
            (QoS::ExactlyOnce, Some(id)) => {
                let rec = if self.session.inbound_qos2.contains(&id.get()) {
                    // A resend (DUP) of a packet id not yet released by
                    // PUBREL is not routed again ([MQTT-4.3.3]); without DUP
                    // it is a new message reusing an id in use.
                    let mut rec = PubResponse::new(id);
                    if !publish.dup && self.v5() {
                        rec.reason = ReasonCode::PacketIdentifierInUse;
                    }
                    rec
                } else {
                    if self.session.inbound_qos2.len() >= usize::from(self.receive_maximum) {
                        self.store_ops = fanout.ops;
                        return Err(Close::violation(
                            ReasonCode::ReceiveMaximumExceeded,
                            "more QoS 2 messages awaiting PUBREL than Receive Maximum",
                        ));
                    }
                    let message = self.message(publish, now);
                    let routed =
                        self.broker
                            .publish_from(message, &mut fanout, Some(&self.session.shared));
                    let rec = self.ack(id, routed, fanout.dropped);
                    // A PUBREC with an error code ends the exchange
                    // ([MQTT-4.3.3]): the id is free again at once.
                    if !rec.reason.is_error() {
                        self.session.inbound_qos2.insert(id.get());
                        if self.durable() {
                            // Exactly once survives a restart: the id is
                            // known as received in the same batch as the
                            // deliveries.
                            fanout.ops.push(Op::PutInbound {
                                client_id: self.session.shared.client_id.clone(),
                                packet_id: id.get(),
                            });
                        }
                    }
                    rec
                };
                let wrote = fanout.ops.len() > before;
                self.after_publish(&mut fanout);
                self.store_ops = fanout.ops;
                self.queue_ack(wrote, Packet::PubRec(rec));
            }
            (_, None) => {
                self.store_ops = fanout.ops;
                return Err(Close::violation(
                    ReasonCode::ProtocolError,
                    "QoS > 0 without packet id",
                ));
            }
        }
        Ok(())
    }

    /// Takes note of what a publication caused besides its deliveries:
    /// its own store submission (a retained message's change), which
    /// later acknowledgements wait for, and the full queues it fed, which
    /// the connection waits for before it reads on.
    #[inline(always)]
    fn after_publish(&mut self, fanout: &mut Fanout) {
        if fanout.submitted != 0 {
            self.session.last_store_seq = self.session.last_store_seq.max(fanout.submitted);
            self.check_store_backlog(fanout.submitted);
        }
        if fanout.full.is_empty() {
            return;
        }
        let waiting_on = &mut self.waiting.get_or_insert_with(Box::default).waiting_on;
        for full in fanout.full.drain(..) {
            if !waiting_on.iter().any(|m| Arc::ptr_eq(m, &full)) {
                waiting_on.push(full);
            }
        }
        self.pause(Instant::now());
    }

    /// After a submission `seq` of this connection's: if the store's
    /// backlog is past `max_store_backlog`, writes outrun the disk, and the
    /// connection reads on only once `seq` is durable (one mechanism with
    /// the full queues: what waits for the store stays bounded, as a queue
    /// does).
    fn check_store_backlog(&mut self, seq: u64) {
        let Some(p) = &self.broker.persist else {
            return;
        };
        if p.writer.backlog() > self.broker.config.max_store_backlog && !p.writer.is_durable(seq) {
            let w = self.waiting.get_or_insert_with(Box::default);
            w.store_wait = Some(w.store_wait.map_or(seq, |s| s.max(seq)));
            p.wake_when_durable(seq, &self.session.shared);
            self.pause(Instant::now());
        }
    }

    /// Lets go of what waited, once nothing does.
    pub fn let_go(&mut self) {
        if self.waiting.as_ref().is_some_and(|w| w.is_empty()) {
            self.waiting = None;
        }
    }

    /// Whether a packet just handled asks the connection to stop reading.
    pub fn must_pause(&self) -> bool {
        self.waiting.as_ref().is_some_and(|w| w.paused())
    }

    fn pause(&mut self, now: Instant) {
        let w = self.waiting.get_or_insert_with(Box::default);
        if w.paused_at.is_none() {
            w.paused_at = Some(now);
            let m = &self.broker.metrics;
            Metrics::add(&m.publishers_paused, 1);
            Metrics::add(&m.publisher_pauses, 1);
        }
    }

    /// Ends a pause, counting its time.
    pub fn resume(&mut self, now: Instant) {
        if let Some(since) = self.waiting.as_mut().and_then(|w| w.paused_at.take()) {
            let m = &self.broker.metrics;
            m.publishers_paused
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            let micros = now.saturating_duration_since(since).as_micros();
            Metrics::add(&m.publisher_paused_micros, micros as u64);
        }
    }

    /// Whether the connection must still not be read at `now`: a queue it
    /// fed is full and its subscriber makes progress (the publisher goes
    /// at the subscriber's pace), or its store writes wait for a disk they
    /// outran. `Some(deadline)`: paused, to look again at `deadline` (when
    /// a queue would count as stalled) or when woken; `None`: read on.
    pub fn blocked(&mut self, now: Instant) -> Option<Option<Instant>> {
        let w = self.waiting.as_mut().filter(|w| w.paused())?;
        let own = &self.session.shared;
        let mut next: Option<Instant> = None;
        w.waiting_on
            .retain(|full| match full.mailbox.wait_for_room(own, now) {
                Some(at) => {
                    next = Some(next.map_or(at, |n| n.min(at)));
                    true
                }
                None => false,
            });
        if let (Some(seq), Some(p)) = (w.store_wait, &self.broker.persist) {
            if p.writer.is_durable(seq) {
                w.store_wait = None;
            }
        }
        if self.must_pause() {
            Some(next)
        } else {
            self.resume(now);
            None
        }
    }

    /// Completes the QoS exchange of a PUBLISH that is not routed: MQTT 5
    /// is told `v5_reason`; 3.x, which has no code for it, gets the usual
    /// acknowledgement. A 5.0 PUBREC with an error ends the exchange; a 3.x
    /// PUBREL is answered with PUBCOMP whether its id is known.
    fn ack_unrouted(&mut self, publish: &Publish, v5_reason: ReasonCode) {
        let Some(id) = publish.packet_id else {
            return;
        };
        let mut ack = PubResponse::new(id);
        if self.v5() {
            ack.reason = v5_reason;
        }
        let packet = if publish.qos == QoS::ExactlyOnce {
            Packet::PubRec(ack)
        } else {
            Packet::PubAck(ack)
        };
        self.queue_ack(false, packet);
    }

    /// `max_qos` and `retain_available false`: a PUBLISH beyond what the
    /// broker announced is a protocol error that closes the connection
    /// (MQTT 5: DISCONNECT 0x9B [MQTT-3.2.2-11], 0x9A [MQTT-3.2.2-14]);
    /// 3.x clients, which cannot be told the limits, are closed too, as
    /// Mosquitto does.
    fn check_publish_limits(&self, publish: &Publish) -> Result<(), Close> {
        let config = &self.broker.config;
        if publish.qos > self.endpoint.settings.max_qos {
            return Err(Close::violation(
                ReasonCode::QoSNotSupported,
                format!("PUBLISH at QoS {} above max_qos", publish.qos as u8),
            ));
        }
        if publish.retain && !config.retain_available {
            return Err(Close::violation(
                ReasonCode::RetainNotSupported,
                "retained PUBLISH with retain_available false",
            ));
        }
        Ok(())
    }

    /// Sends `ack` once `ops` (and everything acknowledged before it) is
    /// durable; at once when nothing waits ([MQTT-4.6.0-2]: in order).
    ///
    /// The writes join the connection's batch, submitted once per read
    /// (`flush_store_ops`): one hand-over to the store writer for all the
    /// packets one read brought, not one per message. Until then the
    /// acknowledgement waits under [`UNSUBMITTED`].
    fn queue_ack(&mut self, wrote: bool, ack: Packet) {
        if !wrote
            && self
                .waiting
                .as_ref()
                .is_none_or(|w| w.pending_acks.is_empty())
        {
            // The session's last writes may still be on their way to the
            // disk (submitted by the connection before this one, say, for
            // the QoS 2 message this PUBREC answers a resend of).
            let last = self.session.last_store_seq;
            match &self.broker.persist {
                Some(p) if last != 0 && !p.writer.is_durable(last) => {
                    p.wake_when_durable(last, &self.session.shared);
                    let w = self.waiting.get_or_insert_with(Box::default);
                    w.pending_acks.push_back((last, ack));
                    return;
                }
                _ => return self.send(&ack),
            }
        }
        let seq = if wrote {
            UNSUBMITTED
        } else {
            // Behind the acknowledgement before it, and behind the
            // session's last submission (a retained change submitted on
            // its own).
            self.waiting
                .as_ref()
                .and_then(|w| w.pending_acks.back())
                .map_or(UNSUBMITTED, |(last, _)| *last)
                .max(self.session.last_store_seq)
        };
        let w = self.waiting.get_or_insert_with(Box::default);
        w.pending_acks.push_back((seq, ack));
    }

    /// The connection's batch of store writes, taken out to be added to;
    /// an empty one comes with the capacity of a spent batch, so that
    /// batches do not grow from nothing on every read.
    fn take_store_ops(&mut self) -> Vec<Op> {
        if self.store_ops.capacity() == 0 {
            if let Some(p) = &self.broker.persist {
                return p.writer.spare_ops();
            }
        }
        std::mem::take(&mut self.store_ops)
    }

    /// Sends the acknowledgements, and the held deliveries, whose writes
    /// are durable.
    pub fn flush_acks(&mut self) {
        let broker = self.broker.clone();
        let Some(p) = &broker.persist else {
            return;
        };
        // Read once: the watch's lock per acknowledgement showed.
        let durable = p.writer.durable_seq();
        for queue in [Queue::Acks, Queue::Held] {
            loop {
                let Some(w) = self.waiting.as_mut() else {
                    return;
                };
                let waiting = match queue {
                    Queue::Acks => &mut w.pending_acks,
                    Queue::Held => &mut w.held,
                };
                match waiting.front() {
                    Some((seq, _)) if *seq <= durable => {}
                    _ => break,
                }
                if let Some((_, packet)) = waiting.pop_front() {
                    self.send(&packet);
                }
            }
        }
    }

    /// Submits the store writes gathered while handling packets.
    pub fn flush_store_ops(&mut self) {
        if self.store_ops.is_empty() {
            // Taken for a publication that wrote nothing: not kept idle.
            if self.store_ops.capacity() > 0 {
                if let Some(p) = &self.broker.persist {
                    p.writer.return_ops(std::mem::take(&mut self.store_ops));
                }
            }
            return;
        }
        let Some(seq) = self.broker.store(std::mem::take(&mut self.store_ops)) else {
            return;
        };
        self.session.last_store_seq = seq;
        self.check_store_backlog(seq);
        let mut waiting = false;
        if let Some(w) = self.waiting.as_mut() {
            for queue in [&mut w.pending_acks, &mut w.held] {
                for (s, _) in queue.iter_mut().rev() {
                    if *s != UNSUBMITTED {
                        break;
                    }
                    *s = seq;
                    waiting = true;
                }
            }
        }
        if waiting {
            if let Some(p) = &self.broker.persist {
                p.wake_when_durable(seq, &self.session.shared);
            }
        }
    }

    /// What the ACL allows this client on `topic`. Before any ACL, as
    /// Mosquitto does: no client writes `$SYS` (monitoring trusts it; only
    /// the bridge state topics `$SYS/broker/connection/+/state` are
    /// open), nor a `$share/...` topic (a subscription filter, never a
    /// topic).
    pub fn may(&self, topic: &str, access: Access) -> bool {
        if access == Access::Write && reserved_for_writing(topic) {
            return false;
        }
        self.endpoint.security.allowed(
            self.username.as_deref(),
            &self.session.shared.client_id,
            topic,
            access,
        )
    }

    fn durable(&self) -> bool {
        self.session
            .shared
            .durable
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The delivery is done: remove it from the store.
    fn forget(&mut self, delivery: &Delivery) {
        if let Some(seq) = delivery.durable {
            self.store_ops.push(Op::DeleteQueued {
                client_id: self.session.shared.client_id.clone(),
                seq,
            });
        }
    }

    /// Records the delivery's new stage in the store.
    fn remember(&mut self, delivery: &Delivery, stage: Stage) {
        if let Some(seq) = delivery.durable {
            self.store_ops.push(Op::UpdateQueued {
                client_id: self.session.shared.client_id.clone(),
                seq,
                record: persist::encode_delivery(delivery, stage, Instant::now()),
            });
        }
    }

    /// The PUBACK/PUBREC for a routed message. MQTT 5 is told when nobody
    /// matched (0x10), and when the message reached no subscriber because
    /// a limit dropped every copy (0x97 Quota exceeded). A message that
    /// reached some subscribers was accepted: a code of 0x80 or more would
    /// tell the publisher it failed.
    fn ack(&self, packet_id: PacketId, routed: usize, dropped: usize) -> PubResponse {
        let mut ack = PubResponse::new(packet_id);
        if self.v5() && routed == 0 {
            ack.reason = if dropped > 0 {
                ReasonCode::QuotaExceeded
            } else {
                ReasonCode::NoMatchingSubscribers
            };
        }
        ack
    }

    /// DISCONNECT from the client. MQTT 5 may change the session expiry,
    /// but not from 0 to non-zero ([MQTT-3.14.2-2]).
    fn on_disconnect(&mut self, disconnect: Disconnect) -> Close {
        if let Some(expiry) = disconnect.properties.session_expiry_interval() {
            if self.session.expiry_interval == 0 && expiry != 0 {
                return Close::violation(
                    ReasonCode::ProtocolError,
                    "Session Expiry Interval changed from 0 at DISCONNECT",
                );
            }
            self.session.expiry_interval = expiry;
        }
        Close::Disconnect {
            publish_will: disconnect.reason == ReasonCode::DisconnectWithWillMessage,
        }
    }

    /// Sends MQTT 5 clients the DISCONNECT that `close` calls for.
    pub fn say_goodbye(&mut self, close: &Close) {
        if let (true, Some(reason)) = (self.v5(), close.server_disconnect()) {
            let mut properties = Properties::new();
            if let Close::Violation { detail, .. } = close {
                if let Ok(s) = ferrymq_codec::MqttString::try_from(detail.as_str()) {
                    properties.push(ferrymq_codec::Property::ReasonString(s));
                }
            }
            self.send(&Packet::Disconnect(Disconnect { reason, properties }));
        }
    }

    /// The will to publish because of `close`, if any ([MQTT-3.1.2-8]).
    pub fn take_will(&mut self, close: &Close) -> Option<Will> {
        let will = *self.will.take().filter(|_| close.publishes_will())?;
        // A will is a publication by the client: the ACL applies.
        self.may(&will.topic, Access::Write).then_some(will)
    }
}

/// Topics no client may publish to (Mosquitto's `$SYS` and `$share`
/// rules, by the same prefixes).
fn reserved_for_writing(topic: &str) -> bool {
    if topic.starts_with("$SYS") {
        return !ferrymq_codec::filter_matches("$SYS/broker/connection/+/state", topic);
    }
    topic.starts_with("$share")
}

/// The message a will becomes: its properties minus the Will Delay
/// Interval, which is for the broker alone.
pub fn will_message(will: Will, now: Instant) -> Message {
    let mut properties = will.properties;
    properties.remove(id::WILL_DELAY_INTERVAL);
    Message {
        topic: will.topic,
        payload: will.payload,
        qos: will.qos,
        retain: will.retain,
        properties,
        received: now,
        origin: 0,
        source: None,
    }
}
