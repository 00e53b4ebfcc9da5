//! Proptest strategies for valid packets of each protocol version.
//!
//! Every strategy yields only what its version can carry: MQTT 3.x packets
//! have no properties, only the CONNACK/SUBACK codes 3.x has, no reason
//! codes elsewhere and no subscription options but QoS. MQTT 5 property
//! lists hold only properties allowed where they sit, no forbidden
//! duplicates, only valid values, and user properties in arbitrary order.

use bytes::Bytes;
use ferrymq_codec::packet::PacketType;
use ferrymq_codec::property::{allowed_in, id, PropertyContext};
use ferrymq_codec::*;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::{BoxedStrategy, Union};

/// Every property identifier the 5.0 standard defines (table 2.2.2.2).
pub const ALL_PROPERTY_IDS: [u8; 27] = [
    0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x11, 0x12, 0x13, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1C,
    0x1F, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A,
];

/// The packet types of a protocol version: AUTH exists only in 5.0.
pub fn packet_types(protocol: Protocol) -> Vec<PacketType> {
    (1..=15)
        .filter_map(PacketType::from_u8)
        .filter(|t| protocol.is_v5() || *t != PacketType::Auth)
        .collect()
}

/// A character allowed in an MQTT string: any Unicode scalar value but
/// U+0000, weighted towards ASCII but with plenty of 2, 3 and 4-byte forms.
pub fn mqtt_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => proptest::char::range('\u{1}', '\u{7F}'),
        1 => proptest::char::range('\u{80}', '\u{7FF}'),
        1 => proptest::char::range('\u{800}', '\u{D7FF}'),
        1 => proptest::char::range('\u{E000}', '\u{FFFF}'),
        1 => proptest::char::range('\u{10000}', '\u{10FFFF}'),
    ]
}

pub fn string_of(chars: impl Strategy<Value = char>, max: usize) -> impl Strategy<Value = String> {
    vec(chars, 0..=max).prop_map(|c| c.into_iter().collect())
}

pub fn mqtt_string() -> impl Strategy<Value = MqttString> {
    string_of(mqtt_char(), 8).prop_map(|s| MqttString::try_from(s).unwrap())
}

pub fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

pub fn packet_id() -> impl Strategy<Value = PacketId> {
    (1..=u16::MAX).prop_map(|n| PacketId::new(n).unwrap())
}

pub fn qos() -> impl Strategy<Value = QoS> {
    select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

/// One topic level: no separator, no wildcard, no control character
/// (refused in topics, as Mosquitto refuses them).
fn level() -> impl Strategy<Value = String> {
    let c = mqtt_char().prop_filter("not a separator, wildcard or control", |c| {
        !matches!(c, '/' | '+' | '#') && !c.is_control()
    });
    string_of(c, 4)
}

/// A non-empty topic name: levels (possibly empty ones) joined by `/`.
pub fn topic_name() -> impl Strategy<Value = TopicName> {
    vec(level(), 1..4)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("non-empty", |t| !t.is_empty())
        .prop_map(|t| TopicName::new(t).unwrap())
}

/// A topic filter: levels, any of them `+`, the last one possibly `#`.
/// Shared subscriptions are left out: they forbid No Local
/// ([MQTT-3.8.3-4]), which the option strategy sets freely.
pub fn topic_filter() -> impl Strategy<Value = TopicFilter> {
    let level = prop_oneof![3 => level(), 1 => Just("+".to_string())];
    (vec(level, 1..4), any::<bool>())
        .prop_map(|(mut levels, multi)| {
            if multi {
                levels.push("#".to_string());
            }
            levels.join("/")
        })
        .prop_filter("non-empty, not shared", |f| {
            !f.is_empty() && !f.starts_with("$share/")
        })
        .prop_map(|f| TopicFilter::new(f).unwrap())
}

/// The reason codes the 5.0 standard lets `packet` carry.
pub fn v5_reason(packet: PacketType) -> impl Strategy<Value = ReasonCode> {
    let codes: Vec<ReasonCode> = ReasonCode::ALL
        .iter()
        .copied()
        .filter(|c| c.valid_in(packet))
        .collect();
    select(codes)
}

/// A valid value for property `pid`.
pub fn property(pid: u8) -> BoxedStrategy<Property> {
    use Property as P;
    let flag = || 0u8..=1;
    match pid {
        id::PAYLOAD_FORMAT_INDICATOR => flag().prop_map(P::PayloadFormatIndicator).boxed(),
        id::MESSAGE_EXPIRY_INTERVAL => any::<u32>().prop_map(P::MessageExpiryInterval).boxed(),
        id::CONTENT_TYPE => mqtt_string().prop_map(P::ContentType).boxed(),
        id::RESPONSE_TOPIC => topic_name()
            .prop_map(|t| P::ResponseTopic(t.as_mqtt_string().clone()))
            .boxed(),
        id::CORRELATION_DATA => bytes(16).prop_map(P::CorrelationData).boxed(),
        id::SUBSCRIPTION_IDENTIFIER => prop_oneof![1u32..=300, 1u32..=268_435_455]
            .prop_map(P::SubscriptionIdentifier)
            .boxed(),
        id::SESSION_EXPIRY_INTERVAL => any::<u32>().prop_map(P::SessionExpiryInterval).boxed(),
        id::ASSIGNED_CLIENT_IDENTIFIER => {
            mqtt_string().prop_map(P::AssignedClientIdentifier).boxed()
        }
        id::SERVER_KEEP_ALIVE => any::<u16>().prop_map(P::ServerKeepAlive).boxed(),
        id::AUTHENTICATION_METHOD => mqtt_string().prop_map(P::AuthenticationMethod).boxed(),
        id::AUTHENTICATION_DATA => bytes(16).prop_map(P::AuthenticationData).boxed(),
        id::REQUEST_PROBLEM_INFORMATION => flag().prop_map(P::RequestProblemInformation).boxed(),
        id::WILL_DELAY_INTERVAL => any::<u32>().prop_map(P::WillDelayInterval).boxed(),
        id::REQUEST_RESPONSE_INFORMATION => flag().prop_map(P::RequestResponseInformation).boxed(),
        id::RESPONSE_INFORMATION => mqtt_string().prop_map(P::ResponseInformation).boxed(),
        id::SERVER_REFERENCE => mqtt_string().prop_map(P::ServerReference).boxed(),
        id::REASON_STRING => mqtt_string().prop_map(P::ReasonString).boxed(),
        id::RECEIVE_MAXIMUM => (1..=u16::MAX).prop_map(P::ReceiveMaximum).boxed(),
        id::TOPIC_ALIAS_MAXIMUM => any::<u16>().prop_map(P::TopicAliasMaximum).boxed(),
        id::TOPIC_ALIAS => (1..=u16::MAX).prop_map(P::TopicAlias).boxed(),
        id::MAXIMUM_QOS => flag().prop_map(P::MaximumQoS).boxed(),
        id::RETAIN_AVAILABLE => flag().prop_map(P::RetainAvailable).boxed(),
        id::USER_PROPERTY => (mqtt_string(), mqtt_string())
            .prop_map(|(k, v)| P::UserProperty(k, v))
            .boxed(),
        id::MAXIMUM_PACKET_SIZE => (1..=u32::MAX).prop_map(P::MaximumPacketSize).boxed(),
        id::WILDCARD_SUBSCRIPTION_AVAILABLE => {
            flag().prop_map(P::WildcardSubscriptionAvailable).boxed()
        }
        id::SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
            flag().prop_map(P::SubscriptionIdentifierAvailable).boxed()
        }
        id::SHARED_SUBSCRIPTION_AVAILABLE => {
            flag().prop_map(P::SharedSubscriptionAvailable).boxed()
        }
        other => panic!("no strategy for property {other:#04x}"),
    }
}

/// A valid MQTT 5 property list for `context`, in arbitrary order: each
/// allowed single-use property at most once, any number of user
/// properties, and in PUBLISH any number of Subscription Identifiers.
pub fn properties(context: PropertyContext) -> BoxedStrategy<Properties> {
    let repeatable = |pid: u8| {
        pid == id::USER_PROPERTY
            || (pid == id::SUBSCRIPTION_IDENTIFIER
                && context == PropertyContext::Packet(PacketType::Publish))
    };
    let singles: Vec<_> = ALL_PROPERTY_IDS
        .iter()
        .copied()
        .filter(|&pid| allowed_in(pid, context) && !repeatable(pid))
        .map(|pid| option::weighted(0.3, property(pid)))
        .collect();
    let multiples: Vec<_> = ALL_PROPERTY_IDS
        .iter()
        .copied()
        .filter(|&pid| allowed_in(pid, context) && repeatable(pid))
        .map(|pid| vec(property(pid), 0..3))
        .collect();
    (singles, multiples)
        .prop_map(|(singles, multiples)| {
            let mut list: Vec<Property> = singles.into_iter().flatten().collect();
            list.extend(multiples.into_iter().flatten());
            // Authentication Data needs an Authentication Method.
            let has_method = list
                .iter()
                .any(|p| matches!(p, Property::AuthenticationMethod(_)));
            if !has_method {
                list.retain(|p| !matches!(p, Property::AuthenticationData(_)));
            }
            list
        })
        .prop_shuffle()
        .prop_map(Properties)
        .boxed()
}

/// Properties for `context` in 5.0, none in 3.x.
fn props_for(protocol: Protocol, context: PropertyContext) -> BoxedStrategy<Properties> {
    if protocol.is_v5() {
        properties(context)
    } else {
        Just(Properties::new()).boxed()
    }
}

fn packet_props(protocol: Protocol, t: PacketType) -> BoxedStrategy<Properties> {
    props_for(protocol, PropertyContext::Packet(t))
}

fn will(protocol: Protocol) -> impl Strategy<Value = Will> {
    (
        qos(),
        any::<bool>(),
        props_for(protocol, PropertyContext::Will),
        topic_name(),
        bytes(32),
    )
        .prop_map(|(qos, retain, properties, topic, payload)| Will {
            qos,
            retain,
            properties,
            topic,
            payload,
        })
}

pub fn connect(protocol: Protocol) -> BoxedStrategy<Packet> {
    (
        any::<bool>(),
        any::<u16>(),
        packet_props(protocol, PacketType::Connect),
        mqtt_string(),
        option::of(will(protocol)),
        option::of(mqtt_string()),
        option::of(bytes(16)),
    )
        .prop_map(
            move |(clean_start, keep_alive, properties, client_id, will, username, password)| {
                // 3.x forbids a password without a user name; 5.0 allows it.
                let password = if protocol.is_v5() || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    protocol,
                    clean_start,
                    keep_alive,
                    properties,
                    client_id,
                    will,
                    username,
                    password,
                }))
            },
        )
        .boxed()
}

pub fn connack(protocol: Protocol) -> BoxedStrategy<Packet> {
    let reason = if protocol.is_v5() {
        v5_reason(PacketType::ConnAck).boxed()
    } else {
        select(
            ReasonCode::ALL
                .iter()
                .copied()
                .filter(|c| c.to_v3_connack().is_some())
                .collect::<Vec<_>>(),
        )
        .boxed()
    };
    (
        any::<bool>(),
        reason,
        packet_props(protocol, PacketType::ConnAck),
    )
        .prop_map(move |(session_present, reason, properties)| {
            // No session with a refusal ([MQTT-3.2.2-4], [MQTT-3.2.2-6]);
            // and MQTT 3.1 has no Session Present flag at all.
            let session_present =
                session_present && reason == ReasonCode::Success && protocol != Protocol::V3_1;
            Packet::ConnAck(ConnAck {
                session_present,
                reason,
                properties,
            })
        })
        .boxed()
}

pub fn publish(protocol: Protocol) -> BoxedStrategy<Packet> {
    let v5 = protocol.is_v5();
    let topic = if v5 {
        prop_oneof![4 => topic_name(), 1 => Just(TopicName::default())].boxed()
    } else {
        topic_name().boxed()
    };
    (
        (qos(), any::<bool>(), any::<bool>()),
        topic,
        packet_id(),
        packet_props(protocol, PacketType::Publish),
        bytes(64),
        1..=u16::MAX,
    )
        .prop_map(
            move |((qos, dup, retain), topic, id, mut properties, payload, alias)| {
                // An empty topic needs a Topic Alias ([MQTT-3.3.2-8]).
                if topic.is_empty() && properties.topic_alias().is_none() {
                    properties.push(Property::TopicAlias(alias));
                }
                Packet::Publish(Publish {
                    dup: dup && qos != QoS::AtMostOnce,
                    qos,
                    retain,
                    topic,
                    packet_id: (qos != QoS::AtMostOnce).then_some(id),
                    properties,
                    payload,
                })
            },
        )
        .boxed()
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP.
pub fn pub_response(protocol: Protocol, t: PacketType) -> BoxedStrategy<Packet> {
    let reason = if protocol.is_v5() {
        v5_reason(t).boxed()
    } else {
        Just(ReasonCode::Success).boxed()
    };
    (packet_id(), reason, packet_props(protocol, t))
        .prop_map(move |(packet_id, reason, properties)| {
            let r = PubResponse {
                packet_id,
                reason,
                properties,
            };
            match t {
                PacketType::PubAck => Packet::PubAck(r),
                PacketType::PubRec => Packet::PubRec(r),
                PacketType::PubRel => Packet::PubRel(r),
                PacketType::PubComp => Packet::PubComp(r),
                other => unreachable!("{other} is not a publish response"),
            }
        })
        .boxed()
}

fn subscription_options(protocol: Protocol) -> BoxedStrategy<SubscriptionOptions> {
    if !protocol.is_v5() {
        return qos().prop_map(SubscriptionOptions::qos).boxed();
    }
    let retain_handling = select(vec![
        RetainHandling::SendAtSubscribe,
        RetainHandling::SendIfNew,
        RetainHandling::DoNotSend,
    ]);
    (qos(), any::<bool>(), any::<bool>(), retain_handling)
        .prop_map(
            |(qos, no_local, retain_as_published, retain_handling)| SubscriptionOptions {
                qos,
                no_local,
                retain_as_published,
                retain_handling,
            },
        )
        .boxed()
}

pub fn subscribe(protocol: Protocol) -> BoxedStrategy<Packet> {
    (
        packet_id(),
        packet_props(protocol, PacketType::Subscribe),
        vec((topic_filter(), subscription_options(protocol)), 1..4),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                filters,
            })
        })
        .boxed()
}

pub fn suback(protocol: Protocol) -> BoxedStrategy<Packet> {
    let reason = if protocol.is_v5() {
        v5_reason(PacketType::SubAck).boxed()
    } else {
        // 3.1.1 table 3.9.3: 0x00, 0x01, 0x02 and 0x80.
        select(vec![
            ReasonCode::GRANTED_QOS0,
            ReasonCode::GrantedQoS1,
            ReasonCode::GrantedQoS2,
            ReasonCode::UnspecifiedError,
        ])
        .boxed()
    };
    (
        packet_id(),
        packet_props(protocol, PacketType::SubAck),
        vec(reason, 1..5),
    )
        .prop_map(|(packet_id, properties, reasons)| {
            Packet::SubAck(SubAck {
                packet_id,
                properties,
                reasons,
            })
        })
        .boxed()
}

pub fn unsubscribe(protocol: Protocol) -> BoxedStrategy<Packet> {
    (
        packet_id(),
        packet_props(protocol, PacketType::Unsubscribe),
        vec(topic_filter(), 1..4),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties,
                filters,
            })
        })
        .boxed()
}

pub fn unsuback(protocol: Protocol) -> BoxedStrategy<Packet> {
    let reasons = if protocol.is_v5() {
        vec(v5_reason(PacketType::UnsubAck), 1..5).boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    (
        packet_id(),
        packet_props(protocol, PacketType::UnsubAck),
        reasons,
    )
        .prop_map(|(packet_id, properties, reasons)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                properties,
                reasons,
            })
        })
        .boxed()
}

pub fn disconnect(protocol: Protocol) -> BoxedStrategy<Packet> {
    if !protocol.is_v5() {
        return Just(Packet::Disconnect(Disconnect::default())).boxed();
    }
    (
        v5_reason(PacketType::Disconnect),
        properties(PropertyContext::Packet(PacketType::Disconnect)),
    )
        .prop_map(|(reason, properties)| Packet::Disconnect(Disconnect { reason, properties }))
        .boxed()
}

pub fn auth() -> BoxedStrategy<Packet> {
    (
        v5_reason(PacketType::Auth),
        properties(PropertyContext::Packet(PacketType::Auth)),
    )
        .prop_map(|(reason, properties)| Packet::Auth(Auth { reason, properties }))
        .boxed()
}

/// A valid packet of type `t` for `protocol`.
pub fn packet(protocol: Protocol, t: PacketType) -> BoxedStrategy<Packet> {
    match t {
        PacketType::Connect => connect(protocol),
        PacketType::ConnAck => connack(protocol),
        PacketType::Publish => publish(protocol),
        PacketType::PubAck | PacketType::PubRec | PacketType::PubRel | PacketType::PubComp => {
            pub_response(protocol, t)
        }
        PacketType::Subscribe => subscribe(protocol),
        PacketType::SubAck => suback(protocol),
        PacketType::Unsubscribe => unsubscribe(protocol),
        PacketType::UnsubAck => unsuback(protocol),
        PacketType::PingReq => Just(Packet::PingReq).boxed(),
        PacketType::PingResp => Just(Packet::PingResp).boxed(),
        PacketType::Disconnect => disconnect(protocol),
        PacketType::Auth => {
            assert!(protocol.is_v5(), "AUTH exists only in MQTT 5");
            auth()
        }
    }
}

/// A valid packet of any type `protocol` has.
pub fn any_packet(protocol: Protocol) -> BoxedStrategy<Packet> {
    Union::new(
        packet_types(protocol)
            .into_iter()
            .map(|t| packet(protocol, t)),
    )
    .boxed()
}

pub fn any_protocol() -> impl Strategy<Value = Protocol> {
    select(super::ALL_PROTOCOLS.to_vec())
}
