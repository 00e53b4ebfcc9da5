//! What a bench message carries, and its PUBLISH bytes.
//!
//! The first 16 bytes of every payload are a stamp: when it was sent
//! (nanoseconds of the system clock, so a `bench sub` in another process on
//! the same machine can read it), which publisher sent it, and its sequence
//! number there. Latency and loss are computed from the stamp alone, so the
//! broker under test cannot influence them by what it reorders or drops.
//! Payloads shorter than the stamp carry none: throughput only.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use ferrymq_codec::{Protocol, QoS};

/// Bytes of the stamp at the front of a payload.
pub const STAMP_LEN: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Nanoseconds since the Unix epoch when the message was written.
    pub sent_at_ns: u64,
    pub publisher: u32,
    pub seq: u32,
}

impl Stamp {
    /// Reads the stamp of a payload; `None` when it is too short to hold one.
    pub fn read(payload: &[u8]) -> Option<Stamp> {
        let head = payload.get(..STAMP_LEN)?;
        let word = |range: std::ops::Range<usize>| head.get(range).unwrap_or_default();
        Some(Stamp {
            sent_at_ns: u64::from_le_bytes(word(0..8).try_into().ok()?),
            publisher: u32::from_le_bytes(word(8..12).try_into().ok()?),
            seq: u32::from_le_bytes(word(12..16).try_into().ok()?),
        })
    }

    fn write(&self, out: &mut BytesMut) {
        out.put_u64_le(self.sent_at_ns);
        out.put_u32_le(self.publisher);
        out.put_u32_le(self.seq);
    }
}

/// Nanoseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Appends one PUBLISH to `out`: `size` payload bytes, stamped when `size`
/// has room for it, the rest filler.
///
/// Written by hand rather than through the codec's packet model because the
/// generator must outrun a broker on one core: this is a few copies into one
/// buffer, with no per-message allocation. The codec decodes it in the tests.
pub fn put_publish(
    out: &mut BytesMut,
    protocol: Protocol,
    qos: QoS,
    topic: &[u8],
    packet_id: u16,
    size: usize,
    stamp: Stamp,
) {
    let with_id = qos != QoS::AtMostOnce;
    let properties = usize::from(protocol == Protocol::V5);
    let remaining = 2 + topic.len() + if with_id { 2 } else { 0 } + properties + size;
    out.reserve(remaining + 5);
    out.put_u8(0x30 | ((qos as u8) << 1));
    put_varint(out, remaining);
    out.put_u16(topic.len() as u16);
    out.put_slice(topic);
    if with_id {
        out.put_u16(packet_id);
    }
    if properties == 1 {
        out.put_u8(0);
    }
    if size >= STAMP_LEN {
        stamp.write(out);
        out.put_bytes(b'x', size - STAMP_LEN);
    } else {
        out.put_bytes(b'x', size);
    }
}

fn put_varint(out: &mut BytesMut, mut n: usize) {
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        if n == 0 {
            out.put_u8(byte);
            return;
        }
        out.put_u8(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrymq_codec::{decode, Packet};

    #[test]
    fn the_codec_reads_what_put_publish_writes() {
        for protocol in [Protocol::V3_1_1, Protocol::V5] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                for size in [0, 3, 16, 200, 20_000] {
                    let stamp = Stamp {
                        sent_at_ns: 1_700_000_000_123_456_789,
                        publisher: 7,
                        seq: 4_000_000_000,
                    };
                    let mut out = BytesMut::new();
                    put_publish(&mut out, protocol, qos, b"bench/7", 513, size, stamp);
                    let Ok(Some(Packet::Publish(p))) = decode(&mut out, protocol, usize::MAX)
                    else {
                        panic!("not a PUBLISH ({protocol:?}, {qos:?}, {size})");
                    };
                    assert!(out.is_empty());
                    assert_eq!(&*p.topic, "bench/7");
                    assert_eq!(p.qos, qos);
                    assert_eq!(p.packet_id.map(|id| id.get()), with_id(qos).then_some(513));
                    assert_eq!(p.payload.len(), size);
                    let read = Stamp::read(&p.payload);
                    assert_eq!(read, (size >= STAMP_LEN).then_some(stamp));
                }
            }
        }
    }

    fn with_id(qos: QoS) -> bool {
        qos != QoS::AtMostOnce
    }
}
