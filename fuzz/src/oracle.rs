//! The fuzz oracles: what must hold for any input, checked with `assert!`
//! so that libFuzzer reports a violation as a crash.
//!
//! This file is shared: the fuzz targets use it through `ferrymq_fuzz`, and
//! `crates/codec/tests/fuzz_corpus_replay.rs` includes it with `#[path]`,
//! so it may depend only on `ferrymq_codec`, `bytes` and `std`.

use bytes::{Bytes, BytesMut};
use ferrymq_codec::types::MqttString;
use ferrymq_codec::{decode, encode, encoded_len, Error, Packet, Protocol, TopicFilter, TopicName};

/// The maximum packet size the decode oracles run with: small enough that
/// the "too large" check is reached by plausible lengths, large enough for
/// every input libFuzzer makes by default.
pub const MAX_PACKET_SIZE: usize = 64 * 1024;

/// How a stream of bytes ends once every complete packet is taken off it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The rest (this many bytes) is the start of a packet not yet complete.
    Incomplete(usize),
    /// The decoder refused the next packet; the connection would be closed.
    Failed(Error),
}

/// Decodes `data` as the bytes a connection speaking `protocol` receives:
///
/// 1. packet after packet from one buffer, until "incomplete" or an error;
/// 2. every decoded packet survives encode→decode unchanged (see
///    [`round_trip`]);
/// 3. the same bytes delivered in chunks (sizes drawn from the input itself)
///    decode to the same packets and end the same way: "incomplete" never
///    consumes anything and never turns into something else once more bytes
///    arrive.
pub fn decode_stream(data: &[u8], protocol: Protocol) -> (Vec<Packet>, End) {
    let (packets, end) = decode_whole(data, protocol);
    for packet in &packets {
        round_trip(packet, protocol);
    }
    let (chunked_packets, chunked_end) = decode_chunked(data, protocol);
    assert_eq!(
        packets, chunked_packets,
        "chunked delivery decoded other packets"
    );
    assert_eq!(end, chunked_end, "chunked delivery ended differently");
    (packets, end)
}

/// Step 1 of [`decode_stream`]: everything in one buffer.
pub fn decode_whole(data: &[u8], protocol: Protocol) -> (Vec<Packet>, End) {
    let mut buf = BytesMut::from(data);
    let mut packets = Vec::new();
    loop {
        let before = buf.len();
        match decode(&mut buf, protocol, MAX_PACKET_SIZE) {
            Ok(Some(packet)) => {
                let consumed = before - buf.len();
                assert!(consumed >= 2, "a packet is at least two bytes");
                assert!(consumed <= MAX_PACKET_SIZE, "the size limit was ignored");
                // The encoder writes the shortest form: never longer than
                // any form the decoder accepts.
                let len = encoded_len(&packet, protocol).expect("a decoded packet encodes");
                assert!(
                    len <= consumed,
                    "{packet:?} re-encodes to {len} bytes, more than the {consumed} it came from"
                );
                packets.push(packet);
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "\"incomplete\" consumed bytes");
                return (packets, End::Incomplete(buf.len()));
            }
            Err(e) => return (packets, End::Failed(e)),
        }
    }
}

/// Step 3 of [`decode_stream`]: the bytes arrive in chunks whose sizes come
/// from a little generator seeded with the input, so the same input always
/// splits the same way and the fuzzer still explores many splits.
pub fn decode_chunked(data: &[u8], protocol: Protocol) -> (Vec<Packet>, End) {
    let mut seed = data.iter().fold(0x811c_9dc5_u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    }) | 1;
    let mut next_chunk = move || {
        // xorshift32: cheap and deterministic.
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        // Mostly tiny chunks (splitting headers and fields), sometimes big.
        if seed & 3 == 0 {
            (seed >> 8) as usize % 512
        } else {
            (seed >> 8) as usize % 4
        }
    };
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    let mut rest = data;
    loop {
        let before = buf.len();
        match decode(&mut buf, protocol, MAX_PACKET_SIZE) {
            Ok(Some(packet)) => packets.push(packet),
            Ok(None) => {
                assert_eq!(buf.len(), before, "\"incomplete\" consumed bytes");
                if rest.is_empty() {
                    return (packets, End::Incomplete(buf.len()));
                }
                let n = next_chunk().clamp(1, rest.len());
                let (chunk, tail) = rest.split_at(n);
                buf.extend_from_slice(chunk);
                rest = tail;
            }
            Err(e) => return (packets, End::Failed(e)),
        }
    }
}

/// Step 2 of [`decode_stream`]: `packet` (as decoded on a `protocol`
/// connection) encodes without error into exactly [`encoded_len`] bytes,
/// appended after what the buffer held, and those bytes decode to `packet`
/// again, as exactly one packet.
pub fn round_trip(packet: &Packet, protocol: Protocol) {
    const PREFIX: &[u8] = b"prefix";
    let mut buf = BytesMut::from(PREFIX);
    let written = match encode(packet, protocol, &mut buf) {
        Ok(n) => n,
        Err(e) => panic!("{packet:?} was decoded on {protocol} but does not encode: {e}"),
    };
    assert_eq!(&buf[..PREFIX.len()], PREFIX, "encode overwrote the buffer");
    let mut wire = buf.split_off(PREFIX.len());
    assert_eq!(written, wire.len(), "encode returned a wrong size");
    assert_eq!(
        encoded_len(packet, protocol),
        Ok(wire.len()),
        "encoded_len disagrees with encode"
    );
    let encoded = wire.clone().freeze();
    match decode(&mut wire, protocol, usize::MAX) {
        Ok(Some(again)) => {
            assert_eq!(
                &again, packet,
                "encode→decode changed the packet; wire bytes {encoded:02x?}"
            );
            assert!(
                wire.is_empty(),
                "{} bytes left after re-decoding {packet:?}; wire bytes {encoded:02x?}",
                wire.len()
            );
        }
        Ok(None) => panic!("the encoding of {packet:?} is incomplete: {encoded:02x?}"),
        Err(e) => panic!("the encoding of {packet:?} does not decode ({e}): {encoded:02x?}"),
    }
}

/// The topic oracle: `data` as an MQTT string, a topic name and a topic
/// filter. Each is accepted exactly when an independent reading of the
/// rules accepts it, and a valid filter's levels obey [MQTT-4.7.1].
pub fn topic(data: &[u8]) {
    let as_str = std::str::from_utf8(data).ok();
    let string = MqttString::try_from(Bytes::copy_from_slice(data));
    // [MQTT-1.5.4]: well-formed UTF-8 (std refuses surrogates and over-long
    // forms too), no U+0000, at most 65,535 bytes.
    let string_ok = as_str.is_some() && !data.contains(&0) && data.len() <= usize::from(u16::MAX);
    assert_eq!(string.is_ok(), string_ok, "MqttString on {data:02x?}");
    let Some(s) = as_str else {
        return;
    };
    if let Ok(m) = &string {
        assert_eq!(m.as_str(), s);
    }

    let name = TopicName::new(s);
    let name_ok = string_ok && !s.contains(['+', '#']);
    assert_eq!(name.is_ok(), name_ok, "TopicName::new({s:?}) = {name:?}");
    if let Err(e) = &name {
        if string_ok {
            assert!(matches!(e, Error::InvalidTopicName(_)), "{e:?}");
        }
    }

    let filter = TopicFilter::new(s);
    let filter_ok = string_ok && filter_rules_hold(s);
    assert_eq!(
        filter.is_ok(),
        filter_ok,
        "TopicFilter::new({s:?}) = {filter:?}"
    );
    if let Ok(f) = &filter {
        assert_eq!(f.as_str(), s);
        assert!(!f.is_empty(), "an empty filter was accepted");
        let levels: Vec<&str> = f.split('/').collect();
        for (i, level) in levels.iter().enumerate() {
            let last = i + 1 == levels.len();
            match *level {
                "+" => {}
                "#" => assert!(last, "'#' before the last level in {s:?}"),
                other => assert!(
                    !other.contains(['+', '#']),
                    "wildcard inside level {other:?} of {s:?}"
                ),
            }
        }
        assert_eq!(f.has_wildcards(), s.contains(['+', '#']));
    } else if string_ok {
        assert!(
            matches!(filter, Err(Error::InvalidTopicFilter(_))),
            "{filter:?}"
        );
    }
    // Every non-empty topic name is also a filter (one matching only itself).
    if let Ok(n) = &name {
        if !n.is_empty() {
            let f = TopicFilter::new(s).expect("a non-empty topic name is a valid filter");
            assert!(!f.has_wildcards());
        }
    }
}

/// The filter rules read byte by byte, independently of the codec's
/// level-splitting: non-empty; `+` has a `/` or an end on each side; `#` has
/// a `/` or the start before it and is the last byte.
fn filter_rules_hold(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() {
        return false;
    }
    let slash_or_edge = |i: Option<usize>| i.and_then(|i| b.get(i)).is_none_or(|&c| c == b'/');
    b.iter().enumerate().all(|(i, &c)| match c {
        b'+' => slash_or_edge(i.checked_sub(1)) && slash_or_edge(Some(i + 1)),
        b'#' => slash_or_edge(i.checked_sub(1)) && i + 1 == b.len(),
        _ => true,
    })
}
