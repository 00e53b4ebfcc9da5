//! A small load generator for comparing brokers until `ferrymq bench`
//! exists: P publishers → 1 subscriber on a wildcard, QoS 0 or 1, with the
//! publishers held to at most `--window` messages ahead of what the
//! subscriber has received, so the figure is what the broker sustains, not
//! how much it buffers. Prints one line: delivered msg/s and losses.
//!
//!     cargo run --release -p ferrymq-testkit --example fanin -- \
//!         --port 1883 --publishers 4 --qos 1 --size 16 --seconds 5

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ferrymq_codec::{
    decode, encode, ConnAck, Packet, PacketId, Properties, Protocol, Publish, QoS, Subscribe,
    SubscriptionOptions, TopicFilter, TopicName,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

struct Args {
    host: String,
    port: u16,
    publishers: usize,
    qos: QoS,
    size: usize,
    seconds: u64,
    window: u64,
}

fn args() -> Args {
    let mut a = Args {
        host: "127.0.0.1".into(),
        port: 1883,
        publishers: 4,
        qos: QoS::AtMostOnce,
        size: 16,
        seconds: 5,
        window: 20_000,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let (k, v) = (pair[0].as_str(), pair.get(1).cloned().unwrap_or_default());
        match k {
            "--host" => a.host = v,
            "--port" => a.port = v.parse().expect("port"),
            "--publishers" => a.publishers = v.parse().expect("publishers"),
            "--qos" => a.qos = QoS::from_u8(v.parse().expect("qos")).expect("qos 0-2"),
            "--size" => a.size = v.parse().expect("size"),
            "--seconds" => a.seconds = v.parse().expect("seconds"),
            "--window" => a.window = v.parse().expect("window"),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

async fn connect(host: &str, port: u16, id: &str) -> (TcpStream, BytesMut) {
    let mut s = TcpStream::connect((host, port)).await.expect("connect");
    s.set_nodelay(true).unwrap();
    let mut out = BytesMut::new();
    let c = ferrymq_testkit::connect(Protocol::V3_1_1, id, true);
    encode(&Packet::Connect(Box::new(c)), Protocol::V3_1_1, &mut out).unwrap();
    s.write_all(&out).await.unwrap();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        if let Some(p) = decode(&mut buf, Protocol::V3_1_1, usize::MAX).unwrap() {
            match p {
                Packet::ConnAck(ConnAck { reason, .. }) if !reason.is_error() => break,
                other => panic!("connect refused: {other:?}"),
            }
        }
        assert!(
            s.read_buf(&mut buf).await.unwrap() > 0,
            "closed during connect"
        );
    }
    (s, buf)
}

#[tokio::main]
async fn main() {
    let a = args();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Notify::new());

    let (mut sub, mut sbuf) = connect(&a.host, a.port, "fanin-sub").await;
    let mut out = BytesMut::new();
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).unwrap(),
        properties: Properties::new(),
        filters: vec![(
            TopicFilter::new("fanin/#").unwrap(),
            SubscriptionOptions::qos(a.qos),
        )],
    });
    encode(&subscribe, Protocol::V3_1_1, &mut out).unwrap();
    sub.write_all(&out).await.unwrap();
    let sub_task = {
        let received = received.clone();
        let progress = progress.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut acks = BytesMut::new();
            // After `stop`, keep reading until the stream has been quiet for
            // a while, so that messages still in flight are counted.
            let mut quiet_since: Option<Instant> = None;
            loop {
                if stop.load(Ordering::Relaxed) {
                    let since = *quiet_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_millis(500) {
                        break;
                    }
                }
                let mut n = 0;
                while let Some(p) = decode(&mut sbuf, Protocol::V3_1_1, usize::MAX).unwrap() {
                    if let Packet::Publish(p) = p {
                        n += 1;
                        if let Some(id) = p.packet_id {
                            encode(
                                &Packet::PubAck(ferrymq_codec::PubResponse::new(id)),
                                Protocol::V3_1_1,
                                &mut acks,
                            )
                            .unwrap();
                        }
                    }
                }
                if n > 0 {
                    received.fetch_add(n, Ordering::Relaxed);
                    progress.notify_waiters();
                }
                if !acks.is_empty() {
                    sub.write_all(&acks).await.unwrap();
                    acks.clear();
                }
                if sbuf.capacity() - sbuf.len() < 16 * 1024 {
                    sbuf.reserve(64 * 1024);
                }
                match tokio::time::timeout(Duration::from_millis(100), sub.read_buf(&mut sbuf))
                    .await
                {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(_)) => quiet_since = None,
                    Err(_) => {}
                }
            }
        })
    };
    // Let the SUBACK arrive before publishing.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let payload = Bytes::from(vec![b'x'; a.size]);
    let mut tasks = Vec::new();
    for n in 0..a.publishers {
        let (stream, mut pbuf) = connect(&a.host, a.port, &format!("fanin-pub-{n}")).await;
        let (mut rd, mut wr) = stream.into_split();
        let (stop, sent, received, acked, progress) = (
            stop.clone(),
            sent.clone(),
            received.clone(),
            acked.clone(),
            progress.clone(),
        );
        let payload = payload.clone();
        let (qos, window) = (a.qos, a.window);
        // QoS 1 acknowledgements are read by a helper task.
        if qos != QoS::AtMostOnce {
            let acked = acked.clone();
            tokio::spawn(async move {
                loop {
                    while let Some(p) = decode(&mut pbuf, Protocol::V3_1_1, usize::MAX).unwrap() {
                        if matches!(p, Packet::PubAck(_)) {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if pbuf.capacity() - pbuf.len() < 4096 {
                        pbuf.reserve(64 * 1024);
                    }
                    if rd.read_buf(&mut pbuf).await.unwrap_or(0) == 0 {
                        break;
                    }
                }
            });
        }
        tasks.push(tokio::spawn(async move {
            let topic = TopicName::new(format!("fanin/{n}")).unwrap();
            let mut id: u16 = 0;
            let mut out = BytesMut::new();
            while !stop.load(Ordering::Relaxed) {
                // Bounded run-ahead of the subscriber.
                while sent.load(Ordering::Relaxed) > received.load(Ordering::Relaxed) + window {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let _ =
                        tokio::time::timeout(Duration::from_millis(10), progress.notified()).await;
                }
                out.clear();
                for _ in 0..64 {
                    id = id.wrapping_add(1).max(1);
                    let p = Publish {
                        dup: false,
                        qos,
                        retain: false,
                        topic: topic.clone(),
                        packet_id: (qos != QoS::AtMostOnce).then(|| PacketId::new(id).unwrap()),
                        properties: Properties::new(),
                        payload: payload.clone(),
                    };
                    encode(&Packet::Publish(p), Protocol::V3_1_1, &mut out).unwrap();
                }
                if wr.write_all(&out).await.is_err() {
                    return;
                }
                sent.fetch_add(64, Ordering::Relaxed);
            }
        }));
    }

    let warmup = Duration::from_secs(1);
    tokio::time::sleep(warmup).await;
    let (r0, a0, s0, t0) = (
        received.load(Ordering::Relaxed),
        acked.load(Ordering::Relaxed),
        sent.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    let (r1, a1, s1, el) = (
        received.load(Ordering::Relaxed),
        acked.load(Ordering::Relaxed),
        sent.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64(),
    );
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    // The subscriber returns once in-flight deliveries have landed.
    let _ = sub_task.await;
    let total_received = received.load(Ordering::Relaxed);
    let total_acked = acked.load(Ordering::Relaxed);
    let lost_acked = total_acked.saturating_sub(total_received);
    println!(
        "delivered {:.0} msg/s, published {:.0} msg/s, acked {:.0} msg/s; total sent {} received {} acked {} acked-but-not-delivered {}",
        (r1 - r0) as f64 / el,
        (s1 - s0) as f64 / el,
        (a1 - a0) as f64 / el,
        sent.load(Ordering::Relaxed),
        total_received,
        total_acked,
        lost_acked
    );
}
