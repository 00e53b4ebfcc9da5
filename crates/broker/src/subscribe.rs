//! SUBSCRIBE and UNSUBSCRIBE ([MQTT-3.8], [MQTT-3.10]): subscription
//! options, subscription identifiers, retained messages on subscribe, share
//! groups.

use ferrymq_codec::{
    Packet, Properties, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe,
};

use tracing::debug;

use crate::mailbox::Push;
use crate::message::Delivery;
use crate::metrics::Metrics;
use crate::protocol::{Close, Connection};
use crate::session::{Subscription, SubscriptionRecord};
use crate::shared;

impl Connection {
    pub(crate) fn on_subscribe(&mut self, subscribe: Subscribe) -> Result<(), Close> {
        let v5 = self.protocol.is_v5();
        // The codec allows at most one in a SUBSCRIBE ([MQTT-3.8.2.1.2]).
        let identifier = subscribe.properties.subscription_identifiers().next();
        let mut reasons = Vec::with_capacity(subscribe.filters.len());
        let mut retained = Vec::new();
        let now = std::time::Instant::now();
        for (filter, options) in &subscribe.filters {
            // `max_qos`: a subscription is granted at most the broker's
            // maximum ([MQTT-3.2.2-9]: the client learns it from CONNACK).
            let mut options = *options;
            options.qos = options.qos.min(self.broker.config.max_qos);
            let options = &options;
            let (inner, share) = match shared::parse(filter) {
                None => (filter.as_str(), None),
                Some(Ok((name, inner))) => {
                    if options.no_local {
                        return Err(Close::violation(
                            ReasonCode::ProtocolError,
                            "No Local on a shared subscription",
                        ));
                    }
                    (inner, Some(self.broker.shared_groups.get(name, inner)))
                }
                Some(Err(())) => {
                    reasons.push(if v5 {
                        ReasonCode::TopicFilterInvalid
                    } else {
                        ReasonCode::UnspecifiedError
                    });
                    continue;
                }
            };
            if !self.security.may_subscribe(
                self.username.as_deref(),
                &self.session.shared.client_id,
                filter,
            ) {
                reasons.push(if v5 {
                    ReasonCode::NotAuthorized
                } else {
                    ReasonCode::UnspecifiedError
                });
                continue;
            }
            debug!(%filter, qos = ?options.qos, "subscribed");
            let is_shared = share.is_some();
            let sub = Subscription::new(self.session.shared.clone(), *options, identifier, share);
            let is_new = self.broker.router.subscribe(inner, sub);
            self.session.subscriptions.insert(
                filter.to_string(),
                SubscriptionRecord {
                    options: *options,
                    identifier,
                },
            );
            reasons.push(match options.qos {
                QoS::AtMostOnce => ReasonCode::Success,
                QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
                QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
            });
            // Retained messages go to new and replaced subscriptions as
            // Retain Handling says ([MQTT-3.3.1-9] .. [MQTT-3.3.1-11]),
            // never to a shared one ([MQTT-4.8.2-?]: no retained messages).
            let send_retained = !is_shared
                && match options.retain_handling {
                    RetainHandling::SendAtSubscribe => true,
                    RetainHandling::SendIfNew => is_new,
                    RetainHandling::DoNotSend => false,
                };
            if send_retained {
                for message in self.broker.retained.matching(inner) {
                    if message.is_expired(now) {
                        continue;
                    }
                    let qos = self.broker.outgoing_qos(message.qos, options.qos);
                    let mut delivery = Delivery::new(message.clone(), qos, true);
                    delivery.subscription_ids.extend(identifier);
                    retained.push(delivery);
                }
            }
        }
        self.broker.store_session(&self.session, 0);
        self.send(&Packet::SubAck(SubAck {
            packet_id: subscribe.packet_id,
            properties: Properties::new(),
            reasons,
        }));
        // Retained messages follow the SUBACK, through the session's own queue.
        let mailbox = self.session.shared.mailbox.clone();
        for delivery in retained {
            if mailbox.push(delivery) != Push::Queued {
                Metrics::add(&self.broker.metrics.dropped_queue_full, 1);
            }
        }
        Ok(())
    }

    pub(crate) fn on_unsubscribe(&mut self, unsubscribe: Unsubscribe) {
        let mut reasons = Vec::with_capacity(unsubscribe.filters.len());
        let session = self.session.shared.id;
        for filter in &unsubscribe.filters {
            let existed = self.session.subscriptions.remove(filter.as_str()).is_some();
            debug!(%filter, existed, "unsubscribed");
            self.broker.remove_subscription(filter, session);
            if existed && shared::parse(filter).is_some() {
                // Messages queued for us through this group go to another member.
                self.broker
                    .redispatch_queued_shared(&self.session, |g| &*g.name == group_of(filter));
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

fn group_of(filter: &str) -> &str {
    match shared::parse(filter) {
        Some(Ok((name, _))) => name,
        _ => "",
    }
}
