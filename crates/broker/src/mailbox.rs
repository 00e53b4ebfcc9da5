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
    /// Payload bytes in `queue`, for `$SYS/broker/store/messages/bytes`
    /// (kept under the lock the queue already takes, so it costs an add).
    bytes: usize,
}

impl Inner {
    fn recount(&mut self) {
        self.bytes = self.queue.iter().map(|d| d.message.payload.len()).sum();
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
        if inner.queue.len() >= self.limits.messages
            || (!inner.queue.is_empty() && inner.bytes.saturating_add(size) > self.limits.bytes)
        {
            return Push::DroppedFull;
        }
        let wake = inner.queue.is_empty() && inner.online;
        inner.bytes += delivery.message.payload.len();
        inner.queue.push_back(delivery);
        drop(inner);
        if wake {
            self.notify.notify_one();
        }
        Push::Queued
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
        self.inner.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queued deliveries and their payload bytes.
    pub fn depth(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        (inner.queue.len(), inner.bytes)
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
