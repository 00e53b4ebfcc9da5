//! A session's delivery queue and the one place where the overflow policy
//! lives.
//!
//! Publishers push into it and never wait; the session's connection task
//! drains it. It outlives connections: while the client is away the same
//! queue holds what a persistent session is owed.
//!
//! Overflow policy (counted in [`Metrics`](crate::metrics::Metrics)):
//! - the queue is full at `max_queued_messages` messages, or when the next
//!   message's payload would take it past `max_queued_bytes` (an empty
//!   queue takes any one message, so a message larger than the byte limit
//!   still reaches a client that keeps up, as Mosquitto sends it straight
//!   into the in-flight window);
//! - what finds the queue full is dropped, whatever its QoS;
//! - QoS 0 is not queued at all while the client is offline, and dropped
//!   from the queue when it leaves (Mosquitto's default
//!   `queue_qos0_messages false`); with `queue_qos0_messages true` it is
//!   kept like QoS 1/2, within the same limits.

use std::collections::VecDeque;
use std::sync::Arc;

use ferrymq_codec::QoS;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::message::Delivery;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// Dropped: the queue was full.
    DroppedFull,
    /// Dropped: QoS 0 to an offline session.
    DroppedOffline,
}

#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<Delivery>,
    online: bool,
    /// Payload bytes in `queue` and `held`, for
    /// `$SYS/broker/store/messages/bytes` (kept under the lock the queue
    /// already takes, so it costs an add).
    bytes: usize,
    /// While the session's SUBSCRIBE runs (see [`Mailbox::hold`]):
    /// deliveries pushed meanwhile, which go behind its retained messages.
    held: Option<VecDeque<Delivery>>,
}

impl Inner {
    fn recount(&mut self) {
        self.bytes = self
            .queue
            .iter()
            .chain(self.held.iter().flatten())
            .map(|d| d.message.payload.len())
            .sum();
    }

    fn len(&self) -> usize {
        self.queue.len() + self.held.as_ref().map_or(0, VecDeque::len)
    }

    /// Whether a message of `size` payload bytes finds the queue full.
    fn full(&self, limits: &Limits, size: usize) -> bool {
        let len = self.len();
        len >= limits.messages || (len > 0 && self.bytes.saturating_add(size) > limits.bytes)
    }
}

/// The limits of one session's queue (`max_queued_messages`,
/// `max_queued_bytes`, `queue_qos0_messages`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub messages: usize,
    pub bytes: usize,
    pub queue_qos0_offline: bool,
}

impl From<usize> for Limits {
    /// A limit on messages only.
    fn from(messages: usize) -> Limits {
        Limits {
            messages,
            bytes: usize::MAX,
            queue_qos0_offline: false,
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
        for delivery in first {
            let size = delivery.message.payload.len();
            // What was held is already counted in: it came first, and was
            // accepted.
            let len = inner.queue.len() + held.len();
            if len >= limits.messages
                || (len > 0 && inner.bytes.saturating_add(size) > limits.bytes)
            {
                dropped += 1;
                continue;
            }
            inner.bytes += size;
            inner.queue.push_back(delivery);
        }
        inner.queue.extend(held);
        let wake = was_empty && !inner.queue.is_empty() && inner.online;
        drop(inner);
        // `held` is taken: the guard's drop finds nothing left to do.
        if wake {
            mailbox.notify.notify_one();
        }
        dropped
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut inner = self.mailbox.inner.lock();
        if let Some(held) = inner.held.take() {
            let wake = inner.queue.is_empty() && !held.is_empty() && inner.online;
            inner.queue.extend(held);
            drop(inner);
            if wake {
                self.mailbox.notify.notify_one();
            }
        }
    }
}

/// The delivery queue of one session.
#[derive(Debug)]
pub struct Mailbox {
    inner: Mutex<Inner>,
    notify: Notify,
    limits: Limits,
}

impl Mailbox {
    pub fn new(limits: impl Into<Limits>) -> Arc<Mailbox> {
        Arc::new(Mailbox {
            inner: Mutex::new(Inner::default()),
            notify: Notify::new(),
            limits: limits.into(),
        })
    }

    /// Queues `delivery` unless the policy says drop; never blocks.
    pub fn push(&self, delivery: Delivery) -> Push {
        let mut inner = self.inner.lock();
        if !inner.online && delivery.qos == QoS::AtMostOnce && !self.limits.queue_qos0_offline {
            return Push::DroppedOffline;
        }
        let size = delivery.message.payload.len();
        if inner.full(&self.limits, size) {
            return Push::DroppedFull;
        }
        inner.bytes += size;
        if let Some(held) = &mut inner.held {
            held.push_back(delivery);
            return Push::Queued;
        }
        let wake = inner.queue.is_empty() && inner.online;
        inner.queue.push_back(delivery);
        drop(inner);
        if wake {
            self.notify.notify_one();
        }
        Push::Queued
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
        inner.held.get_or_insert_with(VecDeque::new);
        Held { mailbox: self }
    }

    /// Queues a delivery read back from the store, whatever the limits:
    /// it was accepted before the restart.
    pub fn push_recovered(&self, delivery: Delivery) {
        let mut inner = self.inner.lock();
        inner.bytes += delivery.message.payload.len();
        inner.queue.push_back(delivery);
    }

    /// Takes the first delivery if `accept` says it can be sent now.
    pub fn pop_if(&self, accept: impl FnOnce(&Delivery) -> bool) -> Option<Delivery> {
        let mut inner = self.inner.lock();
        if inner.queue.front().is_some_and(accept) {
            let delivery = inner.queue.pop_front();
            if let Some(d) = &delivery {
                inner.bytes = inner.bytes.saturating_sub(d.message.payload.len());
            }
            delivery
        } else {
            None
        }
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

    /// Queued deliveries and their payload bytes.
    pub fn depth(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        (inner.len(), inner.bytes)
    }

    /// Marks the session connected (QoS 0 accepted, task woken on push) or
    /// away. Going offline drops queued QoS 0 messages and returns how many.
    pub fn set_online(&self, online: bool) -> usize {
        let mut inner = self.inner.lock();
        inner.online = online;
        if online {
            drop(inner);
            self.notify.notify_one();
            0
        } else if self.limits.queue_qos0_offline {
            0
        } else {
            let before = inner.queue.len();
            inner.queue.retain(|d| d.qos != QoS::AtMostOnce);
            inner.recount();
            before - inner.queue.len()
        }
    }

    /// Wakes the session's connection task.
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Resolves when something was pushed since the last call.
    pub async fn notified(&self) {
        self.notify.notified().await;
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
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use bytes::Bytes;
    use ferrymq_codec::{Properties, TopicName};

    fn delivery(payload: &'static [u8], retain: bool) -> Delivery {
        let message = Arc::new(Message {
            topic: TopicName::new("t").unwrap(),
            payload: Bytes::from_static(payload),
            qos: QoS::AtLeastOnce,
            retain,
            properties: Properties::new(),
            received: std::time::Instant::now(),
            origin: 0,
        });
        Delivery::new(message, QoS::AtLeastOnce, retain)
    }

    fn drain(m: &Mailbox) -> Vec<&'static [u8]> {
        let mut out = Vec::new();
        while let Some(d) = m.pop_if(|_| true) {
            let p: &'static [u8] = match &d.message.payload[..] {
                b"old" => b"old",
                b"retained" => b"retained",
                b"live" => b"live",
                _ => b"?",
            };
            out.push(p);
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
        assert_eq!(m.push(delivery(b"old", false)), Push::Queued);
        let held = m.hold();
        assert_eq!(m.push(delivery(b"live", false)), Push::Queued);
        assert_eq!(held.room(), 1);
        assert!(m
            .pop_if(|_| true)
            .is_some_and(|d| &d.message.payload[..] == b"old"));
        // Two retained, room for one: the held live message keeps its place.
        let dropped = held.release(vec![
            delivery(b"retained", true),
            delivery(b"retained", true),
        ]);
        assert_eq!(dropped, 0);
        assert_eq!(drain(&m), vec![&b"retained"[..], b"retained", b"live"]);
        let held = m.hold();
        assert_eq!(m.push(delivery(b"live", false)), Push::Queued);
        drop(held);
        assert_eq!(drain(&m), vec![&b"live"[..]]);
    }
}
