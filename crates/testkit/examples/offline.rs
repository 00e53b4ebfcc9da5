//! QoS 1 throughput into an offline persistent session, the case where a
//! broker must store every message before acknowledging it:
//! a subscriber subscribes with a persistent session and leaves; P
//! publishers send QoS 1 flat out (at most `--window` unacknowledged
//! each) for `--seconds`; then the subscriber returns and drains its
//! queue. Prints the acknowledged rate and how many acknowledged messages
//! did not arrive.
//!
//!     cargo run --release -p ferrymq-testkit --example offline -- \
//!         --port 1883 --publishers 4 --seconds 5

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ferrymq_codec::{
    decode, encode, Packet, PacketId, Properties, Protocol, PubResponse, Publish, QoS, TopicName,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn session(port: u16, id: &str, clean: bool) -> (TcpStream, BytesMut) {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.set_nodelay(true).unwrap();
    let mut out = BytesMut::new();
    let c = ferrymq_testkit::connect(Protocol::V3_1_1, id, clean);
    encode(&Packet::Connect(Box::new(c)), Protocol::V3_1_1, &mut out).unwrap();
    s.write_all(&out).await.unwrap();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        if let Some(p) = decode(&mut buf, Protocol::V3_1_1, usize::MAX).unwrap() {
            assert!(
                matches!(p, Packet::ConnAck(ref a) if !a.reason.is_error()),
                "{p:?}"
            );
            return (s, buf);
        }
        assert!(s.read_buf(&mut buf).await.unwrap() > 0);
    }
}

#[tokio::main]
async fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (mut port, mut publishers, mut seconds, mut window, mut size) =
        (1883u16, 4usize, 5u64, 100u64, 16usize);
    for pair in argv.chunks(2) {
        let v = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--port" => port = v.parse().unwrap(),
            "--publishers" => publishers = v.parse().unwrap(),
            "--seconds" => seconds = v.parse().unwrap(),
            "--window" => window = v.parse().unwrap(),
            "--size" => size = v.parse().unwrap(),
            other => panic!("unknown flag {other}"),
        }
    }
    // Subscribe with a persistent session, then leave.
    let (mut sub, _) = session(port, "offline-sub", false).await;
    let mut out = BytesMut::new();
    let subscribe = ferrymq_codec::Subscribe {
        packet_id: PacketId::new(1).unwrap(),
        properties: Properties::new(),
        filters: vec![(
            ferrymq_codec::TopicFilter::new("offline/#").unwrap(),
            ferrymq_codec::SubscriptionOptions::qos(QoS::AtLeastOnce),
        )],
    };
    encode(&Packet::Subscribe(subscribe), Protocol::V3_1_1, &mut out).unwrap();
    encode(
        &Packet::Disconnect(Default::default()),
        Protocol::V3_1_1,
        &mut out,
    )
    .unwrap();
    sub.write_all(&out).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), sub.read_to_end(&mut rest)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let payload = Bytes::from(vec![b'x'; size]);
    let mut tasks = Vec::new();
    for n in 0..publishers {
        let (stream, mut buf) = session(port, &format!("offline-pub-{n}"), true).await;
        let (mut rd, mut wr) = stream.into_split();
        let (stop, acked, payload) = (stop.clone(), acked.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            let topic = TopicName::new(format!("offline/{n}")).unwrap();
            let mut sent = 0u64;
            let mut mine = 0u64;
            let mut id: u16 = 0;
            let mut out = BytesMut::new();
            while !stop.load(Ordering::Relaxed) {
                out.clear();
                while sent - mine < window {
                    id = id.wrapping_add(1).max(1);
                    let p = Publish {
                        dup: false,
                        qos: QoS::AtLeastOnce,
                        retain: false,
                        topic: topic.clone(),
                        packet_id: PacketId::new(id),
                        properties: Properties::new(),
                        payload: payload.clone(),
                    };
                    encode(&Packet::Publish(p), Protocol::V3_1_1, &mut out).unwrap();
                    sent += 1;
                }
                if !out.is_empty() && wr.write_all(&out).await.is_err() {
                    break;
                }
                if buf.capacity() - buf.len() < 4096 {
                    buf.reserve(64 * 1024);
                }
                match tokio::time::timeout(Duration::from_millis(100), rd.read_buf(&mut buf)).await
                {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    _ => {}
                }
                while let Some(p) = decode(&mut buf, Protocol::V3_1_1, usize::MAX).unwrap() {
                    if matches!(p, Packet::PubAck(_)) {
                        mine += 1;
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let acked_n = acked.load(Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let acked_total = acked.load(Ordering::Relaxed);

    // The subscriber comes back and drains.
    let drain_start = Instant::now();
    let (mut sub, mut buf) = session(port, "offline-sub", false).await;
    let mut received = 0u64;
    let mut acks = BytesMut::new();
    loop {
        while let Some(p) = decode(&mut buf, Protocol::V3_1_1, usize::MAX).unwrap() {
            if let Packet::Publish(m) = p {
                received += 1;
                if let Some(id) = m.packet_id {
                    encode(
                        &Packet::PubAck(PubResponse::new(id)),
                        Protocol::V3_1_1,
                        &mut acks,
                    )
                    .unwrap();
                }
            }
        }
        if !acks.is_empty() {
            sub.write_all(&acks).await.unwrap();
            acks.clear();
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        match tokio::time::timeout(Duration::from_millis(1000), sub.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => break,
        }
    }
    println!(
        "acknowledged {:.0} msg/s ({} in {:.1}s, {} total); subscriber drained {} in {:.1}s; acknowledged but not delivered: {}",
        acked_n as f64 / elapsed,
        acked_n,
        elapsed,
        acked_total,
        received,
        drain_start.elapsed().as_secs_f64() - 1.0,
        acked_total.saturating_sub(received)
    );
}
