//! Persistent sessions ([MQTT-3.1.2-4] .. [MQTT-3.1.2-6], [MQTT-4.1]).

use std::time::Duration;

use ferrymq_broker::metrics::Metrics;
use ferrymq_codec::{Protocol, QoS};
use ferrymq_testkit::{connect, TestBroker, TestClient};

const QUIET: Duration = Duration::from_millis(200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_queues_qos1_and_qos2_while_away() {
    let b = TestBroker::start().await;
    let mut s = b.client("away", false).await;
    s.subscribe(&[("news/#", QoS::ExactlyOnce)]).await;
    s.disconnect().await;
    let mut p = b.client("p", true).await;
    p.publish("news/a", b"q0", QoS::AtMostOnce, false).await;
    p.publish("news/b", b"q1", QoS::AtLeastOnce, false).await;
    p.publish("news/c", b"q2", QoS::ExactlyOnce, false).await;
    let mut s = TestClient::connect(b.addr, Protocol::V3_1_1).await;
    let ack = s.handshake(connect(Protocol::V3_1_1, "away", false)).await;
    assert!(ack.session_present);
    let m1 = s.recv_publish().await;
    let m2 = s.recv_publish().await;
    assert_eq!((&m1.payload[..], m1.qos), (&b"q1"[..], QoS::AtLeastOnce));
    assert_eq!((&m2.payload[..], m2.qos), (&b"q2"[..], QoS::ExactlyOnce));
    s.expect_nothing(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_session_discards_the_stored_session() {
    let b = TestBroker::start().await;
    let mut s = b.client("fresh", false).await;
    s.subscribe(&[("t", QoS::AtLeastOnce)]).await;
    s.disconnect().await;
    let mut p = b.client("p", true).await;
    p.publish("t", b"x", QoS::AtLeastOnce, false).await;
    let mut s = TestClient::connect(b.addr, Protocol::V3_1_1).await;
    let ack = s.handshake(connect(Protocol::V3_1_1, "fresh", true)).await;
    assert!(!ack.session_present);
    s.expect_nothing(QUIET).await;
    assert_eq!(b.broker().router.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_queue_is_bounded_and_drops_are_counted() {
    let mut config = ferrymq_testkit::test_config();
    config.max_queued_messages = 10;
    let b = TestBroker::with_config(config).await;
    let mut s = b.client("bounded", false).await;
    s.subscribe(&[("t", QoS::AtLeastOnce)]).await;
    s.disconnect().await;
    let mut p = b.client("p", true).await;
    for i in 0..25u8 {
        p.publish("t", &[i], QoS::AtLeastOnce, false).await;
    }
    assert_eq!(Metrics::get(&b.broker().metrics.dropped_queue_full), 15);
    let mut s = TestClient::connect(b.addr, Protocol::V3_1_1).await;
    s.handshake(connect(Protocol::V3_1_1, "bounded", false))
        .await;
    for i in 0..10u8 {
        assert_eq!(s.recv_publish().await.payload[0], i, "the oldest are kept");
    }
    s.expect_nothing(QUIET).await;
}
