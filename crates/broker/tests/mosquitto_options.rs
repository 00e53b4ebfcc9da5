//! Mosquitto options ferrymq implements beyond the basics, each over a real
//! socket: message_size_limit, max_queued_bytes, queue_qos0_messages,
//! retain_available, max_qos, allow_zero_length_clientid,
//! persistent_client_expiration, use_username_as_clientid,
//! clientid_prefixes, upgrade_outgoing_qos, max_topic_alias_broker,
//! global_max_clients.
//!
//! "Not delivered" is shown by a marker: a message published after the
//! dropped one must be the next thing the subscriber gets, so no test waits
//! out a quiet period.

use std::time::Duration;

use ferrymq_broker::Config;
use ferrymq_codec::{Packet, Property, Protocol, QoS, ReasonCode};
use ferrymq_testkit::{connect, publish, test_config, wait_until, will, TestBroker, TestClient};

async fn broker(adjust: impl FnOnce(&mut Config)) -> TestBroker {
    let mut config = test_config();
    adjust(&mut config);
    TestBroker::with_config(config).await
}

/// The next PUBLISH's payload, acknowledged.
async fn next_payload(c: &mut TestClient) -> Vec<u8> {
    c.recv_publish().await.payload.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_size_limit_drops_large_payloads_and_completes_the_exchange() {
    let b = broker(|c| c.message_size_limit = 10).await;
    let mut sub = b.client("sub", true).await;
    sub.subscribe(&[("t", QoS::AtLeastOnce)]).await;

    // MQTT 5: refused with 0x97 Quota exceeded, the PUBACK code for an
    // administrative limit ([MQTT-3.4.2.1]).
    let mut v5 = b.client_v5("p5", true).await;
    assert_eq!(
        v5.puback_reason("t", &[b'x'; 11]).await,
        ReasonCode::QuotaExceeded
    );
    v5.send(Packet::Publish(publish(
        "t",
        &[b'y'; 11],
        QoS::ExactlyOnce,
        false,
        78,
    )))
    .await;
    match v5.recv().await {
        Packet::PubRec(r) => assert_eq!(r.reason, ReasonCode::QuotaExceeded),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    // At the limit: accepted.
    assert_eq!(
        v5.puback_reason("t", &[b'a'; 10]).await,
        ReasonCode::Success
    );
    assert_eq!(next_payload(&mut sub).await, [b'a'; 10]);

    // MQTT 3.1.1 cannot be told: acknowledged, not delivered.
    let mut v3 = b.client("p3", true).await;
    assert_eq!(
        v3.puback_reason("t", &[b'x'; 11]).await,
        ReasonCode::Success
    );
    v3.publish("t", &[b'z'; 11], QoS::ExactlyOnce, false).await;
    v3.publish("t", &[b'q'; 11], QoS::AtMostOnce, false).await;
    v3.publish("t", b"marker", QoS::AtLeastOnce, false).await;
    assert_eq!(next_payload(&mut sub).await, b"marker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_queued_bytes_bounds_an_offline_queue() {
    let b = broker(|c| {
        c.max_queued_bytes = 250;
        c.max_queued_messages = 100;
    })
    .await;
    let mut sub = b.client("away", false).await;
    sub.subscribe(&[("q", QoS::AtLeastOnce)]).await;
    sub.disconnect().await;
    let mut publisher = b.client("pub", true).await;
    for n in 0..5u8 {
        publisher
            .publish("q", &[b'0' + n; 100], QoS::AtLeastOnce, false)
            .await;
    }
    // 100 + 100 fit in 250 bytes; the third would make 300.
    let dropped = b
        .broker()
        .metrics
        .dropped_queue_full
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(dropped, 3);
    let mut sub = TestClient::connect(b.addr, Protocol::V3_1_1).await;
    let ack = sub
        .handshake(connect(Protocol::V3_1_1, "away", false))
        .await;
    assert!(ack.session_present);
    assert_eq!(next_payload(&mut sub).await, [b'0'; 100]);
    assert_eq!(next_payload(&mut sub).await, [b'1'; 100]);
    publisher
        .publish("q", b"marker", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(next_payload(&mut sub).await, b"marker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_qos0_messages_keeps_qos0_for_an_offline_session() {
    for queue in [false, true] {
        let b = broker(|c| c.queue_qos0_messages = queue).await;
        let mut sub = b.client("away", false).await;
        sub.subscribe(&[("q", QoS::AtLeastOnce)]).await;
        sub.disconnect().await;
        let mut publisher = b.client("pub", true).await;
        publisher
            .publish("q", b"zero", QoS::AtMostOnce, false)
            .await;
        publisher
            .publish("q", b"one", QoS::AtLeastOnce, false)
            .await;
        let mut sub = TestClient::connect(b.addr, Protocol::V3_1_1).await;
        sub.handshake(connect(Protocol::V3_1_1, "away", false))
            .await;
        if queue {
            let p = sub.recv_publish().await;
            assert_eq!((&p.payload[..], p.qos), (&b"zero"[..], QoS::AtMostOnce));
        }
        assert_eq!(next_payload(&mut sub).await, b"one", "queue_qos0 {queue}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_available_false_refuses_retained_messages() {
    let b = broker(|c| c.retain_available = false).await;
    // MQTT 5: announced in CONNACK, a retained PUBLISH ends the connection
    // with 0x9A ([MQTT-3.2.2-14]), a retained will is refused at CONNECT.
    let (mut v5, ack) = b.connect_with(Protocol::V5, "r5", |_| {}).await;
    assert_eq!(ack.properties.retain_available(), Some(0));
    v5.send(Packet::Publish(publish(
        "t",
        b"r",
        QoS::AtMostOnce,
        true,
        0,
    )))
    .await;
    match v5.expect_closed().await.as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.reason, ReasonCode::RetainNotSupported),
        other => panic!("expected DISCONNECT 0x9A, got {other:?}"),
    }
    let (_, ack) = b
        .connect_with(Protocol::V5, "w5", |c| {
            c.will = Some(will("w", "gone", QoS::AtMostOnce, true))
        })
        .await;
    assert_eq!(ack.reason, ReasonCode::RetainNotSupported);
    // MQTT 3.1.1: closed.
    let mut v3 = b.client("r3", true).await;
    v3.send(Packet::Publish(publish(
        "t",
        b"r",
        QoS::AtMostOnce,
        true,
        0,
    )))
    .await;
    assert!(v3.expect_closed().await.is_empty());
    assert_eq!(b.broker().retained.len(), 0);
    // Non-retained messages flow as usual.
    let mut sub = b.client("s", true).await;
    sub.subscribe(&[("t", QoS::AtMostOnce)]).await;
    let mut p = b.client("p", true).await;
    p.publish("t", b"plain", QoS::AtMostOnce, false).await;
    assert_eq!(next_payload(&mut sub).await, b"plain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_qos_is_announced_granted_and_enforced() {
    let b = broker(|c| c.listeners[0].max_qos = QoS::AtLeastOnce).await;
    let (mut v5, ack) = b.connect_with(Protocol::V5, "q5", |_| {}).await;
    assert_eq!(ack.properties.maximum_qos(), Some(1));
    // A subscription gets at most the maximum.
    assert_eq!(
        v5.subscribe(&[("t", QoS::ExactlyOnce)]).await,
        [ReasonCode::GrantedQoS1]
    );
    v5.send(Packet::Publish(publish(
        "t",
        b"2",
        QoS::ExactlyOnce,
        false,
        5,
    )))
    .await;
    match v5.expect_closed().await.as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.reason, ReasonCode::QoSNotSupported),
        other => panic!("expected DISCONNECT 0x9B, got {other:?}"),
    }
    let (_, ack) = b
        .connect_with(Protocol::V5, "w5", |c| {
            c.will = Some(will("w", "gone", QoS::ExactlyOnce, false))
        })
        .await;
    assert_eq!(ack.reason, ReasonCode::QoSNotSupported);
    let mut v3 = b.client("q3", true).await;
    v3.send(Packet::Publish(publish(
        "t",
        b"2",
        QoS::ExactlyOnce,
        false,
        5,
    )))
    .await;
    assert!(v3.expect_closed().await.is_empty());
    // QoS 1 is fine.
    let mut sub = b.client("s", true).await;
    assert_eq!(
        sub.subscribe(&[("t", QoS::ExactlyOnce)]).await,
        [ReasonCode::GrantedQoS1]
    );
    let mut p = b.client("p", true).await;
    p.publish("t", b"one", QoS::AtLeastOnce, false).await;
    let got = sub.recv_publish().await;
    assert_eq!((&got.payload[..], got.qos), (&b"one"[..], QoS::AtLeastOnce));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_zero_length_clientid_false_refuses_empty_ids() {
    let b = broker(|c| c.allow_zero_length_clientid = false).await;
    for protocol in [Protocol::V3_1_1, Protocol::V5] {
        let (_, ack) = b.connect_with(protocol, "", |_| {}).await;
        assert_eq!(
            ack.reason,
            ReasonCode::ClientIdentifierNotValid,
            "{protocol}"
        );
    }
    let b = broker(|_| {}).await;
    let (_, ack) = b.connect_with(Protocol::V5, "", |_| {}).await;
    assert_eq!(ack.reason, ReasonCode::Success);
    assert!(ack.properties.assigned_client_identifier().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_client_expiration_ends_sessions_that_would_never_end() {
    let b = broker(|c| c.persistent_client_expiration = Some(Duration::from_secs(1))).await;
    // 3.1.1 without Clean Session, and 5.0 with 0xFFFFFFFF: both bounded.
    let mut v3 = b.client("v3", false).await;
    v3.subscribe(&[("t", QoS::AtLeastOnce)]).await;
    v3.disconnect().await;
    let (v5, _) = b
        .connect_with(Protocol::V5, "v5", |c| {
            c.clean_start = false;
            c.properties.push(Property::SessionExpiryInterval(u32::MAX));
        })
        .await;
    v5.disconnect().await;
    assert!(b.broker().registry.contains("v3") && b.broker().registry.contains("v5"));
    wait_until("both sessions expired", || b.broker().registry.is_empty()).await;
    let mut back = TestClient::connect(b.addr, Protocol::V3_1_1).await;
    let ack = back.handshake(connect(Protocol::V3_1_1, "v3", false)).await;
    assert!(!ack.session_present);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_username_as_clientid_ties_the_session_to_the_user() {
    let b = broker(|c| c.listeners[0].use_username_as_clientid = true).await;
    let as_user = |user: &'static str| {
        move |c: &mut ferrymq_codec::Connect| c.username = Some(user.try_into().unwrap())
    };
    let (mut first, ack) = b
        .connect_with(Protocol::V3_1_1, "a", as_user("alice"))
        .await;
    assert_eq!(ack.reason, ReasonCode::Success);
    assert!(b.broker().registry.contains("alice") && !b.broker().registry.contains("a"));
    // Another client id, same user: the same session, so it takes over.
    let (_second, ack) = b
        .connect_with(Protocol::V3_1_1, "b", as_user("alice"))
        .await;
    assert_eq!(ack.reason, ReasonCode::Success);
    assert!(first.expect_closed().await.is_empty());
    // MQTT 5 without a client id is told the one it got.
    let (_, ack) = b.connect_with(Protocol::V5, "", as_user("bob")).await;
    assert_eq!(
        ack.properties
            .assigned_client_identifier()
            .map(|s| s.to_string()),
        Some("bob".to_string())
    );
    // No user name, no client id.
    for protocol in [Protocol::V3_1_1, Protocol::V5] {
        let (_, ack) = b.connect_with(protocol, "anon", |_| {}).await;
        assert_eq!(ack.reason, ReasonCode::NotAuthorized, "{protocol}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clientid_prefixes_admit_only_matching_ids() {
    let b = broker(|c| c.clientid_prefixes = Some("dev-".into())).await;
    let (_, ack) = b.connect_with(Protocol::V3_1_1, "dev-1", |_| {}).await;
    assert_eq!(ack.reason, ReasonCode::Success);
    for protocol in [Protocol::V3_1_1, Protocol::V5] {
        let (_, ack) = b.connect_with(protocol, "other", |_| {}).await;
        assert_eq!(ack.reason, ReasonCode::NotAuthorized, "{protocol}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_outgoing_qos_delivers_at_the_subscription_qos() {
    for upgrade in [false, true] {
        let b = broker(|c| c.upgrade_outgoing_qos = upgrade).await;
        let mut sub = b.client("s", true).await;
        sub.subscribe(&[("t", QoS::AtLeastOnce)]).await;
        let mut p = b.client("p", true).await;
        p.publish("t", b"zero", QoS::AtMostOnce, false).await;
        let got = sub.recv_publish().await;
        let want = if upgrade {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        assert_eq!(got.qos, want, "upgrade_outgoing_qos {upgrade}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_topic_alias_broker_bounds_the_aliases_the_broker_sets() {
    let b = broker(|c| c.listeners[0].max_topic_alias_broker = 1).await;
    let (mut sub, _) = b
        .connect_with(Protocol::V5, "s", |c| {
            c.properties.push(Property::TopicAliasMaximum(5))
        })
        .await;
    sub.subscribe(&[("t/#", QoS::AtMostOnce)]).await;
    let mut p = b.client("p", true).await;
    for topic in ["t/a", "t/b"] {
        p.publish(topic, b"x", QoS::AtMostOnce, false).await;
    }
    let aliases: Vec<Option<u16>> = [sub.recv_publish().await, sub.recv_publish().await]
        .iter()
        .map(|m| m.properties.topic_alias())
        .collect();
    assert_eq!(aliases, [Some(1), None]);
}

/// `global_max_clients`: sessions, connected or parked, at most. One more
/// is refused (MQTT 5: 0x89 Server busy; 3.x: closed without CONNACK, as
/// Mosquitto 2.1 does); a client taking up its own session is no new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_max_clients_bounds_the_sessions() {
    let b = broker(|c| c.global_max_clients = Some(2)).await;
    let parked = b.client("parked", false).await;
    parked.disconnect().await;
    wait_until("the session parks", || b.broker().registry.parked() == 1).await;
    let _online = b.client("online", true).await;

    let (_, ack) = b.connect_with(Protocol::V5, "third", |_| {}).await;
    assert_eq!(ack.reason, ReasonCode::ServerBusy);
    let mut v3 = TestClient::connect(b.addr, Protocol::V3_1_1).await;
    v3.send(Packet::Connect(Box::new(connect(
        Protocol::V3_1_1,
        "third",
        true,
    ))))
    .await;
    assert!(v3.expect_closed().await.is_empty(), "no CONNACK for 3.x");

    // The parked session's owner comes back; then its end frees a place.
    let back = b.client("parked", true).await;
    back.disconnect().await;
    wait_until("the clean session ends", || b.broker().registry.len() == 1).await;
    let _third = b.client("third", true).await;
}
