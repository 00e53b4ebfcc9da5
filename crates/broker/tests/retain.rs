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
