//! Slow consumers never stall publishers or other subscribers; drops are
//! counted; many publishers into one subscriber are served fairly.

use ferrymq_broker::metrics::Metrics;
use ferrymq_codec::{Packet, QoS};
use ferrymq_testkit::{raw, TestBroker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_subscriber_does_not_stall_publishers_or_others() {
    let b = TestBroker::start().await;
    // `stuck` subscribes and then never reads or acknowledges.
    let mut stuck = b.client("stuck", true).await;
    stuck.subscribe(&[("feed", QoS::AtLeastOnce)]).await;
    let mut healthy = b.client("healthy", true).await;
    healthy.subscribe(&[("feed", QoS::AtLeastOnce)]).await;

    const N: u32 = 3000;
    let reader = tokio::spawn(async move {
        for i in 0..N {
            let m = healthy.recv_publish().await;
            assert_eq!(m.payload[..], i.to_be_bytes());
        }
        healthy
    });
    let mut p = b.client("p", true).await;
    for i in 0..N {
        p.publish("feed", &i.to_be_bytes(), QoS::AtLeastOnce, false)
            .await;
    }
    reader.await.unwrap();
    // 20 in flight to `stuck`, 1000 queued, the rest dropped and counted.
    let dropped = Metrics::get(&b.broker().metrics.dropped_queue_full);
    assert_eq!(dropped, u64::from(N) - 20 - 1000);
    drop(stuck);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_flood_to_a_subscriber_that_never_reads_drops_and_counts() {
    let b = TestBroker::start().await;
    let mut stuck = b.client("stuck0", true).await;
    stuck.subscribe(&[("flood", QoS::AtMostOnce)]).await;
    let mut p = b.client("p0", true).await;
    let payload = vec![0u8; 1024];
    let one = raw::publish_v311(0x00, b"flood", None, &payload);
    let burst: Vec<u8> = one.iter().copied().cycle().take(one.len() * 2000).collect();
    for _ in 0..10 {
        p.send_raw(&burst).await;
    }
    // The publisher is served to the end: its PINGREQ is answered.
    p.sync().await;
    assert!(Metrics::get(&b.broker().metrics.dropped_qos0_full) > 0);
    drop(stuck);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_publishers_into_one_subscriber_are_served_fairly() {
    let b = TestBroker::start().await;
    let mut sub = b.client("sink", true).await;
    sub.subscribe(&[("in/+", QoS::AtMostOnce)]).await;
    const EACH: usize = 20_000;
    // The subscriber reads all along, counting deliveries per publisher.
    let reader = tokio::spawn(async move {
        let mut counts = [0usize; 4];
        while let Ok(Some(Packet::Publish(m))) = tokio::time::timeout(
            std::time::Duration::from_millis(500),
            sub.try_recv(ferrymq_testkit::WAIT),
        )
        .await
        {
            counts[usize::from(m.payload[0])] += 1;
        }
        counts
    });
    let mut publishers = Vec::new();
    for n in 0..4u8 {
        publishers.push(b.client(&format!("src{n}"), true).await);
    }
    // All four start their bursts together.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(4));
    let mut tasks = Vec::new();
    for (n, mut p) in publishers.into_iter().enumerate() {
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            let topic = format!("in/{n}");
            let one = raw::publish_v311(0x00, topic.as_bytes(), None, &[n as u8; 16]);
            let burst: Vec<u8> = one.iter().copied().cycle().take(one.len() * EACH).collect();
            start.wait().await;
            p.send_raw(&burst).await;
            p.sync().await;
            p
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let counts = reader.await.unwrap();
    let total: usize = counts.iter().sum();
    assert!(total > 0);
    for (n, c) in counts.iter().enumerate() {
        assert!(
            *c * 10 >= total,
            "publisher {n} got {c} of {total} deliveries: {counts:?}"
        );
    }
}
