//! MQTT 3.1 and 3.1.1 byte vectors, written by hand from the standards'
//! examples and field tables (habit 2, habit 10). Each vector is decoded
//! and its fields checked, and the expected packet is encoded back to
//! exactly these bytes. Test names follow the 3.1.1 section numbers.

mod common;

use common::build::*;
use common::{assert_golden, decode_one};
use ferrymq_codec::*;

const V311: Protocol = Protocol::V3_1_1;
const V31: Protocol = Protocol::V3_1;

/// The payload used with the CONNECT examples' flags 0xCE (user name,
/// password, will QoS 1, will flag, clean session): client id "ferry",
/// will topic "a/b", will message "bye", user "user", password "pass".
const CONNECT_PAYLOAD: [u8; 29] = [
    0x00, 0x05, b'f', b'e', b'r', b'r', b'y', // Client Identifier
    0x00, 0x03, b'a', b'/', b'b', // Will Topic
    0x00, 0x03, b'b', b'y', b'e', // Will Message
    0x00, 0x04, b'u', b's', b'e', b'r', // User Name
    0x00, 0x04, b'p', b'a', b's', b's', // Password
];

fn example_connect(protocol: Protocol) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol,
        clean_start: true,
        keep_alive: 10,
        properties: Properties::new(),
        client_id: ms("ferry"),
        will: Some(Will {
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties::new(),
            topic: topic("a/b"),
            payload: b(b"bye"),
        }),
        username: Some(ms("user")),
        password: Some(b(b"pass")),
    }))
}

/// 3.1.1 figure 3.6, the CONNECT variable header example:
/// 00 04 'M' 'Q' 'T' 'T' 04 CE 00 0A.
#[test]
fn s3_1_2_10_connect_variable_header_example() {
    let mut wire = vec![
        0x10, 0x27, // CONNECT, Remaining Length 39
        0x00, 0x04, b'M', b'Q', b'T', b'T', // Protocol Name
        0x04, // Protocol Level 4
        0xCE, // Connect Flags 1100 1110
        0x00, 0x0A, // Keep Alive 10
    ];
    wire.extend_from_slice(&CONNECT_PAYLOAD);

    let Packet::Connect(c) = decode_one(&wire, V311).unwrap() else {
        panic!("not a CONNECT")
    };
    assert_eq!(c.protocol, Protocol::V3_1_1);
    assert!(c.clean_start);
    assert_eq!(c.keep_alive, 10);
    let will = c.will.as_ref().unwrap();
    assert_eq!((will.qos, will.retain), (QoS::AtLeastOnce, false));
    assert_eq!(will.topic.as_str(), "a/b");
    assert_eq!(&will.payload[..], b"bye");
    assert_eq!(c.client_id.as_str(), "ferry");
    assert_eq!(c.username.as_deref(), Some("user"));
    assert_eq!(c.password.as_deref(), Some(&b"pass"[..]));

    assert_golden(V311, &wire, &example_connect(Protocol::V3_1_1));
}

/// The smallest CONNECT: clean session, zero-length client id
/// ([MQTT-3.1.3-6]), no will, no credentials.
#[test]
fn s3_1_3_connect_with_empty_client_id() {
    let wire = [
        0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x00,
    ];
    let expected = Packet::Connect(Box::new(Connect {
        protocol: V311,
        clean_start: true,
        keep_alive: 60,
        properties: Properties::new(),
        client_id: ms(""),
        will: None,
        username: None,
        password: None,
    }));
    assert_golden(V311, &wire, &expected);
}

/// A CONNECT names its own version: the same bytes decode the same way
/// whatever the connection's protocol is still set to.
#[test]
fn s3_1_2_connect_names_its_own_version() {
    let mut wire = vec![
        0x10, 0x27, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xCE, 0x00, 0x0A,
    ];
    wire.extend_from_slice(&CONNECT_PAYLOAD);
    for protocol in common::ALL_PROTOCOLS {
        assert_eq!(
            decode_one(&wire, protocol).unwrap(),
            example_connect(V311),
            "{protocol}"
        );
    }
}

/// MQTT 3.1: protocol name "MQIsdp", version 3, and the 3.1 specification's
/// own example flags (0xCE) and keep alive (10).
#[test]
fn mqtt_3_1_connect_mqisdp_level_3() {
    let mut wire = vec![
        0x10, 0x29, // CONNECT, Remaining Length 41
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', // Protocol Name
        0x03, // Protocol Version 3
        0xCE, // Connect Flags
        0x00, 0x0A, // Keep Alive 10
    ];
    wire.extend_from_slice(&CONNECT_PAYLOAD);
    let Packet::Connect(c) = decode_one(&wire, V31).unwrap() else {
        panic!("not a CONNECT")
    };
    assert_eq!(c.protocol, Protocol::V3_1);
    assert_golden(V31, &wire, &example_connect(Protocol::V3_1));
}

/// 3.1.1 table 3.1: the six CONNACK return codes, and Session Present.
#[test]
fn s3_2_2_connack_return_codes() {
    let table = [
        (0x00, ReasonCode::Success),
        (0x01, ReasonCode::UnsupportedProtocolVersion),
        (0x02, ReasonCode::ClientIdentifierNotValid),
        (0x03, ReasonCode::ServerUnavailable),
        (0x04, ReasonCode::BadUserNameOrPassword),
        (0x05, ReasonCode::NotAuthorized),
    ];
    for (code, reason) in table {
        let expected = Packet::ConnAck(ConnAck {
            session_present: false,
            reason,
            properties: Properties::new(),
        });
        assert_golden(V311, &[0x20, 0x02, 0x00, code], &expected);
        assert_golden(V31, &[0x20, 0x02, 0x00, code], &expected);
    }
    let resumed = Packet::ConnAck(ConnAck {
        session_present: true,
        reason: ReasonCode::Success,
        properties: Properties::new(),
    });
    assert_golden(V311, &[0x20, 0x02, 0x01, 0x00], &resumed);
}

/// 3.1.1 figure 3.11: topic "a/b", packet identifier 10.
#[test]
fn s3_3_2_publish_variable_header_example() {
    let wire = [
        0x32, 0x09, // PUBLISH, QoS 1, Remaining Length 9
        0x00, 0x03, b'a', b'/', b'b', // Topic Name
        0x00, 0x0A, // Packet Identifier 10
        b'h', b'i', // Payload
    ];
    let expected = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic("a/b"),
        packet_id: Some(pid(10)),
        properties: Properties::new(),
        payload: b(b"hi"),
    });
    assert_golden(V311, &wire, &expected);
    assert_golden(V31, &wire, &expected);
}

/// 3.1.1 section 3.3.1: DUP bit 3, QoS bits 2-1, RETAIN bit 0; a QoS 0
/// PUBLISH has no packet identifier; the payload may be empty.
#[test]
fn s3_3_1_publish_fixed_header_flags() {
    let qos0_retained = [0x31, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'];
    let expected = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: true,
        topic: topic("a/b"),
        packet_id: None,
        properties: Properties::new(),
        payload: b(b"hi"),
    });
    assert_golden(V311, &qos0_retained, &expected);

    let qos2_dup_empty = [0x3C, 0x07, 0x00, 0x03, b'a', b'/', b'b', 0xFF, 0xFF];
    let expected = Packet::Publish(Publish {
        dup: true,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: topic("a/b"),
        packet_id: Some(pid(0xFFFF)),
        properties: Properties::new(),
        payload: b(b""),
    });
    assert_golden(V311, &qos2_dup_empty, &expected);
}

/// 3.1.1 sections 3.4 to 3.7: PUBACK, PUBREC, PUBREL (flags 0010) and
/// PUBCOMP are the packet identifier and nothing else.
#[test]
fn s3_4_to_3_7_publish_responses() {
    let r = PubResponse::new(pid(10));
    assert_golden(V311, &[0x40, 0x02, 0x00, 0x0A], &Packet::PubAck(r.clone()));
    assert_golden(V311, &[0x50, 0x02, 0x00, 0x0A], &Packet::PubRec(r.clone()));
    assert_golden(V311, &[0x62, 0x02, 0x00, 0x0A], &Packet::PubRel(r.clone()));
    assert_golden(V311, &[0x70, 0x02, 0x00, 0x0A], &Packet::PubComp(r));
}

fn example_subscribe() -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: pid(10),
        properties: Properties::new(),
        filters: vec![
            (filter("a/b"), SubscriptionOptions::qos(QoS::AtLeastOnce)),
            (filter("c/d"), SubscriptionOptions::qos(QoS::ExactlyOnce)),
        ],
    })
}

/// 3.1.1 figures 3.21 and 3.23: packet identifier 10, "a/b" at QoS 1 and
/// "c/d" at QoS 2.
#[test]
fn s3_8_subscribe_payload_example() {
    let wire = [
        0x82, 0x0E, // SUBSCRIBE, flags 0010, Remaining Length 14
        0x00, 0x0A, // Packet Identifier 10
        0x00, 0x03, b'a', b'/', b'b', 0x01, // "a/b", Requested QoS 1
        0x00, 0x03, b'c', b'/', b'd', 0x02, // "c/d", Requested QoS 2
    ];
    assert_golden(V311, &wire, &example_subscribe());
    assert_golden(V31, &wire, &example_subscribe());
}

/// 3.1.1 figure 3.26: Success QoS 0, Success QoS 2, Failure.
#[test]
fn s3_9_suback_payload_example() {
    let wire = [0x90, 0x05, 0x00, 0x0A, 0x00, 0x02, 0x80];
    let expected = Packet::SubAck(SubAck {
        packet_id: pid(10),
        properties: Properties::new(),
        reasons: vec![
            ReasonCode::GRANTED_QOS0,
            ReasonCode::GrantedQoS2,
            ReasonCode::UnspecifiedError,
        ],
    });
    assert_golden(V311, &wire, &expected);
}

/// 3.1.1 figure 3.30: unsubscribe from "a/b" and "c/d".
#[test]
fn s3_10_unsubscribe_payload_example() {
    let wire = [
        0xA2, 0x0C, // UNSUBSCRIBE, flags 0010, Remaining Length 12
        0x00, 0x0A, // Packet Identifier 10
        0x00, 0x03, b'a', b'/', b'b', // "a/b"
        0x00, 0x03, b'c', b'/', b'd', // "c/d"
    ];
    let expected = Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(10),
        properties: Properties::new(),
        filters: vec![filter("a/b"), filter("c/d")],
    });
    assert_golden(V311, &wire, &expected);
}

/// 3.1.1 section 3.11: UNSUBACK is the packet identifier alone.
#[test]
fn s3_11_unsuback() {
    let expected = Packet::UnsubAck(UnsubAck {
        packet_id: pid(10),
        properties: Properties::new(),
        reasons: Vec::new(),
    });
    assert_golden(V311, &[0xB0, 0x02, 0x00, 0x0A], &expected);
}

/// 3.1.1 sections 3.12 to 3.14: PINGREQ C0 00, PINGRESP D0 00,
/// DISCONNECT E0 00.
#[test]
fn s3_12_to_3_14_header_only_packets() {
    for protocol in [V31, V311] {
        assert_golden(protocol, &[0xC0, 0x00], &Packet::PingReq);
        assert_golden(protocol, &[0xD0, 0x00], &Packet::PingResp);
        assert_golden(
            protocol,
            &[0xE0, 0x00],
            &Packet::Disconnect(Disconnect::default()),
        );
    }
}

/// 3.1.1 table 2.4: the Remaining Length boundaries, on PUBLISH packets
/// with topic "a" whose payload fills the rest.
#[test]
fn s2_2_3_remaining_length_boundaries() {
    let cases: &[(&[u8], usize)] = &[
        (&[0x30, 0x7F], 127),
        (&[0x30, 0x80, 0x01], 128),
        (&[0x30, 0xFF, 0x7F], 16_383),
        (&[0x30, 0x80, 0x80, 0x01], 16_384),
        (&[0x30, 0xFF, 0xFF, 0x7F], 2_097_151),
        (&[0x30, 0x80, 0x80, 0x80, 0x01], 2_097_152),
    ];
    for &(header, remaining) in cases {
        let payload = vec![0xA5; remaining - 3];
        let mut wire = header.to_vec();
        wire.extend_from_slice(&[0x00, 0x01, b'a']);
        wire.extend_from_slice(&payload);
        let expected = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: topic("a"),
            packet_id: None,
            properties: Properties::new(),
            payload: payload.into(),
        });
        assert_golden(V311, &wire, &expected);
    }
}

/// UTF-8 strings (3.1.1 section 1.5.3, figure 1.1): "A𪛔" is
/// 00 05 41 F0 AA 9B 94, here as a topic name.
#[test]
fn s1_5_3_utf8_string_example() {
    let wire = [0x30, 0x07, 0x00, 0x05, 0x41, 0xF0, 0xAA, 0x9B, 0x94];
    let expected = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: topic("A\u{2A6D4}"),
        packet_id: None,
        properties: Properties::new(),
        payload: b(b""),
    });
    assert_golden(V311, &wire, &expected);
}
