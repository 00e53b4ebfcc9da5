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
    let mut tasks = Vec::new();
    for n in 0..4u8 {
        let mut p = b.client(&format!("src{n}"), true).await;
        let topic = format!("in/{n}");
        tasks.push(tokio::spawn(async move {
            let one = raw::publish_v311(0x00, topic.as_bytes(), None, &[n; 16]);
            let burst: Vec<u8> = one.iter().copied().cycle().take(one.len() * EACH).collect();
            p.send_raw(&burst).await;
            p.sync().await;
            p
        }));
    }
    let mut counts = [0usize; 4];
    let mut total = 0;
    // Read until every publisher is done and the stream has gone quiet.
    let mut publishers = Vec::new();
    for t in tasks {
        publishers.push(t.await.unwrap());
    }
    while let Ok(Some(Packet::Publish(m))) = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        sub.try_recv(ferrymq_testkit::WAIT),
    )
    .await
    {
        counts[usize::from(m.payload[0])] += 1;
        total += 1;
    }
    assert!(total > 0);
    for (n, c) in counts.iter().enumerate() {
        assert!(
            *c * 10 >= total,
            "publisher {n} got {c} of {total} deliveries: {counts:?}"
        );
    }
}
