//! A session's delivery queue and the one place where the overflow policy
//! lives.
//!
//! Publishers push into it; the session's connection task drains it. It
//! outlives connections: while the client is away the same queue holds
//! what a persistent session is owed.
//!
//! Overflow policy (see `docs/architecture.md`, "Overload"):
//! - the queue is full at `max_queued_messages` messages, or when the next
//!   message would take it past `max_queued_bytes` (an empty queue takes
//!   any one message, so a message larger than the byte limit still
//!   reaches a client that keeps up, as Mosquitto sends it straight into
//!   the in-flight window). A message counts its topic, payload and
//!   properties;
//! - **online, making progress**: a full queue takes the delivery anyway
//!   ([`Push::Over`]) and its publisher's connection stops being read
//!   until the queue is down to half ([`Mailbox::wait_for_room`]): the
//!   publisher is slowed to the subscriber's pace, nothing is dropped,
//!   and the queue passes its limit by at most one message per publisher;
//! - **online, stalled** (nothing taken from a full queue for
//!   `max_queue_stall_ms`): Mosquitto's rule, what finds the queue full is
//!   dropped and counted, so one stuck client never holds its publishers;
//!   a QoS 1/2 message first evicts the oldest queued QoS 0 one;
//! - **offline**: Mosquitto's rule too (a publisher cannot wait for a
//!   client that is away), with the same QoS 0 eviction; QoS 0 is not
//!   queued at all unless `queue_qos0_messages`, and is dropped from the
//!   queue when the client leaves.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ferrymq_codec::QoS;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use crate::message::Delivery;
use crate::session::SessionShared;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// Queued past the limit of an online session that makes progress:
    /// the publisher is to wait for room ([`Mailbox::wait_for_room`]).
    Over,
    /// Queued after evicting a queued QoS 0 message (counted as dropped).
    QueuedEvicting,
    /// Dropped: an offline session's queue was full.
    DroppedFull,
    /// Dropped: an online session's queue was full and stalled.
    DroppedStalled,
    /// Dropped: QoS 0 to an offline session.
    DroppedOffline,
}

#[derive(Debug)]
struct Inner {
    queue: VecDeque<Delivery>,
    online: bool,
    /// Bytes of the messages in `queue` and `held`, as `max_queued_bytes`
    /// counts them (kept under the lock the queue already takes).
    bytes: usize,
    /// While the session's SUBSCRIBE runs (see [`Mailbox::hold`]):
    /// deliveries pushed meanwhile, which go behind its retained messages.
    /// Boxed: rare, and an inline queue is 32 bytes of every session.
    #[allow(clippy::box_collection)] // boxed for the idle cost: see above
    held: Option<Box<VecDeque<Delivery>>>,
    /// Publishers waiting for room, woken when the queue is down to half.
    waiters: Vec<Weak<SessionShared>>,
    /// When the queue last made progress: a delivery taken, or the queue
    /// filling from empty. Stalled: full, and no progress for the limit.
    progress: Instant,
    /// The most deliveries queued at once (for operators: how close the
    /// session came to its limit).
    high_water: usize,
}

impl Inner {
    fn recount(&mut self) {
        self.bytes = self
            .queue
            .iter()
            .chain(self.held.iter().flat_map(|h| h.iter()))
            .map(|d| d.message.size())
            .sum();
    }

    fn len(&self) -> usize {
        self.queue.len() + self.held.as_ref().map_or(0, |h| h.len())
    }

    /// Whether a message of `size` bytes finds the queue full.
    fn full(&self, limits: &Limits, size: usize) -> bool {
        let len = self.len();
        len >= limits.messages || (len > 0 && self.bytes.saturating_add(size) > limits.bytes)
    }

    /// Whether the queue is at its limits now.
    fn at_limit(&self, limits: &Limits) -> bool {
        self.len() >= limits.messages || self.bytes >= limits.bytes
    }

    /// Down to half its limits: waiting publishers may go on.
    fn below_half(&self, limits: &Limits) -> bool {
        self.len() <= limits.messages / 2 && self.bytes <= limits.bytes / 2
    }

    fn stalled(&self, limits: &Limits, now: Instant) -> bool {
        now.saturating_duration_since(self.progress) >= limits.stall
    }

    fn append(&mut self, delivery: Delivery) {
        let size = delivery.message.size();
        self.append_sized(delivery, size);
    }

    /// [`Inner::append`] with the message's size already known.
    fn append_sized(&mut self, delivery: Delivery, size: usize) {
        let empty = self.queue.is_empty() && self.held.is_none();
        if empty {
            // Filling from empty is progress. The message's arrival
            // stands for the clock: no clock read per push.
            self.progress = self.progress.max(delivery.message.received);
        }
        self.bytes += size;
        match &mut self.held {
            Some(held) => held.push_back(delivery),
            None => self.queue.push_back(delivery),
        }
        let len = self.len();
        if len > self.high_water {
            self.high_water = len;
        }
    }

    /// Drops the oldest queued QoS 0 delivery, if any, to make room for
    /// one that is worth more.
    fn evict_qos0(&mut self) -> bool {
        let Some(i) = self.queue.iter().position(|d| d.qos == QoS::AtMostOnce) else {
            return false;
        };
        if let Some(d) = self.queue.remove(i) {
            self.bytes = self.bytes.saturating_sub(d.message.size());
        }
        true
    }
}

/// The limits of one session's queue (`max_queued_messages`,
/// `max_queued_bytes`, `queue_qos0_messages`, `max_queue_stall_ms`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub messages: usize,
    pub bytes: usize,
    pub queue_qos0_offline: bool,
    /// How long a full queue of an online session may go without
    /// progress before its publishers stop waiting for it.
    pub stall: Duration,
}

impl From<usize> for Limits {
    /// A limit on messages only.
    fn from(messages: usize) -> Limits {
        Limits {
            messages,
            bytes: usize::MAX,
            queue_qos0_offline: false,
            stall: Duration::from_secs(5),
        }
    }
}

/// A mailbox held by [`Mailbox::hold`]; released when dropped.
#[derive(Debug)]
pub struct Held<'a> {
    mailbox: &'a Mailbox,
}

impl Held<'_> {
    /// How many more deliveries the queue takes now.
    pub fn room(&self) -> usize {
        let inner = self.mailbox.inner.lock();
        self.mailbox.limits.messages.saturating_sub(inner.len())
    }

    /// Queues `first` (retained messages), as far as the limits allow,
    /// then what was pushed while held. Returns how many of `first` did
    /// not fit.
    pub fn release(self, first: Vec<Delivery>) -> usize {
        let mailbox = self.mailbox;
        let limits = &mailbox.limits;
        let mut dropped = 0;
        let mut inner = mailbox.inner.lock();
        let held = inner.held.take().unwrap_or_default();
        let was_empty = inner.queue.is_empty();
        if inner.len() == 0 && !first.is_empty() {
            inner.progress = Instant::now();
        }
        for delivery in first {
            let size = delivery.message.size();
            // What was held is already counted in: it came first, and was
            // accepted.
            let len = inner.queue.len() + held.len();
            if len >= limits.messages
                || (len > 0 && inner.bytes.saturating_add(size) > limits.bytes)
            {
                dropped += 1;
                continue;
            }
            inner.append(delivery);
        }
        inner.queue.extend(*held);
        inner.high_water = inner.high_water.max(inner.len());
        let wake = was_empty && !inner.queue.is_empty() && inner.online;
        drop(inner);
        // `held` is taken: the guard's drop finds nothing left to do.
        if wake {
            mailbox.signal.notify();
        }
        dropped
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut inner = self.mailbox.inner.lock();
        if let Some(held) = inner.held.take() {
            let wake = inner.queue.is_empty() && !held.is_empty() && inner.online;
            inner.queue.extend(*held);
            drop(inner);
            if wake {
                self.mailbox.signal.notify();
            }
        }
    }
}

/// The wake-up of a mailbox's one consumer, the connection that drains
/// it (a task, or a shard of the event loop): a flag that something
/// happened, and whom to wake. A wake-up with nobody waiting is kept in the
/// flag, as `Notify::notify_one` keeps a permit.
#[derive(Debug, Default)]
struct Signal {
    pending: AtomicBool,
    waker: AtomicWaker,
}

impl Signal {
    fn notify(&self) {
        self.pending.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.pending.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A notification between the check and the registration.
        if self.pending.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// The delivery queue of one session.
#[derive(Debug)]
pub struct Mailbox {
    inner: Mutex<Inner>,
    signal: Signal,
    /// Shared by every session of a broker (they all have the same).
    limits: Arc<Limits>,
}

impl Mailbox {
    pub fn new(limits: impl Into<Limits>) -> Mailbox {
        Mailbox::with_limits(Arc::new(limits.into()))
    }

    pub fn with_limits(limits: Arc<Limits>) -> Mailbox {
        Mailbox {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                online: false,
                bytes: 0,
                held: None,
                waiters: Vec::new(),
                progress: Instant::now(),
                high_water: 0,
            }),
            signal: Signal::default(),
            limits,
        }
    }

    /// Queues `delivery` as the overflow policy says (see the module
    /// documentation); never blocks. With [`Push::Over`], `waiter` (the
    /// publisher's own mailbox, through which its task is woken) is
    /// registered to be woken when the queue is down to half.
    ///
    /// A delivery to an offline session, which may wait for hours, takes
    /// its message from `detached`, made once per publication from the
    /// message, so that it does not keep the publisher's read buffer alive
    /// (see [`Message::detached`](crate::message::Message::detached)). An
    /// online session's queue is drained as it fills and is bounded by flow
    /// control: its messages may share read buffers for that while (a copy
    /// per message there cost a fifth of the fan-in rate).
    pub fn push(
        &self,
        mut delivery: Delivery,
        waiter: Option<&Arc<SessionShared>>,
        detached: &mut Option<Arc<crate::message::Message>>,
    ) -> Push {
        let mut inner = self.inner.lock();
        if !inner.online && delivery.qos == QoS::AtMostOnce && !self.limits.queue_qos0_offline {
            return Push::DroppedOffline;
        }
        let mut outcome = Push::Queued;
        let size = delivery.message.size();
        if inner.full(&self.limits, size) {
            let now = delivery.message.received;
            if inner.online && !inner.stalled(&self.limits, now) {
                outcome = Push::Over;
                if let Some(w) = waiter {
                    register(&mut inner.waiters, w);
                }
            } else if delivery.qos != QoS::AtMostOnce && inner.evict_qos0() {
                outcome = Push::QueuedEvicting;
            } else if inner.online {
                return Push::DroppedStalled;
            } else {
                return Push::DroppedFull;
            }
        }
        if !inner.online {
            let message = &delivery.message;
            delivery.message = detached
                .get_or_insert_with(|| Arc::new(message.detached()))
                .clone();
        }
        let wake = inner.queue.is_empty() && inner.held.is_none() && inner.online;
        inner.append_sized(delivery, size);
        drop(inner);
        if wake {
            self.signal.notify();
        }
        outcome
    }

    /// Whether a publisher that found this queue full must still wait for
    /// it at `now`: the session is online, its queue at its limits, and
    /// not stalled. If so, `waiter` is (again) registered to be woken, and
    /// the instant at which the queue would count as stalled is returned,
    /// for the publisher to look again then.
    pub fn wait_for_room(&self, waiter: &Arc<SessionShared>, now: Instant) -> Option<Instant> {
        let mut inner = self.inner.lock();
        if !inner.online || !inner.at_limit(&self.limits) || inner.stalled(&self.limits, now) {
            return None;
        }
        register(&mut inner.waiters, waiter);
        Some(inner.progress + self.limits.stall)
    }

    /// Holds back what is pushed from now until the guard's
    /// [`release`](Held::release): a SUBSCRIBE's retained messages go into
    /// the queue ahead of every live message its new subscriptions match,
    /// so a retained message never arrives after a newer live one on its
    /// topic ([MQTT-3.3.1-9]; issue 20, item 9). Publishers do not wait:
    /// their deliveries join the queue behind the retained ones. Only the
    /// session's own task holds, and only while it handles one SUBSCRIBE.
    pub fn hold(&self) -> Held<'_> {
        let mut inner = self.inner.lock();
        inner.held.get_or_insert_with(Box::default);
        Held { mailbox: self }
    }

    /// Queues a delivery read back from the store, or handed back, whatever
    /// the limits: it was accepted before.
    pub fn push_recovered(&self, delivery: Delivery) {
        let mut inner = self.inner.lock();
        inner.append(delivery);
    }

    /// Takes the first delivery if `accept` says it can be sent now.
    pub fn pop_if(&self, accept: impl FnOnce(&Delivery) -> bool) -> Option<Delivery> {
        let mut inner = self.inner.lock();
        if !inner.queue.front().is_some_and(accept) {
            return None;
        }
        let delivery = inner.queue.pop_front()?;
        inner.bytes = inner.bytes.saturating_sub(delivery.message.size());
        if !inner.waiters.is_empty() && inner.below_half(&self.limits) {
            let waiters = std::mem::take(&mut inner.waiters);
            drop(inner);
            wake_all(waiters);
        }
        Some(delivery)
    }

    /// Records progress at `now`: the session's task took deliveries
    /// (called once per turn that took any, so that the clock is read
    /// once per turn, not per message).
    pub fn progressed(&self, now: Instant) {
        let mut inner = self.inner.lock();
        inner.progress = inner.progress.max(now);
    }

    pub fn is_online(&self) -> bool {
        self.inner.lock().online
    }

    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queued deliveries and their bytes.
    pub fn depth(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        (inner.len(), inner.bytes)
    }

    /// The most deliveries this queue held at once.
    pub fn high_water(&self) -> usize {
        self.inner.lock().high_water
    }

    /// Marks the session connected (QoS 0 accepted, task woken on push) or
    /// away. Going offline drops queued QoS 0 messages and returns how
    /// many, and lets waiting publishers go: nobody waits for a client
    /// that is away.
    pub fn set_online(&self, online: bool) -> usize {
        let mut inner = self.inner.lock();
        inner.online = online;
        if online {
            inner.progress = Instant::now();
            drop(inner);
            self.signal.notify();
            return 0;
        }
        let waiters = std::mem::take(&mut inner.waiters);
        let dropped = if self.limits.queue_qos0_offline {
            0
        } else {
            let before = inner.queue.len();
            inner.queue.retain(|d| d.qos != QoS::AtMostOnce);
            inner.recount();
            before - inner.queue.len()
        };
        drop(inner);
        wake_all(waiters);
        dropped
    }

    /// Wakes the session's connection task.
    pub fn wake(&self) {
        self.signal.notify();
    }

    /// Resolves when something was pushed since the last call.
    pub async fn notified(&self) {
        std::future::poll_fn(|cx| self.signal.poll(cx)).await;
    }

    /// Has `waker` called on the next wake-up (an event-loop shard's
    /// connection, instead of a task awaiting [`Mailbox::notified`]).
    pub fn set_waker(&self, waker: &Waker) {
        self.signal.waker.register(waker);
    }

    /// Whether a wake-up came since the last call (and clears it).
    pub fn take_wake(&self) -> bool {
        self.signal.pending.swap(false, Ordering::AcqRel)
    }

    /// The share groups through which the queued deliveries came, with
    /// repeats.
    pub fn shared_groups(&self) -> Vec<Arc<crate::shared::SharedGroup>> {
        let inner = self.inner.lock();
        inner
            .queue
            .iter()
            .filter_map(|d| d.shared.clone())
            .collect()
    }

    /// Removes and returns, in order, the deliveries `which` selects.
    pub fn take_where(&self, mut which: impl FnMut(&Delivery) -> bool) -> Vec<Delivery> {
        let mut inner = self.inner.lock();
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(inner.queue.len());
        for d in inner.queue.drain(..) {
            if which(&d) {
                taken.push(d);
            } else {
                kept.push_back(d);
            }
        }
        inner.queue = kept;
        inner.recount();
        let waiters = std::mem::take(&mut inner.waiters);
        drop(inner);
        wake_all(waiters);
        taken
    }
}

/// Adds `waiter` to `waiters` once; drops entries whose publisher is gone.
fn register(waiters: &mut Vec<Weak<SessionShared>>, waiter: &Arc<SessionShared>) {
    waiters.retain(|w| w.strong_count() > 0);
    if !waiters
        .iter()
        .any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(waiter)))
    {
        waiters.push(Arc::downgrade(waiter));
    }
}

fn wake_all(waiters: Vec<Weak<SessionShared>>) {
    for waiter in waiters.iter().filter_map(Weak::upgrade) {
        waiter.mailbox.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use bytes::Bytes;
    use ferrymq_codec::{Properties, TopicName};

    fn delivery_at(payload: &'static [u8], qos: QoS, received: Instant) -> Delivery {
        let message = Arc::new(Message {
            topic: TopicName::new("t").unwrap(),
            payload: Bytes::from_static(payload),
            qos,
            retain: false,
            properties: Properties::new(),
            received,
            origin: 0,
            source: None,
        });
        Delivery::new(message, qos, false)
    }

    fn delivery(payload: &'static [u8], retain: bool) -> Delivery {
        let mut d = delivery_at(payload, QoS::AtLeastOnce, Instant::now());
        d.retain = retain;
        d
    }

    /// A publisher's session, whose mailbox is woken when there is room.
    fn session(limit: usize) -> Arc<SessionShared> {
        Arc::new(SessionShared {
            id: 0,
            client_id: "publisher".into(),
            mailbox: Mailbox::new(limit),
            durable: Default::default(),
        })
    }

    fn drain(m: &Mailbox) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Some(d) = m.pop_if(|_| true) {
            out.push(d.message.payload.clone());
        }
        out
    }

    /// Issue 20, item 9: what is pushed while a SUBSCRIBE holds the queue
    /// goes behind that SUBSCRIBE's retained messages, and counts against
    /// the limits from the moment it is pushed.
    #[test]
    fn held_pushes_follow_the_retained_messages() {
        let m = Mailbox::new(3);
        m.set_online(true);
        assert_eq!(
            m.push(delivery(b"old", false), None, &mut None),
            Push::Queued
        );
        let held = m.hold();
        assert_eq!(
            m.push(delivery(b"live", false), None, &mut None),
            Push::Queued
        );
        assert_eq!(held.room(), 1);
        assert!(m
            .pop_if(|_| true)
            .is_some_and(|d| &d.message.payload[..] == b"old"));
        let dropped = held.release(vec![
            delivery(b"retained", true),
            delivery(b"retained", true),
        ]);
        assert_eq!(dropped, 0);
        assert_eq!(drain(&m), vec!["retained", "retained", "live"]);
        let held = m.hold();
        assert_eq!(
            m.push(delivery(b"live", false), None, &mut None),
            Push::Queued
        );
        drop(held);
        assert_eq!(drain(&m), vec!["live"]);
    }

    /// Issue 16: a full queue of an online session that makes progress
    /// takes the delivery and asks its publisher to wait; the publisher is
    /// woken once the queue is down to half.
    #[test]
    fn an_online_full_queue_slows_its_publisher_instead_of_dropping() {
        let sub = Mailbox::new(4);
        let publisher = session(4);
        sub.set_online(true);
        for _ in 0..4 {
            assert_eq!(
                sub.push(delivery(b"x", false), Some(&publisher), &mut None),
                Push::Queued
            );
        }
        assert_eq!(
            sub.push(delivery(b"x", false), Some(&publisher), &mut None),
            Push::Over
        );
        let now = Instant::now();
        assert!(sub.wait_for_room(&publisher, now).is_some());
        // Popping to half wakes the publisher, whose wait then ends.
        for _ in 0..3 {
            sub.pop_if(|_| true);
        }
        assert!(sub.wait_for_room(&publisher, now).is_none());
        assert!(
            publisher.mailbox.take_wake(),
            "the publisher's task was woken"
        );
    }

    /// A full queue that makes no progress for `stall` is treated as
    /// Mosquitto treats a full queue: drops, QoS 0 first.
    #[test]
    fn a_stalled_queue_drops_qos0_first_and_lets_publishers_go() {
        let stall = Duration::from_millis(100);
        let sub = Mailbox::new(Limits {
            stall,
            ..Limits::from(2)
        });
        let publisher = session(2);
        sub.set_online(true);
        let t0 = Instant::now();
        sub.push(
            delivery_at(b"q0", QoS::AtMostOnce, t0),
            Some(&publisher),
            &mut None,
        );
        sub.push(
            delivery_at(b"q1", QoS::AtLeastOnce, t0),
            Some(&publisher),
            &mut None,
        );
        let later = t0 + stall * 2;
        assert!(sub.wait_for_room(&publisher, later).is_none(), "stalled");
        assert_eq!(
            sub.push(
                delivery_at(b"q1b", QoS::AtLeastOnce, later),
                None,
                &mut None
            ),
            Push::QueuedEvicting
        );
        assert_eq!(
            sub.push(delivery_at(b"q0b", QoS::AtMostOnce, later), None, &mut None),
            Push::DroppedStalled
        );
        assert_eq!(drain(&sub), vec!["q1", "q1b"]);
    }

    /// Issue 20, item 15: a message that waits in an offline queue keeps
    /// no part of the buffer it was read from, so `max_queued_bytes` bounds
    /// what the queue really holds.
    #[test]
    fn a_waiting_message_does_not_pin_its_read_buffer() {
        let read_buffer = Bytes::from(vec![7u8; 1 << 20]);
        let message = Arc::new(Message {
            topic: TopicName::new("t").unwrap(),
            payload: read_buffer.slice(0..16),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties::new(),
            received: Instant::now(),
            origin: 0,
            source: None,
        });
        let offline = Mailbox::new(10);
        let mut detached = None;
        let d = Delivery::new(message.clone(), QoS::AtLeastOnce, false);
        assert_eq!(offline.push(d, None, &mut detached), Push::Queued);
        drop((message, detached));
        assert!(
            read_buffer.is_unique(),
            "the queued copy holds its own bytes"
        );
        assert_eq!(drain(&offline), vec![Bytes::from(vec![7u8; 16])]);
    }

    #[test]
    fn offline_queues_keep_mosquittos_limits() {
        let sub = Mailbox::new(1);
        let publisher = session(1);
        assert_eq!(
            sub.push(delivery(b"a", false), Some(&publisher), &mut None),
            Push::Queued
        );
        assert_eq!(
            sub.push(delivery(b"b", false), Some(&publisher), &mut None),
            Push::DroppedFull
        );
        assert!(sub.wait_for_room(&publisher, Instant::now()).is_none());
    }
}
