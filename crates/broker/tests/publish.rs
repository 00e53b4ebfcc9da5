//! Sections 3.3-3.7 and 4.3-4.6: PUBLISH and the QoS flows, over real TCP.

use std::time::Duration;

use ferrymq_codec::{Packet, Protocol, PubResponse, QoS, ReasonCode};
use ferrymq_testkit::{connect, pid, publish, raw, TestBroker, TestClient};

const QUIET: Duration = Duration::from_millis(200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_0_1_2_round_trip_in_both_directions() {
    let b = TestBroker::start().await;
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let mut sub = b.client(&format!("sub{}", qos as u8), true).await;
        sub.subscribe(&[("q/t", QoS::ExactlyOnce)]).await;
        let mut publisher = b.client(&format!("pub{}", qos as u8), true).await;
        publisher.publish("q/t", b"payload", qos, false).await;
        let got = sub.recv_publish().await;
        assert_eq!(got.qos, qos);
        assert_eq!(&got.payload[..], b"payload");
        assert_eq!(got.packet_id.is_some(), qos != QoS::AtMostOnce);
        assert!(!got.retain && !got.dup);
        sub.disconnect().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_qos_is_the_minimum_of_published_and_granted() {
    let b = TestBroker::start().await;
    let mut sub = b.client("min", true).await;
    sub.subscribe(&[("m", QoS::AtLeastOnce)]).await;
    let mut p = b.client("p", true).await;
    p.publish("m", b"2", QoS::ExactlyOnce, false).await;
    assert_eq!(sub.recv_publish().await.qos, QoS::AtLeastOnce);
    p.publish("m", b"0", QoS::AtMostOnce, false).await;
    assert_eq!(sub.recv_publish().await.qos, QoS::AtMostOnce);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_subscriptions_deliver_one_copy_at_the_highest_qos() {
    let b = TestBroker::start().await;
    let mut sub = b.client("overlap", true).await;
    sub.subscribe(&[
        ("a/+", QoS::AtMostOnce),
        ("a/#", QoS::ExactlyOnce),
        ("a/b", QoS::AtLeastOnce),
    ])
    .await;
    let mut p = b.client("p", true).await;
    p.publish("a/b", b"x", QoS::ExactlyOnce, false).await;
    let got = sub.recv_publish().await;
    assert_eq!(got.qos, QoS::ExactlyOnce);
    sub.expect_nothing(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_resend_with_dup_before_pubrel_is_delivered_once() {
    let b = TestBroker::start().await;
    let mut sub = b.client("once", true).await;
    sub.subscribe(&[("x", QoS::ExactlyOnce)]).await;
    let mut p = b.client("p", true).await;
    let mut first = publish("x", b"only once", QoS::ExactlyOnce, false, 7);
    p.send(Packet::Publish(first.clone())).await;
    assert!(matches!(p.recv().await, Packet::PubRec(r) if r.packet_id == pid(7)));
    first.dup = true;
    p.send(Packet::Publish(first)).await;
    assert!(matches!(p.recv().await, Packet::PubRec(r) if r.packet_id == pid(7)));
    p.send(Packet::PubRel(PubResponse::new(pid(7)))).await;
    assert!(matches!(p.recv().await, Packet::PubComp(r) if r.packet_id == pid(7)));
    let got = sub.recv_publish().await;
    assert_eq!(&got.payload[..], b"only once");
    sub.expect_nothing(QUIET).await;
    // After PUBREL the id is free again: a new message with it is new.
    p.publish("x", b"again", QoS::ExactlyOnce, false).await;
    assert_eq!(&sub.recv_publish().await.payload[..], b"again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inflight_window_holds_back_messages_until_acknowledged() {
    let mut config = ferrymq_testkit::test_config();
    config.max_inflight_messages = 2;
    let b = TestBroker::with_config(config).await;
    let mut sub = b.client("window", true).await;
    sub.subscribe(&[("w", QoS::AtLeastOnce)]).await;
    let mut p = b.client("p", true).await;
    for i in 0..5u8 {
        p.publish("w", &[i], QoS::AtLeastOnce, false).await;
    }
    let mut got = Vec::new();
    for _ in 0..2 {
        match sub.recv().await {
            Packet::Publish(m) => got.push(m),
            other => panic!("{other:?}"),
        }
    }
    sub.expect_nothing(QUIET).await;
    for m in &got {
        sub.ack(m).await;
    }
    let mut rest = Vec::new();
    while rest.len() < 3 {
        let m = sub.recv_publish().await;
        rest.push(m.payload[0]);
    }
    let order: Vec<u8> = got.iter().map(|m| m.payload[0]).chain(rest).collect();
    assert_eq!(order, vec![0, 1, 2, 3, 4], "order kept per topic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_messages_are_resent_with_dup_on_reconnect() {
    let b = TestBroker::start().await;
    let mut sub = b.client("resend", false).await;
    sub.subscribe(&[("r", QoS::ExactlyOnce)]).await;
    let mut p = b.client("p", true).await;
    p.publish("r", b"q1", QoS::AtLeastOnce, false).await;
    p.publish("r", b"q2", QoS::ExactlyOnce, false).await;
    // Receive both, acknowledge neither, drop the socket.
    let first = match sub.recv().await {
        Packet::Publish(m) => m,
        other => panic!("{other:?}"),
    };
    let second = match sub.recv().await {
        Packet::Publish(m) => m,
        other => panic!("{other:?}"),
    };
    drop(sub);
    let mut sub = TestClient::connect(b.addr, Protocol::V3_1_1).await;
    let ack = sub
        .handshake(connect(Protocol::V3_1_1, "resend", false))
        .await;
    assert!(ack.session_present);
    let again1 = sub.recv_publish().await;
    let again2 = sub.recv_publish().await;
    assert!(again1.dup && again2.dup);
    assert_eq!(
        (again1.packet_id, &again1.payload),
        (first.packet_id, &first.payload)
    );
    assert_eq!(
        (again2.packet_id, &again2.payload),
        (second.packet_id, &second.payload)
    );
    sub.expect_nothing(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubrel_is_resent_after_reconnect_when_pubrec_was_sent() {
    let b = TestBroker::start().await;
    let mut sub = b.client("rel", false).await;
    sub.subscribe(&[("r", QoS::ExactlyOnce)]).await;
    let mut p = b.client("p", true).await;
    p.publish("r", b"x", QoS::ExactlyOnce, false).await;
    let m = match sub.recv().await {
        Packet::Publish(m) => m,
        other => panic!("{other:?}"),
    };
    let id = m.packet_id.unwrap();
    sub.send(Packet::PubRec(PubResponse::new(id))).await;
    assert!(matches!(sub.recv().await, Packet::PubRel(r) if r.packet_id == id));
    drop(sub);
    let mut sub = TestClient::connect(b.addr, Protocol::V3_1_1).await;
    sub.handshake(connect(Protocol::V3_1_1, "rel", false)).await;
    assert!(matches!(sub.recv().await, Packet::PubRel(r) if r.packet_id == id));
    sub.send(Packet::PubComp(PubResponse::new(id))).await;
    sub.expect_nothing(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_is_kept_per_topic_under_load() {
    let b = TestBroker::start().await;
    let mut sub = b.client("order", true).await;
    sub.subscribe(&[("o", QoS::AtLeastOnce)]).await;
    let mut p = b.client("p", true).await;
    let mut bytes = Vec::new();
    for i in 0..500u16 {
        bytes.extend(raw::publish_v311(0x02, b"o", Some(i + 1), &i.to_be_bytes()));
    }
    p.send_raw(&bytes).await;
    for i in 0..500u16 {
        let m = sub.recv_publish().await;
        assert_eq!(u16::from_be_bytes([m.payload[0], m.payload[1]]), i);
    }
    for _ in 0..500 {
        assert!(matches!(p.recv().await, Packet::PubAck(_)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_puback_says_no_matching_subscribers() {
    let b = TestBroker::start().await;
    let mut p = b.client_v5("lonely", true).await;
    assert_eq!(
        p.puback_reason("nobody/here", b"x").await,
        ReasonCode::NoMatchingSubscribers
    );
}

/// Regression: once the write buffer filled (64 KiB) and was then written
/// in one go, the task slept with deliveries still queued, because the
/// mailbox wakes it only when a push finds the queue empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_continues_after_the_write_buffer_fills() {
    let b = TestBroker::start().await;
    let mut sub = b.client("big-reader", true).await;
    sub.subscribe(&[("big", QoS::AtMostOnce)]).await;
    let mut p = b.client("p", true).await;
    let one = raw::publish_v311(0x00, b"big", None, &[7u8; 1024]);
    let burst: Vec<u8> = one.iter().copied().cycle().take(one.len() * 300).collect();
    p.send_raw(&burst).await;
    for _ in 0..300 {
        let m = sub.recv_publish().await;
        assert_eq!(m.payload.len(), 1024);
    }
}
