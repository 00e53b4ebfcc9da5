//! CONNECT (3.1.1 section 3.1, 5.0 section 3.1) and UTF-8 strings (3.1.1
//! section 1.5.3, 5.0 section 1.5.4): each refused packet is built by hand
//! and wrong in exactly one way.

mod common;

use common::build::*;
use common::*;
use ferrymq_codec::*;

const V31: Protocol = Protocol::V3_1;
const V311: Protocol = Protocol::V3_1_1;
const V5: Protocol = Protocol::V5;

/// A CONNECT in `protocol`'s own name and level, with these flags, and
/// (in 5.0) empty properties before `payload`.
fn connect(protocol: Protocol, flags: u8, payload: &[u8]) -> Vec<u8> {
    let props: &[u8] = if protocol.is_v5() { &[0x00] } else { &[] };
    raw(
        0x10,
        &connect_body(
            protocol.name().as_bytes(),
            protocol.level(),
            flags,
            &cat(&[props, payload]),
        ),
    )
}

/// A will (properties in 5.0, topic "w", payload "x") for `protocol`.
fn will(protocol: Protocol) -> Vec<u8> {
    let props: &[u8] = if protocol.is_v5() { &[0x00] } else { &[] };
    cat(&[props, &s("w"), &s("x")])
}

fn check_connect_flags(e: Error) {
    assert!(matches!(e, Error::InvalidConnectFlags(_)), "{e:?}");
    assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
}

/// 3.1.1 section 3.1.2.1, [MQTT-3.1.2-1]: the protocol name must be
/// "MQTT" (or "MQIsdp" for 3.1), capitalised as shown.
#[test]
fn s3_1_2_1_bad_protocol_name() {
    for name in [&b"MQTX"[..], b"mqtt", b"MQT", b"", b"MQIsdP", b"MQTT\0"] {
        for level in [3, 4, 5] {
            let wire = raw(0x10, &connect_body(name, level, 0x02, &s("c")));
            let e = decode_err(&wire, V311);
            assert_eq!(e, Error::InvalidProtocolName, "{name:?} level {level}");
            assert_eq!(e.reason_code(), ReasonCode::UnsupportedProtocolVersion);
        }
    }
}

/// 3.1.1 [MQTT-3.1.2-2] / 5.0 section 3.1.2.2: an unsupported level is
/// answered with 0x84 (3.x return code 1).
#[test]
fn s3_1_2_2_unsupported_protocol_level() {
    for (name, level) in [
        (&b"MQTT"[..], 6),
        (b"MQTT", 3),
        (b"MQTT", 0),
        (b"MQTT", 0xFF),
        (b"MQIsdp", 4),
    ] {
        let wire = raw(0x10, &connect_body(name, level, 0x02, &s("c")));
        for protocol in ALL_PROTOCOLS {
            let e = decode_err(&wire, protocol);
            assert_eq!(e, Error::UnsupportedProtocolLevel(level));
            assert_eq!(e.reason_code(), ReasonCode::UnsupportedProtocolVersion);
            assert_eq!(e.reason_code().to_v3_connack(), Some(1));
        }
    }
}

/// [MQTT-3.1.2-3]: the reserved flag (bit 0) must be 0.
#[test]
fn s3_1_2_3_reserved_connect_flag() {
    for protocol in ALL_PROTOCOLS {
        check_connect_flags(decode_err(&connect(protocol, 0x03, &s("c")), protocol));
    }
}

/// [MQTT-3.1.2-13] (5.0 [MQTT-3.1.2-11]): Will QoS must be 0 without the
/// Will Flag.
#[test]
fn s3_1_2_6_will_qos_without_will_flag() {
    for protocol in ALL_PROTOCOLS {
        for flags in [0x0A, 0x12] {
            check_connect_flags(decode_err(&connect(protocol, flags, &s("c")), protocol));
        }
    }
}

/// [MQTT-3.1.2-15] (5.0 [MQTT-3.1.2-13]): Will Retain must be 0 without
/// the Will Flag.
#[test]
fn s3_1_2_7_will_retain_without_will_flag() {
    for protocol in ALL_PROTOCOLS {
        check_connect_flags(decode_err(&connect(protocol, 0x22, &s("c")), protocol));
    }
}

/// [MQTT-3.1.2-14] (5.0 section 3.1.2.6): Will QoS 3 is malformed.
#[test]
fn s3_1_2_6_will_qos_3() {
    for protocol in ALL_PROTOCOLS {
        let wire = connect(protocol, 0x1E, &cat(&[&s("c"), &will(protocol)]));
        let e = decode_err(&wire, protocol);
        assert_eq!(e, Error::InvalidQoS);
        assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
    }
}

/// 3.1.1 [MQTT-3.1.2-22]: no password without a user name (3.1 says the
/// same).
#[test]
fn s3_1_2_9_password_without_user_name_in_3x() {
    for protocol in [V31, V311] {
        let wire = connect(protocol, 0x42, &cat(&[&s("c"), &bin(b"pass")]));
        check_connect_flags(decode_err(&wire, protocol));
    }
}

/// 5.0 section 3.1.2.9: "This version of the protocol allows the sending
/// of a Password with no User Name, where MQTT v3.1.1 did not."
#[test]
fn s3_1_2_9_password_without_user_name_allowed_in_5_0() {
    let wire = [
        0x10, 0x13, // CONNECT, Remaining Length 19
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, // MQTT 5
        0x42, // Password Flag, Clean Start
        0x00, 0x00, // Keep Alive 0
        0x00, // Property Length 0
        0x00, 0x00, // Client Identifier ""
        0x00, 0x04, b'p', b'a', b's', b's', // Password
    ];
    let expected = Packet::Connect(Box::new(Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 0,
        properties: Properties::new(),
        client_id: ms(""),
        will: None,
        username: None,
        password: Some(b(b"pass")),
    }));
    assert_golden(V5, &wire, &expected);
}

/// [MQTT-3.1.3-11], [MQTT-4.7.3-1]: the will topic is a topic name: at
/// least one character, no wildcards.
#[test]
fn s3_1_3_3_invalid_will_topic() {
    for protocol in ALL_PROTOCOLS {
        let props: &[u8] = if protocol.is_v5() { &[0x00] } else { &[] };
        for topic in ["", "a/+", "#"] {
            let will = cat(&[props, &s(topic), &s("x")]);
            let wire = connect(protocol, 0x06, &cat(&[&s("c"), &will]));
            let e = decode_err(&wire, protocol);
            assert!(matches!(e, Error::InvalidTopicName(_)), "{topic:?}: {e:?}");
        }
    }
}

/// 5.0 section 3.1.2.11.10: "It is a Protocol Error to include
/// Authentication Data if there is no Authentication Method."
#[test]
fn s3_1_2_11_10_authentication_data_without_method() {
    let props_bytes = props(&[0x16, 0x00, 0x02, 0x01, 0x02]);
    let wire = raw(
        0x10,
        &connect_body(b"MQTT", 5, 0x02, &cat(&[&props_bytes, &s("c")])),
    );
    let e = decode_err(&wire, V5);
    assert_eq!(e, Error::AuthDataWithoutMethod);
    assert_eq!(e.reason_code(), ReasonCode::ProtocolError);
}

/// A CONNECT with a client id `id` (raw bytes) in each protocol.
fn with_client_id(protocol: Protocol, id: &[u8]) -> Vec<u8> {
    connect(protocol, 0x02, &bin(id))
}

/// 3.1.1 [MQTT-1.5.3-1] / 5.0 [MQTT-1.5.4-1]: ill-formed UTF-8 is
/// malformed.
#[test]
fn s1_5_3_invalid_utf8() {
    for protocol in ALL_PROTOCOLS {
        for bad in [
            &b"\xFF"[..],
            b"a\xC3",            // truncated 2-byte sequence
            b"\xC0\xAF",         // over-long '/'
            b"\xE2\x82",         // truncated 3-byte sequence
            b"\xF4\x90\x80\x80", // beyond U+10FFFF
            b"\x80",             // lone continuation byte
        ] {
            let e = decode_err(&with_client_id(protocol, bad), protocol);
            assert_eq!(e, Error::InvalidUtf8, "{bad:02X?}");
            assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
        }
    }
}

/// 3.1.1 [MQTT-1.5.3-1] / 5.0 [MQTT-1.5.4-1]: the UTF-16 surrogates
/// U+D800..U+DFFF must not appear, even encoded as UTF-8.
#[test]
fn s1_5_3_surrogate_encoded_in_utf8() {
    for protocol in ALL_PROTOCOLS {
        for bad in [&b"\xED\xA0\x80"[..], b"\xED\xBF\xBF", b"a\xED\xB0\x80b"] {
            let e = decode_err(&with_client_id(protocol, bad), protocol);
            assert_eq!(e, Error::InvalidUtf8, "{bad:02X?}");
        }
    }
}

/// 3.1.1 [MQTT-1.5.3-2] / 5.0 [MQTT-1.5.4-2]: U+0000 must not appear.
#[test]
fn s1_5_3_null_character() {
    for protocol in ALL_PROTOCOLS {
        for bad in [&b"\0"[..], b"a\0b"] {
            let e = decode_err(&with_client_id(protocol, bad), protocol);
            assert_eq!(e, Error::NullCharacter);
            assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
        }
        // In the user name too.
        let wire = connect(protocol, 0x82, &cat(&[&s("c"), &bin(b"u\0")]));
        assert_eq!(decode_err(&wire, protocol), Error::NullCharacter);
    }
}

/// [MQTT-1.5.3-3]: U+FEFF is a character like any other, not a BOM to
/// strip; and multibyte characters are fine.
#[test]
fn s1_5_3_bom_and_multibyte_are_kept() {
    for protocol in ALL_PROTOCOLS {
        let id = "\u{FEFF}é€𪛔";
        let Packet::Connect(c) =
            decode_one(&with_client_id(protocol, id.as_bytes()), protocol).unwrap()
        else {
            panic!("not a CONNECT")
        };
        assert_eq!(c.client_id.as_str(), id);
    }
}

/// Binary Data is at most 65,535 bytes: the encoder refuses a longer
/// password and leaves the buffer as it was.
#[test]
fn s1_5_6_encoder_refuses_over_long_binary_data() {
    let packet = Packet::Connect(Box::new(Connect {
        protocol: V311,
        clean_start: true,
        keep_alive: 0,
        properties: Properties::new(),
        client_id: ms("c"),
        will: None,
        username: Some(ms("u")),
        password: Some(vec![0u8; 65_536].into()),
    }));
    let mut buf = bytes::BytesMut::from(&[0xC0, 0x00][..]);
    assert_eq!(
        encode(&packet, V311, &mut buf),
        Err(Error::StringTooLong(65_536))
    );
    assert_eq!(&buf[..], &[0xC0, 0x00]);
}

/// A CONNECT names its own version, so it is encoded in that version
/// whatever the connection's protocol is still set to. Regression: the
/// encoder counted the properties by the connection's protocol but wrote
/// them by the packet's, so the Remaining Length disagreed with the bytes
/// (a v5 CONNECT encoded under 3.1.1 came out malformed).
#[test]
fn regression_connect_is_encoded_in_its_own_version() {
    let v5_connect = Packet::Connect(Box::new(Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 30,
        properties: Properties(vec![Property::SessionExpiryInterval(60)]),
        client_id: ms("c"),
        will: Some(Will {
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties(vec![Property::WillDelayInterval(5)]),
            topic: topic("w"),
            payload: b(b"x"),
        }),
        username: None,
        password: None,
    }));
    let v311_connect = Packet::Connect(Box::new(Connect {
        protocol: V311,
        clean_start: true,
        keep_alive: 30,
        properties: Properties::new(),
        client_id: ms("c"),
        will: None,
        username: None,
        password: None,
    }));
    for packet in [v5_connect, v311_connect] {
        let own = encode_vec(&packet, V5);
        for protocol in ALL_PROTOCOLS {
            let wire = encode_vec(&packet, protocol);
            assert_eq!(wire, own, "encoded under {protocol}");
            assert_eq!(encoded_len(&packet, protocol), Ok(wire.len()));
            assert_eq!(decode_one(&wire, protocol).unwrap(), packet);
        }
    }
}
