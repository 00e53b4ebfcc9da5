//! Will messages ([MQTT-3.1.2-8] .. [MQTT-3.1.2-17]).

use std::time::Duration;

use ferrymq_codec::{Protocol, QoS};
use ferrymq_testkit::{connect, will, TestBroker, TestClient};

const QUIET: Duration = Duration::from_millis(300);

async fn client_with_will(
    b: &TestBroker,
    id: &str,
    qos: QoS,
    retain: bool,
    keep_alive: u16,
) -> TestClient {
    let mut c = TestClient::connect(b.addr, Protocol::V3_1_1).await;
    let mut conn = connect(Protocol::V3_1_1, id, true);
    conn.will = Some(will(&format!("wills/{id}"), "gone", qos, retain));
    conn.keep_alive = keep_alive;
    c.handshake(conn).await;
    c.sync().await;
    c
}

async fn watcher(b: &TestBroker) -> TestClient {
    let mut w = b.client("watcher", true).await;
    w.subscribe(&[("wills/#", QoS::ExactlyOnce)]).await;
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_on_socket_drop_with_its_qos() {
    let b = TestBroker::start().await;
    let mut w = watcher(&b).await;
    let c = client_with_will(&b, "dropper", QoS::AtLeastOnce, false, 60).await;
    drop(c);
    let m = w.recv_publish().await;
    assert_eq!(&m.topic[..], "wills/dropper");
    assert_eq!(&m.payload[..], b"gone");
    assert_eq!(m.qos, QoS::AtLeastOnce);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_will_after_disconnect() {
    let b = TestBroker::start().await;
    let mut w = watcher(&b).await;
    let c = client_with_will(&b, "polite", QoS::AtMostOnce, false, 60).await;
    c.disconnect().await;
    w.expect_nothing(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_on_keep_alive_timeout() {
    let b = TestBroker::start().await;
    let mut w = watcher(&b).await;
    let _c = client_with_will(&b, "silent", QoS::AtMostOnce, false, 1).await;
    let m = w.recv_publish().await;
    assert_eq!(&m.topic[..], "wills/silent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_on_protocol_error() {
    let b = TestBroker::start().await;
    let mut w = watcher(&b).await;
    let mut c = client_with_will(&b, "rude", QoS::AtMostOnce, false, 60).await;
    c.send_raw(&[0x00, 0x00]).await; // reserved packet type 0
    assert!(c.expect_closed().await.is_empty());
    assert_eq!(&w.recv_publish().await.topic[..], "wills/rude");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_on_takeover() {
    let b = TestBroker::start().await;
    let mut w = watcher(&b).await;
    let mut c = client_with_will(&b, "twin", QoS::AtMostOnce, false, 60).await;
    let _twin = b.client("twin", true).await;
    assert!(c.expect_closed().await.is_empty());
    assert_eq!(&w.recv_publish().await.topic[..], "wills/twin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_will_is_retained() {
    let b = TestBroker::start().await;
    let c = client_with_will(&b, "keeper", QoS::AtMostOnce, true, 60).await;
    let mut w = watcher(&b).await;
    drop(c);
    let live = w.recv_publish().await;
    assert!(!live.retain);
    let mut late = b.client("late", true).await;
    late.subscribe(&[("wills/keeper", QoS::AtMostOnce)]).await;
    let m = late.recv_publish().await;
    assert!(m.retain);
    assert_eq!(&m.payload[..], b"gone");
    w.expect_nothing(QUIET).await;
}
