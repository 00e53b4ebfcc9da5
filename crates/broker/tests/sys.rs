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
    let wanted = [
        "$SYS/broker/version",
        "$SYS/broker/uptime",
        "$SYS/broker/clients/connected",
        "$SYS/broker/clients/total",
        "$SYS/broker/messages/received",
        "$SYS/broker/messages/sent",
        "$SYS/broker/bytes/received",
        "$SYS/broker/bytes/sent",
        "$SYS/broker/subscriptions/count",
        "$SYS/broker/retained messages/count",
    ];
    while !wanted.iter().all(|t| seen.contains_key(*t)) {
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

/// Every topic Mosquitto 2 publishes (mosquitto(8), "SYS TOPICS"), less
/// `heap/*` (needs a memory-tracking build) and bridge `connection/*`.
const MOSQUITTO_TREE: [&str; 24] = [
    "version",
    "uptime",
    "clients/connected",
    "clients/active",
    "clients/disconnected",
    "clients/inactive",
    "clients/total",
    "clients/maximum",
    "clients/expired",
    "messages/received",
    "messages/sent",
    "messages/stored",
    "store/messages/count",
    "store/messages/bytes",
    "publish/messages/received",
    "publish/messages/sent",
    "publish/messages/dropped",
    "publish/bytes/received",
    "publish/bytes/sent",
    "bytes/received",
    "bytes/sent",
    "subscriptions/count",
    "shared_subscriptions/count",
    "retained messages/count",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_tree_with_load_averages() {
    let mut config = test_config();
    config.sys_interval = Duration::from_millis(100);
    let b = TestBroker::with_config(config).await;
    let mut publisher = b.client("p", true).await;
    publisher
        .publish("r/1", b"1234", QoS::AtLeastOnce, true)
        .await;
    let mut c = b.client("sys", true).await;
    c.subscribe(&[("$SYS/broker/#", QoS::AtMostOnce)]).await;
    let mut expected: Vec<String> = MOSQUITTO_TREE
        .iter()
        .map(|t| format!("$SYS/broker/{t}"))
        .collect();
    // ferrymq's own, beside Mosquitto's: flow control and drops by cause.
    for t in [
        "flow/publishers/paused",
        "flow/pauses",
        "flow/paused/seconds",
        "store/messages/high_water",
        "publish/messages/dropped/queue_full",
        "publish/messages/dropped/stalled",
        "publish/messages/dropped/qos0_queue_full",
        "publish/messages/dropped/qos0_offline",
        "publish/messages/dropped/expired",
        "publish/messages/dropped/too_large",
        "publish/messages/dropped/acl_denied",
    ] {
        expected.push(format!("$SYS/broker/{t}"));
    }
    for series in [
        "messages/received",
        "messages/sent",
        "publish/dropped",
        "publish/received",
        "publish/sent",
        "bytes/received",
        "bytes/sent",
        "sockets",
        "connections",
    ] {
        for window in ["1min", "5min", "15min"] {
            expected.push(format!("$SYS/broker/load/{series}/{window}"));
        }
    }
    // Values from a refresh after the subscription (the retained ones
    // delivered at SUBSCRIBE may predate the publisher's message).
    let mut seen = std::collections::HashMap::new();
    let mut fresh = false;
    while !(fresh && expected.iter().all(|t| seen.contains_key(t))) {
        let m = c.recv_publish().await;
        let topic = m.topic.to_string();
        if topic == "$SYS/broker/version" && !m.retain {
            // A refresh starts with the version: count from here.
            fresh = true;
            seen.clear();
        }
        assert!(
            expected.contains(&topic),
            "{topic} is neither Mosquitto's nor one of ferrymq's own"
        );
        seen.insert(topic, String::from_utf8(m.payload.to_vec()).unwrap());
    }
    let n = |t: &str| -> u64 {
        seen[&format!("$SYS/broker/{t}")]
            .parse()
            .unwrap_or_else(|_| panic!("{t}: {:?}", seen[&format!("$SYS/broker/{t}")]))
    };
    for t in MOSQUITTO_TREE.iter().skip(2) {
        n(t);
    }
    assert_eq!(n("clients/connected"), 2);
    assert_eq!(n("clients/total"), 2);
    assert_eq!(n("clients/expired"), 0);
    assert!(n("publish/messages/received") >= 1);
    assert!(n("publish/bytes/received") >= 4);
    assert!(n("retained messages/count") >= 1, "r/1 and $SYS itself");
    assert_eq!(n("messages/stored"), n("store/messages/count"));
    assert!(n("store/messages/bytes") >= 4);
    assert_eq!(n("shared_subscriptions/count"), 0);
    // Load averages: "%.2f" numbers, connections seen over the last minute.
    for t in expected.iter().filter(|t| t.contains("/load/")) {
        let v = &seen[t];
        let (_, decimals) = v.split_once('.').unwrap_or_else(|| panic!("{t}: {v}"));
        assert_eq!(decimals.len(), 2, "{t}: {v}");
        assert!(v.parse::<f64>().unwrap() >= 0.0, "{t}: {v}");
    }
    assert!(
        seen["$SYS/broker/load/connections/1min"]
            .parse::<f64>()
            .unwrap()
            > 0.0
    );
    assert!(
        seen["$SYS/broker/load/sockets/15min"]
            .parse::<f64>()
            .unwrap()
            > 0.0
    );
}
