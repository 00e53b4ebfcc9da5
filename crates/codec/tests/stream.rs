//! The decoder as a stream parser (habit 1 and 2): every strict prefix of a
//! packet is "need more bytes" and consumes nothing; arbitrary bytes never
//! panic, whatever the protocol; a stream cut at arbitrary points decodes
//! to the same packets as the whole.

mod common;

use bytes::BytesMut;
use common::strategies::{any_packet, any_protocol};
use common::{check_round_trip, encode_vec, raw, ALL_PROTOCOLS, NO_LIMIT};
use ferrymq_codec::{decode, Error, Packet, Protocol};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

fn check_prefixes(packet: &Packet, protocol: Protocol) -> Result<(), TestCaseError> {
    let wire = encode_vec(packet, protocol);
    for len in 0..wire.len() {
        let mut buf = BytesMut::from(&wire[..len]);
        prop_assert_eq!(
            decode(&mut buf, protocol, NO_LIMIT),
            Ok(None),
            "prefix {}",
            len
        );
        prop_assert_eq!(&buf[..], &wire[..len], "prefix {} was consumed", len);
    }
    Ok(())
}

/// Decodes everything `buf` holds; stops at the first error.
/// Checks that the decoder consumes bytes only when it returns a packet.
fn drain(buf: &mut BytesMut, protocol: Protocol, max: usize) -> Result<Vec<Packet>, Error> {
    let mut out = Vec::new();
    loop {
        let before = buf.len();
        match decode(buf, protocol, max)? {
            Some(p) => {
                assert!(buf.len() < before, "a packet must consume bytes");
                out.push(p);
            }
            None => {
                assert_eq!(buf.len(), before, "incomplete must consume nothing");
                return Ok(out);
            }
        }
    }
}

/// Feeds `wire` to the decoder in pieces cut at `cuts`.
fn feed_in_pieces(
    wire: &[u8],
    cuts: &[Index],
    protocol: Protocol,
) -> Result<(Vec<Packet>, usize), Error> {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
    points.push(wire.len());
    points.sort_unstable();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut start = 0;
    for end in points {
        buf.extend_from_slice(&wire[start..end]);
        start = end;
        out.extend(drain(&mut buf, protocol, NO_LIMIT)?);
    }
    Ok((out, buf.len()))
}

fn check_stream(
    packets: &[Packet],
    cuts: &[Index],
    protocol: Protocol,
) -> Result<(), TestCaseError> {
    let wire: Vec<u8> = packets
        .iter()
        .flat_map(|p| encode_vec(p, protocol))
        .collect();
    let (decoded, left) = feed_in_pieces(&wire, cuts, protocol).unwrap();
    prop_assert_eq!(left, 0);
    prop_assert_eq!(decoded, packets.to_vec());
    Ok(())
}

/// Arbitrary input under each protocol: no panic, bytes are consumed only
/// by packets, and whatever decodes is a valid packet: it round-trips.
fn check_never_panics(bytes: &[u8], max: usize) -> Result<(), TestCaseError> {
    for protocol in ALL_PROTOCOLS {
        let mut buf = BytesMut::from(bytes);
        let mut packets = Vec::new();
        while let Ok(Some(p)) = decode(&mut buf, protocol, max) {
            packets.push(p);
        }
        for p in &packets {
            check_round_trip(p, protocol)?;
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn v3_1_strict_prefixes_are_incomplete(p in any_packet(Protocol::V3_1)) {
        check_prefixes(&p, Protocol::V3_1)?;
    }

    #[test]
    fn v3_1_1_strict_prefixes_are_incomplete(p in any_packet(Protocol::V3_1_1)) {
        check_prefixes(&p, Protocol::V3_1_1)?;
    }

    #[test]
    fn v5_strict_prefixes_are_incomplete(p in any_packet(Protocol::V5)) {
        check_prefixes(&p, Protocol::V5)?;
    }

    #[test]
    fn v3_1_stream_split_anywhere(
        packets in vec(any_packet(Protocol::V3_1), 1..6),
        cuts in vec(any::<Index>(), 0..12),
    ) {
        check_stream(&packets, &cuts, Protocol::V3_1)?;
    }

    #[test]
    fn v3_1_1_stream_split_anywhere(
        packets in vec(any_packet(Protocol::V3_1_1), 1..6),
        cuts in vec(any::<Index>(), 0..12),
    ) {
        check_stream(&packets, &cuts, Protocol::V3_1_1)?;
    }

    #[test]
    fn v5_stream_split_anywhere(
        packets in vec(any_packet(Protocol::V5), 1..6),
        cuts in vec(any::<Index>(), 0..12),
    ) {
        check_stream(&packets, &cuts, Protocol::V5)?;
    }

    /// Byte by byte is the extreme split.
    #[test]
    fn stream_fed_one_byte_at_a_time(
        (protocol, packets) in any_protocol()
            .prop_flat_map(|p| (Just(p), vec(any_packet(p), 1..4))),
    ) {
        let wire: Vec<u8> = packets.iter().flat_map(|p| encode_vec(p, protocol)).collect();
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for byte in &wire {
            buf.extend_from_slice(&[*byte]);
            decoded.extend(drain(&mut buf, protocol, NO_LIMIT).unwrap());
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(&decoded, &packets);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        check_never_panics(&bytes, NO_LIMIT)?;
        check_never_panics(&bytes, 64)?;
    }

    /// A well-formed fixed header over an arbitrary body reaches deeper into
    /// each packet decoder than wholly random bytes do.
    #[test]
    fn arbitrary_bodies_never_panic(
        byte1 in any::<u8>(),
        body in vec(any::<u8>(), 0..256),
    ) {
        check_never_panics(&raw(byte1, &body), NO_LIMIT)?;
    }

    /// A valid packet with one byte changed, or cut short: no panic, and
    /// whatever still decodes is a valid packet that round-trips.
    #[test]
    fn mutated_packets_never_panic(
        (protocol, packet) in any_protocol()
            .prop_flat_map(|p| (Just(p), any_packet(p))),
        at in any::<Index>(),
        value in any::<u8>(),
        cut in any::<Index>(),
    ) {
        let mut wire = encode_vec(&packet, protocol);
        let i = at.index(wire.len());
        wire[i] = value;
        check_never_panics(&wire, NO_LIMIT)?;
        let n = cut.index(wire.len());
        check_never_panics(&wire[..n], NO_LIMIT)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The maximum packet size counts the whole packet, fixed header
    /// included, and is inclusive; a bigger packet is refused as soon as its
    /// fixed header is in, before its body arrives.
    #[test]
    fn max_packet_size_counts_the_whole_packet(
        (protocol, packet) in any_protocol()
            .prop_flat_map(|p| (Just(p), any_packet(p))),
    ) {
        let wire = encode_vec(&packet, protocol);
        let size = wire.len();
        let mut buf = BytesMut::from(&wire[..]);
        prop_assert_eq!(decode(&mut buf, protocol, size), Ok(Some(packet)));

        let header = ferrymq_codec::FixedHeader::parse(&wire).unwrap().unwrap();
        let mut buf = BytesMut::from(&wire[..header.header_len]);
        prop_assert_eq!(
            decode(&mut buf, protocol, size - 1),
            Err(Error::PacketTooLarge { size, max: size - 1 })
        );
    }
}
