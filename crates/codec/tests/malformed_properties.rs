//! MQTT 5 properties (5.0 section 2.2.2 and each packet's property
//! section): unknown identifiers, properties in the wrong packet, forbidden
//! duplicates, invalid values, and property lists that do not fit. Each
//! refused packet is built by hand and wrong in exactly one way.

mod common;

use common::*;
use ferrymq_codec::{Error, Packet, Protocol, ReasonCode};

const V5: Protocol = Protocol::V5;

/// A v5 CONNECT with these CONNECT properties and client id "c".
fn connect_with(property_bytes: &[u8]) -> Vec<u8> {
    raw(
        0x10,
        &connect_body(b"MQTT", 5, 0x02, &cat(&[&props(property_bytes), &s("c")])),
    )
}

/// A v5 CONNECT with a will carrying these Will properties.
fn connect_with_will(will_property_bytes: &[u8]) -> Vec<u8> {
    let payload = cat(&[
        &[0x00], // CONNECT Property Length 0
        &s("c"),
        &props(will_property_bytes),
        &s("w"),
        &s("x"),
    ]);
    raw(0x10, &connect_body(b"MQTT", 5, 0x06, &payload))
}

/// A v5 QoS 0 PUBLISH to "a/b" with these properties.
fn publish_with(property_bytes: &[u8]) -> Vec<u8> {
    raw(0x30, &cat(&[&s("a/b"), &props(property_bytes), b"hi"]))
}

/// A v5 SUBSCRIBE to "a/b" QoS 0 with these properties.
fn subscribe_with(property_bytes: &[u8]) -> Vec<u8> {
    raw(
        0x82,
        &cat(&[&[0x00, 0x01], &props(property_bytes), &s("a/b"), &[0x00]]),
    )
}

/// A v5 CONNACK (Success) with these properties.
fn connack_with(property_bytes: &[u8]) -> Vec<u8> {
    raw(0x20, &cat(&[&[0x00, 0x00], &props(property_bytes)]))
}

fn not_allowed(property: &'static str, context: &str) -> Error {
    Error::PropertyNotAllowed {
        property,
        context: context.to_string(),
    }
}

/// Section 2.2.2.2: an identifier not valid for the packet is malformed;
/// these identifiers are defined for no packet at all.
#[test]
fn s2_2_2_2_unknown_property_identifier() {
    for pid in [0x00, 0x04, 0x0A, 0x10, 0x14, 0x1B, 0x20, 0x2B, 0x7F] {
        let e = decode_err(&publish_with(&[pid, 0x00]), V5);
        assert_eq!(e, Error::UnknownProperty(pid));
        assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
    }
}

/// Section 2.2.2.2: "A Control Packet which contains an Identifier which
/// is not valid for its packet type ... is a Malformed Packet. If
/// received, use a CONNACK or DISCONNECT packet with Reason Code 0x81".
/// Regression: reason_code() answered 0x82 (Protocol Error).
#[test]
fn regression_s2_2_2_2_property_in_the_wrong_packet_is_malformed() {
    let cases = [
        (
            publish_with(&[0x11, 0x00, 0x00, 0x00, 0x0A]),
            not_allowed("Session Expiry Interval", "PUBLISH"),
        ),
        (
            connect_with(&[0x18, 0x00, 0x00, 0x00, 0x0A]),
            not_allowed("Will Delay Interval", "CONNECT"),
        ),
        (
            connect_with_will(&[0x23, 0x00, 0x01]),
            not_allowed("Topic Alias", "Will properties"),
        ),
        (
            subscribe_with(&[0x1F, 0x00, 0x01, b'x']),
            not_allowed("Reason String", "SUBSCRIBE"),
        ),
        (
            connect_with(&[0x24, 0x01]),
            not_allowed("Maximum QoS", "CONNECT"),
        ),
        (
            connack_with(&[0x17, 0x01]),
            not_allowed("Request Problem Information", "CONNACK"),
        ),
        (
            raw(0x90, &[0x00, 0x01, 0x02, 0x0B, 0x01, 0x00]),
            not_allowed("Subscription Identifier", "SUBACK"),
        ),
        (
            raw(0xA2, &cat(&[&[0x00, 0x01, 0x02, 0x0B, 0x01], &s("a")])),
            not_allowed("Subscription Identifier", "UNSUBSCRIBE"),
        ),
        (
            raw(0xE0, &[0x00, 0x03, 0x21, 0x00, 0x01]),
            not_allowed("Receive Maximum", "DISCONNECT"),
        ),
        (
            raw(0xF0, &[0x18, 0x05, 0x11, 0x00, 0x00, 0x00, 0x01]),
            not_allowed("Session Expiry Interval", "AUTH"),
        ),
        (
            raw(0x40, &[0x00, 0x01, 0x00, 0x02, 0x01, 0x01]),
            not_allowed("Payload Format Indicator", "PUBACK"),
        ),
    ];
    for (wire, expected) in cases {
        let e = decode_err(&wire, V5);
        assert_eq!(e, expected);
        assert_eq!(e.reason_code(), ReasonCode::MalformedPacket, "{expected}");
    }
}

/// "It is a Protocol Error to include the Session Expiry Interval more
/// than once" (3.1.2.11.2), and likewise for every property but User
/// Property and a PUBLISH's Subscription Identifiers.
#[test]
fn s3_1_2_11_2_duplicated_property() {
    let cases = [
        (
            connect_with(&[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2]),
            "Session Expiry Interval",
        ),
        (
            publish_with(&[0x23, 0x00, 0x01, 0x23, 0x00, 0x02]),
            "Topic Alias",
        ),
        (
            raw(
                0x40,
                &[0x00, 0x01, 0x80, 0x08, 0x1F, 0, 1, b'x', 0x1F, 0, 1, b'y'],
            ),
            "Reason String",
        ),
        (
            connect_with_will(&[0x03, 0, 1, b'a', 0x03, 0, 1, b'b']),
            "Content Type",
        ),
        (connack_with(&[0x24, 0x00, 0x24, 0x01]), "Maximum QoS"),
        (
            connect_with(&[0x15, 0, 1, b'm', 0x15, 0, 1, b'n']),
            "Authentication Method",
        ),
    ];
    for (wire, property) in cases {
        let e = decode_err(&wire, V5);
        assert_eq!(e, Error::DuplicateProperty(property));
        assert_eq!(e.reason_code(), ReasonCode::ProtocolError);
    }
}

/// 5.0 section 3.8.2.1.2: "It is a Protocol Error to include the
/// Subscription Identifier more than once" in SUBSCRIBE; a PUBLISH may
/// carry several (section 3.3.2.3.8).
#[test]
fn s3_8_2_1_2_subscription_identifier_repeated_in_subscribe() {
    let e = decode_err(&subscribe_with(&[0x0B, 0x01, 0x0B, 0x02]), V5);
    assert_eq!(e, Error::DuplicateProperty("Subscription Identifier"));
    assert_eq!(e.reason_code(), ReasonCode::ProtocolError);

    let Packet::Publish(p) = decode_one(&publish_with(&[0x0B, 0x01, 0x0B, 0x02]), V5).unwrap()
    else {
        panic!("not a PUBLISH")
    };
    assert_eq!(
        p.properties.subscription_identifiers().collect::<Vec<_>>(),
        [1, 2]
    );
}

/// 5.0 section 3.8.2.1.2: "It is a Protocol Error if the Subscription
/// Identifier has a value of 0."
#[test]
fn s3_8_2_1_2_subscription_identifier_0() {
    for wire in [subscribe_with(&[0x0B, 0x00]), publish_with(&[0x0B, 0x00])] {
        let e = decode_err(&wire, V5);
        assert_eq!(e, Error::InvalidPropertyValue("Subscription Identifier"));
        assert_eq!(e.reason_code(), ReasonCode::ProtocolError);
    }
    // An over-long Variable Byte Integer is malformed, not zero.
    assert_eq!(
        decode_err(&subscribe_with(&[0x0B, 0x80, 0x00]), V5),
        Error::MalformedVarint
    );
}

/// 5.0 sections 3.1.2.11.3 and 3.2.2.3.3: "It is a Protocol Error to
/// include the Receive Maximum value more than once or for it to have the
/// value 0."
#[test]
fn s3_1_2_11_3_receive_maximum_0() {
    for wire in [
        connect_with(&[0x21, 0x00, 0x00]),
        connack_with(&[0x21, 0x00, 0x00]),
    ] {
        let e = decode_err(&wire, V5);
        assert_eq!(e, Error::InvalidPropertyValue("Receive Maximum"));
        assert_eq!(e.reason_code(), ReasonCode::ProtocolError);
    }
}

/// 5.0 sections 3.1.2.11.4 and 3.2.2.3.6: "It is a Protocol Error to
/// include the Maximum Packet Size more than once, or for the value to be
/// set to zero."
#[test]
fn s3_1_2_11_4_maximum_packet_size_0() {
    for wire in [
        connect_with(&[0x27, 0, 0, 0, 0]),
        connack_with(&[0x27, 0, 0, 0, 0]),
    ] {
        let e = decode_err(&wire, V5);
        assert_eq!(e, Error::InvalidPropertyValue("Maximum Packet Size"));
        assert_eq!(e.reason_code(), ReasonCode::ProtocolError);
    }
}

/// 5.0 [MQTT-3.3.2-8]: "A Topic Alias of 0 is not permitted."
#[test]
fn s3_3_2_3_4_topic_alias_0() {
    for topic in ["a/b", ""] {
        let wire = raw(0x30, &cat(&[&s(topic), &props(&[0x23, 0x00, 0x00])]));
        let e = decode_err(&wire, V5);
        assert_eq!(e, Error::TopicAliasZero);
        assert_eq!(e.reason_code(), ReasonCode::TopicAliasInvalid);
        assert_eq!(e.reason_code() as u8, 0x94);
    }
}

/// 5.0 sections 3.1.2.11.10, 3.2.2.3.18 and 3.15.2.2.3: "It is a Protocol
/// Error to include Authentication Data if there is no Authentication
/// Method."
#[test]
fn s3_15_2_2_3_authentication_data_without_method() {
    let data = [0x16, 0x00, 0x01, 0xAA];
    for wire in [
        connect_with(&data),
        connack_with(&data),
        raw(0xF0, &cat(&[&[0x18], &props(&data)])),
    ] {
        let e = decode_err(&wire, V5);
        assert_eq!(e, Error::AuthDataWithoutMethod);
        assert_eq!(e.reason_code(), ReasonCode::ProtocolError);
    }
    // With the method, in either order, it is fine.
    let method_after = [0x16, 0x00, 0x01, 0xAA, 0x15, 0x00, 0x01, b'm'];
    assert!(decode_one(&connect_with(&method_after), V5).is_ok());
}

/// Properties whose value is one byte, 0 or 1: "It is a Protocol Error
/// ... to have a value other than 0 or 1" (3.1.2.11.7, 3.1.2.11.6,
/// 3.2.2.3.4, 3.2.2.3.5, 3.2.2.3.11 to 3.2.2.3.13; 3.3.2.3.2 for the
/// Payload Format Indicator).
#[test]
fn s3_2_2_3_flag_properties_other_than_0_or_1() {
    let cases = [
        (connect_with(&[0x17, 0x02]), "Request Problem Information"),
        (connect_with(&[0x19, 0x02]), "Request Response Information"),
        (connack_with(&[0x24, 0x02]), "Maximum QoS"),
        (connack_with(&[0x25, 0x02]), "Retain Available"),
        (
            connack_with(&[0x28, 0x02]),
            "Wildcard Subscription Available",
        ),
        (
            connack_with(&[0x29, 0xFF]),
            "Subscription Identifier Available",
        ),
        (connack_with(&[0x2A, 0x02]), "Shared Subscription Available"),
        (publish_with(&[0x01, 0x02]), "Payload Format Indicator"),
        (connect_with_will(&[0x01, 0x02]), "Payload Format Indicator"),
    ];
    for (wire, property) in cases {
        let e = decode_err(&wire, V5);
        assert_eq!(e, Error::InvalidPropertyValue(property));
        assert_eq!(e.reason_code(), ReasonCode::ProtocolError);
    }
}

/// 5.0 [MQTT-3.3.2-14]: the Response Topic is a topic name: no wildcards,
/// not empty.
#[test]
fn s3_3_2_3_5_response_topic_must_be_a_topic_name() {
    for topic in [&b"a/+"[..], b"#", b""] {
        let mut response_topic = vec![0x08];
        response_topic.extend(bin(topic));
        for wire in [
            publish_with(&response_topic),
            connect_with_will(&response_topic),
        ] {
            let e = decode_err(&wire, V5);
            assert!(matches!(e, Error::InvalidTopicName(_)), "{topic:?}: {e:?}");
        }
    }
}

/// Strings inside properties follow section 1.5.4 like any other.
#[test]
fn s1_5_4_bad_strings_in_properties() {
    let cases = [
        (&[0x26, 0, 1, 0xFF, 0, 1, b'v'][..], Error::InvalidUtf8),
        (&[0x26, 0, 1, b'k', 0, 1, 0x00], Error::NullCharacter),
        (&[0x03, 0, 3, 0xED, 0xA0, 0x80], Error::InvalidUtf8),
    ];
    for (property_bytes, expected) in cases {
        let e = decode_err(&publish_with(property_bytes), V5);
        assert_eq!(e, expected);
        assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
    }
}

/// A property list that does not fit: its length runs past the packet, a
/// value runs past the list, or the length is malformed.
#[test]
fn s2_2_2_1_property_length_does_not_fit() {
    // Property Length 10, 3 bytes left.
    let wire = raw(0x30, &cat(&[&s("a/b"), &[0x0A, 0x23, 0x00, 0x01]]));
    assert_eq!(decode_err(&wire, V5), Error::UnexpectedEnd);
    // Property Length 2 holds only part of a Topic Alias.
    let wire = raw(0x30, &cat(&[&s("a/b"), &[0x02, 0x23, 0x00, 0x01]]));
    assert_eq!(decode_err(&wire, V5), Error::UnexpectedEnd);
    // A user property whose value is missing.
    let wire = raw(0x30, &cat(&[&s("a/b"), &props(&[0x26, 0, 1, b'k'])]));
    assert_eq!(decode_err(&wire, V5), Error::UnexpectedEnd);
    // Over-long Property Length.
    let wire = raw(0x30, &cat(&[&s("a/b"), &[0x80, 0x00]]));
    assert_eq!(decode_err(&wire, V5), Error::MalformedVarint);
    // A CONNACK without its Property Length.
    assert_eq!(
        decode_err(&[0x20, 0x02, 0x00, 0x00], V5),
        Error::UnexpectedEnd
    );
}

/// 5.0 section 3.1.2.11.8: "The User Property is allowed to appear
/// multiple times to represent multiple name, value pairs. The same name
/// is allowed to appear more than once."
#[test]
fn s3_1_2_11_8_user_property_repeats_in_order() {
    let list = [
        0x26, 0, 1, b'k', 0, 1, b'2', // k=2
        0x26, 0, 1, b'a', 0, 1, b'1', // a=1
        0x26, 0, 1, b'k', 0, 1, b'1', // k=1
    ];
    let Packet::Connect(c) = decode_one(&connect_with(&list), V5).unwrap() else {
        panic!("not a CONNECT")
    };
    let pairs: Vec<(&str, &str)> = c
        .properties
        .user_properties()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(pairs, [("k", "2"), ("a", "1"), ("k", "1")]);
}
