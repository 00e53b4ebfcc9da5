//! Sections 3.8-3.11 and 4.7: SUBSCRIBE, UNSUBSCRIBE and topic filters.

use std::time::Duration;

use ferrymq_codec::{QoS, ReasonCode};
use ferrymq_testkit::TestBroker;

const QUIET: Duration = Duration::from_millis(200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_match_by_the_spec() {
    let b = TestBroker::start().await;
    let mut s = b.client("s", true).await;
    s.subscribe(&[
        ("sport/tennis/+", QoS::AtMostOnce),
        ("finance/#", QoS::AtMostOnce),
    ])
    .await;
    let mut p = b.client("p", true).await;
    for topic in [
        "sport/tennis/p1",
        "sport/tennis/p1/r",
        "finance",
        "finance/x/y",
        "sport/tennis",
    ] {
        p.publish(topic, topic.as_bytes(), QoS::AtMostOnce, false)
            .await;
    }
    p.sync().await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(s.recv_publish().await.topic.to_string());
    }
    assert_eq!(got, vec!["sport/tennis/p1", "finance", "finance/x/y"]);
    s.expect_nothing(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dollar_topics_are_not_matched_by_leading_wildcards() {
    let b = TestBroker::start().await;
    let mut all = b.client("all", true).await;
    all.subscribe(&[("#", QoS::AtMostOnce), ("+/x", QoS::AtMostOnce)])
        .await;
    let mut sys = b.client("sys", true).await;
    sys.subscribe(&[("$app/#", QoS::AtMostOnce)]).await;
    let mut p = b.client("p", true).await;
    p.publish("$app/x", b"d", QoS::AtMostOnce, false).await;
    assert_eq!(&sys.recv_publish().await.topic[..], "$app/x");
    all.expect_nothing(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suback_grants_per_filter_and_unsubscribe_stops_delivery() {
    let b = TestBroker::start().await;
    let mut s = b.client("s", true).await;
    let granted = s
        .subscribe(&[
            ("a", QoS::AtMostOnce),
            ("b", QoS::AtLeastOnce),
            ("c", QoS::ExactlyOnce),
        ])
        .await;
    assert_eq!(
        granted,
        vec![
            ReasonCode::Success,
            ReasonCode::GrantedQoS1,
            ReasonCode::GrantedQoS2
        ]
    );
    assert_eq!(b.broker().router.len(), 3);
    s.unsubscribe(&["a", "b", "never"]).await;
    assert_eq!(b.broker().router.len(), 1);
    let mut p = b.client("p", true).await;
    p.publish("a", b"1", QoS::AtMostOnce, false).await;
    p.publish("c", b"2", QoS::AtMostOnce, false).await;
    assert_eq!(&s.recv_publish().await.payload[..], b"2");
    s.expect_nothing(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_unsuback_reports_missing_subscriptions() {
    let b = TestBroker::start().await;
    let mut s = b.client_v5("s5", true).await;
    s.subscribe(&[("a", QoS::AtMostOnce)]).await;
    assert_eq!(
        s.unsubscribe(&["a", "b"]).await,
        vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_session_removes_subscriptions_at_disconnect() {
    let b = TestBroker::start().await;
    let mut s = b.client("gone", true).await;
    s.subscribe(&[("a/#", QoS::AtMostOnce)]).await;
    assert_eq!(b.broker().router.len(), 1);
    s.disconnect().await;
    // The broker has processed the DISCONNECT once a new session with the
    // same id can be created fresh.
    let mut again = b.client("gone", true).await;
    again.sync().await;
    assert_eq!(b.broker().router.len(), 0);
}
