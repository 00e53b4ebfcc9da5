//! The state every connection task shares: configuration, topic index,
//! retained messages, session registry, counters; and the publish path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ferrymq_codec::QoS;

use crate::config::Config;
use crate::mailbox::{Mailbox, Push};
use crate::message::{Delivery, Message};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::retain::RetainStore;
use crate::router::Router;
use crate::session::{SessionShared, SessionState, Subscription};

#[derive(Debug)]
pub struct Broker {
    pub config: Config,
    pub router: Router<Subscription>,
    pub retained: RetainStore,
    pub registry: Registry,
    pub metrics: Metrics,
    pub started: Instant,
    next_id: AtomicU64,
}

impl Broker {
    pub fn new(config: Config) -> Arc<Broker> {
        Arc::new(Broker {
            config,
            router: Router::new(),
            retained: RetainStore::default(),
            registry: Registry::default(),
            metrics: Metrics::default(),
            started: Instant::now(),
            next_id: AtomicU64::new(1),
        })
    }

    /// A process-unique number for connections and sessions.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn new_session(&self, client_id: Arc<str>, persistent: bool) -> SessionState {
        let shared = Arc::new(SessionShared {
            id: self.next_id(),
            client_id,
            mailbox: Mailbox::new(self.config.max_queued_messages),
        });
        SessionState::new(shared, persistent)
    }

    /// Ends a session for good: its subscriptions leave the index and its
    /// queue is emptied.
    pub fn discard_session(&self, state: &SessionState) {
        for filter in state.subscriptions.keys() {
            self.router.unsubscribe(filter, &state.shared.id);
        }
        state.shared.mailbox.clear();
    }

    /// Routes `message` to every matching session and stores it if it is
    /// retained. Returns the number of sessions it was queued for.
    pub fn publish(&self, message: Arc<Message>) -> usize {
        if message.retain {
            self.retained.set(&message);
        }
        let mut lists = Vec::new();
        self.router.matches(&message.topic, &mut lists);
        let mut queued = 0;
        match lists.as_slice() {
            [] => {}
            // One matching filter: each session appears once.
            [list] => {
                for sub in list.iter() {
                    queued += usize::from(self.deliver(&message, &sub.session, sub.options.qos));
                }
            }
            // Several filters may name the same session: it gets one copy at
            // the highest QoS granted ([MQTT-3.3.5-1]).
            _ => {
                let mut targets: Vec<(&Arc<SessionShared>, QoS)> = lists
                    .iter()
                    .flat_map(|l| l.iter().map(|s| (&s.session, s.options.qos)))
                    .collect();
                targets.sort_unstable_by(|a, b| a.0.id.cmp(&b.0.id).then(b.1.cmp(&a.1)));
                targets.dedup_by_key(|t| t.0.id);
                for (session, qos) in targets {
                    queued += usize::from(self.deliver(&message, session, qos));
                }
            }
        }
        queued
    }

    fn deliver(&self, message: &Arc<Message>, session: &SessionShared, granted: QoS) -> bool {
        let delivery = Delivery {
            message: message.clone(),
            qos: message.qos.min(granted),
            retain: false,
        };
        let qos = delivery.qos;
        match session.mailbox.push(delivery) {
            Push::Queued => true,
            Push::DroppedFull => {
                let counter = if qos == QoS::AtMostOnce {
                    &self.metrics.dropped_qos0_full
                } else {
                    &self.metrics.dropped_queue_full
                };
                Metrics::add(counter, 1);
                false
            }
            Push::DroppedOffline => false,
        }
    }
}
