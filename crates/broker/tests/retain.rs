//! Retained messages ([MQTT-3.3.1-5] .. [MQTT-3.3.1-12]).

use std::time::Duration;

use ferrymq_codec::{QoS, ReasonCode};
use ferrymq_testkit::TestBroker;

const QUIET: Duration = Duration::from_millis(200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_message_goes_to_new_subscribers_with_retain_set() {
    let b = TestBroker::start().await;
    let mut p = b.client("p", true).await;
    p.publish("home/temp", b"21", QoS::AtLeastOnce, true).await;
    p.publish("home/temp", b"22", QoS::AtLeastOnce, true).await;
    let mut s = b.client("s", true).await;
    s.subscribe(&[("home/+", QoS::AtLeastOnce)]).await;
    let m = s.recv_publish().await;
    assert!(m.retain);
    assert_eq!(
        &m.payload[..],
        b"22",
        "only the last retained message is kept"
    );
    s.expect_nothing(QUIET).await;
    // A live message is forwarded with retain 0 even if published retained.
    p.publish("home/temp", b"23", QoS::AtLeastOnce, true).await;
    let live = s.recv_publish().await;
    assert!(!live.retain);
    assert_eq!(&live.payload[..], b"23");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_retained_payload_clears_the_topic() {
    let b = TestBroker::start().await;
    let mut p = b.client("p", true).await;
    p.publish("gone", b"x", QoS::AtMostOnce, true).await;
    p.publish("gone", b"", QoS::AtMostOnce, true).await;
    p.sync().await;
    assert_eq!(b.broker().retained.len(), 0);
    let mut s = b.client("s", true).await;
    s.subscribe(&[("gone", QoS::AtMostOnce)]).await;
    s.expect_nothing(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribing_resends_retained_messages() {
    let b = TestBroker::start().await;
    let mut p = b.client("p", true).await;
    p.publish("r/1", b"one", QoS::AtMostOnce, true).await;
    let mut s = b.client("s", true).await;
    assert_eq!(
        s.subscribe(&[("r/#", QoS::AtMostOnce)]).await,
        vec![ReasonCode::Success]
    );
    assert_eq!(&s.recv_publish().await.payload[..], b"one");
    assert_eq!(
        s.subscribe(&[("r/#", QoS::AtLeastOnce)]).await,
        vec![ReasonCode::GrantedQoS1]
    );
    let again = s.recv_publish().await;
    assert!(again.retain);
    assert_eq!(again.qos, QoS::AtMostOnce, "min(published, granted)");
}
