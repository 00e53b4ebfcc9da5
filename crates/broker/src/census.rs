//! Totals that no counter keeps: queue depths, subscriptions, retained
//! messages. Counted by walking the registry, the topic index and the
//! retained store when `$SYS` or `/metrics` asks (every few seconds), so
//! the publish path keeps no global counter for them.

use std::collections::HashMap;

use crate::broker::Broker;

/// The broker's state at one moment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Census {
    /// Sessions, connected and parked.
    pub sessions: u64,
    /// Deliveries queued across sessions (not yet sent).
    pub queued: u64,
    /// The deepest single session queue.
    pub queued_max: u64,
    /// The deepest any live session's queue has been.
    pub queued_high_water: u64,
    /// Bytes of the queued deliveries, as `max_queued_bytes` counts them.
    pub queued_bytes: u64,
    /// (filter, session) pairs in the topic index.
    pub subscriptions: u64,
    /// Of which in share groups (`$share/...`).
    pub shared_subscriptions: u64,
    pub retained: u64,
    pub retained_bytes: u64,
}

impl Census {
    pub fn take(broker: &Broker) -> Census {
        let mut census = Census::default();
        let sessions = broker.registry.sessions();
        census.sessions = broker.registry.len() as u64;
        for session in &sessions {
            let (n, bytes) = session.mailbox.depth();
            census.queued += n as u64;
            census.queued_bytes += bytes as u64;
            census.queued_max = census.queued_max.max(n as u64);
            census.queued_high_water = census
                .queued_high_water
                .max(session.mailbox.high_water() as u64);
        }
        census.subscriptions = broker.router.len() as u64;
        broker.router.for_each(|_, sub| {
            if sub.share.is_some() {
                census.shared_subscriptions += 1;
            }
        });
        let (retained, retained_bytes) = broker.retained.summary();
        census.retained = retained as u64;
        census.retained_bytes = retained_bytes as u64;
        census
    }
}

/// The subscriptions of every session, by session id, as the admin API
/// lists them: (filter as subscribed, with `$share/group/` if shared;
/// granted QoS).
pub fn subscriptions_by_session(broker: &Broker) -> HashMap<u64, Vec<(String, u8)>> {
    let mut by_session: HashMap<u64, Vec<(String, u8)>> = HashMap::new();
    broker.router.for_each(|filter, sub| {
        let filter = match &sub.share {
            Some(group) => format!("$share/{}/{filter}", group.name),
            None => filter.to_string(),
        };
        by_session
            .entry(sub.session.id)
            .or_default()
            .push((filter, sub.options.qos as u8));
    });
    for subs in by_session.values_mut() {
        subs.sort();
    }
    by_session
}
