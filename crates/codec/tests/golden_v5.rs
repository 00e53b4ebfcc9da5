//! MQTT 5.0 byte vectors, written by hand from the standard's examples and
//! field tables (habit 2, habit 10). Each vector is decoded and its fields
//! checked, and the expected packet is encoded back to exactly these bytes;
//! vectors our encoder would write more briefly are decode-only. Test names
//! follow the 5.0 section numbers.

mod common;

use common::build::*;
use common::{assert_golden, decode_one, encode_vec};
use ferrymq_codec::*;

const V5: Protocol = Protocol::V5;

/// 5.0 section 3.1.2.12 (CONNECT variable header example):
/// 00 04 'M' 'Q' 'T' 'T' 05 CE 00 0A, then properties 05 11 00 00 00 0A
/// (Session Expiry Interval 10); the payload is ours, with a Will Delay
/// Interval of 60 among the will properties.
#[test]
fn s3_1_2_connect_variable_header_example() {
    let wire = [
        0x10, 0x33, // CONNECT, Remaining Length 51
        0x00, 0x04, b'M', b'Q', b'T', b'T', // Protocol Name
        0x05, // Protocol Version 5
        0xCE, // Connect Flags 1100 1110
        0x00, 0x0A, // Keep Alive 10
        0x05, 0x11, 0x00, 0x00, 0x00, 0x0A, // Session Expiry Interval 10
        0x00, 0x05, b'f', b'e', b'r', b'r', b'y', // Client Identifier
        0x05, 0x18, 0x00, 0x00, 0x00, 0x3C, // Will Delay Interval 60
        0x00, 0x03, b'a', b'/', b'b', // Will Topic
        0x00, 0x03, b'b', b'y', b'e', // Will Payload
        0x00, 0x04, b'u', b's', b'e', b'r', // User Name
        0x00, 0x04, b'p', b'a', b's', b's', // Password
    ];
    let Packet::Connect(c) = decode_one(&wire, V5).unwrap() else {
        panic!("not a CONNECT")
    };
    assert_eq!(c.protocol, Protocol::V5);
    assert_eq!(c.keep_alive, 10);
    assert_eq!(c.properties.session_expiry_interval(), Some(10));
    assert_eq!(
        c.will.as_ref().unwrap().properties.will_delay_interval(),
        Some(60)
    );

    let expected = Packet::Connect(Box::new(Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 10,
        properties: Properties(vec![Property::SessionExpiryInterval(10)]),
        client_id: ms("ferry"),
        will: Some(Will {
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties(vec![Property::WillDelayInterval(60)]),
            topic: topic("a/b"),
            payload: b(b"bye"),
        }),
        username: Some(ms("user")),
        password: Some(b(b"pass")),
    }));
    assert_golden(V5, &wire, &expected);
}

/// 5.0 section 3.2: Session Present, reason code, properties.
#[test]
fn s3_2_connack() {
    let plain = Packet::ConnAck(ConnAck {
        session_present: false,
        reason: ReasonCode::Success,
        properties: Properties::new(),
    });
    assert_golden(V5, &[0x20, 0x03, 0x00, 0x00, 0x00], &plain);

    let wire = [
        0x20, 0x09, // CONNACK, Remaining Length 9
        0x01, // Session Present
        0x00, // Success
        0x06, // Property Length 6
        0x21, 0x00, 0x14, // Receive Maximum 20
        0x22, 0x00, 0x0A, // Topic Alias Maximum 10
    ];
    let resumed = Packet::ConnAck(ConnAck {
        session_present: true,
        reason: ReasonCode::Success,
        properties: Properties(vec![
            Property::ReceiveMaximum(20),
            Property::TopicAliasMaximum(10),
        ]),
    });
    assert_golden(V5, &wire, &resumed);

    let refused = Packet::ConnAck(ConnAck {
        session_present: false,
        reason: ReasonCode::NotAuthorized,
        properties: Properties::new(),
    });
    assert_golden(V5, &[0x20, 0x03, 0x00, 0x87, 0x00], &refused);
}

fn publish(topic_name: &str, props: Vec<Property>, payload: &'static [u8]) -> Publish {
    Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: topic(topic_name),
        packet_id: None,
        properties: Properties(props),
        payload: b(payload),
    }
}

/// 5.0 section 3.3.2.3 (PUBLISH variable header example): topic "a/b",
/// packet identifier 10, no properties.
#[test]
fn s3_3_2_publish_variable_header_example() {
    let wire = [
        0x32, 0x0A, // PUBLISH, QoS 1, Remaining Length 10
        0x00, 0x03, b'a', b'/', b'b', // Topic Name
        0x00, 0x0A, // Packet Identifier 10
        0x00, // Property Length 0
        b'h', b'i', // Payload
    ];
    let expected = Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        packet_id: Some(pid(10)),
        ..publish("a/b", vec![], b"hi")
    });
    assert_golden(V5, &wire, &expected);
}

/// 5.0 section 3.3.2.3: a zero-length topic with a Topic Alias.
#[test]
fn s3_3_2_3_4_publish_with_topic_alias_and_empty_topic() {
    let wire = [
        0x30, 0x08, // PUBLISH QoS 0, Remaining Length 8
        0x00, 0x00, // Topic Name ""
        0x03, 0x23, 0x00, 0x05, // Topic Alias 5
        b'h', b'i',
    ];
    let Packet::Publish(p) = decode_one(&wire, V5).unwrap() else {
        panic!("not a PUBLISH")
    };
    assert!(p.topic.is_empty());
    assert_eq!(p.properties.topic_alias(), Some(5));
    let expected = publish("", vec![Property::TopicAlias(5)], b"hi");
    assert_golden(V5, &wire, &Packet::Publish(expected));
}

/// 5.0 section 3.3.2.3: Payload Format Indicator, a User Property, and two
/// Subscription Identifiers (1 and 128, a two-byte Variable Byte Integer).
#[test]
fn s3_3_2_3_publish_properties() {
    let wire = [
        0x31, 0x16, // PUBLISH QoS 0 RETAIN, Remaining Length 22
        0x00, 0x03, b'a', b'/', b'b', // Topic Name
        0x0E, // Property Length 14
        0x01, 0x01, // Payload Format Indicator: UTF-8
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // User Property k=v
        0x0B, 0x01, // Subscription Identifier 1
        0x0B, 0x80, 0x01, // Subscription Identifier 128
        b'h', b'i',
    ];
    let expected = Publish {
        retain: true,
        ..publish(
            "a/b",
            vec![
                Property::PayloadFormatIndicator(1),
                Property::UserProperty(ms("k"), ms("v")),
                Property::SubscriptionIdentifier(1),
                Property::SubscriptionIdentifier(128),
            ],
            b"hi",
        )
    };
    let decoded = decode_one(&wire, V5).unwrap();
    let Packet::Publish(p) = &decoded else {
        panic!("not a PUBLISH")
    };
    assert_eq!(
        p.properties.subscription_identifiers().collect::<Vec<_>>(),
        [1, 128]
    );
    assert_golden(V5, &wire, &Packet::Publish(expected));
}

/// 5.0 section 3.4.2.1: "The Reason Code and Property Length can be
/// omitted if the Reason Code is 0x00 (Success) and there are no
/// Properties. In this case the PUBACK has a Remaining Length of 2."
#[test]
fn s3_4_2_1_puback_remaining_length_2_means_success() {
    let expected = Packet::PubAck(PubResponse::new(pid(10)));
    assert_golden(V5, &[0x40, 0x02, 0x00, 0x0A], &expected);
    // Written out in full, the same packet.
    assert_eq!(
        decode_one(&[0x40, 0x04, 0x00, 0x0A, 0x00, 0x00], V5).unwrap(),
        expected
    );
    // A reason code without a Property Length means no properties
    // (section 3.4.2.2.1).
    assert_eq!(
        decode_one(&[0x40, 0x03, 0x00, 0x0A, 0x00], V5).unwrap(),
        expected
    );
}

#[test]
fn s3_4_to_3_7_publish_responses_with_reasons() {
    let with = |reason, props: Vec<Property>| PubResponse {
        packet_id: pid(10),
        reason,
        properties: Properties(props),
    };
    assert_golden(
        V5,
        &[0x40, 0x03, 0x00, 0x0A, 0x10],
        &Packet::PubAck(with(ReasonCode::NoMatchingSubscribers, vec![])),
    );
    assert_golden(
        V5,
        &[0x50, 0x08, 0x00, 0x0A, 0x80, 0x04, 0x1F, 0x00, 0x01, b'x'],
        &Packet::PubRec(with(
            ReasonCode::UnspecifiedError,
            vec![Property::ReasonString(ms("x"))],
        )),
    );
    assert_golden(
        V5,
        &[0x62, 0x03, 0x00, 0x0A, 0x92],
        &Packet::PubRel(with(ReasonCode::PacketIdentifierNotFound, vec![])),
    );
    assert_golden(
        V5,
        &[0x70, 0x02, 0x00, 0x0A],
        &Packet::PubComp(with(ReasonCode::Success, vec![])),
    );
}

/// 5.0 sections 3.8.2 and 3.8.3: packet identifier 10, no properties,
/// "a/b" with options 0x01 and "c/d" with options 0x02.
#[test]
fn s3_8_subscribe_payload_example() {
    let wire = [
        0x82, 0x0F, // SUBSCRIBE, Remaining Length 15
        0x00, 0x0A, // Packet Identifier 10
        0x00, // Property Length 0
        0x00, 0x03, b'a', b'/', b'b', 0x01, // "a/b", QoS 1
        0x00, 0x03, b'c', b'/', b'd', 0x02, // "c/d", QoS 2
    ];
    let expected = Packet::Subscribe(Subscribe {
        packet_id: pid(10),
        properties: Properties::new(),
        filters: vec![
            (filter("a/b"), SubscriptionOptions::qos(QoS::AtLeastOnce)),
            (filter("c/d"), SubscriptionOptions::qos(QoS::ExactlyOnce)),
        ],
    });
    assert_golden(V5, &wire, &expected);
}

/// 5.0 figure 3-22 (subscription options byte): bits 0-1 QoS, bit 2 No
/// Local, bit 3 Retain As Published, bits 4-5 Retain Handling.
#[test]
fn s3_8_3_1_subscription_options_byte() {
    let wire = [
        0x82, 0x0B, // SUBSCRIBE, Remaining Length 11
        0x00, 0x0B, // Packet Identifier 11
        0x02, 0x0B, 0x05, // Subscription Identifier 5
        0x00, 0x03, b'a', b'/', b'#', // "a/#"
        0x2D, // 00 10 1 1 01: Retain Handling 2, RAP, No Local, QoS 1
    ];
    let expected = Packet::Subscribe(Subscribe {
        packet_id: pid(11),
        properties: Properties(vec![Property::SubscriptionIdentifier(5)]),
        filters: vec![(
            filter("a/#"),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            },
        )],
    });
    assert_golden(V5, &wire, &expected);
}

#[test]
fn s3_9_suback() {
    let wire = [0x90, 0x06, 0x00, 0x0A, 0x00, 0x00, 0x02, 0x80];
    let expected = Packet::SubAck(SubAck {
        packet_id: pid(10),
        properties: Properties::new(),
        reasons: vec![
            ReasonCode::GRANTED_QOS0,
            ReasonCode::GrantedQoS2,
            ReasonCode::UnspecifiedError,
        ],
    });
    assert_golden(V5, &wire, &expected);
}

#[test]
fn s3_10_unsubscribe_payload_example() {
    let wire = [
        0xA2, 0x0D, // UNSUBSCRIBE, Remaining Length 13
        0x00, 0x0A, // Packet Identifier 10
        0x00, // Property Length 0
        0x00, 0x03, b'a', b'/', b'b', // "a/b"
        0x00, 0x03, b'c', b'/', b'd', // "c/d"
    ];
    let expected = Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(10),
        properties: Properties::new(),
        filters: vec![filter("a/b"), filter("c/d")],
    });
    assert_golden(V5, &wire, &expected);
}

#[test]
fn s3_11_unsuback() {
    let wire = [0xB0, 0x05, 0x00, 0x0A, 0x00, 0x00, 0x11];
    let expected = Packet::UnsubAck(UnsubAck {
        packet_id: pid(10),
        properties: Properties::new(),
        reasons: vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted],
    });
    assert_golden(V5, &wire, &expected);
}

#[test]
fn s3_12_s3_13_ping() {
    assert_golden(V5, &[0xC0, 0x00], &Packet::PingReq);
    assert_golden(V5, &[0xD0, 0x00], &Packet::PingResp);
}

/// 5.0 section 3.14: E0 00 is a normal disconnection; the variable header
/// example (reason 0x00, property length 0) means the same.
#[test]
fn s3_14_disconnect_normal() {
    let normal = Packet::Disconnect(Disconnect::default());
    assert_golden(V5, &[0xE0, 0x00], &normal);
    assert_eq!(decode_one(&[0xE0, 0x02, 0x00, 0x00], V5).unwrap(), normal);
    assert_eq!(decode_one(&[0xE0, 0x01, 0x00], V5).unwrap(), normal);
    assert_eq!(encode_vec(&normal, V5), [0xE0, 0x00]);
}

/// 5.0 section 3.14.2.1: DISCONNECT with a reason code, and with
/// properties.
#[test]
fn s3_14_2_disconnect_with_reason() {
    let taken_over = Packet::Disconnect(Disconnect {
        reason: ReasonCode::SessionTakenOver,
        properties: Properties::new(),
    });
    assert_golden(V5, &[0xE0, 0x01, 0x8E], &taken_over);

    let with_will = Packet::Disconnect(Disconnect {
        reason: ReasonCode::DisconnectWithWillMessage,
        properties: Properties::new(),
    });
    assert_golden(V5, &[0xE0, 0x01, 0x04], &with_will);

    let moved = Packet::Disconnect(Disconnect {
        reason: ReasonCode::UseAnotherServer,
        properties: Properties(vec![Property::ServerReference(ms("x"))]),
    });
    assert_golden(
        V5,
        &[0xE0, 0x06, 0x9C, 0x04, 0x1C, 0x00, 0x01, b'x'],
        &moved,
    );

    let expiry = Packet::Disconnect(Disconnect {
        reason: ReasonCode::Success,
        properties: Properties(vec![Property::SessionExpiryInterval(0)]),
    });
    assert_golden(
        V5,
        &[0xE0, 0x07, 0x00, 0x05, 0x11, 0x00, 0x00, 0x00, 0x00],
        &expiry,
    );
}

/// 5.0 section 3.15: AUTH with Remaining Length 0 is Success; Continue
/// Authentication carries the method and data.
#[test]
fn s3_15_auth() {
    assert_golden(V5, &[0xF0, 0x00], &Packet::Auth(Auth::default()));
    let wire = [
        0xF0, 0x0F, // AUTH, Remaining Length 15
        0x18, // Continue authentication
        0x0D, // Property Length 13
        0x15, 0x00, 0x05, b'S', b'C', b'R', b'A', b'M', // Authentication Method
        0x16, 0x00, 0x02, 0x01, 0x02, // Authentication Data
    ];
    let expected = Packet::Auth(Auth {
        reason: ReasonCode::ContinueAuthentication,
        properties: Properties(vec![
            Property::AuthenticationMethod(ms("SCRAM")),
            Property::AuthenticationData(b(&[0x01, 0x02])),
        ]),
    });
    assert_golden(V5, &wire, &expected);
}

/// 5.0 section 1.5.5: a Subscription Identifier is a Variable Byte
/// Integer; its largest value takes four bytes.
#[test]
fn s1_5_5_largest_subscription_identifier() {
    let wire = [
        0x82, 0x0C, 0x00, 0x01, // SUBSCRIBE, packet identifier 1
        0x05, 0x0B, 0xFF, 0xFF, 0xFF, 0x7F, // Subscription Identifier 268,435,455
        0x00, 0x01, b'#', 0x00, // "#", QoS 0
    ];
    let expected = Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: Properties(vec![Property::SubscriptionIdentifier(268_435_455)]),
        filters: vec![(filter("#"), SubscriptionOptions::default())],
    });
    assert_golden(V5, &wire, &expected);
}
