//! Shared subscriptions when members leave (issue 20, items 5 and 15):
//! what a member held goes to another member of the same group at that
//! member's QoS, or stays with the session; never vanishes, never comes
//! back after a restart to a member that gave it up.

use std::path::Path;
use std::time::Duration;

use ferrymq_codec::{Packet, Property, Protocol, QoS};
use ferrymq_testkit::{test_config, TestBroker, TestClient};

const QUIET: Duration = Duration::from_millis(200);

/// An MQTT 5 member with a persistent session and a Receive Maximum of 1,
/// so that what it is sent beyond one message waits in its queue.
async fn member(b: &TestBroker, id: &str, clean: bool) -> TestClient {
    let (c, ack) = b
        .connect_with(Protocol::V5, id, |c| {
            c.clean_start = clean;
            c.properties.push(Property::SessionExpiryInterval(600));
            c.properties.push(Property::ReceiveMaximum(1));
        })
        .await;
    assert_eq!(ack.reason, ferrymq_codec::ReasonCode::Success);
    c
}

async fn payloads(c: &mut TestClient, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    for _ in 0..n {
        got.push(c.recv_publish().await.payload[0]);
    }
    got.sort_unstable();
    got
}

async fn durable(dir: &Path) -> TestBroker {
    let mut config = test_config();
    config.persistence = true;
    config.persistence_location = dir.to_path_buf();
    TestBroker::with_config(config).await
}

/// The only member of a group drops its connection holding one message in
/// flight and two queued: with nobody to hand them to, its session keeps
/// them (they used to be dropped, their store records deleted, though
/// the publisher had its PUBACK), and a restart does not lose them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_only_member_leaving_keeps_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let b = durable(dir.path()).await;
    let mut m = member(&b, "only", true).await;
    m.subscribe(&[("$share/g/job", QoS::AtLeastOnce)]).await;
    let mut p = b.client("p", true).await;
    for i in 0..3u8 {
        p.publish("job", &[i], QoS::AtLeastOnce, false).await;
    }
    assert!(
        matches!(m.recv().await, Packet::Publish(_)),
        "one in flight"
    );
    drop(m);
    ferrymq_testkit::wait_until("the member is parked", || b.broker().registry.parked() == 1).await;
    b.server.shutdown().await;

    let b = durable(dir.path()).await;
    let mut m = member(&b, "only", false).await;
    assert_eq!(payloads(&mut m, 3).await, vec![0, 1, 2]);
    m.expect_nothing(QUIET).await;
}

/// Unsubscribing `$share/g/a` hands over only what came through that
/// group's filter: what came through `$share/g/b` (same share name, other
/// filter) stays, though no other member takes `b` (it used to be taken
/// by share name alone, and dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribing_one_shared_filter_hands_over_only_its_own_messages() {
    let b = TestBroker::start().await;
    let mut m = member(&b, "m", true).await;
    m.subscribe(&[
        ("$share/g/a", QoS::AtLeastOnce),
        ("$share/g/b", QoS::AtLeastOnce),
    ])
    .await;
    let mut other = b.client_v5("other", true).await;
    other.subscribe(&[("$share/g/a", QoS::AtLeastOnce)]).await;
    let mut p = b.client("p", true).await;
    // `b` first, so that it fills `m`'s window; `a` alternates between
    // the members.
    for i in 0..2u8 {
        p.publish("b", &[10 + i], QoS::AtLeastOnce, false).await;
    }
    for i in 0..4u8 {
        p.publish("a", &[i], QoS::AtLeastOnce, false).await;
    }
    let first = match m.recv().await {
        Packet::Publish(first) => first,
        other => panic!("{other:?}"),
    };
    assert_eq!(first.payload[0], 10);
    // `other` got its share of `a` at once.
    let mut to_other = payloads(&mut other, 2).await;
    assert_eq!(m.unsubscribe(&["$share/g/a"]).await.len(), 1);
    // `m`'s queued `a` messages go to `other`; its `b` message stays.
    to_other.extend(payloads(&mut other, 2).await);
    to_other.sort_unstable();
    assert_eq!(to_other, vec![0, 1, 2, 3]);
    m.ack(&first).await;
    assert_eq!(m.recv_publish().await.payload[0], 11);
    m.expect_nothing(QUIET).await;
    other.expect_nothing(QUIET).await;
}

/// A handed-over message goes out at the QoS the new member was granted
/// (it used to keep the leaver's, above the grant).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_over_message_goes_out_at_the_new_members_qos() {
    let b = TestBroker::start().await;
    let mut high = member(&b, "high", true).await;
    high.subscribe(&[("$share/g/t", QoS::ExactlyOnce)]).await;
    let mut low = b.client_v5("low", true).await;
    low.subscribe(&[("$share/g/t", QoS::AtMostOnce)]).await;
    let mut p = b.client("p", true).await;
    for i in 0..6u8 {
        p.publish("t", &[i], QoS::ExactlyOnce, false).await;
    }
    // `high` takes one at a time; the rest of its share waits queued.
    let held = match high.recv().await {
        Packet::Publish(m) => m,
        other => panic!("{other:?}"),
    };
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = low.recv_publish().await;
        assert_eq!(m.qos, QoS::AtMostOnce);
        got.push(m.payload[0]);
    }
    drop(high);
    // Its queued share arrives at QoS 0; the QoS 2 message it was sent
    // stays with it ([MQTT-4.8.2-4]).
    for _ in 0..2 {
        let m = low.recv_publish().await;
        assert_eq!(m.qos, QoS::AtMostOnce);
        got.push(m.payload[0]);
    }
    low.expect_nothing(QUIET).await;
    got.push(held.payload[0]);
    got.sort_unstable();
    assert_eq!(got, vec![0, 1, 2, 3, 4, 5]);
}

/// What an UNSUBSCRIBE hands to another member is deleted from the
/// leaver's stored queue in the same write: after a restart it does not
/// come back to the member that let it go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handed_over_messages_do_not_return_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = durable(dir.path()).await;
    let mut m = member(&b, "m", true).await;
    m.subscribe(&[
        ("$share/g/job", QoS::AtLeastOnce),
        ("mine", QoS::AtLeastOnce),
    ])
    .await;
    let mut other = member(&b, "other", true).await;
    other.subscribe(&[("$share/g/job", QoS::AtLeastOnce)]).await;
    let mut p = b.client("p", true).await;
    // `mine` fills `m`'s window, unacknowledged: its share of `job` waits
    // in its queue.
    p.publish("mine", b"m", QoS::AtLeastOnce, false).await;
    for i in 0..4u8 {
        p.publish("job", &[i], QoS::AtLeastOnce, false).await;
    }
    assert!(matches!(m.recv().await, Packet::Publish(_)));
    let mut to_other = payloads(&mut other, 2).await;
    m.unsubscribe(&["$share/g/job"]).await;
    to_other.extend(payloads(&mut other, 2).await);
    to_other.sort_unstable();
    assert_eq!(to_other, vec![0, 1, 2, 3]);
    m.sync().await;
    b.server.shutdown().await;

    let b = durable(dir.path()).await;
    let mut m = member(&b, "m", false).await;
    // Only what is still its own: `mine`, again, unacknowledged.
    assert_eq!(&m.recv_publish().await.payload[..], b"m");
    m.expect_nothing(QUIET).await;
}
