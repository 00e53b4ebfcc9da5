//! The fixed header and the packet's frame (3.1.1 section 2, 5.0 sections
//! 1.5.5 and 2.1): reserved types, flags, Remaining Length, the size limit,
//! and bodies shorter or longer than their fields. Every packet is built by
//! hand (habit 10) and wrong in exactly one way.

mod common;

use bytes::BytesMut;
use common::*;
use ferrymq_codec::packet::PacketType;
use ferrymq_codec::{decode, Error, Protocol, ReasonCode};

const V31: Protocol = Protocol::V3_1;
const V311: Protocol = Protocol::V3_1_1;
const V5: Protocol = Protocol::V5;

/// A valid body for each packet type but PUBLISH.
fn valid_body(t: PacketType, protocol: Protocol) -> Vec<u8> {
    let props: &[u8] = if protocol.is_v5() { &[0x00] } else { &[] };
    match t {
        PacketType::Connect => connect_body(b"MQTT", 4, 0x02, &s("c")),
        PacketType::ConnAck => cat(&[&[0x00, 0x00], props]),
        PacketType::PubAck | PacketType::PubRec | PacketType::PubRel | PacketType::PubComp => {
            vec![0x00, 0x01]
        }
        PacketType::Subscribe => cat(&[&[0x00, 0x01], props, &s("a"), &[0x00]]),
        PacketType::SubAck => cat(&[&[0x00, 0x01], props, &[0x00]]),
        PacketType::Unsubscribe => cat(&[&[0x00, 0x01], props, &s("a")]),
        PacketType::UnsubAck if protocol.is_v5() => vec![0x00, 0x01, 0x00, 0x00],
        PacketType::UnsubAck => vec![0x00, 0x01],
        PacketType::PingReq | PacketType::PingResp | PacketType::Disconnect | PacketType::Auth => {
            vec![]
        }
        PacketType::Publish => unreachable!("PUBLISH flags are not fixed"),
    }
}

fn non_publish_types(protocol: Protocol) -> Vec<PacketType> {
    strategies::packet_types(protocol)
        .into_iter()
        .filter(|t| *t != PacketType::Publish)
        .collect()
}

/// 3.1.1 table 2.1, 5.0 table 2-1: type 0 is reserved.
#[test]
fn s2_2_1_reserved_packet_type_0() {
    for protocol in ALL_PROTOCOLS {
        let e = decode_err(&[0x00, 0x00], protocol);
        assert_eq!(e, Error::InvalidPacketType(0));
        assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
        assert_eq!(
            decode_err(&[0x02, 0x02, 0x00, 0x01], protocol),
            Error::InvalidPacketType(0)
        );
    }
}

/// 3.1.1 table 2.1: type 15 is reserved; AUTH exists only in 5.0.
#[test]
fn s2_2_1_auth_type_15_is_reserved_before_5_0() {
    for protocol in [V31, V311] {
        assert_eq!(
            decode_err(&[0xF0, 0x00], protocol),
            Error::InvalidPacketType(15)
        );
    }
    assert!(decode_one(&[0xF0, 0x00], V5).is_ok());
}

/// [MQTT-2.2.2-1], [MQTT-2.2.2-2] (5.0 [MQTT-2.1.3-1]): PUBREL,
/// SUBSCRIBE and UNSUBSCRIBE carry flags 0010, every other type but
/// PUBLISH 0000; any other value is malformed. Each body is otherwise
/// valid, so the flags alone are wrong.
#[test]
fn s2_2_2_wrong_fixed_header_flags() {
    for protocol in [V311, V5] {
        for t in non_publish_types(protocol) {
            let body = valid_body(t, protocol);
            let required = match t {
                PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => 0b0010,
                _ => 0b0000,
            };
            let type_bits = (t as u8) << 4;
            decode_one(&raw(type_bits | required, &body), protocol)
                .unwrap_or_else(|e| panic!("valid {t} refused in {protocol}: {e}"));
            for flags in (0..16).filter(|f| *f != required) {
                let e = decode_err(&raw(type_bits | flags, &body), protocol);
                assert_eq!(
                    e,
                    Error::InvalidHeaderFlags { packet: t, flags },
                    "{t} in {protocol}"
                );
                assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
            }
        }
    }
}

#[test]
fn s3_6_1_pubrel_without_flags_0010() {
    let e = decode_err(&[0x60, 0x02, 0x00, 0x01], V311);
    assert_eq!(
        e,
        Error::InvalidHeaderFlags {
            packet: PacketType::PubRel,
            flags: 0
        }
    );
}

#[test]
fn s3_8_1_subscribe_without_flags_0010() {
    let wire = raw(0x80, &cat(&[&[0x00, 0x01], &s("a"), &[0x00]]));
    assert_eq!(
        decode_err(&wire, V311),
        Error::InvalidHeaderFlags {
            packet: PacketType::Subscribe,
            flags: 0
        }
    );
}

#[test]
fn s3_10_1_unsubscribe_without_flags_0010() {
    let wire = raw(0xA0, &cat(&[&[0x00, 0x01], &s("a")]));
    assert_eq!(
        decode_err(&wire, V311),
        Error::InvalidHeaderFlags {
            packet: PacketType::Unsubscribe,
            flags: 0
        }
    );
}

/// MQTT 3.1 sets DUP when it re-sends PUBREL, SUBSCRIBE or UNSUBSCRIBE
/// (3.1 section 2.1, "DUP flag": "set when the client or server attempts
/// to re-deliver a PUBLISH, PUBREL, SUBSCRIBE or UNSUBSCRIBE message").
/// Regression: the decoder refused these as malformed, so a 3.1 client
/// retrying a SUBSCRIBE was disconnected. 3.1.1 and 5.0 still refuse them.
#[test]
fn regression_mqtt_3_1_dup_on_resent_pubrel_subscribe_unsubscribe() {
    for t in [
        PacketType::PubRel,
        PacketType::Subscribe,
        PacketType::Unsubscribe,
    ] {
        let byte1 = ((t as u8) << 4) | 0b1010;
        let expected = decode_one(&raw(((t as u8) << 4) | 0b0010, &valid_body(t, V31)), V31);
        assert_eq!(
            decode_one(&raw(byte1, &valid_body(t, V31)), V31),
            expected,
            "{t}"
        );
        for protocol in [V311, V5] {
            assert_eq!(
                decode_err(&raw(byte1, &valid_body(t, protocol)), protocol),
                Error::InvalidHeaderFlags {
                    packet: t,
                    flags: 0b1010
                }
            );
        }
    }
    // Other flags remain wrong in 3.1 too.
    assert_eq!(
        decode_err(&[0x60, 0x02, 0x00, 0x01], V31),
        Error::InvalidHeaderFlags {
            packet: PacketType::PubRel,
            flags: 0
        }
    );
    assert_eq!(
        decode_err(&[0xC8, 0x00], V31),
        Error::InvalidHeaderFlags {
            packet: PacketType::PingReq,
            flags: 0b1000
        }
    );
}

/// [MQTT-3.3.1-4]: a PUBLISH with both QoS bits set is malformed.
#[test]
fn s3_3_1_3_publish_qos_3() {
    for protocol in ALL_PROTOCOLS {
        for byte1 in [0x36, 0x37, 0x3E] {
            let wire = raw(byte1, &cat(&[&s("a/b"), &[0x00, 0x01, 0x00]]));
            let e = decode_err(&wire, protocol);
            assert_eq!(e, Error::InvalidQoS);
            assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
        }
    }
}

/// [MQTT-3.3.1-2]: DUP must be 0 on a QoS 0 PUBLISH.
#[test]
fn s3_3_1_1_dup_on_qos_0() {
    for protocol in ALL_PROTOCOLS {
        let wire = raw(0x38, &cat(&[&s("a/b"), &[0x00]]));
        assert_eq!(decode_err(&wire, protocol), Error::DupOnQoS0);
    }
}

/// 3.1.1 section 2.2.3: the Remaining Length takes at most four bytes.
#[test]
fn s2_2_3_five_byte_remaining_length() {
    for protocol in ALL_PROTOCOLS {
        let wire = [0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F];
        let e = decode_err(&wire, protocol);
        assert_eq!(e, Error::MalformedVarint);
        assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
        // Known malformed as soon as the fourth byte still continues.
        let mut buf = BytesMut::from(&[0xC0, 0x80, 0x80, 0x80, 0x80][..]);
        assert_eq!(
            decode(&mut buf, protocol, NO_LIMIT),
            Err(Error::MalformedVarint)
        );
    }
}

/// [MQTT-1.5.5-1]: a Variable Byte Integer uses the fewest bytes.
#[test]
fn s1_5_5_over_long_remaining_length() {
    for protocol in ALL_PROTOCOLS {
        // Remaining Length 0 written in two bytes.
        assert_eq!(
            decode_err(&[0xC0, 0x80, 0x00], protocol),
            Error::MalformedVarint
        );
        // Remaining Length 2 written in three bytes.
        assert_eq!(
            decode_err(&[0x40, 0x82, 0x80, 0x00, 0x00, 0x01], protocol),
            Error::MalformedVarint
        );
    }
}

/// 5.0 section 3.1.2.11.4 (Maximum Packet Size) and habit 1: a packet
/// announced larger than the limit is refused from its fixed header alone,
/// before its body arrives, and nothing is consumed.
#[test]
fn s3_1_2_11_4_packet_too_large_from_the_fixed_header() {
    for protocol in ALL_PROTOCOLS {
        // PUBLISH announcing 2,097,151 bytes; only the header is here.
        let header = [0x30, 0xFF, 0xFF, 0x7F];
        let mut buf = BytesMut::from(&header[..]);
        let e = decode(&mut buf, protocol, 1024).unwrap_err();
        assert_eq!(
            e,
            Error::PacketTooLarge {
                size: 4 + 2_097_151,
                max: 1024
            }
        );
        assert_eq!(e.reason_code(), ReasonCode::PacketTooLarge);
        assert_eq!(&buf[..], &header[..]);

        // The limit counts the fixed header: a 4-byte PUBACK passes a
        // limit of 4 and fails a limit of 3.
        let wire = [0x40, 0x02, 0x00, 0x01];
        assert!(decode(&mut BytesMut::from(&wire[..]), protocol, 4).is_ok());
        assert_eq!(
            decode(&mut BytesMut::from(&wire[..2]), protocol, 3),
            Err(Error::PacketTooLarge { size: 4, max: 3 })
        );
    }
}

/// [MQTT-3.12.1], [MQTT-3.13.1]: PINGREQ and PINGRESP have no body.
#[test]
fn s3_12_trailing_bytes_after_pingreq() {
    for protocol in ALL_PROTOCOLS {
        let e = decode_err(&[0xC0, 0x01, 0x00], protocol);
        assert_eq!(e, Error::TrailingBytes(1));
        assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
        assert_eq!(
            decode_err(&[0xD0, 0x02, 0x00, 0x00], protocol),
            Error::TrailingBytes(2)
        );
    }
}

/// A CONNECT whose Remaining Length covers more than its fields.
#[test]
fn s3_1_trailing_bytes_after_connect() {
    for (name, level, protocol) in [
        (&b"MQIsdp"[..], 3, V31),
        (&b"MQTT"[..], 4, V311),
        (&b"MQTT"[..], 5, V5),
    ] {
        let props: &[u8] = if protocol.is_v5() { &[0x00] } else { &[] };
        let body = connect_body(name, level, 0x02, &cat(&[props, &s("c")]));
        assert!(decode_one(&raw(0x10, &body), protocol).is_ok());
        let longer = cat(&[&body, &[0xAB]]);
        assert_eq!(
            decode_err(&raw(0x10, &longer), protocol),
            Error::TrailingBytes(1)
        );
    }
}

/// Bodies longer than the 3.x packet's fields: PUBACK, CONNACK, UNSUBACK
/// and DISCONNECT have fixed sizes in 3.1.1.
#[test]
fn s3_trailing_bytes_after_fixed_size_3x_packets() {
    for protocol in [V31, V311] {
        for wire in [
            &[0x40, 0x03, 0x00, 0x01, 0x00][..],
            &[0x20, 0x03, 0x00, 0x00, 0x00],
            &[0xB0, 0x03, 0x00, 0x01, 0x00],
            &[0xE0, 0x01, 0x00],
        ] {
            assert_eq!(decode_err(wire, protocol), Error::TrailingBytes(1));
        }
    }
}

/// A Remaining Length that claims fewer bytes than the fields need.
#[test]
fn s2_truncated_body() {
    for protocol in ALL_PROTOCOLS {
        // SUBSCRIBE: the filter claims 10 bytes, 3 follow.
        let sub = raw(0x82, &[0x00, 0x01, 0x00, 0x0A, b'a', b'/', b'b']);
        let e = decode_err(&sub, protocol);
        assert_eq!(e, Error::UnexpectedEnd);
        assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
        // PUBACK with half a packet identifier.
        assert_eq!(
            decode_err(&[0x40, 0x01, 0x00], protocol),
            Error::UnexpectedEnd
        );
        // QoS 1 PUBLISH without its packet identifier.
        assert_eq!(
            decode_err(&raw(0x32, &s("a/b")), protocol),
            Error::UnexpectedEnd
        );
        // CONNACK with one byte.
        assert_eq!(
            decode_err(&[0x20, 0x01, 0x00], protocol),
            Error::UnexpectedEnd
        );
        // CONNECT that stops after the protocol level.
        let connect = raw(0x10, &cat(&[&s("MQTT"), &[0x04]]));
        assert_eq!(decode_err(&connect, protocol), Error::UnexpectedEnd);
        // CONNECT with the user name flag and no user name.
        let props: &[u8] = if protocol.is_v5() { &[0x00] } else { &[] };
        let level = protocol.level();
        let name = protocol.name().as_bytes();
        let connect = raw(
            0x10,
            &connect_body(name, level, 0x82, &cat(&[props, &s("c")])),
        );
        assert_eq!(decode_err(&connect, protocol), Error::UnexpectedEnd);
    }
}
