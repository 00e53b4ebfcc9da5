//! PUBLISH, its acknowledgements, SUBSCRIBE, UNSUBSCRIBE and their
//! acknowledgements (3.1.1 sections 3.3 to 3.11, 4.7; 5.0 the same): topic
//! names and filters, packet identifiers, subscription options, reason
//! codes. Each refused packet is built by hand and wrong in one way.

mod common;

use common::*;
use ferrymq_codec::packet::PacketType;
use ferrymq_codec::{Error, Protocol, ReasonCode};

const V31: Protocol = Protocol::V3_1;
const V311: Protocol = Protocol::V3_1_1;
const V5: Protocol = Protocol::V5;

/// Empty properties in 5.0, nothing in 3.x.
fn no_props(protocol: Protocol) -> &'static [u8] {
    if protocol.is_v5() {
        &[0x00]
    } else {
        &[]
    }
}

/// A QoS 0 PUBLISH of "hi" to `topic` (raw bytes).
fn publish0(protocol: Protocol, topic: &[u8]) -> Vec<u8> {
    raw(0x30, &cat(&[&bin(topic), no_props(protocol), b"hi"]))
}

fn subscribe(protocol: Protocol, filter: &str, options: u8) -> Vec<u8> {
    raw(
        0x82,
        &cat(&[&[0x00, 0x01], no_props(protocol), &s(filter), &[options]]),
    )
}

fn unsubscribe(protocol: Protocol, filter: &str) -> Vec<u8> {
    raw(0xA2, &cat(&[&[0x00, 0x01], no_props(protocol), &s(filter)]))
}

/// [MQTT-3.3.2-2]: a topic name has no wildcard characters.
#[test]
fn s3_3_2_1_wildcards_in_publish_topic_name() {
    for protocol in ALL_PROTOCOLS {
        for topic in ["a/+", "a/#", "+", "#", "a+b", "sport/tennis#"] {
            let e = decode_err(&publish0(protocol, topic.as_bytes()), protocol);
            assert!(matches!(e, Error::InvalidTopicName(_)), "{topic}: {e:?}");
            assert_eq!(e.reason_code(), ReasonCode::TopicNameInvalid);
            assert_eq!(e.reason_code() as u8, 0x90);
        }
    }
}

/// [MQTT-4.7.3-1]: a topic name is at least one character long (3.x has
/// no topic aliases).
#[test]
fn s4_7_3_empty_topic_name_in_3x() {
    for protocol in [V31, V311] {
        let e = decode_err(&publish0(protocol, b""), protocol);
        assert!(matches!(e, Error::InvalidTopicName(_)), "{e:?}");
    }
}

/// 5.0 section 3.3.2.1: "It is a Protocol Error if the Topic Name is zero
/// length and there is no Topic Alias."
#[test]
fn s3_3_2_1_v5_empty_topic_without_topic_alias() {
    let e = decode_err(&publish0(V5, b""), V5);
    assert_eq!(e, Error::MissingTopic);
    assert_eq!(e.reason_code(), ReasonCode::ProtocolError);
    // Other properties do not stand in for the alias.
    let wire = raw(0x30, &cat(&[&s(""), &props(&[0x01, 0x01]), b"hi"]));
    assert_eq!(decode_err(&wire, V5), Error::MissingTopic);
}

/// Topic names are UTF-8 strings too ([MQTT-1.5.3-1], [MQTT-1.5.3-2]).
#[test]
fn s1_5_3_bad_strings_in_topic_name() {
    for protocol in ALL_PROTOCOLS {
        assert_eq!(
            decode_err(&publish0(protocol, b"a/\xED\xA0\x80"), protocol),
            Error::InvalidUtf8
        );
        assert_eq!(
            decode_err(&publish0(protocol, b"a/\0"), protocol),
            Error::NullCharacter
        );
        assert_eq!(
            decode_err(&publish0(protocol, b"\xFE"), protocol),
            Error::InvalidUtf8
        );
    }
}

/// [MQTT-4.7.1-2], [MQTT-4.7.1-3] and [MQTT-4.7.3-1]: `#` only as the
/// whole last level, `+` only as a whole level, never empty.
#[test]
fn s4_7_1_invalid_topic_filters() {
    for protocol in ALL_PROTOCOLS {
        for filter in ["a/#/b", "a+", "a#", "#/", "+a/b", "a/b+", "##", ""] {
            for wire in [
                subscribe(protocol, filter, 0x00),
                unsubscribe(protocol, filter),
            ] {
                let e = decode_err(&wire, protocol);
                assert!(matches!(e, Error::InvalidTopicFilter(_)), "{filter}: {e:?}");
                assert_eq!(e.reason_code(), ReasonCode::TopicFilterInvalid);
            }
        }
    }
}

/// [MQTT-2.3.1-1] (5.0 [MQTT-2.2.1-3]): packet identifiers are non-zero.
#[test]
fn s2_3_1_packet_identifier_0() {
    for protocol in ALL_PROTOCOLS {
        let p = no_props(protocol);
        let cases = [
            ("PUBLISH QoS 1", raw(0x32, &cat(&[&s("a"), &[0, 0], p]))),
            ("PUBLISH QoS 2", raw(0x34, &cat(&[&s("a"), &[0, 0], p]))),
            ("SUBSCRIBE", raw(0x82, &cat(&[&[0, 0], p, &s("a"), &[0]]))),
            ("UNSUBSCRIBE", raw(0xA2, &cat(&[&[0, 0], p, &s("a")]))),
            ("PUBACK", vec![0x40, 0x02, 0x00, 0x00]),
            ("PUBREC", vec![0x50, 0x02, 0x00, 0x00]),
            ("PUBREL", vec![0x62, 0x02, 0x00, 0x00]),
            ("PUBCOMP", vec![0x70, 0x02, 0x00, 0x00]),
            ("SUBACK", raw(0x90, &cat(&[&[0, 0], p, &[0]]))),
        ];
        for (what, wire) in cases {
            assert_eq!(decode_err(&wire, protocol), Error::ZeroPacketId, "{what}");
        }
        let unsuback = if protocol.is_v5() {
            vec![0xB0, 0x04, 0x00, 0x00, 0x00, 0x00]
        } else {
            vec![0xB0, 0x02, 0x00, 0x00]
        };
        assert_eq!(decode_err(&unsuback, protocol), Error::ZeroPacketId);
    }
}

/// [MQTT-3.8.3-3] (5.0 section 3.8.3: "A SUBSCRIBE packet with no Payload
/// is a Protocol Error").
#[test]
fn s3_8_3_subscribe_with_no_filters() {
    for protocol in ALL_PROTOCOLS {
        let wire = raw(0x82, &cat(&[&[0x00, 0x01], no_props(protocol)]));
        let e = decode_err(&wire, protocol);
        assert_eq!(e, Error::NoTopicFilters(PacketType::Subscribe));
        assert_eq!(e.reason_code(), ReasonCode::ProtocolError);
    }
}

/// [MQTT-3.10.3-2] (5.0 section 3.10.3: "An UNSUBSCRIBE packet with no
/// Payload is a Protocol Error").
#[test]
fn s3_10_3_unsubscribe_with_no_filters() {
    for protocol in ALL_PROTOCOLS {
        let wire = raw(0xA2, &cat(&[&[0x00, 0x01], no_props(protocol)]));
        let e = decode_err(&wire, protocol);
        assert_eq!(e, Error::NoTopicFilters(PacketType::Unsubscribe));
        assert_eq!(e.reason_code(), ReasonCode::ProtocolError);
    }
}

/// 3.1.1 [MQTT-3.8.3-4]: the upper six bits of the requested QoS byte
/// are reserved and must be 0.
#[test]
fn s3_8_3_1_reserved_option_bits_in_3x() {
    for protocol in [V31, V311] {
        for options in [0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xFC, 0x2D] {
            let e = decode_err(&subscribe(protocol, "a/b", options), protocol);
            assert_eq!(e, Error::InvalidSubscriptionOptions, "{options:#04x}");
            assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
        }
    }
}

/// 5.0 [MQTT-3.8.3-5]: bits 6 and 7 of the subscription options are
/// reserved; bits 2 to 5 are No Local, Retain As Published and Retain
/// Handling.
#[test]
fn s3_8_3_1_reserved_option_bits_in_5_0() {
    for options in [0x40, 0x80, 0xC0, 0x6D] {
        let e = decode_err(&subscribe(V5, "a/b", options), V5);
        assert_eq!(e, Error::InvalidSubscriptionOptions, "{options:#04x}");
        assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
    }
    assert!(decode_one(&subscribe(V5, "a/b", 0x2E), V5).is_ok());
}

/// 5.0 section 3.8.3.1: "It is a Protocol Error to send a Retain Handling
/// value of 3." Regression: this was reported as a Malformed Packet (0x81),
/// like the reserved bits, instead of a Protocol Error (0x82).
#[test]
fn regression_s3_8_3_1_retain_handling_3_is_a_protocol_error() {
    for options in [0x30, 0x31, 0x3E] {
        let e = decode_err(&subscribe(V5, "a/b", options), V5);
        assert_eq!(e, Error::InvalidRetainHandling, "{options:#04x}");
        assert_eq!(e.reason_code(), ReasonCode::ProtocolError);
    }
}

/// 3.1.1 [MQTT-3.8.3-4] (5.0 section 3.8.3.1): requested QoS 3 is
/// malformed.
#[test]
fn s3_8_3_1_requested_qos_3() {
    for protocol in ALL_PROTOCOLS {
        let e = decode_err(&subscribe(protocol, "a/b", 0x03), protocol);
        assert_eq!(e, Error::InvalidQoS);
    }
}

/// 5.0 section 3.4.2.1 (table 3-4): PUBACK carries only its own reason
/// codes; 0x92 belongs to PUBREL/PUBCOMP, 0x05 is no reason code at all.
#[test]
fn s3_4_2_1_invalid_reason_code_in_v5_puback() {
    for code in [0x92, 0x05, 0x8E, 0xFF] {
        let e = decode_err(&[0x40, 0x03, 0x00, 0x01, code], V5);
        assert_eq!(
            e,
            Error::InvalidReasonCode {
                packet: PacketType::PubAck,
                code
            }
        );
        assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
    }
}

/// 5.0 tables 3-5 to 3-7, 3-9, 3-10 and 3-13: each packet's own codes.
#[test]
fn s3_invalid_reason_codes_in_other_v5_packets() {
    let cases: &[(PacketType, &[u8])] = &[
        (PacketType::PubRec, &[0x50, 0x03, 0x00, 0x01, 0x92]),
        (PacketType::PubRel, &[0x62, 0x03, 0x00, 0x01, 0x10]),
        (PacketType::PubComp, &[0x70, 0x03, 0x00, 0x01, 0x80]),
        (PacketType::SubAck, &[0x90, 0x04, 0x00, 0x01, 0x00, 0x11]),
        (PacketType::UnsubAck, &[0xB0, 0x04, 0x00, 0x01, 0x00, 0x02]),
        (PacketType::Disconnect, &[0xE0, 0x01, 0x18]),
        (PacketType::Auth, &[0xF0, 0x01, 0x04]),
        (PacketType::ConnAck, &[0x20, 0x03, 0x00, 0x04, 0x00]),
    ];
    for &(packet, wire) in cases {
        assert!(
            matches!(decode_err(wire, V5), Error::InvalidReasonCode { packet: p, .. } if p == packet),
            "{packet}"
        );
    }
}

/// 3.1.1 section 3.9.3: SUBACK return codes are 0x00, 0x01, 0x02, 0x80;
/// section 3.2.2.3: CONNACK return codes 0 to 5 (6-255 reserved).
#[test]
fn s3_9_3_and_3_2_2_3_reserved_return_codes_in_3x() {
    for protocol in [V31, V311] {
        for code in [0x03, 0x81, 0x11] {
            assert_eq!(
                decode_err(&[0x90, 0x03, 0x00, 0x01, code], protocol),
                Error::InvalidReasonCode {
                    packet: PacketType::SubAck,
                    code
                }
            );
        }
        for code in [6, 0x80, 0x87] {
            assert_eq!(
                decode_err(&[0x20, 0x02, 0x00, code], protocol),
                Error::InvalidReasonCode {
                    packet: PacketType::ConnAck,
                    code
                }
            );
        }
    }
}

/// 3.1.1 [MQTT-3.2.2-1] / [MQTT-3.2.2-4]: CONNACK flag bits 7-1 are
/// reserved, and a refusal never has Session Present.
#[test]
fn s3_2_2_connack_flags() {
    for protocol in ALL_PROTOCOLS {
        let p = no_props(protocol);
        let reserved = raw(0x20, &cat(&[&[0x02, 0x00], p]));
        assert_eq!(decode_err(&reserved, protocol), Error::InvalidConnAckFlags);
        let refused = if protocol.is_v5() { 0x87 } else { 0x05 };
        let refused_with_session = raw(0x20, &cat(&[&[0x01, refused], p]));
        assert_eq!(
            decode_err(&refused_with_session, protocol),
            Error::InvalidConnAckFlags
        );
    }
}
