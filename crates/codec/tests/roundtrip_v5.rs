//! decode ∘ encode = identity for every packet type of MQTT 5.0 (habit 2),
//! with arbitrary valid property lists: only properties allowed in the
//! packet, no forbidden duplicates, valid values, user properties in any
//! order, several Subscription Identifiers in PUBLISH, multibyte strings.

mod common;

use common::check_round_trip;
use common::strategies::{packet, properties, ALL_PROPERTY_IDS};
use ferrymq_codec::packet::PacketType;
use ferrymq_codec::property::{allowed_in, PropertyContext};
use ferrymq_codec::{Packet, Property, Protocol};
use proptest::prelude::*;

const V5: Protocol = Protocol::V5;

macro_rules! round_trips {
    ($($name:ident: $t:ident,)*) => {
        proptest! {
            $(
                #[test]
                fn $name(p in packet(V5, PacketType::$t)) {
                    check_round_trip(&p, V5)?;
                }
            )*
        }
    };
}

round_trips! {
    connect: Connect,
    connack: ConnAck,
    publish: Publish,
    puback: PubAck,
    pubrec: PubRec,
    pubrel: PubRel,
    pubcomp: PubComp,
    subscribe: Subscribe,
    suback: SubAck,
    unsubscribe: Unsubscribe,
    unsuback: UnsubAck,
    pingreq: PingReq,
    pingresp: PingResp,
    disconnect: Disconnect,
    auth: Auth,
}

/// Every property context, Will properties included.
fn contexts() -> Vec<PropertyContext> {
    let mut all: Vec<_> = [
        PacketType::Connect,
        PacketType::ConnAck,
        PacketType::Publish,
        PacketType::PubAck,
        PacketType::PubRec,
        PacketType::PubRel,
        PacketType::PubComp,
        PacketType::Subscribe,
        PacketType::SubAck,
        PacketType::Unsubscribe,
        PacketType::UnsubAck,
        PacketType::Disconnect,
        PacketType::Auth,
    ]
    .into_iter()
    .map(PropertyContext::Packet)
    .collect();
    all.push(PropertyContext::Will);
    all
}

proptest! {
    /// The property strategy honours the rules it claims to: allowed
    /// properties only, no duplicates but the repeatable ones, Authentication
    /// Data only with an Authentication Method.
    #[test]
    fn property_lists_are_valid(
        (context, props) in proptest::sample::select(contexts())
            .prop_flat_map(|c| (Just(c), properties(c)))
    ) {
        let mut seen = Vec::new();
        for p in &props {
            let pid = p.id();
            prop_assert!(ALL_PROPERTY_IDS.contains(&pid));
            prop_assert!(allowed_in(pid, context), "{pid:#04x} in {context}");
            let repeatable = matches!(p, Property::UserProperty(..))
                || (matches!(p, Property::SubscriptionIdentifier(_))
                    && context == PropertyContext::Packet(PacketType::Publish));
            prop_assert!(repeatable || !seen.contains(&pid), "{pid:#04x} twice");
            seen.push(pid);
        }
        if props.authentication_data().is_some() {
            prop_assert!(props.authentication_method().is_some());
        }
    }

    /// Several Subscription Identifiers in one PUBLISH come back in order
    /// ([MQTT-3.3.4-4]), interleaved with user properties whose order is
    /// kept too ([MQTT-3.3.2-18]).
    #[test]
    fn publish_keeps_property_order(
        ids in proptest::collection::vec(1u32..=268_435_455, 2..5),
        users in proptest::collection::vec(
            (common::strategies::mqtt_string(), common::strategies::mqtt_string()), 2..5),
        p in packet(V5, PacketType::Publish),
    ) {
        let Packet::Publish(mut publish) = p else { unreachable!() };
        publish.properties.remove(ferrymq_codec::property::id::SUBSCRIPTION_IDENTIFIER);
        publish.properties.remove(ferrymq_codec::property::id::USER_PROPERTY);
        for (i, (k, v)) in users.into_iter().enumerate() {
            publish.properties.push(Property::UserProperty(k, v));
            if let Some(&id) = ids.get(i) {
                publish.properties.push(Property::SubscriptionIdentifier(id));
            }
        }
        let packet = Packet::Publish(publish);
        check_round_trip(&packet, V5)?;
        let Packet::Publish(back) = common::decode_one(&common::encode_vec(&packet, V5), V5).unwrap()
        else { unreachable!() };
        let n = back.properties.subscription_identifiers().count();
        prop_assert_eq!(back.properties.subscription_identifiers().collect::<Vec<_>>(),
            ids[..n].to_vec());
    }
}

proptest! {
    /// A PUBLISH encoded from borrowed parts is the same bytes as the
    /// packet it borrows from, for both protocol versions.
    #[test]
    fn a_borrowed_publish_encodes_as_the_packet(
        p in packet(V5, PacketType::Publish),
        v5 in proptest::bool::ANY,
    ) {
        let Packet::Publish(publish) = &p else {
            unreachable!()
        };
        let protocol = if v5 { V5 } else { Protocol::V3_1_1 };
        let (mut whole, mut parts) = (bytes::BytesMut::new(), bytes::BytesMut::new());
        let a = ferrymq_codec::encode(&p, protocol, &mut whole);
        let b = ferrymq_codec::encode_publish(&publish.borrowed(), protocol, &mut parts);
        prop_assert_eq!(a.is_ok(), b.is_ok());
        prop_assert_eq!(whole, parts);
    }
}
