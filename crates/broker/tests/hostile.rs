//! Input chosen to hurt the broker (issue 20): filters and topics as deep
//! as a packet allows, SUBSCRIBE packets that multiply their cost, clients
//! writing what only the broker may write, and the whole malformed and
//! extreme input set at one broker, which must still serve at the end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferrymq_codec::{Packet, Protocol, QoS, ReasonCode};
use ferrymq_testkit::{raw, test_config, TestBroker, TestClient};

/// `a/a/.../a/<last>` with `levels` levels.
fn deep(levels: usize, last: &str) -> String {
    let mut s = "a/".repeat(levels - 1);
    s.push_str(last);
    s
}

/// A 3.1.1 SUBSCRIBE of every filter in `filters` at `qos`, built by hand.
fn subscribe_raw(packet_id: u16, filters: &[&str], qos: u8) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    for f in filters {
        body.extend_from_slice(&raw::string(f.as_bytes()));
        body.push(qos);
    }
    raw::packet(0x82, &body)
}

fn unsubscribe_raw(packet_id: u16, filter: &str) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    body.extend_from_slice(&raw::string(filter.as_bytes()));
    raw::packet(0xA2, &body)
}

async fn raw_client(b: &TestBroker, id: &str, clean: bool) -> TestClient {
    let mut c = TestClient::connect(b.addr, Protocol::V3_1_1).await;
    c.send_raw(&raw::connect_v311(id, if clean { 0x02 } else { 0x00 }, 60))
        .await;
    assert!(matches!(c.recv().await, Packet::ConnAck(_)));
    c
}

/// The next packet, or `None` once the broker has been quiet for a while
/// or closed the connection.
async fn quiet_recv(c: &mut TestClient) -> Option<Packet> {
    tokio::time::timeout(
        Duration::from_millis(300),
        c.try_recv(Duration::from_secs(5)),
    )
    .await
    .ok()
    .flatten()
}

async fn suback(c: &mut TestClient) -> Vec<ReasonCode> {
    match c.recv().await {
        Packet::SubAck(s) => s.reasons,
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// Issue 20, item 0: 32,768 levels (the most a 65,535-byte filter holds)
/// used to overflow a worker's stack in the topic index, killing the
/// process. With the level limit lifted, every path that walks levels
/// runs: subscribe, retained messages, publish, unsubscribe, session end,
/// and a persistent session discarded by a clean reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_topics_of_32768_levels_do_not_harm_the_broker() {
    let mut config = test_config();
    config.max_topic_levels = usize::MAX;
    let b = TestBroker::with_config(config).await;
    let hash = deep(32_768, "#");
    let plus = deep(32_768, "+");
    let topic = deep(32_768, "a");
    assert_eq!(hash.len(), 65_535);

    let mut a = raw_client(&b, "deep-a", true).await;
    a.send_raw(&subscribe_raw(1, &[&hash], 0)).await;
    assert_eq!(suback(&mut a).await, vec![ReasonCode::Success]);

    let mut p = b.client("deep-pub", true).await;
    p.publish(&topic, b"deep", QoS::AtLeastOnce, true).await;
    let got = a.recv_publish().await;
    assert_eq!(
        (&got.topic[..], &got.payload[..]),
        (&topic[..], &b"deep"[..])
    );

    // The retained message reaches a new subscription through `+`.
    let mut c = raw_client(&b, "deep-c", true).await;
    c.send_raw(&subscribe_raw(1, &[&plus], 0)).await;
    assert_eq!(suback(&mut c).await, vec![ReasonCode::Success]);
    assert!(c.recv_publish().await.retain);

    a.send_raw(&unsubscribe_raw(2, &hash)).await;
    assert!(matches!(a.recv().await, Packet::UnsubAck(_)));
    // Session end removes `c`'s subscription.
    c.disconnect().await;

    let mut d = raw_client(&b, "deep-d", false).await;
    d.send_raw(&subscribe_raw(1, &[&hash, &plus], 1)).await;
    assert_eq!(suback(&mut d).await.len(), 2);
    // One retained copy per matching subscription.
    let _ = d.recv_publish().await;
    let _ = d.recv_publish().await;
    d.disconnect().await;
    // A clean reconnect ends the parked session and its subscriptions.
    raw_client(&b, "deep-d", true).await.disconnect().await;

    p.publish(&topic, b"", QoS::AtLeastOnce, true).await;
    assert_eq!(b.broker().router.len(), 0);
    assert!(b.broker().retained.is_empty());

    // Still serving.
    let mut s = b.client("after", true).await;
    s.subscribe(&[("x", QoS::AtLeastOnce)]).await;
    p.publish("x", b"ok", QoS::AtLeastOnce, false).await;
    assert_eq!(&s.recv_publish().await.payload[..], b"ok");
}

/// The default `max_topic_levels` (128) keeps such filters and topics out
/// of the index: SUBACK failure, a PUBLISH not routed (MQTT 5: 0x90), a
/// will refused at CONNECT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_topic_levels_keeps_deep_filters_and_topics_out() {
    let b = TestBroker::start().await;
    let mut a = raw_client(&b, "levels-a", true).await;
    a.send_raw(&subscribe_raw(
        1,
        &[&deep(129, "#"), &deep(128, "#"), &deep(32_768, "+")],
        1,
    ))
    .await;
    assert_eq!(
        suback(&mut a).await,
        vec![
            ReasonCode::UnspecifiedError,
            ReasonCode::GrantedQoS1,
            ReasonCode::UnspecifiedError
        ]
    );
    assert_eq!(b.broker().router.len(), 1);

    let mut p5 = b.client_v5("levels-p5", true).await;
    assert_eq!(
        p5.puback_reason(&deep(129, "a"), b"x").await,
        ReasonCode::TopicNameInvalid
    );
    let mut p3 = b.client("levels-p3", true).await;
    p3.publish(&deep(200, "a"), b"x", QoS::AtLeastOnce, true)
        .await;
    assert!(b.broker().retained.is_empty());
    a.expect_nothing(Duration::from_millis(100)).await;

    let (_, ack) = b
        .connect_with(Protocol::V5, "levels-will", |c| {
            c.will = Some(ferrymq_testkit::will(
                &deep(129, "a"),
                "w",
                QoS::AtMostOnce,
                false,
            ));
        })
        .await;
    assert_eq!(ack.reason, ReasonCode::TopicNameInvalid);

    p5.publish(&deep(128, "z"), b"fits", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(&a.recv_publish().await.payload[..], b"fits");
}

/// Issue 20, item 2: one 80 KB SUBSCRIBE of 20,000 `#` filters against 200
/// retained messages made the broker gather 4 million deliveries before
/// the client read anything. A filter repeated in one packet counts once:
/// 20,000 reason codes, 200 retained messages, nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_repeated_in_one_subscribe_counts_once() {
    let b = TestBroker::start().await;
    let mut p = b.client("rep-pub", true).await;
    for i in 0..200 {
        p.publish(&format!("r/{i}"), b"v", QoS::AtMostOnce, true)
            .await;
    }
    p.sync().await;
    let mut s = raw_client(&b, "rep-sub", true).await;
    let filters = vec!["#"; 20_000];
    let packet = subscribe_raw(1, &filters, 0);
    assert!(packet.len() > 80_000);
    s.send_raw(&packet).await;
    let reasons = suback(&mut s).await;
    assert_eq!(reasons.len(), 20_000);
    assert!(reasons.iter().all(|r| *r == ReasonCode::Success));
    for _ in 0..200 {
        assert!(s.recv_publish().await.retain);
    }
    s.expect_nothing(Duration::from_millis(200)).await;
    assert_eq!(b.broker().router.len(), 1);
}

/// Retained messages for a SUBSCRIBE are bounded by the session's queue
/// (`max_queued_messages`), as Mosquitto bounds them, and gathered only
/// while it has room: never collected first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_on_subscribe_are_bounded_by_the_queue() {
    let mut config = test_config();
    config.max_queued_messages = 50;
    let b = TestBroker::with_config(config).await;
    let mut p = b.client("bound-pub", true).await;
    for i in 0..300 {
        p.publish(&format!("r/{i}"), b"v", QoS::AtMostOnce, true)
            .await;
    }
    p.sync().await;
    let mut s = raw_client(&b, "bound-sub", true).await;
    s.send_raw(&subscribe_raw(1, &["r/#", "+/+", "#"], 0)).await;
    assert_eq!(suback(&mut s).await.len(), 3);
    let mut n = 0;
    while let Some(packet) = quiet_recv(&mut s).await {
        assert!(matches!(packet, Packet::Publish(_)), "{packet:?}");
        n += 1;
    }
    assert_eq!(n, 50, "one queue's worth");
    assert_eq!(
        b.broker()
            .metrics
            .dropped_queue_full
            .load(Ordering::Relaxed),
        0
    );
}

/// `max_filters_per_subscribe` and `max_subscriptions_per_session`: the
/// filters past them are refused one by one (MQTT 5: 0x97), the packet
/// and the connection stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_limits_refuse_filters_not_connections() {
    let mut config = test_config();
    config.max_filters_per_subscribe = 3;
    config.max_subscriptions_per_session = 5;
    let b = TestBroker::with_config(config).await;
    let mut c = b.client_v5("limits", true).await;
    let filters: Vec<(String, QoS)> = (0..4)
        .map(|i| (format!("f/{i}"), QoS::AtMostOnce))
        .collect();
    let refs: Vec<(&str, QoS)> = filters.iter().map(|(f, q)| (f.as_str(), *q)).collect();
    assert_eq!(
        c.subscribe(&refs).await,
        vec![
            ReasonCode::Success,
            ReasonCode::Success,
            ReasonCode::Success,
            ReasonCode::QuotaExceeded
        ]
    );
    assert_eq!(
        c.subscribe(&[
            ("g/1", QoS::AtMostOnce),
            ("g/2", QoS::AtMostOnce),
            ("g/3", QoS::AtMostOnce)
        ])
        .await,
        vec![
            ReasonCode::Success,
            ReasonCode::Success,
            ReasonCode::QuotaExceeded
        ]
    );
    // Replacing a subscription is not a new one.
    assert_eq!(
        c.subscribe(&[("f/0", QoS::AtLeastOnce)]).await,
        vec![ReasonCode::GrantedQoS1]
    );
    c.sync().await;
}

/// Issue 20, item 3: no client writes `$SYS` (a spoofed retained
/// `$SYS/broker/version` used to be stored and served) or `$share`; as
/// Mosquitto, before any ACL. 3.x: dropped; MQTT 5: 0x87.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_publish_to_sys_or_share() {
    let b = TestBroker::start().await;
    let mut watcher = b.client("sys-watch", true).await;
    watcher
        .subscribe(&[("$SYS/#", QoS::AtMostOnce), ("$share/#", QoS::AtMostOnce)])
        .await;
    let mut v3 = b.client("sys-v3", true).await;
    v3.publish("$SYS/broker/version", b"SPOOFED", QoS::AtLeastOnce, true)
        .await;
    v3.publish("$SYS/custom", b"x", QoS::AtMostOnce, true).await;
    v3.publish("$SYSTEM", b"x", QoS::AtMostOnce, true).await;
    v3.sync().await;
    let mut v5 = b.client_v5("sys-v5", true).await;
    for topic in ["$SYS/broker/version", "$share/g/t", "$SYS"] {
        assert_eq!(
            v5.puback_reason(topic, b"x").await,
            ReasonCode::NotAuthorized,
            "{topic}"
        );
    }
    assert!(b.broker().retained.is_empty());
    watcher.expect_nothing(Duration::from_millis(100)).await;
    // The bridge state topics stay open, as in Mosquitto.
    v3.publish(
        "$SYS/broker/connection/b1/state",
        b"1",
        QoS::AtMostOnce,
        false,
    )
    .await;
    let got = watcher.recv_publish().await;
    assert_eq!(&got.topic[..], "$SYS/broker/connection/b1/state");
}

/// Every malformed or extreme input of the suite, one connection each,
/// against one broker: no panic anywhere (a panic hook counts them, in
/// every thread), and the broker still serves at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_hostile_input_set_leaves_the_broker_serving() {
    let panics = Arc::new(AtomicUsize::new(0));
    let counted = panics.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        counted.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
    let b = TestBroker::start().await;
    let mut retained = b.client("h-retained", true).await;
    for i in 0..100 {
        retained
            .publish(&format!("h/{i}"), b"r", QoS::AtMostOnce, true)
            .await;
    }
    retained.sync().await;

    let many: Vec<String> = (0..5_000).map(|i| format!("+/{i}/#")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let hashes = vec!["#"; 30_000];
    let after_connect: Vec<Vec<u8>> = vec![
        vec![0x00, 0x00],
        vec![0xF0, 0x00],
        vec![0x60, 0x02, 0x00, 0x01],
        raw::packet(0x80, &[0, 1, 0, 1, b'a', 0]),
        raw::publish_v311(0x06, b"t", Some(1), b"x"),
        vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
        vec![0x30, 0xFF, 0xFF, 0xFF, 0x7F],
        raw::publish_v311(0x00, b"a/+", None, b"x"),
        raw::publish_v311(0x00, b"a\0b", None, b"x"),
        raw::publish_v311(0x00, b"\xC0\xAF", None, b"x"),
        raw::publish_v311(0x00, b"\xED\xA0\x80", None, b"x"),
        raw::publish_v311(0x00, b"", None, b"x"),
        raw::publish_v311(0x02, b"t", Some(0), b"x"),
        raw::publish_v311(0x02, b"t", None, b""),
        raw::subscribe_v311(1, b"a", 0x04),
        raw::subscribe_v311(1, b"a/#/b", 0x00),
        raw::subscribe_v311(1, b"a+", 0x00),
        raw::subscribe_v311(1, b"", 0x00),
        raw::subscribe_v311(0, b"a", 0x00),
        raw::packet(0x82, &[0, 1]),
        raw::packet(0xA2, &[0, 1]),
        raw::packet(0x82, &[0, 1, 0xFF, 0xFF]),
        vec![0xC0, 0x01, 0x00],
        raw::connect_v311("again", 0x02, 60),
        vec![0x20, 0x02, 0x00, 0x00],
        raw::packet(0x30, &[0x00, 0x09, b'a']),
        raw::publish_v311(0x01, deep(32_768, "a").as_bytes(), None, b"deep"),
        subscribe_raw(1, &[&deep(32_768, "#")], 0),
        subscribe_raw(1, &[&"/".repeat(65_535)], 0),
        subscribe_raw(1, &hashes, 0),
        subscribe_raw(1, &many, 1),
        unsubscribe_raw(1, &deep(32_768, "#")),
        raw::publish_v311(0x00, "$SYS/broker/version".as_bytes(), None, b"x"),
    ];
    for (i, bytes) in after_connect.iter().enumerate() {
        let mut c = raw_client(&b, &format!("hostile-{i}"), i % 2 == 0).await;
        let _ = c.stream.writable().await;
        let _ = tokio::io::AsyncWriteExt::write_all(&mut c.stream, bytes).await;
        while quiet_recv(&mut c).await.is_some() {}
    }
    let before_connect: Vec<Vec<u8>> = vec![
        vec![0xFF; 64],
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        raw::packet(0x10, &raw::string(b"HTTP")),
        raw::packet(
            0x10,
            &[0, 4, b'M', b'Q', b'T', b'T', 4, 0x01, 0, 60, 0, 1, b'c'],
        ),
        raw::packet(
            0x10,
            &[
                0, 4, b'M', b'Q', b'T', b'T', 4, 0x42, 0, 60, 0, 1, b'c', 0, 1, b'p',
            ],
        ),
        raw::packet(
            0x10,
            &[
                0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 5, 0x11, 0, 0, 0,
            ],
        ),
        raw::packet(
            0x10,
            &[0, 4, b'M', b'Q', b'T', b'T', 9, 0x02, 0, 60, 0, 1, b'c'],
        ),
        raw::packet(
            0x10,
            &[0, 4, b'M', b'Q', b'T', b'T', 4, 0x1C, 0, 60, 0, 1, b'c'],
        ),
        vec![0x10, 0xFF, 0xFF, 0xFF, 0x7F],
        vec![0x10],
    ];
    for bytes in &before_connect {
        let mut c = TestClient::connect(b.addr, Protocol::V3_1_1).await;
        let _ = tokio::io::AsyncWriteExt::write_all(&mut c.stream, bytes).await;
        // Whatever the answer (a CONNACK in either version), then closed,
        // or left to the CONNECT deadline.
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(
            Duration::from_millis(500),
            tokio::io::AsyncReadExt::read_to_end(&mut c.stream, &mut sink),
        )
        .await;
    }
    let mut s = b.client("h-after", true).await;
    assert_eq!(s.subscribe(&[("h/1", QoS::AtLeastOnce)]).await.len(), 1);
    assert_eq!(&s.recv_publish().await.payload[..], b"r");
    retained
        .publish("h/1", b"live", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(&s.recv_publish().await.payload[..], b"live");
    assert_eq!(
        panics.load(Ordering::SeqCst),
        0,
        "panics while under attack"
    );
}
