//! Authentication and authorization: allow_anonymous, password files and
//! ACL files as Mosquitto applies them.

use std::path::Path;
use std::time::Duration;

use ferrymq_auth::{Algorithm, PasswordHash};
use ferrymq_codec::{Packet, Protocol, QoS, ReasonCode};
use ferrymq_testkit::{connect, publish, test_config, will, TestBroker, TestClient};

const QUIET: Duration = Duration::from_millis(200);

fn files(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let hash = |pw: &[u8]| PasswordHash::create(pw, Algorithm::default()).unwrap();
    let passwords = dir.join("passwd");
    std::fs::write(
        &passwords,
        format!("alice:{}\nbob:{}\n", hash(b"wonderland"), hash(b"builder")),
    )
    .unwrap();
    let acl = dir.join("acl");
    std::fs::write(
        &acl,
        "# anonymous: nothing\n\
         user alice\n\
         topic readwrite home/alice/#\n\
         topic read public/#\n\
         topic deny public/secret\n\
         user bob\n\
         topic readwrite #\n\
         topic read $SYS/#\n\
         pattern readwrite clients/%c/#\n",
    )
    .unwrap();
    (passwords, acl)
}

async fn secured(dir: &Path) -> TestBroker {
    let (passwords, acl) = files(dir);
    let mut config = test_config();
    config.allow_anonymous = Some(false);
    config.password_file = Some(passwords);
    config.acl_file = Some(acl);
    config.sys_interval = Duration::from_millis(100);
    TestBroker::with_config(config).await
}

async fn login(
    b: &TestBroker,
    protocol: Protocol,
    id: &str,
    user: &str,
    pw: &str,
) -> (TestClient, ReasonCode) {
    let (c, ack) = b
        .connect_with(protocol, id, |c| {
            c.username = Some(user.try_into().unwrap());
            c.password = Some(bytes::Bytes::copy_from_slice(pw.as_bytes()));
        })
        .await;
    (c, ack.reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_refused_and_passwords_checked() {
    let dir = tempfile::tempdir().unwrap();
    let b = secured(dir.path()).await;
    for protocol in [Protocol::V3_1_1, Protocol::V5] {
        let mut c = TestClient::connect(b.addr, protocol).await;
        let ack = c.handshake(connect(protocol, "anon", true)).await;
        assert_eq!(
            ack.reason,
            ReasonCode::NotAuthorized,
            "{protocol}: anonymous"
        );
        assert_eq!(
            login(&b, protocol, "a", "alice", "wrong").await.1,
            ReasonCode::NotAuthorized
        );
        assert_eq!(
            login(&b, protocol, "a", "mallory", "x").await.1,
            ReasonCode::NotAuthorized
        );
        assert_eq!(
            login(&b, protocol, "a", "alice", "wonderland").await.1,
            ReasonCode::Success
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_connack_codes_for_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let b = secured(dir.path()).await;
    let mut c = TestClient::connect(b.addr, Protocol::V3_1_1).await;
    c.send_raw(&ferrymq_testkit::raw::connect_v311("anon", 0x02, 60))
        .await;
    // The raw CONNACK: 20 02 00 05 (not authorized).
    let mut buf = [0u8; 4];
    tokio::io::AsyncReadExt::read_exact(&mut c.stream, &mut buf)
        .await
        .unwrap();
    assert_eq!(buf, [0x20, 0x02, 0x00, 0x05]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_subscriber_gets_only_what_it_may_read() {
    let dir = tempfile::tempdir().unwrap();
    let b = secured(dir.path()).await;
    let (mut alice, _) = login(&b, Protocol::V3_1_1, "alice-1", "alice", "wonderland").await;
    assert_eq!(
        alice.subscribe(&[("#", QoS::AtMostOnce)]).await,
        vec![ReasonCode::Success]
    );
    // A filter under which nothing is readable is refused at SUBACK.
    assert_eq!(
        alice.subscribe(&[("home/bob/#", QoS::AtMostOnce)]).await,
        vec![ReasonCode::UnspecifiedError]
    );
    let (mut bob, _) = login(&b, Protocol::V3_1_1, "bob-1", "bob", "builder").await;
    for topic in [
        "home/alice/tv",
        "home/bob/tv",
        "public/news",
        "public/secret",
    ] {
        bob.publish(topic, topic.as_bytes(), QoS::AtLeastOnce, false)
            .await;
    }
    let mut got = Vec::new();
    while let Ok(Some(Packet::Publish(m))) =
        tokio::time::timeout(QUIET * 2, alice.try_recv(ferrymq_testkit::WAIT)).await
    {
        got.push(m.topic.to_string());
    }
    assert_eq!(
        got,
        vec!["home/alice/tv", "public/news"],
        "no $SYS, nothing denied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_publish_is_dropped_in_v311_and_refused_in_v5() {
    let dir = tempfile::tempdir().unwrap();
    let b = secured(dir.path()).await;
    let (mut bob, _) = login(&b, Protocol::V3_1_1, "bob-2", "bob", "builder").await;
    bob.subscribe(&[("public/#", QoS::AtLeastOnce)]).await;
    let (mut alice, _) = login(&b, Protocol::V3_1_1, "alice-2", "alice", "wonderland").await;
    alice
        .publish("public/news", b"x", QoS::AtLeastOnce, false)
        .await; // acknowledged
    bob.expect_nothing(QUIET).await;
    let (mut alice5, _) = login(&b, Protocol::V5, "alice-5", "alice", "wonderland").await;
    alice5
        .send(Packet::Publish(publish(
            "public/news",
            b"x",
            QoS::AtLeastOnce,
            false,
            1,
        )))
        .await;
    match alice5.recv().await {
        Packet::PubAck(a) => assert_eq!(a.reason, ReasonCode::NotAuthorized),
        other => panic!("{other:?}"),
    }
    bob.expect_nothing(QUIET).await;
    // The %c pattern gives every client its own subtree.
    alice
        .publish("clients/alice-2/x", b"own", QoS::AtLeastOnce, false)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_to_a_forbidden_topic_is_not_published() {
    let dir = tempfile::tempdir().unwrap();
    let b = secured(dir.path()).await;
    let (mut bob, _) = login(&b, Protocol::V3_1_1, "bob-3", "bob", "builder").await;
    bob.subscribe(&[("#", QoS::AtMostOnce)]).await;
    let (alice, _) = b
        .connect_with(Protocol::V3_1_1, "alice-3", |c| {
            c.username = Some("alice".try_into().unwrap());
            c.password = Some(bytes::Bytes::from_static(b"wonderland"));
            c.will = Some(will("public/alice-died", "x", QoS::AtMostOnce, false));
        })
        .await;
    drop(alice);
    bob.expect_nothing(QUIET).await;
}
