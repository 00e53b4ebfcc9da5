//! MQTT 5: session expiry, Clean Start, message expiry, will delay.

use std::time::{Duration, Instant};

use ferrymq_codec::{Disconnect, Packet, Properties, Property, Protocol, QoS, ReasonCode};
use ferrymq_testkit::{publish, wait_until, will, TestBroker, TestClient};

const QUIET: Duration = Duration::from_millis(200);

fn expiry(seconds: u32) -> impl FnOnce(&mut ferrymq_codec::Connect) {
    move |c| {
        c.clean_start = false;
        c.properties.push(Property::SessionExpiryInterval(seconds));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_zero_ends_the_session_at_disconnect() {
    let b = TestBroker::start().await;
    let (mut c, _) = b.connect_with(Protocol::V5, "e0", expiry(0)).await;
    c.subscribe(&[("t", QoS::AtLeastOnce)]).await;
    c.disconnect().await;
    let (_c, ack) = b.connect_with(Protocol::V5, "e0", expiry(0)).await;
    assert!(!ack.session_present);
    assert_eq!(b.broker().router.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_survives_within_its_expiry_and_ends_after_it_unattended() {
    let b = TestBroker::start().await;
    let (mut c, _) = b.connect_with(Protocol::V5, "e1", expiry(1)).await;
    c.subscribe(&[("t", QoS::AtLeastOnce)]).await;
    c.disconnect().await;
    let (c, ack) = b.connect_with(Protocol::V5, "e1", expiry(1)).await;
    assert!(ack.session_present, "resumed within the interval");
    c.disconnect().await;
    let gone = Instant::now();
    // Nobody connects: the broker ends it on its own.
    wait_until("the session expired", || {
        !b.broker().registry.contains("e1")
    })
    .await;
    assert!(gone.elapsed() >= Duration::from_millis(900));
    assert_eq!(b.broker().router.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_start_discards_an_existing_session() {
    let b = TestBroker::start().await;
    let (c, _) = b.connect_with(Protocol::V5, "cs", expiry(60)).await;
    c.disconnect().await;
    let (_c, ack) = b
        .connect_with(Protocol::V5, "cs", |c| c.clean_start = true)
        .await;
    assert!(!ack.session_present);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_may_not_raise_expiry_from_zero() {
    let b = TestBroker::start().await;
    let mut c = b.client_v5("raise", true).await;
    let mut properties = Properties::new();
    properties.push(Property::SessionExpiryInterval(30));
    c.send(Packet::Disconnect(Disconnect {
        reason: ReasonCode::Success,
        properties,
    }))
    .await;
    match c.expect_closed().await.as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.reason, ReasonCode::ProtocolError),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_can_end_a_session_by_setting_expiry_zero() {
    let b = TestBroker::start().await;
    let (mut c, _) = b.connect_with(Protocol::V5, "lower", expiry(60)).await;
    let mut properties = Properties::new();
    properties.push(Property::SessionExpiryInterval(0));
    c.send(Packet::Disconnect(Disconnect {
        reason: ReasonCode::Success,
        properties,
    }))
    .await;
    assert!(c.expect_closed().await.is_empty());
    assert!(!b.broker().registry.contains("lower"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_are_dropped_and_the_rest_carry_what_is_left() {
    let b = TestBroker::start().await;
    let (mut s, _) = b.connect_with(Protocol::V5, "offline", expiry(60)).await;
    s.subscribe(&[("m/#", QoS::AtLeastOnce)]).await;
    s.disconnect().await;
    let mut p = b.client_v5("p", true).await;
    let mut short = publish("m/short", b"short", QoS::AtLeastOnce, false, 1);
    short.properties.push(Property::MessageExpiryInterval(1));
    let mut long = publish("m/long", b"long", QoS::AtLeastOnce, false, 2);
    long.properties.push(Property::MessageExpiryInterval(100));
    p.send(Packet::Publish(short)).await;
    p.send(Packet::Publish(long)).await;
    p.recv().await;
    p.recv().await;
    // Outlive the short message's interval while the subscriber is away.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (mut s, ack) = b.connect_with(Protocol::V5, "offline", expiry(60)).await;
    assert!(ack.session_present);
    let m = s.recv_publish().await;
    assert_eq!(&m.topic[..], "m/long");
    let left = m.properties.message_expiry_interval().unwrap();
    assert!((98..=100).contains(&left), "remaining expiry {left}");
    s.expect_nothing(QUIET).await;
}

async fn will_client(b: &TestBroker, id: &str, delay: u32, session: u32) -> TestClient {
    let (mut c, ack) = b
        .connect_with(Protocol::V5, id, |c| {
            let mut w = will(&format!("wills/{id}"), "bye", QoS::AtLeastOnce, false);
            w.properties.push(Property::WillDelayInterval(delay));
            w.properties
                .push(Property::ContentType("text/plain".try_into().unwrap()));
            c.will = Some(w);
            c.clean_start = false;
            c.properties.push(Property::SessionExpiryInterval(session));
        })
        .await;
    assert_eq!(ack.reason, ReasonCode::Success);
    c.sync().await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_will_is_cancelled_when_the_client_returns() {
    let b = TestBroker::start().await;
    let mut w = b.client_v5("watch", true).await;
    w.subscribe(&[("wills/#", QoS::AtLeastOnce)]).await;
    drop(will_client(&b, "back", 2, 60).await);
    let _again = will_client(&b, "back", 2, 60).await;
    w.expect_nothing(Duration::from_millis(2500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_will_is_published_after_its_delay_with_its_properties() {
    let b = TestBroker::start().await;
    let mut w = b.client_v5("watch", true).await;
    w.subscribe(&[("wills/#", QoS::AtLeastOnce)]).await;
    let gone = Instant::now();
    drop(will_client(&b, "late", 1, 60).await);
    let m = w.recv_publish().await;
    assert!(
        gone.elapsed() >= Duration::from_millis(900),
        "published too early"
    );
    assert_eq!(&m.payload[..], b"bye");
    assert_eq!(m.properties.content_type().unwrap().as_str(), "text/plain");
    assert!(m.properties.will_delay_interval().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_delay_longer_than_the_session_fires_when_the_session_ends() {
    let b = TestBroker::start().await;
    let mut w = b.client_v5("watch", true).await;
    w.subscribe(&[("wills/#", QoS::AtLeastOnce)]).await;
    // Session expiry 0: the session ends at once, and the will with it.
    drop(will_client(&b, "short", 3600, 0).await);
    let m = w.recv_publish().await;
    assert_eq!(&m.topic[..], "wills/short");
}
