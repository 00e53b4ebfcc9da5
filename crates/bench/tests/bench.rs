//! The bench commands against a live broker over TCP, and against a broker
//! that loses acknowledged messages on purpose: the figures must add up,
//! and loss must show.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use clap::{FromArgMatches, Subcommand};
use ferrymq_bench::{run, BenchCommand, Summary};
use ferrymq_codec::{
    decode, encode, ConnAck, Packet, Properties, Protocol, PubResponse, ReasonCode, SubAck,
};
use ferrymq_testkit::TestBroker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Every run in this file is small; this bounds each one.
const RUN_LIMIT: Duration = Duration::from_secs(60);

fn command(args: &str, addr: SocketAddr) -> BenchCommand {
    let line = format!(
        "bench {args} -h 127.0.0.1 -p {} --quiet --threads 2",
        addr.port()
    );
    let cmd = BenchCommand::augment_subcommands(clap::Command::new("bench"));
    let matches = cmd
        .try_get_matches_from(line.split_whitespace())
        .unwrap_or_else(|e| panic!("{line}: {e}"));
    BenchCommand::from_arg_matches(&matches).unwrap()
}

async fn bench(args: &str, addr: SocketAddr) -> Summary {
    let run = async {
        match command(args, addr) {
            BenchCommand::Conn(a) => run::run_conn(a).await,
            BenchCommand::Pub(a) => run::run_pub(a).await,
            BenchCommand::Sub(a) => run::run_sub(a).await,
        }
    };
    tokio::time::timeout(RUN_LIMIT, run)
        .await
        .expect("the run ends in time")
        .expect("the run succeeds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_fan_in_is_counted_exactly_with_nothing_lost() {
    let broker = TestBroker::start().await;
    for version in ["4", "5"] {
        let s = bench(
            &format!(
                "pub -V {version} -c 3 -t fanin/%i -q 1 -s 64 -L 2000 --subscribers 1 --sub-topic fanin/#"
            ),
            broker.addr,
        )
        .await;
        assert_eq!(s.errors, 0, "{:?}", s.error_samples);
        assert_eq!(s.sent, Some(6000));
        assert_eq!(s.acked, Some(6000));
        assert_eq!(s.rejected, Some(0));
        assert!(s.received.unwrap() >= 6000);
        assert_eq!(s.lost_acked, Some(0));
        assert_eq!(s.undelivered, Some(0));
        assert_eq!(s.connect.connected, 4);
        let latency = s.latency_us.expect("stamped payloads give latency");
        assert_eq!(latency.count, s.received.unwrap());
        assert!(latency.p50 <= latency.p99 && latency.p99 <= latency.max);
        assert!(s.sent_per_second.unwrap() > 0.0);
    }
}

/// Publishers on several threads share one run-ahead bound: together they
/// never put more in front of the subscriber than the broker may queue, so
/// a broker with a short queue drops nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_together_keep_the_run_ahead_bound() {
    let mut config = ferrymq_testkit::test_config();
    config.max_queued_messages = 200;
    let broker = TestBroker::with_config(config).await;
    let s = bench(
        "pub -c 4 -t fanin/%i -q 1 -s 16 -L 5000 --max-ahead 200 --subscribers 1 --sub-topic fanin/#",
        broker.addr,
    )
    .await;
    assert_eq!(s.errors, 0, "{:?}", s.error_samples);
    assert_eq!(s.acked, Some(20_000));
    assert_eq!(s.lost_acked, Some(0));
    let dropped = broker
        .server
        .broker
        .metrics
        .dropped_queue_full
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(dropped, 0, "the broker's queue overflowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_is_exactly_once() {
    let broker = TestBroker::start().await;
    for version in ["4", "5"] {
        let s = bench(
            &format!(
                "pub -V {version} -c 2 -t eo/%i -q 2 -s 32 -L 1500 --subscribers 1 --sub-topic eo/+"
            ),
            broker.addr,
        )
        .await;
        assert_eq!(s.errors, 0, "{:?}", s.error_samples);
        assert_eq!(s.sent, Some(3000));
        assert_eq!(s.acked, Some(3000));
        assert_eq!(s.received, Some(3000));
        assert_eq!(s.duplicates, Some(0));
        assert_eq!(s.lost_acked, Some(0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_fan_out_counts_every_delivery_and_holds_the_lead() {
    let broker = TestBroker::start().await;
    let s = bench(
        "pub -c 1 -t fanout -q 0 -s 16 -L 3000 --subscribers 5 --max-ahead 100",
        broker.addr,
    )
    .await;
    assert_eq!(s.errors, 0, "{:?}", s.error_samples);
    assert_eq!(s.sent, Some(3000));
    // Publishers 100 messages ahead at most: nothing overflows a queue.
    assert_eq!(s.received, Some(15_000));
    assert_eq!(s.undelivered, Some(0));
    assert_eq!(s.out_of_order, Some(0));
    assert_eq!(s.acked, None, "QoS 0 has no acknowledgements");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_is_kept() {
    let broker = TestBroker::start().await;
    // 400 messages at 1000/s take 0.4 s; a rate far above would finish at
    // once, far below would not finish within the run limit.
    let started = std::time::Instant::now();
    let s = bench(
        "pub -c 2 -t rate/%i -q 1 -s 16 -L 200 --rate 1000 --subscribers 1",
        broker.addr,
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(s.received, Some(400));
    assert!(
        elapsed >= Duration::from_millis(390),
        "400 messages at 1000/s came in {elapsed:?}"
    );
    assert!(
        s.sent_per_second.unwrap() <= 1100.0,
        "{:?}",
        s.sent_per_second
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conn_opens_and_holds_connections_and_reads_broker_memory() {
    let broker = TestBroker::start().await;
    // The broker runs in this process: its memory is ours.
    let s = bench(
        &format!(
            "conn -c 200 --duration 0 -V 5 --broker-pid {}",
            std::process::id()
        ),
        broker.addr,
    )
    .await;
    assert_eq!(s.errors, 0, "{:?}", s.error_samples);
    assert_eq!(s.connect.attempted, 200);
    assert_eq!(s.connect.connected, 200);
    assert_eq!(s.connect.failed, 0);
    assert!(s.connect.per_second > 0.0);
    assert!(s.broker_rss_before_bytes.unwrap() > 0);
    assert!(s.broker_rss_per_connection_bytes.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_counted_as_failures() {
    let config = ferrymq_broker::Config {
        allow_anonymous: Some(false),
        ..ferrymq_testkit::test_config()
    };
    let broker = TestBroker::with_config(config).await;
    let s = bench("conn -c 5 --duration 0", broker.addr).await;
    assert_eq!(s.connect.connected, 0);
    assert_eq!(s.connect.failed, 5);
    assert_eq!(s.errors, 5);
    assert!(
        s.error_samples[0].contains("refused"),
        "{:?}",
        s.error_samples
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_measures_a_publisher_elsewhere() {
    let broker = TestBroker::start().await;
    let addr = broker.addr;
    let sub = tokio::spawn(async move { bench("sub -c 2 -t far/+ -q 1 --duration 4", addr).await });
    // Publish once both subscriptions exist.
    tokio::time::timeout(Duration::from_secs(10), async {
        while broker.broker().router.len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("subscribed");
    let p = bench("pub -c 1 -t far/x -q 1 -s 20 -L 500", addr).await;
    assert_eq!(p.acked, Some(500));
    let s = sub.await.unwrap();
    assert_eq!(s.errors, 0, "{:?}", s.error_samples);
    assert_eq!(s.received, Some(1000));
    assert_eq!(s.gaps, Some(0));
    assert_eq!(s.latency_us.unwrap().count, 1000);
}

/// A broker that acknowledges every QoS 1 PUBLISH and forwards only the
/// even-numbered ones: what a queue that drops acknowledged messages
/// looks like from outside.
async fn lossy_broker() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (to_subs, subs_rx) = mpsc::unbounded_channel::<mpsc::UnboundedSender<Packet>>();
    let (forward, mut forward_rx) = mpsc::unbounded_channel::<Packet>();
    tokio::spawn(async move {
        let mut subs_rx = subs_rx;
        let mut subs = Vec::new();
        let mut n = 0u64;
        loop {
            tokio::select! {
                Some(s) = subs_rx.recv() => subs.push(s),
                Some(p) = forward_rx.recv() => {
                    n += 1;
                    if n % 2 == 0 {
                        for s in &subs {
                            let _ = s.send(p.clone());
                        }
                    }
                }
                else => return,
            }
        }
    });
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(lossy_session(stream, to_subs.clone(), forward.clone()));
        }
    });
    addr
}

async fn lossy_session(
    stream: TcpStream,
    subs: mpsc::UnboundedSender<mpsc::UnboundedSender<Packet>>,
    forward: mpsc::UnboundedSender<Packet>,
) {
    let protocol = Protocol::V3_1_1;
    let (mut rd, mut wr) = stream.into_split();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Packet>();
    tokio::spawn(async move {
        while let Some(p) = out_rx.recv().await {
            let mut buf = BytesMut::new();
            encode(&p, protocol, &mut buf).unwrap();
            if wr.write_all(&buf).await.is_err() {
                return;
            }
        }
    });
    let mut buf = BytesMut::new();
    loop {
        while let Ok(Some(packet)) = decode(&mut buf, protocol, usize::MAX) {
            let reply = match packet {
                Packet::Connect(_) => Packet::ConnAck(ConnAck {
                    session_present: false,
                    reason: ReasonCode::Success,
                    properties: Properties::new(),
                }),
                Packet::Subscribe(s) => {
                    let _ = subs.send(out_tx.clone());
                    Packet::SubAck(SubAck {
                        packet_id: s.packet_id,
                        properties: Properties::new(),
                        reasons: vec![ReasonCode::GrantedQoS1],
                    })
                }
                Packet::Publish(p) => {
                    let id = p.packet_id.unwrap();
                    let _ = forward.send(Packet::Publish(p));
                    Packet::PubAck(PubResponse::new(id))
                }
                _ => continue,
            };
            let _ = out_tx.send(reply);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_drops_acknowledged_messages_is_caught() {
    let addr = lossy_broker().await;
    let s = bench(
        "pub -c 1 -t lossy -q 1 -s 16 -L 1000 --subscribers 1 --max-ahead 0",
        addr,
    )
    .await;
    assert_eq!(s.acked, Some(1000));
    assert_eq!(s.received, Some(500));
    assert_eq!(s.lost_acked, Some(500));
    assert_eq!(s.undelivered, Some(500));
}
