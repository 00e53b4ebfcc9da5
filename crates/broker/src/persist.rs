//! What the broker writes to the store, and reading it back at start-up.
//!
//! Records are small hand-laid binary layouts with a format byte in front;
//! a message inside a record is an MQTT 5 PUBLISH encoded by our own codec,
//! so the strict decoder validates it again on the way back. Times are
//! stored as Unix milliseconds so that expiry keeps counting across a
//! restart.
//!
//! What is durable, and when (see docs/architecture.md, "Persistence"):
//! - a QoS 1/2 delivery to a persistent session, in the same batch as the
//!   publisher's inbound state, before the publisher gets PUBACK/PUBREC;
//! - the state of an outbound QoS 2 message (sent with packet id; released
//!   by PUBREC), so a restart resends with the same id;
//! - sessions (subscriptions, expiry), on change and at disconnect;
//! - retained messages; inbound QoS 2 packet ids awaiting PUBREL.

use std::collections::BTreeMap;
use std::num::NonZeroU16;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ferrymq_codec::{
    decode, encode_publish, Packet, Protocol, PublishRef, QoS, RetainHandling, SubscriptionOptions,
};
use ferrymq_store::{Loaded, Op, WriterHandle};
use tracing::{info, warn};

use crate::broker::Broker;
use crate::message::{Delivery, Message};
use crate::session::{Inflight, OutboundState, SessionShared, SessionState, Subscription};
use crate::shared;

const FORMAT: u8 = 1;

/// The broker's handle on durable state.
#[derive(Debug)]
pub struct Persist {
    pub writer: WriterHandle,
    next_seq: AtomicU64,
    /// Connections waiting for a sequence number to become durable, woken
    /// through their mailbox (which their task already waits on).
    waiters: Mutex<BTreeMap<u64, Vec<Arc<SessionShared>>>>,
}

impl Persist {
    pub fn new(writer: WriterHandle) -> Persist {
        Persist {
            writer,
            next_seq: AtomicU64::new(1),
            waiters: Mutex::new(BTreeMap::new()),
        }
    }

    /// Wakes `mailbox`'s task once `seq` is durable.
    pub fn wake_when_durable(&self, seq: u64, session: &Arc<SessionShared>) {
        let mut waiters = self.waiters.lock();
        if self.writer.is_durable(seq) {
            drop(waiters);
            session.mailbox.wake();
            return;
        }
        waiters.entry(seq).or_default().push(session.clone());
    }

    /// Wakes the waiters of every sequence number up to `durable`.
    fn wake_up_to(&self, durable: u64) {
        let ready = {
            let mut waiters = self.waiters.lock();
            let later = waiters.split_off(&(durable + 1));
            std::mem::replace(&mut *waiters, later)
        };
        for session in ready.into_values().flatten() {
            session.mailbox.wake();
        }
    }

    /// A fresh key for a queued delivery.
    pub fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }
}

/// Wakes connections whose acknowledgements the store has made durable;
/// one task for the whole broker.
pub async fn release_acks(broker: Arc<Broker>, shutdown: tokio_util::sync::CancellationToken) {
    let Some(p) = &broker.persist else {
        return;
    };
    let mut durable = p.writer.durable();
    loop {
        tokio::select! {
            r = durable.changed() => if r.is_err() { return },
            () = shutdown.cancelled() => return,
        }
        let up_to = *durable.borrow_and_update();
        p.wake_up_to(up_to);
    }
}

/// Where a stored delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Queued,
    /// QoS 2 PUBLISH sent with this packet id, PUBREC not yet received.
    Sent(NonZeroU16),
    /// PUBREC received, PUBREL sent with this packet id.
    Released(NonZeroU16),
}

/// Unix milliseconds of `at`, by way of a reading of both clocks taken
/// within 100 ms of `now` on this thread (else a fresh one): one
/// wall-clock read per stored message showed in profiles, and a
/// millisecond is all a record keeps.
fn unix_ms(at: Instant, now: Instant) -> u64 {
    thread_local! {
        static CLOCKS: std::cell::Cell<Option<(Instant, Duration)>> =
            const { std::cell::Cell::new(None) };
    }
    let (mono, wall) = CLOCKS.with(|clocks| match clocks.get() {
        // `now` is never before a reading taken on this thread, but for a
        // reading taken after `now` was (a caller's `now` is a little old).
        Some((mono, wall))
            if now
                .checked_duration_since(mono)
                .unwrap_or_else(|| mono - now)
                < Duration::from_millis(100) =>
        {
            (mono, wall)
        }
        _ => {
            let read = (
                Instant::now(),
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default(),
            );
            clocks.set(Some(read));
            read
        }
    });
    let ms = match at.checked_duration_since(mono) {
        Some(after) => wall + after,
        None => wall.saturating_sub(mono - at),
    };
    ms.as_millis() as u64
}

/// Unix milliseconds of `at`, past or future.
pub fn unix_ms_of(at: Instant) -> u64 {
    unix_ms(at, Instant::now())
}

/// The `Instant` of a Unix time in milliseconds, past or future.
fn instant_from_unix_ms(ms: u64, now: Instant) -> Instant {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let at = Duration::from_millis(ms);
    if at >= wall {
        now + (at - wall)
    } else {
        now.checked_sub(wall - at).unwrap_or(now)
    }
}

fn encode_message(message: &Message, out: &mut BytesMut) {
    let publish = PublishRef {
        dup: false,
        qos: message.qos,
        retain: message.retain,
        topic: &message.topic,
        packet_id: (message.qos != QoS::AtMostOnce).then_some(NonZeroU16::MIN),
        properties: &message.properties,
        payload: &message.payload,
    };
    // Only a message too large for any packet can fail, and such a message
    // could not have been received.
    let _ = encode_publish(&publish, Protocol::V5, out);
}

fn decode_message(buf: &mut BytesMut, received: Instant) -> Option<Message> {
    match decode(buf, Protocol::V5, usize::MAX).ok()?? {
        Packet::Publish(p) => Some(Message {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties: p.properties,
            received,
            origin: 0,
            source: None,
        }),
        _ => None,
    }
}

/// A delivery record.
/// Bytes of a worker thread's record buffer, shared by the records cut
/// from it. Below glibc's 64 KiB trim threshold, so that the store thread
/// freeing a spent buffer does not consolidate the allocator's free lists.
const RECORD_BUFFER: usize = 32 * 1024;

thread_local! {
    static RECORDS: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

/// Encodes a record into the calling thread's record buffer and cuts it
/// off: records of many messages share one allocation, which the store
/// thread releases when it has written them, instead of two small ones
/// per record allocated here and freed there.
fn encode_record(size_hint: usize, encode: impl FnOnce(&mut BytesMut)) -> Bytes {
    RECORDS.with_borrow_mut(|buf| {
        if buf.capacity() < size_hint {
            *buf = BytesMut::with_capacity(RECORD_BUFFER.max(size_hint));
        }
        encode(buf);
        buf.split().freeze()
    })
}

pub fn encode_delivery(d: &Delivery, stage: Stage, now: Instant) -> Bytes {
    let m = &d.message;
    let hint = 64 + 4 * d.subscription_ids.len() + m.topic.len() + m.payload.len();
    encode_record(hint, |out| encode_delivery_into(d, stage, now, out))
}

fn encode_delivery_into(d: &Delivery, stage: Stage, now: Instant, out: &mut BytesMut) {
    out.put_u8(FORMAT);
    let (tag, pid) = match stage {
        Stage::Queued => (0, 0),
        Stage::Sent(id) => (1, id.get()),
        Stage::Released(id) => (2, id.get()),
    };
    out.put_u8(tag);
    out.put_u16(pid);
    out.put_u8(d.qos as u8);
    out.put_u8(u8::from(d.retain));
    out.put_u64(unix_ms(d.message.received, now));
    out.put_u8(d.subscription_ids.len().min(255) as u8);
    for id in d.subscription_ids.iter().take(255) {
        out.put_u32(*id);
    }
    encode_message(&d.message, out);
}

pub fn decode_delivery(record: &[u8], now: Instant) -> Option<(Delivery, Stage)> {
    let mut b = record;
    if b.remaining() < 15 || b.get_u8() != FORMAT {
        return None;
    }
    let tag = b.get_u8();
    let pid = NonZeroU16::new(b.get_u16());
    let stage = match (tag, pid) {
        (0, _) => Stage::Queued,
        (1, Some(id)) => Stage::Sent(id),
        (2, Some(id)) => Stage::Released(id),
        _ => return None,
    };
    let qos = QoS::from_u8(b.get_u8()).ok()?;
    let retain = b.get_u8() != 0;
    let received = instant_from_unix_ms(b.get_u64(), now);
    let n = usize::from(b.get_u8());
    if b.remaining() < 4 * n {
        return None;
    }
    let ids = (0..n).map(|_| b.get_u32()).collect();
    let mut rest = BytesMut::from(b);
    let message = decode_message(&mut rest, received)?;
    let mut delivery = Delivery::new(Arc::new(message), qos, retain);
    delivery.subscription_ids = ids;
    Some((delivery, stage))
}

/// A retained-message record.
/// A retained message: format, receipt time, the message as a PUBLISH,
/// then (if known) its source: client id, and user name if any, each a
/// length-prefixed string. Records without a source (written before it
/// was kept) read as messages without one.
pub fn encode_retained(message: &Message, now: Instant) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(FORMAT);
    out.put_u64(unix_ms(message.received, now));
    encode_message(message, &mut out);
    if let Some(source) = &message.source {
        put_string(&mut out, &source.client_id);
        if let Some(username) = &source.username {
            put_string(&mut out, username);
        }
    }
    out.freeze()
}

fn put_string(out: &mut BytesMut, s: &str) {
    let len = s.len().min(usize::from(u16::MAX));
    out.put_u16(len as u16);
    out.put_slice(s.as_bytes().get(..len).unwrap_or_default());
}

fn get_string(b: &mut BytesMut) -> Option<Arc<str>> {
    if b.remaining() < 2 {
        return None;
    }
    let len = usize::from(b.get_u16());
    if b.remaining() < len {
        return None;
    }
    let bytes = b.split_to(len);
    std::str::from_utf8(&bytes).ok().map(Arc::from)
}

fn decode_retained(record: &[u8], now: Instant) -> Option<Message> {
    let mut b = record;
    if b.remaining() < 9 || b.get_u8() != FORMAT {
        return None;
    }
    let received = instant_from_unix_ms(b.get_u64(), now);
    let mut rest = BytesMut::from(b);
    let mut message = decode_message(&mut rest, received)?;
    if !rest.is_empty() {
        let client_id = get_string(&mut rest)?;
        let username = if rest.is_empty() {
            None
        } else {
            Some(get_string(&mut rest)?)
        };
        message.source = Some(Arc::new(crate::message::Source {
            client_id,
            username,
        }));
    }
    Some(message)
}

fn options_byte(o: &SubscriptionOptions) -> u8 {
    (o.qos as u8)
        | u8::from(o.no_local) << 2
        | u8::from(o.retain_as_published) << 3
        | (o.retain_handling as u8) << 4
}

fn options_from(byte: u8) -> Option<SubscriptionOptions> {
    Some(SubscriptionOptions {
        qos: QoS::from_u8(byte & 0x03).ok()?,
        no_local: byte & 0x04 != 0,
        retain_as_published: byte & 0x08 != 0,
        retain_handling: match (byte >> 4) & 0x03 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            _ => RetainHandling::DoNotSend,
        },
    })
}

/// A session record. `expires_at` is the Unix time (ms) at which a parked
/// session ends; 0 while connected or never.
pub fn encode_session(state: &SessionState, expires_at: u64) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(FORMAT);
    out.put_u32(state.expiry_interval);
    out.put_u64(expires_at);
    out.put_u32(state.subscriptions.len() as u32);
    for (filter, options) in &state.subscriptions {
        out.put_u16(filter.len().min(usize::from(u16::MAX)) as u16);
        out.put_slice(filter.as_bytes());
        out.put_u8(options_byte(&options.options));
        out.put_u32(options.identifier.unwrap_or(0));
    }
    // A will waiting out its delay, so a restart keeps the timer.
    if let Some(will) = &state.delayed_will {
        out.put_u8(1);
        out.put_u64(will.publish_at_unix_ms);
        out.put_u64(unix_ms(will.message.received, Instant::now()));
        encode_message(&will.message, &mut out);
    }
    out.freeze()
}

struct SessionRecord {
    expiry_interval: u32,
    expires_at: u64,
    subscriptions: Vec<(String, SubscriptionOptions, Option<u32>)>,
    /// (due as Unix ms, the will).
    will: Option<(u64, Message)>,
}

fn decode_session(record: &[u8]) -> Option<SessionRecord> {
    let mut b = record;
    if b.remaining() < 17 || b.get_u8() != FORMAT {
        return None;
    }
    let expiry_interval = b.get_u32();
    let expires_at = b.get_u64();
    let n = b.get_u32();
    let mut subscriptions = Vec::new();
    for _ in 0..n {
        if b.remaining() < 2 {
            return None;
        }
        let len = usize::from(b.get_u16());
        if b.remaining() < len + 5 {
            return None;
        }
        let filter = String::from_utf8(b.get(..len)?.to_vec()).ok()?;
        b.advance(len);
        let options = options_from(b.get_u8())?;
        let id = Some(b.get_u32()).filter(|&id| id != 0);
        subscriptions.push((filter, options, id));
    }
    let will = if b.remaining() >= 17 && b.get_u8() == 1 {
        let due = b.get_u64();
        let received = instant_from_unix_ms(b.get_u64(), Instant::now());
        Some((due, decode_message(&mut BytesMut::from(b), received)?))
    } else {
        None
    };
    Some(SessionRecord {
        expiry_interval,
        expires_at,
        subscriptions,
        will,
    })
}

/// Milliseconds since the Unix epoch, `secs` from now.
pub fn unix_deadline(secs: u32) -> u64 {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (wall + Duration::from_secs(u64::from(secs))).as_millis() as u64
}

/// Rebuilds retained messages and parked sessions from `loaded`.
pub fn recover(
    broker: &Arc<Broker>,
    loaded: Loaded,
    shutdown: &tokio_util::sync::CancellationToken,
) {
    let now = Instant::now();
    // Before anything can publish (a will due during the downtime is
    // published from another task while this runs): numbers above all the
    // store holds.
    if let Some(p) = &broker.persist {
        p.next_seq.fetch_max(loaded.max_seq + 1, Ordering::Relaxed);
    }
    let mut cleanup = Vec::new();
    for (topic, record) in &loaded.retained {
        match decode_retained(record, now) {
            Some(m) if !m.is_expired(now) => broker.retained.set(&Arc::new(m), || {}),
            _ => cleanup.push(Op::DeleteRetained {
                topic: topic.clone(),
            }),
        }
    }
    let mut sessions = std::collections::HashMap::new();
    let mut wills = Vec::new();
    for (client_id, record) in &loaded.sessions {
        let Some(rec) = decode_session(record) else {
            warn!(%client_id, "unreadable session record dropped");
            cleanup.push(Op::DeleteSession {
                client_id: client_id.as_str().into(),
            });
            continue;
        };
        let id: Arc<str> = client_id.as_str().into();
        let mut state = broker.new_session(id.clone(), rec.expiry_interval);
        state.shared.durable.store(true, Ordering::Relaxed);
        if let Some(will) = rec.will {
            wills.push((id, will));
        }
        for (filter, options, identifier) in rec.subscriptions {
            let (inner, share) = match shared::parse(&filter) {
                Some(Ok((name, inner))) => (
                    inner.to_string(),
                    Some(broker.shared_groups.get(name, inner)),
                ),
                _ => (filter.clone(), None),
            };
            let sub = Subscription::new(state.shared.clone(), options, identifier, share);
            broker.router.subscribe(&inner, sub);
            state.subscriptions.insert(
                filter,
                crate::session::SubscriptionRecord {
                    options,
                    identifier,
                },
            );
        }
        sessions.insert(client_id.clone(), (state, rec.expires_at));
    }
    for (client_id, seq, record) in &loaded.queued {
        let Some((state, _)) = sessions.get_mut(client_id) else {
            cleanup.push(Op::DeleteQueued {
                client_id: client_id.as_str().into(),
                seq: *seq,
            });
            continue;
        };
        let Some((mut delivery, stage)) = decode_delivery(record, now) else {
            warn!(%client_id, seq, "unreadable queued message dropped");
            cleanup.push(Op::DeleteQueued {
                client_id: client_id.as_str().into(),
                seq: *seq,
            });
            continue;
        };
        delivery.durable = Some(*seq);
        match stage {
            Stage::Queued => {
                state.shared.mailbox.push_recovered(delivery);
            }
            Stage::Sent(packet_id) => state.inflight.push_back(Inflight {
                packet_id,
                delivery,
                state: OutboundState::AwaitingPubRec,
            }),
            Stage::Released(packet_id) => state.inflight.push_back(Inflight {
                packet_id,
                delivery,
                state: OutboundState::AwaitingPubComp,
            }),
        }
    }
    for (client_id, packet_id) in &loaded.inbound {
        if let Some((state, _)) = sessions.get_mut(client_id) {
            state.inbound_qos2.insert(*packet_id);
        }
    }
    let count = sessions.len();
    for (client_id, (mut state, expires_at)) in sessions {
        // A deadline already past ends the session at the next sweep.
        let mut deadline =
            (expires_at != 0).then(|| instant_from_unix_ms(expires_at, now).max(now));
        // A session stored as never expiring gets `persistent_client_expiration`
        // if that is set now, counted from the restart.
        let lifetime = broker.session_lifetime(state.expiry_interval);
        if deadline.is_none() && lifetime != u32::MAX {
            state.expiry_interval = lifetime;
            deadline = Some(now + Duration::from_secs(u64::from(lifetime)));
        }
        broker
            .registry
            .restore(client_id.as_str().into(), state, deadline);
    }
    // Once the sessions are parked, so that a will already due finds its
    // session to be dropped from.
    for (client_id, (due, message)) in wills {
        broker.registry.with_parked(&client_id, |state, _| {
            // The delay keeps counting across the restart; one already
            // past is published now.
            let left = Duration::from_millis(due.saturating_sub(unix_deadline(0)));
            state.delayed_will = Some(Box::new(crate::will::schedule(
                broker,
                client_id.clone(),
                Arc::new(message),
                left,
                due,
                shutdown,
            )));
        });
    }
    if let Some(p) = &broker.persist {
        if !cleanup.is_empty() {
            p.writer.submit(cleanup);
        }
    }
    info!(
        sessions = count,
        queued = loaded.queued.len(),
        retained = broker.retained.len(),
        "state recovered from the store"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrymq_codec::{Properties, Property, TopicName};

    #[test]
    fn delivery_round_trip() {
        let now = Instant::now();
        let mut properties = Properties::new();
        properties.push(Property::MessageExpiryInterval(100));
        properties.push(Property::UserProperty(
            "k".try_into().unwrap(),
            "v".try_into().unwrap(),
        ));
        let message = Arc::new(Message {
            topic: TopicName::new("a/b").unwrap(),
            payload: Bytes::from_static(b"hello"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: properties.clone(),
            received: now - Duration::from_secs(3),
            origin: 9,
            source: None,
        });
        let mut d = Delivery::new(message, QoS::AtLeastOnce, false);
        d.subscription_ids = vec![4, 5];
        let stage = Stage::Sent(NonZeroU16::new(77).unwrap());
        let record = encode_delivery(&d, stage, now);
        let (back, back_stage) = decode_delivery(&record, now).unwrap();
        assert_eq!(back_stage, stage);
        assert_eq!(back.qos, QoS::AtLeastOnce);
        assert_eq!(back.subscription_ids, vec![4, 5]);
        assert_eq!(&back.message.topic[..], "a/b");
        assert_eq!(back.message.properties, properties);
        let left = back.message.remaining_expiry(now).unwrap();
        assert!((96..=98).contains(&left), "{left}");
        assert!(decode_delivery(&record[..record.len() - 1], now).is_none());
    }

    #[test]
    fn retained_round_trip_keeps_the_source() {
        let now = Instant::now();
        let message = |source: Option<crate::message::Source>| Message {
            topic: TopicName::new("r/t").unwrap(),
            payload: Bytes::from_static(b"kept"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties::new(),
            received: now,
            origin: 0,
            source: source.map(Arc::new),
        };
        for source in [
            None,
            Some(crate::message::Source {
                client_id: "dev-1".into(),
                username: None,
            }),
            Some(crate::message::Source {
                client_id: "dev-2".into(),
                username: Some("alice".into()),
            }),
        ] {
            let original = message(source);
            let record = encode_retained(&original, now);
            let back = decode_retained(&record, now).unwrap();
            assert_eq!(back.source, original.source);
            assert_eq!(&back.payload[..], b"kept");
            // A record cut inside its source is refused, not misread.
            if original.source.is_some() {
                assert!(decode_retained(&record[..record.len() - 1], now).is_none());
            }
        }
    }
}
