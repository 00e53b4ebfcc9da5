//! Durable state across a broker restart (clean shutdown here; the
//! SIGKILL crash test is in crates/ferrymq/tests/crash.rs).

use std::path::Path;

use ferrymq_codec::{Packet, Protocol, PubResponse, QoS};
use ferrymq_testkit::{connect, publish, test_config, TestBroker, TestClient};

async fn start(dir: &Path) -> TestBroker {
    start_with_window(dir, std::time::Duration::ZERO).await
}

async fn start_with_window(dir: &Path, window: std::time::Duration) -> TestBroker {
    let mut config = test_config();
    config.persistence = true;
    config.persistence_location = dir.to_path_buf();
    config.persistence_commit_window = window;
    TestBroker::with_config(config).await
}

async fn resume(b: &TestBroker, id: &str) -> TestClient {
    let mut c = TestClient::connect(b.addr, Protocol::V3_1_1).await;
    let ack = c.handshake(connect(Protocol::V3_1_1, id, false)).await;
    assert!(ack.session_present, "{id}: session restored");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_messages_subscriptions_and_retained_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let mut s = b.client("keeper", false).await;
    s.subscribe(&[("d/#", QoS::ExactlyOnce)]).await;
    s.disconnect().await;
    let mut p = b.client("p", true).await;
    p.publish("d/1", b"one", QoS::AtLeastOnce, false).await;
    p.publish("d/2", b"two", QoS::ExactlyOnce, false).await;
    p.publish("d/r", b"kept", QoS::AtLeastOnce, true).await;
    p.publish("d/0", b"zero", QoS::AtMostOnce, false).await;
    drop(p);
    b.server.shutdown().await;

    let b = start(dir.path()).await;
    let mut s = resume(&b, "keeper").await;
    let got: Vec<_> = [
        s.recv_publish().await,
        s.recv_publish().await,
        s.recv_publish().await,
    ]
    .into_iter()
    .map(|m| (m.topic.to_string(), m.qos))
    .collect();
    assert_eq!(
        got,
        vec![
            ("d/1".into(), QoS::AtLeastOnce),
            ("d/2".into(), QoS::ExactlyOnce),
            ("d/r".into(), QoS::AtLeastOnce)
        ]
    );
    // The subscription itself came back.
    let mut p = b.client("p2", true).await;
    p.publish("d/3", b"three", QoS::AtLeastOnce, false).await;
    assert_eq!(&s.recv_publish().await.payload[..], b"three");
    let mut late = b.client("late", true).await;
    late.subscribe(&[("d/r", QoS::AtLeastOnce)]).await;
    let r = late.recv_publish().await;
    assert!(r.retain);
    assert_eq!(&r.payload[..], b"kept");
    s.disconnect().await;
    b.server.shutdown().await;

    // Acknowledged deliveries are gone from the store.
    let b = start(dir.path()).await;
    let mut s = resume(&b, "keeper").await;
    s.expect_nothing(std::time::Duration::from_millis(200))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_qos2_keeps_its_packet_id_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let mut s = b.client("q2", false).await;
    s.subscribe(&[("x", QoS::ExactlyOnce)]).await;
    let mut p = b.client("p", true).await;
    p.publish("x", b"once", QoS::ExactlyOnce, false).await;
    let first = match s.recv().await {
        Packet::Publish(m) => m,
        other => panic!("{other:?}"),
    };
    // The client stored it; PUBREC is lost with the broker.
    drop(s);
    drop(p);
    b.server.shutdown().await;
    let b = start(dir.path()).await;
    let mut s = resume(&b, "q2").await;
    let again = s.recv_publish().await;
    assert!(again.dup);
    assert_eq!(
        again.packet_id, first.packet_id,
        "same id: the client can tell it is a duplicate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_qos2_is_not_routed_twice_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let mut s = b.client("sink", false).await;
    s.subscribe(&[("e", QoS::ExactlyOnce)]).await;
    s.disconnect().await;
    let mut p = b.client("pub", false).await;
    let m = publish("e", b"exactly", QoS::ExactlyOnce, false, 5);
    p.send(Packet::Publish(m.clone())).await;
    assert!(matches!(p.recv().await, Packet::PubRec(_)));
    drop(p);
    b.server.shutdown().await;

    let b = start(dir.path()).await;
    let mut p = resume(&b, "pub").await;
    let mut dup = m;
    dup.dup = true;
    p.send(Packet::Publish(dup)).await;
    assert!(matches!(p.recv().await, Packet::PubRec(_)));
    p.send(Packet::PubRel(PubResponse::new(ferrymq_testkit::pid(5))))
        .await;
    assert!(matches!(p.recv().await, Packet::PubComp(_)));
    let mut s = resume(&b, "sink").await;
    assert_eq!(&s.recv_publish().await.payload[..], b"exactly");
    s.expect_nothing(std::time::Duration::from_millis(200))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_store_is_a_clear_error_not_a_fresh_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.persistence = true;
    config.persistence_location = dir.path().to_path_buf();
    // A store directory whose format marker is garbage.
    let store = config.store_path();
    assert_eq!(store, dir.path().join("mosquitto.db.ferrymq"));
    std::fs::create_dir_all(&store).unwrap();
    std::fs::write(store.join("version"), b"not a fjall store at all").unwrap();
    let err = ferrymq_broker::Server::start(config)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&store.display().to_string()), "{err}");
    assert!(err.contains("move the directory aside"), "{err}");
    // Nothing was discarded.
    assert_eq!(
        std::fs::read(store.join("version")).unwrap(),
        b"not a fjall store at all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_will_survives_a_restart() {
    use ferrymq_codec::Property;
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let (c, _) = b
        .connect_with(Protocol::V5, "mortal", |c| {
            let mut w = ferrymq_testkit::will("wills/mortal", "gone", QoS::AtLeastOnce, false);
            w.properties.push(Property::WillDelayInterval(2));
            c.will = Some(w);
            c.clean_start = false;
            c.properties.push(Property::SessionExpiryInterval(600));
        })
        .await;
    let mut c = c;
    c.sync().await;
    drop(c); // no DISCONNECT: the will is due in 2 s
             // Wait until the broker has parked the session with its will.
    let deadline = std::time::Instant::now() + ferrymq_testkit::WAIT;
    while b.broker().registry.parked() == 0 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    b.server.shutdown().await;

    let b = start(dir.path()).await;
    let mut w = b.client("watcher", true).await;
    w.subscribe(&[("wills/#", QoS::AtLeastOnce)]).await;
    let m = w.recv_publish().await;
    assert_eq!(
        (&m.topic[..], &m.payload[..]),
        ("wills/mortal", &b"gone"[..])
    );
}

/// A message acknowledged out of order leaves its mark in the store while
/// an earlier one of the same write waits: numbers handed out after a
/// restart must not collide with it, or another session's delivery of the
/// reused number would erase the mark and bring the acknowledged message
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_acknowledged_before_a_restart_stays_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    for (id, filter) in [("a", "d/a"), ("b", "d/b")] {
        let mut s = b.client(id, false).await;
        s.subscribe(&[(filter, QoS::AtLeastOnce)]).await;
        s.disconnect().await;
    }
    // Two messages for `a` in one read, so one store write holds both.
    let mut p = b.client("p", true).await;
    let mut wire = bytes::BytesMut::new();
    for (n, payload) in [(1, &b"first"[..]), (2, b"second")] {
        let m = publish("d/a", payload, QoS::AtLeastOnce, false, n);
        ferrymq_codec::encode(&Packet::Publish(m), Protocol::V3_1_1, &mut wire).unwrap();
    }
    p.send_raw(&wire).await;
    for _ in 0..2 {
        assert!(matches!(p.recv().await, Packet::PubAck(_)));
    }
    // `a` acknowledges the second only, then the broker stops.
    let mut a = resume(&b, "a").await;
    let first = match a.recv().await {
        Packet::Publish(m) => m,
        other => panic!("{other:?}"),
    };
    let second = a.recv_publish().await;
    assert_eq!(
        (&first.payload[..], &second.payload[..]),
        (&b"first"[..], &b"second"[..])
    );
    a.sync().await;
    drop(a);
    drop(p);
    b.server.shutdown().await;

    // After a restart `b` gets and acknowledges a new message.
    let b = start(dir.path()).await;
    let mut p = b.client("p", true).await;
    p.publish("d/b", b"new", QoS::AtLeastOnce, false).await;
    let mut s = resume(&b, "b").await;
    assert_eq!(&s.recv_publish().await.payload[..], b"new");
    s.sync().await;
    drop(s);
    drop(p);
    b.server.shutdown().await;

    // `a` gets only what it never acknowledged.
    let b = start(dir.path()).await;
    let mut a = resume(&b, "a").await;
    let again = a.recv_publish().await;
    assert_eq!(&again.payload[..], b"first");
    a.expect_nothing(std::time::Duration::from_millis(300))
        .await;
}

/// With a commit window (its timing is tested on the writer itself),
/// acknowledgements still come, and only for what is durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_window_keeps_acknowledged_messages_durable() {
    let dir = tempfile::tempdir().unwrap();
    let b = start_with_window(dir.path(), std::time::Duration::from_millis(20)).await;
    let mut s = b.client("w", false).await;
    s.subscribe(&[("w", QoS::AtLeastOnce)]).await;
    s.disconnect().await;
    let mut p = b.client("p", true).await;
    p.publish("w", b"one", QoS::AtLeastOnce, false).await;
    let commits = b.broker().persist.as_ref().map(|p| {
        p.writer
            .stats()
            .commits
            .load(std::sync::atomic::Ordering::Relaxed)
    });
    assert!(commits.is_some_and(|n| n >= 1), "{commits:?}");
    drop(p);
    b.server.shutdown().await;
    let b = start(dir.path()).await;
    let mut s = resume(&b, "w").await;
    assert_eq!(&s.recv_publish().await.payload[..], b"one");
}

/// Acknowledgements with no writes of their own still wait for the
/// session's writes: PUBCOMP for the removal of the inbound id (or a
/// restart would take a new message reusing the id for a resend), and
/// the PUBREC answering a resend on a new connection for the first
/// connection's writes. A long commit window makes the wait visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_without_writes_wait_for_the_sessions_writes() {
    let window = std::time::Duration::from_millis(1000);
    let dir = tempfile::tempdir().unwrap();
    let b = start_with_window(dir.path(), window).await;
    let mut c = b.client("q2", false).await;
    c.send(Packet::Publish(publish(
        "t",
        b"x",
        QoS::ExactlyOnce,
        false,
        7,
    )))
    .await;
    assert!(matches!(c.recv().await, Packet::PubRec(_)));
    let started = std::time::Instant::now();
    c.send(Packet::PubRel(PubResponse::new(ferrymq_testkit::pid(7))))
        .await;
    assert!(matches!(c.recv().await, Packet::PubComp(_)));
    assert!(
        started.elapsed() >= window / 2,
        "PUBCOMP after {:?}",
        started.elapsed()
    );

    // A QoS 2 PUBLISH whose connection drops before its PUBREC: the
    // resend on the next connection is answered once the first one's
    // writes are durable.
    c.send(Packet::Publish(publish(
        "t",
        b"y",
        QoS::ExactlyOnce,
        false,
        8,
    )))
    .await;
    c.sync().await;
    drop(c);
    let started = std::time::Instant::now();
    let mut c = resume(&b, "q2").await;
    let mut again = publish("t", b"y", QoS::ExactlyOnce, false, 8);
    again.dup = true;
    c.send(Packet::Publish(again)).await;
    loop {
        match c.recv().await {
            Packet::PubRec(r) if r.packet_id.get() == 8 => break,
            _ => {}
        }
    }
    assert!(
        started.elapsed() >= window / 2,
        "PUBREC after {:?}",
        started.elapsed()
    );
}
