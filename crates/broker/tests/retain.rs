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

/// Issue 20, item 9: the retained messages of a SUBSCRIBE come before any
/// live message its subscription matches, so a newer live value is never
/// followed by an older retained one. A publisher updates the retained
/// value of one topic as fast as it can while subscribers come and go:
/// every subscriber's first message is the retained one, and what
/// follows never goes back in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_message_never_follows_a_newer_live_one() {
    use ferrymq_codec::Packet;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let b = TestBroker::start().await;
    let mut p = b.client("p", true).await;
    p.publish("v", &0u32.to_be_bytes(), QoS::AtMostOnce, true)
        .await;
    // The first retained value is in place before any subscriber comes.
    p.sync().await;
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut i = 1u32;
            while !stop.load(Ordering::Relaxed) {
                p.publish("v", &i.to_be_bytes(), QoS::AtMostOnce, true)
                    .await;
                if i % 64 == 0 {
                    p.sync().await;
                }
                i += 1;
            }
        })
    };
    for round in 0..200 {
        let mut s = b.client(&format!("s{round}"), true).await;
        s.subscribe(&[("v", QoS::AtMostOnce)]).await;
        let mut last = None;
        for n in 0..5 {
            let m = match s.recv().await {
                Packet::Publish(m) => m,
                other => panic!("{other:?}"),
            };
            assert_eq!(
                m.retain,
                n == 0,
                "round {round}: message {n}, retain {}",
                m.retain
            );
            let value = u32::from_be_bytes(m.payload[..].try_into().unwrap());
            assert!(
                last.is_none_or(|l| value >= l),
                "round {round}: {value} after {last:?}"
            );
            last = Some(value);
        }
    }
    stop.store(true, Ordering::Relaxed);
    publisher.await.unwrap();
}

/// `check_retain_source` (on by default, as in Mosquitto): once the ACL no
/// longer lets a retained message's publisher write its topic, the message
/// is not handed to new subscribers; with the option off it still is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_of_publishers_that_lost_write_access_are_withheld() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    let open = "user alice\ntopic readwrite sensors/#\nuser carol\ntopic readwrite sensors/#\n\
                user bob\ntopic read sensors/#\n";
    for check in [true, false] {
        std::fs::write(&acl, open).unwrap();
        let mut config = ferrymq_testkit::test_config();
        config.acl_file = Some(acl.clone());
        config.check_retain_source = check;
        let b = TestBroker::with_config(config).await;
        let user = |name: &'static str| {
            move |c: &mut ferrymq_codec::Connect| c.username = Some(name.try_into().unwrap())
        };
        let (mut alice, _) = b
            .connect_with(ferrymq_codec::Protocol::V5, "alice", user("alice"))
            .await;
        alice
            .publish("sensors/a", b"from alice", QoS::AtLeastOnce, true)
            .await;
        let (mut carol, _) = b
            .connect_with(ferrymq_codec::Protocol::V5, "carol", user("carol"))
            .await;
        carol
            .publish("sensors/c", b"from carol", QoS::AtLeastOnce, true)
            .await;

        // Alice loses her write access.
        std::fs::write(
            &acl,
            open.replace(
                "topic readwrite sensors/#\nuser carol",
                "topic read sensors/#\nuser carol",
            ),
        )
        .unwrap();
        b.server.reload_security().unwrap();

        let (mut bob, _) = b
            .connect_with(ferrymq_codec::Protocol::V5, "bob", user("bob"))
            .await;
        bob.subscribe(&[("sensors/#", QoS::AtLeastOnce)]).await;
        carol
            .publish("sensors/marker", b"live", QoS::AtLeastOnce, false)
            .await;
        let mut got = Vec::new();
        loop {
            let p = bob.recv_publish().await;
            if p.topic.as_str() == "sensors/marker" {
                break;
            }
            got.push(p.topic.to_string());
        }
        got.sort();
        let want: &[&str] = if check {
            &["sensors/c"]
        } else {
            &["sensors/a", "sensors/c"]
        };
        assert_eq!(got, want, "check_retain_source {check}");
    }
}

/// `retain_expiry_interval`: the sweep removes retained messages whose
/// Message Expiry Interval has passed, and only those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_retained_messages_are_swept() {
    let b = TestBroker::start().await;
    let mut p = b.client_v5("p", true).await;
    let mut short = ferrymq_testkit::publish("short/lived", b"x", QoS::AtLeastOnce, true, 1);
    short
        .properties
        .push(ferrymq_codec::Property::MessageExpiryInterval(1));
    p.send(ferrymq_codec::Packet::Publish(short)).await;
    p.recv().await;
    p.publish("kept/forever", b"y", QoS::AtLeastOnce, true)
        .await;
    assert_eq!(b.broker().retained.len(), 2);
    let now = std::time::Instant::now();
    assert_eq!(b.broker().expire_retained(now), 0, "not expired yet");
    assert_eq!(b.broker().expire_retained(now + Duration::from_secs(2)), 1);
    assert_eq!(b.broker().retained.len(), 1);
    let mut s = b.client("s", true).await;
    s.subscribe(&[("#", QoS::AtLeastOnce)]).await;
    assert_eq!(s.recv_publish().await.topic.as_str(), "kept/forever");
}
