//! ferrymq's codec against mqttbytes 0.6 (its `v4` module, MQTT 3.1.1),
//! side by side in one run.
//!
//! Fair by construction: both libraries get byte-identical input (checked
//! before measuring), both decode from a `BytesMut` clone of those bytes
//! (cloned outside the timed section, in cache), both encode into one reused
//! `BytesMut` cleared each iteration, and both reach their packets through
//! their packet enum. Note that ferrymq validates more while decoding (UTF-8
//! without U+0000, topic wildcards, reserved flags, trailing bytes), and
//! mqttbytes copies each topic into a `String` where ferrymq shares the
//! buffer.
//!
//! Run: `cargo bench -p ferrymq-codec --bench codec`

use std::hint::black_box;
use std::num::NonZeroU16;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ferrymq_codec::{
    decode, encode, Packet, Properties, Protocol, PubResponse, Publish, QoS, Subscribe,
    SubscriptionOptions, TopicFilter, TopicName,
};
use mqttbytes::v4;

const MAX: usize = 1 << 20;
const PROTOCOL: Protocol = Protocol::V3_1_1;

fn pid(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).expect("packet ids are not zero")
}

/// The same packet for both libraries.
struct Pair {
    ferrymq: Packet,
    mqttbytes: v4::Packet,
}

fn publish(topic: &str, qos: u8, id: u16, payload: Bytes) -> Pair {
    let (fq, mq) = match qos {
        0 => (QoS::AtMostOnce, mqttbytes::QoS::AtMostOnce),
        _ => (QoS::AtLeastOnce, mqttbytes::QoS::AtLeastOnce),
    };
    let mut m = v4::Publish::from_bytes(topic, mq, payload.clone());
    m.pkid = if qos == 0 { 0 } else { id };
    Pair {
        ferrymq: Packet::Publish(Publish {
            dup: false,
            qos: fq,
            retain: false,
            topic: TopicName::new(topic).expect("valid topic"),
            packet_id: (qos != 0).then(|| pid(id)),
            properties: Properties::new(),
            payload,
        }),
        mqttbytes: v4::Packet::Publish(m),
    }
}

fn puback(id: u16) -> Pair {
    Pair {
        ferrymq: Packet::PubAck(PubResponse::new(pid(id))),
        mqttbytes: v4::Packet::PubAck(v4::PubAck::new(id)),
    }
}

fn subscribe(id: u16, filters: &[&str]) -> Pair {
    let mut m = v4::Subscribe::new_many(
        filters
            .iter()
            .map(|f| v4::SubscribeFilter::new((*f).to_owned(), mqttbytes::QoS::AtLeastOnce)),
    );
    m.pkid = id;
    Pair {
        ferrymq: Packet::Subscribe(Subscribe {
            packet_id: pid(id),
            properties: Properties::new(),
            filters: filters
                .iter()
                .map(|f| {
                    (
                        TopicFilter::new(*f).expect("valid filter"),
                        SubscriptionOptions::qos(QoS::AtLeastOnce),
                    )
                })
                .collect(),
        }),
        mqttbytes: v4::Packet::Subscribe(m),
    }
}

fn pingreq() -> Pair {
    Pair {
        ferrymq: Packet::PingReq,
        mqttbytes: v4::Packet::PingReq,
    }
}

fn payload(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// 100 packets as a client session sends them: 60 publishes (QoS 0 and 1,
/// 0 B to 4 KiB), 20 PUBACKs, 10 SUBSCRIBEs, 10 PINGREQs.
fn mixed() -> Vec<Pair> {
    const SIZES: [usize; 6] = [16, 64, 0, 256, 1024, 4096];
    let mut out = Vec::with_capacity(100);
    for i in 0..100u16 {
        let id = i + 1;
        out.push(match i % 10 {
            0..=5 => publish(
                "building/7/floor/3/room/12/temperature",
                u8::from(i % 2 == 1),
                id,
                payload(SIZES[usize::from(i) % SIZES.len()]),
            ),
            6 | 7 => puback(id),
            8 => subscribe(id, &["building/+/floor/#", "alerts/critical"]),
            _ => pingreq(),
        });
    }
    out
}

/// mqttbytes has no packet-level `write`: dispatch the way a caller would.
fn mqttbytes_write(packet: &v4::Packet, buf: &mut BytesMut) -> usize {
    let r = match packet {
        v4::Packet::Publish(p) => p.write(buf),
        v4::Packet::PubAck(p) => p.write(buf),
        v4::Packet::Subscribe(p) => p.write(buf),
        v4::Packet::PingReq => v4::PingReq.write(buf),
        other => unimplemented!("not in the benchmark: {other:?}"),
    };
    r.expect("mqttbytes encodes")
}

fn ferrymq_bytes(packets: &[Pair]) -> BytesMut {
    let mut buf = BytesMut::new();
    for p in packets {
        encode(&p.ferrymq, PROTOCOL, &mut buf).expect("ferrymq encodes");
    }
    buf
}

/// Both encoders produce the same bytes, and both decoders read them back
/// as the right number of packets: otherwise the comparison means nothing.
fn check_same_wire(packets: &[Pair]) -> BytesMut {
    let ours = ferrymq_bytes(packets);
    let mut theirs = BytesMut::new();
    for p in packets {
        mqttbytes_write(&p.mqttbytes, &mut theirs);
    }
    assert_eq!(ours, theirs, "the two encoders disagree");
    assert_eq!(decode_ferrymq(&mut ours.clone()), packets.len());
    assert_eq!(decode_mqttbytes(&mut ours.clone()), packets.len());
    ours
}

fn decode_ferrymq(buf: &mut BytesMut) -> usize {
    let mut n = 0;
    while let Some(p) = decode(buf, PROTOCOL, MAX).expect("ferrymq decodes") {
        black_box(p);
        n += 1;
    }
    n
}

fn decode_mqttbytes(buf: &mut BytesMut) -> usize {
    let mut n = 0;
    while !buf.is_empty() {
        black_box(v4::read(buf, MAX).expect("mqttbytes decodes"));
        n += 1;
    }
    n
}

fn bench_workload(c: &mut Criterion, name: &str, packets: &[Pair]) {
    let wire = check_same_wire(packets);
    let elements = packets.len() as u64;

    // Clones made before each batch, outside the timed section; batches
    // small enough (about 32 KiB of input) that the bytes are still in the
    // cache when decoded, as they are right after a socket read.
    let batch = BatchSize::NumIterations((32 * 1024 / wire.len()).max(1) as u64);
    let mut group = c.benchmark_group(format!("decode/{name}"));
    group.throughput(Throughput::Elements(elements));
    group.bench_function("ferrymq", |b| {
        b.iter_batched_ref(|| wire.clone(), decode_ferrymq, batch)
    });
    group.bench_function("mqttbytes", |b| {
        b.iter_batched_ref(|| wire.clone(), decode_mqttbytes, batch)
    });
    group.finish();

    let mut group = c.benchmark_group(format!("encode/{name}"));
    group.throughput(Throughput::Elements(elements));
    let mut buf = BytesMut::with_capacity(wire.len());
    group.bench_function("ferrymq", |b| {
        b.iter(|| {
            buf.clear();
            for p in packets {
                encode(black_box(&p.ferrymq), PROTOCOL, &mut buf).expect("ferrymq encodes");
            }
            black_box(buf.len())
        })
    });
    group.bench_function("mqttbytes", |b| {
        b.iter(|| {
            buf.clear();
            for p in packets {
                mqttbytes_write(black_box(&p.mqttbytes), &mut buf);
            }
            black_box(buf.len())
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let topic = "building/7/floor/3/room/12/temperature";
    bench_workload(c, "publish_qos1_16B", &[publish(topic, 1, 7, payload(16))]);
    bench_workload(
        c,
        "publish_qos1_1KiB",
        &[publish(topic, 1, 7, payload(1024))],
    );
    bench_workload(c, "mixed_100", &mixed());
}

criterion_group!(codec, benches);
criterion_main!(codec);
