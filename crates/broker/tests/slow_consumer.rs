//! Overload (issue 16): an online subscriber slower than its publishers
//! slows them down instead of losing what they were acknowledged; a stuck
//! one holds them for `max_queue_stall_ms` at most, then its queue drops
//! as Mosquitto's does; publishers to other subscribers are never slowed;
//! many publishers into one subscriber are served fairly.

use std::time::Duration;

use ferrymq_broker::metrics::Metrics;
use ferrymq_codec::{Packet, QoS};
use ferrymq_testkit::{raw, test_config, wait_until, TestBroker};

/// At the defaults (1,000 queued, 20 in flight), a subscriber that does
/// not read while four publishers send 3,000 QoS 1 messages each: the
/// publishers are paused once its queue is full, and when it reads, every
/// message arrives, in order per publisher, none dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_slows_its_publishers_and_loses_nothing() {
    let b = TestBroker::start().await;
    let mut sub = b.client("slow", true).await;
    sub.subscribe(&[("in/+", QoS::AtLeastOnce)]).await;
    const EACH: u32 = 3000;
    let mut publishers = Vec::new();
    for n in 0..4u32 {
        let mut p = b.client(&format!("p{n}"), true).await;
        publishers.push(tokio::spawn(async move {
            for i in 0..EACH {
                let payload = [n.to_be_bytes(), i.to_be_bytes()].concat();
                p.publish(&format!("in/{n}"), &payload, QoS::AtLeastOnce, false)
                    .await;
            }
        }));
    }
    let metrics = &b.broker().metrics;
    wait_until("the publishers are paused", || {
        Metrics::get(&metrics.publishers_paused) == 4
    })
    .await;
    let mut next = [0u32; 4];
    for _ in 0..4 * EACH {
        let m = sub.recv_publish().await;
        let n = u32::from_be_bytes(m.payload[..4].try_into().unwrap()) as usize;
        let i = u32::from_be_bytes(m.payload[4..].try_into().unwrap());
        assert_eq!(i, next[n], "publisher {n} in order");
        next[n] += 1;
    }
    for p in publishers {
        p.await.unwrap();
    }
    for (cause, counter) in metrics.drops() {
        assert_eq!(Metrics::get(counter), 0, "{cause}");
    }
    assert!(Metrics::get(&metrics.publisher_pauses) >= 4);
    assert_eq!(Metrics::get(&metrics.publishers_paused), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_subscriber_holds_publishers_only_until_it_stalls() {
    let mut config = test_config();
    config.max_queue_stall = Duration::from_millis(200);
    let b = TestBroker::with_config(config).await;
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
    // 20 in flight to `stuck`, 1000 queued and perhaps the one that found
    // the queue full while `stuck` had not yet been silent for the stall
    // limit (its publisher then waited for it); the rest dropped, counted.
    let m = &b.broker().metrics;
    let view = b.broker().registry.view("stuck").unwrap();
    let (queued, _) = view.session.unwrap().mailbox.depth();
    assert!((1000..=1001).contains(&queued), "{queued}");
    assert_eq!(
        Metrics::get(&m.dropped_stalled),
        u64::from(N) - 20 - queued as u64
    );
    assert_eq!(Metrics::get(&m.dropped_queue_full), 0);
    drop(stuck);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_flood_to_a_subscriber_that_never_reads_drops_and_counts() {
    let mut config = test_config();
    config.max_queue_stall = Duration::from_millis(200);
    let b = TestBroker::with_config(config).await;
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

/// A publisher paused by a full subscriber slows nobody else: another
/// publisher, to another subscriber, goes on at full pace meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_to_other_subscribers_are_not_slowed() {
    let b = TestBroker::start().await;
    let mut stuck = b.client("full", true).await;
    stuck.subscribe(&[("busy", QoS::AtLeastOnce)]).await;
    let mut blocked = b.client("blocked", true).await;
    let flood = tokio::spawn(async move {
        for i in 0..2000u32 {
            blocked
                .publish("busy", &i.to_be_bytes(), QoS::AtLeastOnce, false)
                .await;
        }
    });
    let metrics = &b.broker().metrics;
    wait_until("the flooding publisher is paused", || {
        Metrics::get(&metrics.publishers_paused) == 1
    })
    .await;
    let mut other = b.client("other-sub", true).await;
    other.subscribe(&[("calm", QoS::AtLeastOnce)]).await;
    let mut free = b.client("free", true).await;
    for i in 0..500u32 {
        free.publish("calm", &i.to_be_bytes(), QoS::AtLeastOnce, false)
            .await;
        assert_eq!(other.recv_publish().await.payload[..], i.to_be_bytes());
    }
    assert_eq!(Metrics::get(&metrics.publishers_paused), 1, "still paused");
    // Once `full` reads, the flood completes.
    for _ in 0..2000 {
        stuck.recv_publish().await;
    }
    flood.await.unwrap();
}

/// Issue 20, item 12: with the store's backlog past `max_store_backlog`,
/// a connection whose writes wait stops being read until they are
/// durable, so nothing grows without bound when clients outrun the disk
/// (here a flood of retained QoS 0 messages, which no acknowledgement
/// paces). Everything still lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_outrun_the_store_pause_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.persistence = true;
    config.persistence_location = dir.path().to_path_buf();
    config.max_store_backlog = 16;
    let b = TestBroker::with_config(config).await;
    let mut p = b.client("flood", true).await;
    let mut burst = Vec::new();
    for i in 0..2000u32 {
        let topic = format!("r/{}", i % 100);
        burst.extend(raw::publish_v311(
            0x01,
            topic.as_bytes(),
            None,
            &i.to_be_bytes(),
        ));
    }
    p.send_raw(&burst).await;
    p.sync().await;
    assert!(Metrics::get(&b.broker().metrics.publisher_pauses) > 0);
    assert_eq!(b.broker().retained.len(), 100);
    let writer = &b.broker().persist.as_ref().unwrap().writer;
    assert!(writer.flush().await);
    assert_eq!(writer.backlog(), 0);
}

/// A QoS 1 subscriber whose socket takes a byte at a time (a small
/// receive buffer, one byte read every 20 ms) next to a healthy one: the
/// trickle makes too little progress, so after `max_queue_stall_ms` its
/// queue drops (counted as stalled) and the publisher and the healthy
/// subscriber go on at their own pace; the trickle's queue stays within
/// `max_queued_messages`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_reading_a_byte_at_a_time_stalls_and_the_rest_go_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = test_config();
    config.max_queue_stall = Duration::from_millis(200);
    config.max_queued_messages = 100;
    let b = TestBroker::with_config(config).await;

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut trickle = socket.connect(b.addr).await.unwrap();
    trickle
        .write_all(&raw::connect_v311("trickle", 0x02, 60))
        .await
        .unwrap();
    trickle
        .write_all(&raw::subscribe_v311(1, b"feed", 1))
        .await
        .unwrap();
    let mut head = [0u8; 9];
    trickle.read_exact(&mut head).await.unwrap();
    assert_eq!(head, [0x20, 2, 0, 0, 0x90, 3, 0, 1, 1]);
    let reader = tokio::spawn(async move {
        let mut byte = [0u8; 1];
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if trickle.read(&mut byte).await.unwrap_or(0) == 0 {
                return;
            }
        }
    });

    let mut healthy = b.client("healthy", true).await;
    healthy.subscribe(&[("feed", QoS::AtLeastOnce)]).await;
    const N: u32 = 2000;
    let healthy = tokio::spawn(async move {
        for i in 0..N {
            let m = healthy.recv_publish().await;
            assert_eq!(m.payload[..4], i.to_be_bytes());
        }
    });
    let mut p = b.client("p", true).await;
    let mut payload = vec![0u8; 1024];
    for i in 0..N {
        payload[..4].copy_from_slice(&i.to_be_bytes());
        p.publish("feed", &payload, QoS::AtLeastOnce, false).await;
    }
    healthy.await.unwrap();
    let m = &b.broker().metrics;
    assert!(Metrics::get(&m.dropped_stalled) > 0);
    let view = b.broker().registry.view("trickle").unwrap();
    let (queued, _) = view.session.unwrap().mailbox.depth();
    assert!(queued <= 101, "{queued}");
    reader.abort();
}

/// A QoS 1 subscriber that reads everything and acknowledges nothing: its
/// window fills, then its queue; the publisher waits for it no longer than
/// the stall limit, the healthy subscriber gets every message, and what
/// the silent one cannot take is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_acknowledges_stalls_and_the_rest_go_on() {
    let mut config = test_config();
    config.max_queue_stall = Duration::from_millis(200);
    config.max_queued_messages = 100;
    let b = TestBroker::with_config(config).await;
    let mut silent = b.client("silent", true).await;
    silent.subscribe(&[("feed", QoS::AtLeastOnce)]).await;
    // Reads its window's worth (20 PUBLISH packets) and acknowledges none.
    let swallow = tokio::spawn(async move {
        for _ in 0..20 {
            assert!(matches!(silent.recv().await, Packet::Publish(_)));
        }
        silent
    });
    let mut healthy = b.client("healthy", true).await;
    healthy.subscribe(&[("feed", QoS::AtLeastOnce)]).await;
    const N: u32 = 1000;
    let healthy = tokio::spawn(async move {
        for i in 0..N {
            let m = healthy.recv_publish().await;
            assert_eq!(m.payload[..], i.to_be_bytes());
        }
    });
    let mut p = b.client("p", true).await;
    for i in 0..N {
        p.publish("feed", &i.to_be_bytes(), QoS::AtLeastOnce, false)
            .await;
    }
    healthy.await.unwrap();
    // Its window: 20 sent, never acknowledged, so never more.
    let mut silent = swallow.await.unwrap();
    silent.expect_nothing(Duration::from_millis(300)).await;
    let m = &b.broker().metrics;
    let view = b.broker().registry.view("silent").unwrap();
    let (queued, _) = view.session.unwrap().mailbox.depth();
    assert!((100..=101).contains(&queued), "{queued}");
    assert_eq!(
        Metrics::get(&m.dropped_stalled),
        u64::from(N) - 20 - queued as u64
    );
}

/// One publisher floods a topic with 200 subscribers (the 10,000
/// scaled to a test's descriptors): every subscriber gets every message,
/// nothing is dropped, and a client on another topic is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_to_many_subscribers_reaches_each_and_others_are_served() {
    const SUBSCRIBERS: usize = 200;
    const N: usize = 500;
    let b = TestBroker::start().await;
    let mut readers = Vec::new();
    for i in 0..SUBSCRIBERS {
        let mut c = b.client(&format!("s{i}"), true).await;
        c.subscribe(&[("fan", QoS::AtMostOnce)]).await;
        readers.push(tokio::spawn(async move {
            for n in 0..N {
                let m = c.recv_publish().await;
                assert_eq!(m.payload[..], (n as u32).to_be_bytes());
            }
        }));
    }
    let mut other_sub = b.client("other-sub", true).await;
    other_sub.subscribe(&[("other", QoS::AtLeastOnce)]).await;
    let mut p = b.client("flood", true).await;
    let burst: Vec<u8> = (0..N as u32)
        .flat_map(|n| raw::publish_v311(0x00, b"fan", None, &n.to_be_bytes()))
        .collect();
    p.send_raw(&burst).await;
    // Another client is served while the fan-out runs.
    let mut other = b.client("other-pub", true).await;
    other
        .publish("other", b"still here", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(
        other_sub.recv_publish().await.payload[..],
        b"still here"[..]
    );
    for r in readers {
        r.await.unwrap();
    }
    p.sync().await;
    for (cause, counter) in b.broker().metrics.drops() {
        assert_eq!(Metrics::get(counter), 0, "{cause}");
    }
}
