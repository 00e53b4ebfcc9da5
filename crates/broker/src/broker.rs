//! The state every connection task shares: configuration, topic index,
//! retained messages, session registry, counters; and the publish path.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ferrymq_codec::QoS;

use crate::config::Config;
use crate::mailbox::{Mailbox, Push};
use crate::message::{Delivery, Message};
use crate::metrics::Metrics;
use crate::persist::{self, Persist};
use crate::registry::Registry;
use crate::retain::RetainStore;
use crate::router::{List, Router};
use crate::security::Security;
use crate::session::{OutboundState, SessionShared, SessionState, Subscription, SubscriptionKey};
use crate::shared::{self, SharedGroup, SharedGroups};
use ferrymq_store::{Op, WriterHandle};

#[derive(Debug)]
pub struct Broker {
    pub config: Config,
    pub router: Router<Subscription>,
    pub retained: RetainStore,
    pub registry: Registry,
    pub shared_groups: SharedGroups,
    /// Durable state, when persistence is on.
    pub persist: Option<Persist>,
    /// The file's global security settings; with `per_listener_settings
    /// true` each listener has its own (see `Server::start`), and
    /// connections use [`Connection::security`](crate::protocol::Connection).
    pub security: Arc<Security>,
    pub metrics: Metrics,
    pub started: Instant,
    /// Every session's queue limits, from the configuration.
    queue_limits: Arc<crate::mailbox::Limits>,
    next_id: AtomicU64,
    secret: [u8; 16],
}

impl Broker {
    /// A broker without store or security files (tests build these).
    pub fn new(config: Config) -> Arc<Broker> {
        let security = Security::without_files(&config);
        Broker::with_parts(config, None, security)
    }

    /// A broker that writes durable state through `writer`.
    pub fn with_parts(
        config: Config,
        writer: Option<WriterHandle>,
        security: Security,
    ) -> Arc<Broker> {
        let queue_limits = Arc::new(crate::mailbox::Limits {
            messages: config.max_queued_messages,
            bytes: config.max_queued_bytes,
            queue_qos0_offline: config.queue_qos0_messages,
            stall: config.max_queue_stall,
        });
        Arc::new(Broker {
            queue_limits,
            persist: writer.map(Persist::new),
            security: Arc::new(security),
            config,
            router: Router::new(),
            retained: RetainStore::default(),
            registry: Registry::default(),
            shared_groups: SharedGroups::default(),
            metrics: Metrics::default(),
            started: Instant::now(),
            next_id: AtomicU64::new(1),
            secret: *uuid::Uuid::new_v4().as_bytes(),
        })
    }

    /// A per-process secret (decoy SCRAM keys for unknown users).
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// The QoS a message published at `published` goes out at to a
    /// subscription granted `granted`: the lower of the two
    /// ([MQTT-3.8.4-8]), or the subscription's with `upgrade_outgoing_qos`.
    pub fn outgoing_qos(&self, published: QoS, granted: QoS) -> QoS {
        if self.config.upgrade_outgoing_qos {
            granted
        } else {
            published.min(granted)
        }
    }

    /// How long a session may stay parked: its expiry interval, except
    /// that `persistent_client_expiration` bounds those that would never
    /// expire (3.x without Clean Session, 5.0 with 0xFFFFFFFF).
    pub fn session_lifetime(&self, expiry_interval: u32) -> u32 {
        match self.config.persistent_client_expiration {
            Some(limit) if expiry_interval == u32::MAX => {
                u32::try_from(limit.as_secs()).map_or(u32::MAX - 1, |s| s.min(u32::MAX - 1))
            }
            _ => expiry_interval,
        }
    }

    /// A process-unique number for connections and sessions.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn new_session(&self, client_id: Arc<str>, expiry_interval: u32) -> SessionState {
        let shared = Arc::new(SessionShared {
            id: self.next_id(),
            client_id,
            mailbox: Mailbox::with_limits(self.queue_limits.clone()),
            durable: AtomicBool::new(self.persist.is_some() && expiry_interval > 0),
        });
        SessionState::new(shared, expiry_interval)
    }

    /// Ends a session for good: its subscriptions leave the index, what it
    /// held through share groups goes to other members, the rest is dropped.
    pub fn discard_session(&self, state: &mut SessionState) {
        let id = state.shared.id;
        for filter in state.subscriptions.keys() {
            self.remove_subscription(filter, id);
        }
        state.subscriptions.clear();
        self.release_shared(state);
        state.shared.mailbox.take_where(|_| true);
        if state.shared.durable.swap(false, Ordering::Relaxed) {
            self.store(vec![Op::DeleteSession {
                client_id: state.shared.client_id.clone(),
            }]);
        }
    }

    /// Submits `ops` to the store without waiting; the sequence number to
    /// wait for, if anything was submitted.
    pub fn store(&self, ops: Vec<Op>) -> Option<u64> {
        match &self.persist {
            Some(p) if !ops.is_empty() => Some(p.writer.submit(ops)),
            _ => None,
        }
    }

    /// Writes the session record of a durable session.
    pub fn store_session(&self, state: &SessionState, expires_at: u64) {
        if state.shared.durable.load(Ordering::Relaxed) {
            self.store(vec![Op::PutSession {
                client_id: state.shared.client_id.clone(),
                record: persist::encode_session(state, expires_at),
            }]);
        }
    }

    /// Removes the subscription of `session` to `filter` (which may be a
    /// `$share/...` filter). Returns whether it existed.
    pub fn remove_subscription(&self, filter: &str, session: u64) -> bool {
        let (inner, group) = match shared::parse(filter) {
            Some(Ok((name, inner))) => (inner, Some(Arc::from(name))),
            _ => (filter, None),
        };
        self.router
            .unsubscribe(inner, &SubscriptionKey { session, group })
    }

    /// Hands what a leaving session holds through share groups to other
    /// members: every queued message, and QoS 1 messages sent but not
    /// acknowledged. A QoS 2 message already sent stays with the session,
    /// to be completed when it returns and never sent to anyone else
    /// ([MQTT-4.8.2-4], [MQTT-4.8.2-5]). What no other member can take
    /// stays with the session too: it was accepted for it.
    pub fn release_shared(&self, state: &mut SessionState) {
        self.release_group(state, |_| true, true);
    }

    /// Hands the deliveries `state` holds through the groups `which`
    /// selects to another member of the same group: the queued ones, and
    /// with `inflight` the QoS 1 ones sent and not acknowledged. A group
    /// with no other member keeps its deliveries with the session.
    pub fn release_group(
        &self,
        state: &mut SessionState,
        which: impl Fn(&SharedGroup) -> bool,
        inflight: bool,
    ) {
        let id = state.shared.id;
        let mailbox = &state.shared.mailbox;
        // Which groups can take them: looked up in the index before the
        // queue is locked to take them, so that no index lock is ever
        // taken under a queue's.
        let mut groups: Vec<Arc<SharedGroup>> = mailbox.shared_groups();
        if inflight {
            groups.extend(
                state
                    .inflight
                    .iter()
                    .filter_map(|m| m.delivery.shared.clone()),
            );
        }
        groups.sort_unstable_by_key(|g| Arc::as_ptr(g) as usize);
        groups.dedup_by(|a, b| Arc::ptr_eq(a, b));
        groups.retain(|g| which(g) && self.has_other_member(g, id));
        if groups.is_empty() {
            return;
        }
        let handed = |d: &Delivery| {
            d.shared
                .as_ref()
                .is_some_and(|g| groups.iter().any(|h| Arc::ptr_eq(g, h)))
        };
        let mut leaving = mailbox.take_where(handed);
        if inflight {
            let (shared, keep): (Vec<_>, Vec<_>) = state
                .inflight
                .drain(..)
                .partition(|m| m.state == OutboundState::AwaitingPubAck && handed(&m.delivery));
            state.inflight = keep.into();
            leaving.extend(shared.into_iter().map(|m| m.delivery));
        }
        for delivery in leaving {
            if let Err(delivery) = self.redispatch_shared(delivery, state) {
                // The other member left meanwhile: back to this session.
                mailbox.push_recovered(delivery);
            }
        }
    }

    /// Whether a session other than `id` subscribes through `group`.
    fn has_other_member(&self, group: &Arc<SharedGroup>, id: u64) -> bool {
        self.router.list(&group.filter).is_some_and(|list| {
            list.iter()
                .any(|s| s.session.id != id && share_ptr(s) == Arc::as_ptr(group) as usize)
        })
    }

    /// Hands a delivery that came through a share group to another member,
    /// because `leaving` let go of it ([MQTT-4.8.2-5]): delivered at the
    /// QoS that member was granted. Gives the delivery back if no other
    /// member exists.
    fn redispatch_shared(
        &self,
        delivery: Delivery,
        leaving: &SessionState,
    ) -> Result<(), Delivery> {
        let Some(group) = delivery.shared.clone() else {
            return Err(delivery);
        };
        let list = self.router.list(&group.filter);
        let members: Vec<&Subscription> = list
            .iter()
            .flat_map(|l| l.iter())
            .filter(|s| {
                share_ptr(s) == Arc::as_ptr(&group) as usize && s.session.id != leaving.shared.id
            })
            .collect();
        let Some(member) = group.pick(&members) else {
            return Err(delivery);
        };
        let mut fanout = Fanout::default();
        if let (Some(seq), true) = (delivery.durable, self.persist.is_some()) {
            // The copy held for the leaving session is no longer its own.
            fanout.ops.push(Op::DeleteQueued {
                client_id: leaving.shared.client_id.clone(),
                seq,
            });
        }
        let ids = member.identifier.into_iter().collect();
        let target = Target {
            sub: member,
            granted: member.options.qos,
            shared: Some(group),
        };
        self.deliver(&delivery.message, target, ids, &mut fanout, None);
        self.store(fanout.ops);
        Ok(())
    }

    /// Publishes a delayed will that fell due while its session is parked,
    /// and drops it from the session: from the parked state and, in the
    /// same store write as the will's deliveries, from the session's
    /// record. Under the registry's lock, so a client reconnecting at that
    /// instant either cancels the will first or finds it gone.
    pub fn publish_due_will(&self, client_id: &Arc<str>, will: &crate::session::DelayedWill) {
        let mut fanout = Fanout::default();
        self.publish_with(will.message.clone(), &mut fanout);
        self.registry.with_parked(client_id, |state, expires_at| {
            let ours = state
                .delayed_will
                .as_ref()
                .is_some_and(|w| Arc::ptr_eq(&w.message, &will.message));
            if !ours {
                return;
            }
            state.delayed_will = None;
            if state.shared.durable.load(Ordering::Relaxed) {
                fanout.ops.push(Op::PutSession {
                    client_id: client_id.clone(),
                    record: persist::encode_session(
                        state,
                        expires_at.map_or(0, persist::unix_ms_of),
                    ),
                });
            }
        });
        self.store(fanout.ops);
    }

    /// Removes the retained messages expired at `now`, from memory and
    /// from the store (`retain_expiry_interval`). Returns how many.
    pub fn expire_retained(&self, now: std::time::Instant) -> usize {
        self.retained.remove_expired(now, |message| {
            if self.persist.is_some() && !message.topic.starts_with("$SYS/") {
                let topic = message.topic.as_mqtt_string().as_bytes().clone();
                self.store(vec![Op::DeleteRetained { topic }]);
            }
        })
    }

    /// Routes `message` to every matching session and stores it if it is
    /// retained. Returns the number of sessions it was queued for.
    pub fn publish(&self, message: Arc<Message>) -> usize {
        let mut fanout = Fanout::default();
        let queued = self.publish_with(message, &mut fanout);
        self.store(fanout.ops);
        queued
    }

    /// [`Broker::publish`], gathering in `fanout` the store writes it calls
    /// for (instead of submitting them, so the caller can wait for them
    /// before acknowledging) and how many copies full queues dropped.
    pub fn publish_with(&self, message: Arc<Message>, fanout: &mut Fanout) -> usize {
        self.publish_from(message, fanout, None)
    }

    /// [`Broker::publish_with`] for a client's publication: `waiter` is
    /// the publishing connection's mailbox, through which it is woken when
    /// a full queue it fed has room again (see `Fanout::full`). Borrowed,
    /// not stored: a reference count changed per message showed.
    pub fn publish_from(
        &self,
        message: Arc<Message>,
        fanout: &mut Fanout,
        waiter: Option<&Arc<SessionShared>>,
    ) -> usize {
        if message.retain {
            // `$SYS` is rebuilt from the running broker, never from disk.
            let durable = self.persist.is_some() && !message.topic.starts_with("$SYS/");
            // Submitted under the retained store's lock, not with the
            // publisher's batch: racing publishers on one topic reach the
            // disk in the order they changed memory.
            // Kept for long: not as a slice of the publisher's read buffer.
            let kept = fanout
                .detached
                .get_or_insert_with(|| Arc::new(message.detached()))
                .clone();
            self.retained.set(&kept, || {
                if !durable {
                    return;
                }
                let topic = message.topic.as_mqtt_string().as_bytes().clone();
                let op = if message.payload.is_empty() {
                    Op::DeleteRetained { topic }
                } else {
                    Op::PutRetained {
                        topic,
                        record: persist::encode_retained(&message, message.received),
                    }
                };
                if let Some(seq) = self.store(vec![op]) {
                    fanout.submitted = fanout.submitted.max(seq);
                }
            });
        }
        let mut lists = Vec::new();
        self.router.matches(&message.topic, &mut lists);
        let queued = match lists.as_slice() {
            [] => 0,
            // The common case: one matching filter, no share groups, so each
            // session appears once and nothing needs merging.
            [list] if list.iter().all(|s| s.share.is_none()) => list
                .iter()
                .filter(|s| !(s.options.no_local && s.session.id == message.origin))
                .map(|s| {
                    let ids = s.identifier.into_iter().collect();
                    let target = Target {
                        sub: s,
                        granted: s.options.qos,
                        shared: None,
                    };
                    usize::from(self.deliver(&message, target, ids, fanout, waiter))
                })
                .sum(),
            _ => self.publish_merged(&message, &lists, fanout, waiter),
        };
        Metrics::add(
            &self.metrics.dropped_qos0_offline,
            std::mem::take(&mut fanout.offline) as u64,
        );
        queued
    }

    /// Several filters may name the same session: it gets one copy at the
    /// highest QoS granted, with every subscription identifier
    /// ([MQTT-3.3.4-3], [MQTT-3.3.4-5]); each share group gets one copy.
    fn publish_merged(
        &self,
        message: &Arc<Message>,
        lists: &[List<Subscription>],
        fanout: &mut Fanout,
        waiter: Option<&Arc<SessionShared>>,
    ) -> usize {
        let mut plain: Vec<&Subscription> = Vec::new();
        let mut shared: Vec<&Subscription> = Vec::new();
        for sub in lists.iter().flat_map(|l| l.iter()) {
            if sub.share.is_some() {
                shared.push(sub);
            } else if !(sub.options.no_local && sub.session.id == message.origin) {
                plain.push(sub);
            }
        }
        let mut queued = 0;
        plain.sort_unstable_by_key(|s| s.session.id);
        for same_session in plain.chunk_by(|a, b| a.session.id == b.session.id) {
            let Some(first) = same_session.first() else {
                continue;
            };
            let qos = same_session
                .iter()
                .map(|s| s.options.qos)
                .max()
                .unwrap_or_default();
            let ids = same_session.iter().filter_map(|s| s.identifier).collect();
            let mut best = (*first).clone();
            best.options.retain_as_published =
                same_session.iter().any(|s| s.options.retain_as_published);
            let target = Target {
                sub: &best,
                granted: qos,
                shared: None,
            };
            queued += usize::from(self.deliver(message, target, ids, fanout, waiter));
        }
        shared.sort_unstable_by_key(|s| s.share.as_ref().map_or(0, |g| Arc::as_ptr(g) as usize));
        for members in shared.chunk_by(|a, b| share_ptr(a) == share_ptr(b)) {
            let Some(group) = members.first().and_then(|m| m.share.clone()) else {
                continue;
            };
            if let Some(member) = group.pick(members) {
                let ids = member.identifier.into_iter().collect();
                let target = Target {
                    sub: member,
                    granted: member.options.qos,
                    shared: Some(group),
                };
                queued += usize::from(self.deliver(message, target, ids, fanout, waiter));
            }
        }
        queued
    }

    fn deliver(
        &self,
        message: &Arc<Message>,
        Target {
            sub,
            granted,
            shared,
        }: Target<'_>,
        subscription_ids: Vec<u32>,
        fanout: &mut Fanout,
        waiter: Option<&Arc<SessionShared>>,
    ) -> bool {
        let mut delivery = Delivery {
            message: message.clone(),
            qos: self.outgoing_qos(message.qos, granted),
            // Live messages go out with RETAIN 0 unless the subscription
            // asked for Retain As Published ([MQTT-3.3.1-12], [MQTT-3.3.1-13]).
            retain: message.retain && sub.options.retain_as_published,
            subscription_ids,
            shared,
            durable: None,
        };
        let qos = delivery.qos;
        // QoS 1/2 to a session that outlives its connection is written to
        // the store before the publisher is acknowledged.
        // The record is encoded only once the queue has taken the delivery:
        // a copy dropped by a full queue costs no encoding.
        let mut to_store = None;
        if let Some(p) = &self.persist {
            if qos != QoS::AtMostOnce && sub.session.durable.load(Ordering::Relaxed) {
                let seq = p.next_seq();
                delivery.durable = Some(seq);
                to_store = Some((seq, delivery.clone()));
            }
        }
        let mailbox = &sub.session.mailbox;
        match mailbox.push(delivery, waiter, &mut fanout.detached) {
            pushed @ (Push::Queued | Push::Over | Push::QueuedEvicting) => {
                match pushed {
                    // Its publisher waits for room (see `mailbox`).
                    Push::Over => fanout.full.push(sub.session.clone()),
                    Push::QueuedEvicting => Metrics::add(&self.metrics.dropped_qos0_full, 1),
                    _ => {}
                }
                if let Some((seq, d)) = to_store {
                    fanout.ops.push(Op::PutQueued {
                        client_id: sub.session.client_id.clone(),
                        seq,
                        record: persist::encode_delivery(
                            &d,
                            persist::Stage::Queued,
                            message.received,
                        ),
                    });
                }
                true
            }
            dropped @ (Push::DroppedFull | Push::DroppedStalled) => {
                fanout.dropped += 1;
                let counter = if qos == QoS::AtMostOnce {
                    &self.metrics.dropped_qos0_full
                } else if dropped == Push::DroppedStalled {
                    &self.metrics.dropped_stalled
                } else {
                    &self.metrics.dropped_queue_full
                };
                Metrics::add(counter, 1);
                false
            }
            Push::DroppedOffline => {
                fanout.offline += 1;
                false
            }
        }
    }
}

/// Where one copy of a message goes: a subscription, the QoS it was
/// granted, and the share group it came through.
struct Target<'a> {
    sub: &'a Subscription,
    granted: QoS,
    shared: Option<Arc<SharedGroup>>,
}

/// What one publication caused besides deliveries.
#[derive(Debug, Default)]
pub struct Fanout {
    /// Queues of online subscribers that took a delivery past their limit:
    /// the publisher stops reading until they have room (or stall).
    pub full: Vec<Arc<SessionShared>>,
    /// The message in allocations of its own, made for the first delivery
    /// that waits long (see `Mailbox::push`) and shared by the others.
    pub detached: Option<Arc<Message>>,
    /// Store writes to make before acknowledging the publisher.
    pub ops: Vec<Op>,
    /// Copies dropped because a subscriber's queue was full.
    pub dropped: usize,
    /// QoS 0 copies not queued for offline sessions (counted into the
    /// metrics once per publication, not once per copy).
    pub offline: usize,
    /// The store submission that carried the retained message's change
    /// (submitted at once, see `publish_with`), which an acknowledgement
    /// waits for too; 0 if none.
    pub submitted: u64,
}

fn share_ptr(sub: &Subscription) -> usize {
    sub.share.as_ref().map_or(0, |g| Arc::as_ptr(g) as usize)
}
