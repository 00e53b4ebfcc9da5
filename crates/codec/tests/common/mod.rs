//! Shared by the codec's integration tests: a raw packet builder that owes
//! nothing to our encoder (so an encoder bug cannot hide a decoder bug),
//! decode/encode helpers, and, in [`strategies`], the proptest strategies.
#![allow(dead_code)]

pub mod strategies;

use bytes::BytesMut;
use ferrymq_codec::{decode, encode, Error, Packet, Protocol};

/// A maximum packet size no test packet reaches.
pub const NO_LIMIT: usize = 1 << 24;

pub const ALL_PROTOCOLS: [Protocol; 3] = [Protocol::V3_1, Protocol::V3_1_1, Protocol::V5];

/// A Variable Byte Integer, written out from the algorithm of section 1.5.5
/// (5.0) / 2.2.3 (3.1.1), independently of `ferrymq_codec::varint`.
pub fn varint(mut value: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 128;
        }
        out.push(byte);
        if value == 0 {
            return out;
        }
    }
}

/// A whole packet: first byte, Remaining Length, body.
pub fn raw(byte1: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![byte1];
    out.extend(varint(body.len()));
    out.extend_from_slice(body);
    out
}

/// A length-prefixed UTF-8 string (or Binary Data) from raw bytes.
pub fn bin(bytes: &[u8]) -> Vec<u8> {
    let len = u16::try_from(bytes.len()).unwrap();
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// A length-prefixed UTF-8 string.
pub fn s(text: &str) -> Vec<u8> {
    bin(text.as_bytes())
}

/// A property list: Property Length, then the properties' bytes.
pub fn props(bytes: &[u8]) -> Vec<u8> {
    let mut out = varint(bytes.len());
    out.extend_from_slice(bytes);
    out
}

/// Concatenates fields.
pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Decodes one packet that must take up all of `wire`.
pub fn decode_one(wire: &[u8], protocol: Protocol) -> Result<Packet, Error> {
    let mut buf = BytesMut::from(wire);
    let packet = decode(&mut buf, protocol, NO_LIMIT)?;
    let packet = packet.unwrap_or_else(|| panic!("{wire:02X?} decoded as incomplete"));
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    Ok(packet)
}

/// Decodes `wire`, which must be refused; returns the error.
pub fn decode_err(wire: &[u8], protocol: Protocol) -> Error {
    match decode_one(wire, protocol) {
        Ok(packet) => panic!("{wire:02X?} decoded as {packet:?}, expected an error"),
        Err(e) => e,
    }
}

/// Encodes into a fresh vector.
pub fn encode_vec(packet: &Packet, protocol: Protocol) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let n = encode(packet, protocol, &mut buf).unwrap();
    assert_eq!(n, buf.len());
    buf.to_vec()
}

/// A spec byte vector: decodes to `expected`, and `expected` encodes to
/// exactly these bytes.
pub fn assert_golden(protocol: Protocol, wire: &[u8], expected: &Packet) {
    assert_eq!(&decode_one(wire, protocol).unwrap(), expected, "decoding");
    assert_eq!(encode_vec(expected, protocol), wire, "encoding");
}

/// An MQTT 3.1.1 or 5.0 CONNECT body after the protocol level: flags, keep
/// alive, then the rest as given.
pub fn connect_body(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    cat(&[&bin(name), &[level, flags, 0x00, 0x3C], rest])
}

/// What must follow a packet in the buffer untouched: a PINGREQ.
pub const SENTINEL: [u8; 2] = [0xC0, 0x00];

/// decode ∘ encode is the identity, and the decoder takes exactly the
/// encoded bytes off the buffer, leaving what follows.
pub fn check_round_trip(
    packet: &Packet,
    protocol: Protocol,
) -> Result<(), proptest::test_runner::TestCaseError> {
    use proptest::prop_assert_eq;

    let mut buf = BytesMut::new();
    let written = encode(packet, protocol, &mut buf).unwrap();
    prop_assert_eq!(written, buf.len());
    prop_assert_eq!(
        ferrymq_codec::encoded_len(packet, protocol).unwrap(),
        written
    );
    let header = ferrymq_codec::FixedHeader::parse(&buf).unwrap().unwrap();
    prop_assert_eq!(header.packet_len(), written);

    buf.extend_from_slice(&SENTINEL);
    let decoded = decode(&mut buf, protocol, NO_LIMIT).unwrap();
    prop_assert_eq!(decoded.as_ref(), Some(packet));
    prop_assert_eq!(&buf[..], &SENTINEL[..]);
    Ok(())
}

/// Shorthands for building expected packets.
pub mod build {
    use bytes::Bytes;
    use ferrymq_codec::{MqttString, PacketId, TopicFilter, TopicName};

    pub fn ms(s: &str) -> MqttString {
        MqttString::try_from(s).unwrap()
    }

    pub fn topic(s: &str) -> TopicName {
        TopicName::new(s).unwrap()
    }

    pub fn filter(s: &str) -> TopicFilter {
        TopicFilter::new(s).unwrap()
    }

    pub fn pid(n: u16) -> PacketId {
        PacketId::new(n).unwrap()
    }

    pub fn b(bytes: &'static [u8]) -> Bytes {
        Bytes::from_static(bytes)
    }
}
