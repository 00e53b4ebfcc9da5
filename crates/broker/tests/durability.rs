//! Durable state in the edge paths of issue 20 (items 7, 10, 11, 14): what
//! a restart brings back is what the running broker had, no more and no
//! less.

use std::path::Path;
use std::time::Duration;

use ferrymq_codec::{Packet, Property, Protocol, QoS};
use ferrymq_testkit::{connect, publish, test_config, TestBroker, TestClient};

const QUIET: Duration = Duration::from_millis(300);

async fn durable(dir: &Path) -> TestBroker {
    let mut config = test_config();
    config.persistence = true;
    config.persistence_location = dir.to_path_buf();
    TestBroker::with_config(config).await
}

fn expiry(seconds: u32, clean: bool) -> impl FnOnce(&mut ferrymq_codec::Connect) {
    move |c| {
        c.clean_start = clean;
        c.properties.push(Property::SessionExpiryInterval(seconds));
    }
}

/// Item 7: a stored session resumed with Session Expiry 0 ends with that
/// connection, in the store too (its record used to stay, and a restart
/// brought back the dead session and its subscriptions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resumed_with_expiry_zero_is_not_restored() {
    let dir = tempfile::tempdir().unwrap();
    let b = durable(dir.path()).await;
    let (mut c, _) = b
        .connect_with(Protocol::V5, "zero", expiry(600, true))
        .await;
    c.subscribe(&[("z", QoS::AtLeastOnce)]).await;
    c.disconnect().await;
    let (c, ack) = b.connect_with(Protocol::V5, "zero", expiry(0, false)).await;
    assert!(ack.session_present);
    c.disconnect().await;
    assert!(!b.broker().registry.contains("zero"));
    b.server.shutdown().await;

    let b = durable(dir.path()).await;
    assert!(!b.broker().registry.contains("zero"));
    assert_eq!(b.broker().router.len(), 0);
    let (_, ack) = b
        .connect_with(Protocol::V5, "zero", expiry(600, false))
        .await;
    assert!(!ack.session_present);
}

/// Item 10: a delayed will that fell due is published once; the parked
/// session's record forgets it in the same write, so a restart does not
/// publish it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_will_that_fired_is_not_published_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = durable(dir.path()).await;
    // A persistent watcher: a will published again during the restart
    // would wait in its queue.
    let mut watcher = b.client("watcher", false).await;
    watcher.subscribe(&[("will/w", QoS::AtLeastOnce)]).await;
    let (c, _) = b
        .connect_with(Protocol::V5, "dies", |c| {
            c.clean_start = true;
            c.properties.push(Property::SessionExpiryInterval(600));
            let mut will = ferrymq_testkit::will("will/w", "gone", QoS::AtLeastOnce, false);
            will.properties.push(Property::WillDelayInterval(1));
            c.will = Some(will);
        })
        .await;
    drop(c);
    assert_eq!(&watcher.recv_publish().await.payload[..], b"gone");
    watcher.sync().await;
    b.server.shutdown().await;

    let b = durable(dir.path()).await;
    assert!(b.broker().registry.contains("dies"), "the session lives on");
    let mut watcher = TestClient::connect(b.addr, Protocol::V3_1_1).await;
    let ack = watcher
        .handshake(connect(Protocol::V3_1_1, "watcher", false))
        .await;
    assert!(ack.session_present);
    watcher.expect_nothing(Duration::from_millis(1500)).await;
}

/// Item 11: a clean shutdown waits for the store, so what a subscriber
/// acknowledged just before it is not delivered again after the restart,
/// and what was acknowledged to the publisher is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_keeps_the_last_writes() {
    let dir = tempfile::tempdir().unwrap();
    let b = durable(dir.path()).await;
    let mut s = b.client("s", false).await;
    s.subscribe(&[("t", QoS::AtLeastOnce)]).await;
    let mut p = b.client("p", true).await;
    for i in 0..200u32 {
        p.publish("t", &i.to_be_bytes(), QoS::AtLeastOnce, false)
            .await;
    }
    for i in 0..150u32 {
        let m = s.recv_publish().await;
        assert_eq!(&m.payload[..], &i.to_be_bytes());
    }
    // Once PINGRESP is back, the broker has read the 150 PUBACKs (the
    // messages that arrive meanwhile are left unacknowledged).
    s.send(Packet::PingReq).await;
    while !matches!(s.recv().await, Packet::PingResp) {}
    b.server.shutdown().await;

    let b = durable(dir.path()).await;
    let mut c = TestClient::connect(b.addr, Protocol::V3_1_1).await;
    let ack = c.handshake(connect(Protocol::V3_1_1, "s", false)).await;
    assert!(ack.session_present);
    // Whatever was sent and not acknowledged comes again; nothing the
    // subscriber acknowledged does.
    let mut next = None;
    while let Ok(Some(Packet::Publish(m))) =
        tokio::time::timeout(QUIET, c.try_recv(Duration::from_secs(5))).await
    {
        c.ack(&m).await;
        let n = u32::from_be_bytes(m.payload[..].try_into().unwrap());
        assert!(n >= 150, "{n} was acknowledged before the shutdown");
        assert!(next.is_none_or(|x| n == x), "{n} out of order");
        next = Some(n + 1);
    }
    assert_eq!(next, Some(200), "every acknowledged message arrives");
}

/// Item 11, the mechanism: `shutdown` returns only once everything the
/// connections submitted is durable, even with a publisher streaming into
/// a subscriber's session as it stops (the process exits after it
/// returns, and the store's thread with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_once_the_store_is_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let b = durable(dir.path()).await;
    let broker = b.server.broker.clone();
    let mut s = b.client("s", false).await;
    s.subscribe(&[("t", QoS::AtLeastOnce)]).await;
    let mut p = b.client("p", true).await;
    let stream = tokio::spawn(async move {
        let mut id = 0u16;
        loop {
            id = id.wrapping_add(1).max(1);
            let m = publish("t", b"x", QoS::AtLeastOnce, false, id);
            if !p.try_send(Packet::Publish(m)).await {
                return;
            }
        }
    });
    let reader = tokio::spawn(async move {
        while let Some(Packet::Publish(m)) = s.try_recv(Duration::from_secs(5)).await {
            if let (QoS::AtLeastOnce, Some(id)) = (m.qos, m.packet_id) {
                if !s
                    .try_send(Packet::PubAck(ferrymq_codec::PubResponse::new(id)))
                    .await
                {
                    return;
                }
            }
        }
    });
    let writer = broker.persist.as_ref().unwrap().writer.clone();
    ferrymq_testkit::wait_until("the stream is under way", || writer.durable_seq() > 50).await;
    b.server.shutdown().await;
    assert_eq!(writer.durable_seq(), writer.submitted());
    let _ = tokio::join!(stream, reader);
}

/// Item 14: of two publications of one retained topic, the one that
/// changed memory last reaches the store last. The store write used to
/// go with the publisher's batch, submitted at the end of its read: a
/// publisher that changed memory first and submitted last left an older
/// value on disk. Here that interleaving is forced: the first
/// publication's batch is submitted after the second's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_keeps_the_retained_message_memory_keeps() {
    use ferrymq_broker::broker::Fanout;
    use ferrymq_broker::message::Message;
    use ferrymq_store::{MemoryStore, Store, Writer};
    use std::sync::Arc;

    let store = Arc::new(MemoryStore::default());
    let writer = Writer::spawn(store.clone(), Duration::ZERO);
    let config = test_config();
    let security = ferrymq_broker::security::Security::without_files(&config);
    let broker = ferrymq_broker::Broker::with_parts(config, Some(writer.clone()), security);
    let message = |payload: &'static [u8]| {
        let m = publish("race", payload, QoS::AtLeastOnce, true, 1);
        Arc::new(Message::from_publish(m, std::time::Instant::now(), 0))
    };
    let (mut first, mut second) = (Fanout::default(), Fanout::default());
    broker.publish_with(message(b"older"), &mut first);
    broker.publish_with(message(b"newer"), &mut second);
    broker.store(second.ops);
    broker.store(first.ops);
    assert!(writer.flush().await);
    assert_eq!(&broker.retained.all()[0].payload[..], b"newer");
    let loaded = store.load().unwrap();
    let [(_, record)] = loaded.retained.as_slice() else {
        panic!("one retained record: {:?}", loaded.retained);
    };
    assert!(
        record.ends_with(b"newer"),
        "the store keeps what memory keeps"
    );
}
