//! `$SYS/broker/...` topics with Mosquitto's names.

use std::time::Duration;

use ferrymq_codec::QoS;
use ferrymq_testkit::{test_config, TestBroker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_topics_are_published_and_retained() {
    let mut config = test_config();
    config.sys_interval = Duration::from_millis(100);
    let b = TestBroker::with_config(config).await;
    let mut c = b.client("sys", true).await;
    c.subscribe(&[("$SYS/broker/#", QoS::AtMostOnce)]).await;
    let mut seen = std::collections::HashMap::new();
    while seen.len() < 17 {
        let m = c.recv_publish().await;
        seen.insert(
            m.topic.to_string(),
            String::from_utf8(m.payload.to_vec()).unwrap(),
        );
    }
    assert!(seen["$SYS/broker/version"].starts_with("ferrymq version "));
    assert!(seen["$SYS/broker/uptime"].ends_with(" seconds"));
    for topic in [
        "$SYS/broker/clients/connected",
        "$SYS/broker/clients/total",
        "$SYS/broker/messages/received",
        "$SYS/broker/messages/sent",
        "$SYS/broker/bytes/received",
        "$SYS/broker/bytes/sent",
        "$SYS/broker/subscriptions/count",
        "$SYS/broker/retained messages/count",
    ] {
        assert!(
            seen[topic].parse::<u64>().is_ok(),
            "{topic}: {:?}",
            seen.get(topic)
        );
    }
    // Our own subscription is counted once the next update comes.
    loop {
        let m = c.recv_publish().await;
        if &m.topic[..] == "$SYS/broker/subscriptions/count" {
            assert_eq!(&m.payload[..], b"1");
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_is_not_matched_by_hash() {
    let mut config = test_config();
    config.sys_interval = Duration::from_millis(50);
    let b = TestBroker::with_config(config).await;
    let mut c = b.client("all", true).await;
    c.subscribe(&[("#", QoS::AtMostOnce)]).await;
    c.expect_nothing(Duration::from_millis(300)).await;
}
