//! SUBSCRIBE and UNSUBSCRIBE ([MQTT-3.8], [MQTT-3.10]): subscription
//! options, subscription identifiers, retained messages on subscribe, share
//! groups, and the limits that keep one packet's cost bounded.

use std::borrow::Cow;
use std::collections::HashMap;

use ferrymq_codec::{
    Packet, Properties, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, SubscriptionOptions,
    UnsubAck, Unsubscribe,
};

use tracing::debug;

use crate::message::Delivery;
use crate::metrics::Metrics;
use crate::protocol::{Close, Connection};
use crate::router::level_count;
use crate::session::{Subscription, SubscriptionRecord};
use crate::shared;

impl Connection {
    /// Subscribes to every filter of `subscribe`. A filter repeated in the
    /// packet counts once, as its last occurrence (which would replace the
    /// ones before it), and gets that occurrence's reason code each time.
    ///
    /// Retained messages are bounded by the session's queue: they are
    /// gathered only while the queue has room, and queued ahead of the
    /// live messages the new subscriptions match (see
    /// [`Mailbox::hold`](crate::mailbox::Mailbox::hold)). What does not
    /// fit is not sent, as Mosquitto does with its queue limits.
    pub(crate) fn on_subscribe(&mut self, subscribe: Subscribe) -> Result<(), Close> {
        // The codec allows at most one in a SUBSCRIBE ([MQTT-3.8.2.1.2]).
        let identifier = subscribe.properties.subscription_identifiers().next();
        let filters = &subscribe.filters;
        let mut last: HashMap<&str, usize> = HashMap::with_capacity(filters.len());
        for (i, (filter, _)) in filters.iter().enumerate() {
            last.insert(filter.as_str(), i);
        }
        let shared = self.session.shared.clone();
        let held = shared.mailbox.hold();
        let mut retained = Retained {
            room: held.room(),
            deliveries: Vec::new(),
            cut_short: false,
        };
        let mut reasons = vec![ReasonCode::UnspecifiedError; filters.len()];
        let mut distinct = 0;
        for (i, (filter, options)) in filters.iter().enumerate() {
            if last.get(filter.as_str()) != Some(&i) {
                continue;
            }
            distinct += 1;
            let reason = if distinct > self.broker.config.max_filters_per_subscribe {
                debug!(%filter, "refused: past max_filters_per_subscribe");
                self.refusal(ReasonCode::QuotaExceeded)
            } else {
                match self.mounted(filter) {
                    Some(filter) => {
                        self.subscribe_one(&filter, *options, identifier, &mut retained)?
                    }
                    None => self.refusal(ReasonCode::TopicFilterInvalid),
                }
            };
            if let Some(r) = reasons.get_mut(i) {
                *r = reason;
            }
        }
        for (i, (filter, _)) in filters.iter().enumerate() {
            let winner = last
                .get(filter.as_str())
                .and_then(|&j| reasons.get(j))
                .copied();
            if let (Some(reason), Some(r)) = (winner, reasons.get_mut(i)) {
                *r = reason;
            }
        }
        self.broker.store_session(&self.session, 0);
        self.send(&Packet::SubAck(SubAck {
            packet_id: subscribe.packet_id,
            properties: Properties::new(),
            reasons,
        }));
        // Retained messages follow the SUBACK, through the session's own
        // queue, ahead of what arrived meanwhile.
        if retained.cut_short {
            debug!("retained messages past the queue's room not sent");
        }
        let dropped = held.release(retained.deliveries);
        Metrics::add(&self.broker.metrics.dropped_queue_full, dropped as u64);
        Ok(())
    }

    /// `filter` under the listener's `mount_point` (inside a share group:
    /// `$share/g/f` becomes `$share/g/<mount>f`); `None` if the result
    /// would be longer than a filter may be.
    fn mounted<'f>(&self, filter: &'f str) -> Option<Cow<'f, str>> {
        let Some(mount) = self.mount() else {
            return Some(Cow::Borrowed(filter));
        };
        let mounted = match shared::parse(filter) {
            Some(Ok((name, inner))) => format!("$share/{name}/{mount}{inner}"),
            _ => format!("{mount}{filter}"),
        };
        (mounted.len() <= usize::from(u16::MAX)).then_some(Cow::Owned(mounted))
    }

    /// The SUBACK code of a refused filter: MQTT 5's `v5`, 3.x's failure.
    fn refusal(&self, v5: ReasonCode) -> ReasonCode {
        if self.protocol.is_v5() {
            v5
        } else {
            ReasonCode::UnspecifiedError
        }
    }

    fn subscribe_one(
        &mut self,
        filter: &str,
        mut options: SubscriptionOptions,
        identifier: Option<u32>,
        retained: &mut Retained,
    ) -> Result<ReasonCode, Close> {
        let config = &self.broker.config;
        // `max_qos`: a subscription is granted at most the broker's
        // maximum ([MQTT-3.2.2-9]: the client learns it from CONNACK).
        options.qos = options.qos.min(self.endpoint.settings.max_qos);
        let (inner, share) = match shared::parse(filter) {
            None => (filter, None),
            Some(Ok((name, inner))) => {
                if options.no_local {
                    return Err(Close::violation(
                        ReasonCode::ProtocolError,
                        "No Local on a shared subscription",
                    ));
                }
                (inner, Some((name, inner)))
            }
            Some(Err(())) => return Ok(self.refusal(ReasonCode::TopicFilterInvalid)),
        };
        if level_count(inner) > config.max_topic_levels {
            debug!(%filter, "refused: more levels than max_topic_levels");
            return Ok(self.refusal(ReasonCode::TopicFilterInvalid));
        }
        if self.session.subscriptions.len() >= config.max_subscriptions_per_session
            && !self.session.subscriptions.contains_key(filter)
        {
            debug!(%filter, "refused: past max_subscriptions_per_session");
            return Ok(self.refusal(ReasonCode::QuotaExceeded));
        }
        if !self.endpoint.security.may_subscribe(
            self.username.as_deref(),
            &self.session.shared.client_id,
            filter,
        ) {
            return Ok(self.refusal(ReasonCode::NotAuthorized));
        }
        debug!(%filter, qos = ?options.qos, "subscribed");
        let share = share.map(|(name, inner)| self.broker.shared_groups.get(name, inner));
        let is_shared = share.is_some();
        let sub = Subscription::new(self.session.shared.clone(), options, identifier, share);
        // The retained messages as of the moment the subscription takes
        // effect: a retained publication lands either in this view or,
        // after it, on the new subscription (see `RetainStore::read`).
        let broker = self.broker.clone();
        let view = broker.retained.read();
        let is_new = self.broker.router.subscribe(inner, sub);
        self.session.subscriptions.insert(
            filter.to_string(),
            SubscriptionRecord {
                options,
                identifier,
            },
        );
        // Retained messages go to new and replaced subscriptions as Retain
        // Handling says ([MQTT-3.3.1-9] .. [MQTT-3.3.1-11]), never to a
        // shared one.
        let send_retained = !is_shared
            && match options.retain_handling {
                RetainHandling::SendAtSubscribe => true,
                RetainHandling::SendIfNew => is_new,
                RetainHandling::DoNotSend => false,
            };
        if send_retained {
            self.gather_retained(&view, inner, options.qos, identifier, retained);
        }
        drop(view);
        Ok(match options.qos {
            QoS::AtMostOnce => ReasonCode::Success,
            QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
            QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
        })
    }

    /// Adds the retained messages `filter` matches, while the queue has
    /// room for them: nothing is gathered that could not be queued.
    fn gather_retained(
        &self,
        view: &crate::retain::View<'_>,
        filter: &str,
        granted: QoS,
        identifier: Option<u32>,
        retained: &mut Retained,
    ) {
        let now = std::time::Instant::now();
        let broker = &self.broker;
        let security = &self.endpoint.security;
        // `check_retain_source`: a message whose publisher may no longer
        // write its topic is not handed out (Mosquitto checks the same).
        let check_source = broker.config.check_retain_source && security.has_acl();
        let source_may_write = |message: &crate::message::Message| match &message.source {
            Some(source) if check_source => security.allowed(
                source.username.as_deref(),
                &source.client_id,
                &message.topic,
                ferrymq_auth::Access::Write,
            ),
            _ => true,
        };
        view.for_each_match(filter, |message| {
            if retained.deliveries.len() >= retained.room {
                retained.cut_short = true;
                return false;
            }
            if !message.is_expired(now) && source_may_write(message) {
                let qos = broker.outgoing_qos(message.qos, granted);
                let mut delivery = Delivery::new(message.clone(), qos, true);
                delivery.subscription_ids.extend(identifier);
                retained.deliveries.push(delivery);
            }
            true
        });
    }

    pub(crate) fn on_unsubscribe(&mut self, unsubscribe: Unsubscribe) {
        let mut reasons = Vec::with_capacity(unsubscribe.filters.len());
        let session = self.session.shared.id;
        for filter in &unsubscribe.filters {
            let Some(filter) = self.mounted(filter) else {
                reasons.push(ReasonCode::NoSubscriptionExisted);
                continue;
            };
            let filter = &*filter;
            let existed = self.session.subscriptions.remove(filter).is_some();
            debug!(%filter, existed, "unsubscribed");
            self.broker.remove_subscription(filter, session);
            if let (true, Some(Ok((name, inner)))) = (existed, shared::parse(filter)) {
                // What reached us through this group goes to another
                // member, if there is one.
                let this_group = |g: &shared::SharedGroup| *g.name == *name && *g.filter == *inner;
                self.broker
                    .release_group(&mut self.session, this_group, false);
            }
            reasons.push(if existed {
                ReasonCode::Success
            } else {
                ReasonCode::NoSubscriptionExisted
            });
        }
        self.broker.store_session(&self.session, 0);
        self.send(&Packet::UnsubAck(UnsubAck {
            packet_id: unsubscribe.packet_id,
            properties: Properties::new(),
            reasons: if self.protocol.is_v5() {
                reasons
            } else {
                Vec::new()
            },
        }));
    }
}

/// The retained messages a SUBSCRIBE gathers, within its queue's room.
struct Retained {
    room: usize,
    deliveries: Vec<Delivery>,
    cut_short: bool,
}
