//! Authentication and authorization: allow_anonymous, password files and
//! ACL files as Mosquitto applies them.

use std::path::Path;
use std::time::Duration;

use ferrymq_auth::{Algorithm, PasswordHash};
use ferrymq_codec::{Packet, Protocol, QoS, ReasonCode};
use ferrymq_testkit::{connect, test_config, will, TestBroker, TestClient};

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
    assert_eq!(
        alice5.puback_reason("public/news", b"x").await,
        ReasonCode::NotAuthorized
    );
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

/// The client side of SCRAM-SHA-512 (RFC 5802), written here from the RFC
/// so the broker's side is checked against an independent implementation.
mod scram_client {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha512};

    fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut m = Hmac::<Sha512>::new_from_slice(key).unwrap();
        m.update(data);
        m.finalize().into_bytes().to_vec()
    }

    pub struct Client {
        pub first_bare: String,
        password: String,
    }

    impl Client {
        pub fn new(user: &str, password: &str) -> Client {
            Client {
                first_bare: format!("n={user},r=clientnonce123"),
                password: password.into(),
            }
        }

        pub fn first(&self) -> String {
            format!("n,,{}", self.first_bare)
        }

        /// Returns (client-final, expected server-final).
        pub fn finish(&self, server_first: &str) -> (String, String) {
            let b64 = base64::engine::general_purpose::STANDARD;
            let mut nonce = "";
            let mut salt = Vec::new();
            let mut iterations = 0;
            for part in server_first.split(',') {
                match part.split_at(2) {
                    ("r=", v) => nonce = v,
                    ("s=", v) => salt = b64.decode(v).unwrap(),
                    ("i=", v) => iterations = v.parse().unwrap(),
                    _ => {}
                }
            }
            assert!(nonce.starts_with("clientnonce123"));
            let mut salted = [0u8; 64];
            pbkdf2::pbkdf2_hmac::<Sha512>(self.password.as_bytes(), &salt, iterations, &mut salted);
            let client_key = hmac(&salted, b"Client Key");
            let stored_key = Sha512::digest(&client_key);
            let without_proof = format!("c=biws,r={nonce}");
            let auth_message = format!("{},{server_first},{without_proof}", self.first_bare);
            let signature = hmac(&stored_key, auth_message.as_bytes());
            let proof: Vec<u8> = client_key
                .iter()
                .zip(&signature)
                .map(|(a, b)| a ^ b)
                .collect();
            let server_key = hmac(&salted, b"Server Key");
            let server_signature = hmac(&server_key, auth_message.as_bytes());
            (
                format!("{without_proof},p={}", b64.encode(proof)),
                format!("v={}", b64.encode(server_signature)),
            )
        }
    }
}

async fn scram_login(
    b: &TestBroker,
    user: &str,
    password: &str,
) -> (TestClient, ferrymq_codec::ConnAck, Option<String>) {
    use ferrymq_codec::{Auth, Properties, Property};
    let client = scram_client::Client::new(user, password);
    let mut c = TestClient::connect(b.addr, Protocol::V5).await;
    let mut conn = connect(Protocol::V5, "scram", true);
    conn.properties.push(Property::AuthenticationMethod(
        "SCRAM-SHA-512".try_into().unwrap(),
    ));
    conn.properties
        .push(Property::AuthenticationData(bytes::Bytes::from(
            client.first(),
        )));
    c.send(Packet::Connect(Box::new(conn))).await;
    let server_first = match c.recv().await {
        Packet::Auth(a) => {
            assert_eq!(a.reason, ReasonCode::ContinueAuthentication);
            String::from_utf8(a.properties.authentication_data().unwrap().to_vec()).unwrap()
        }
        other => panic!("expected AUTH, got {other:?}"),
    };
    let (client_final, expected_server_final) = client.finish(&server_first);
    let mut properties = Properties::new();
    properties.push(Property::AuthenticationMethod(
        "SCRAM-SHA-512".try_into().unwrap(),
    ));
    properties.push(Property::AuthenticationData(bytes::Bytes::from(
        client_final,
    )));
    c.send(Packet::Auth(Auth {
        reason: ReasonCode::ContinueAuthentication,
        properties,
    }))
    .await;
    match c.recv().await {
        Packet::ConnAck(ack) => (c, ack, Some(expected_server_final)),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_sha512_against_the_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let b = secured(dir.path()).await;
    let (mut c, ack, expected) = scram_login(&b, "alice", "wonderland").await;
    assert_eq!(ack.reason, ReasonCode::Success);
    let server_final = ack.properties.authentication_data().unwrap();
    assert_eq!(
        std::str::from_utf8(&server_final).unwrap(),
        expected.unwrap(),
        "server proves it knows the key"
    );
    // Authenticated as alice: her ACL applies.
    assert_eq!(
        c.subscribe(&[("home/alice/#", QoS::AtMostOnce)]).await,
        vec![ReasonCode::Success]
    );
    let (_, ack, _) = scram_login(&b, "alice", "not-her-password").await;
    assert_eq!(ack.reason, ReasonCode::BadUserNameOrPassword);
    let (_, ack, _) = scram_login(&b, "nobody", "x").await;
    assert_eq!(
        ack.reason,
        ReasonCode::BadUserNameOrPassword,
        "unknown users look the same"
    );
}

/// `per_listener_settings true`: each listener has its own anonymous
/// access, password file and ACL, and SIGHUP's reload reaches all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_listener_settings_give_each_listener_its_own_security() {
    let dir = tempfile::tempdir().unwrap();
    let (passwords, acl) = files(dir.path());
    let conf = format!(
        "per_listener_settings true\n\
         persistence false\n\
         # open to anyone, no ACL\n\
         listener 0 127.0.0.1\n\
         allow_anonymous true\n\
         # users only, with the ACL\n\
         listener 0 127.0.0.1\n\
         password_file {}\n\
         acl_file {}\n",
        passwords.display(),
        acl.display()
    );
    let config = ferrymq_broker::Config::parse(&conf, "m.conf").unwrap();
    let server = tokio::time::timeout(ferrymq_testkit::WAIT, ferrymq_broker::Server::start(config))
        .await
        .unwrap()
        .unwrap();
    let (open, closed) = (server.local_addrs()[0], server.local_addrs()[1]);
    let hello = |user: Option<&str>, pw: &str, id: &str| {
        let mut c = connect(Protocol::V5, id, true);
        c.username = user.map(|u| u.try_into().unwrap());
        c.password = user.map(|_| bytes::Bytes::copy_from_slice(pw.as_bytes()));
        c
    };

    // Anonymous: welcome on the first, refused on the second.
    let mut anon = TestClient::connect(open, Protocol::V5).await;
    assert_eq!(
        anon.handshake(hello(None, "", "anon")).await.reason,
        ReasonCode::Success
    );
    let mut refused = TestClient::connect(closed, Protocol::V5).await;
    assert_eq!(
        refused.handshake(hello(None, "", "anon2")).await.reason,
        ReasonCode::NotAuthorized
    );
    // A user of the second listener's file gets its ACL there: alice may
    // not write public/x; on the first listener nothing is checked.
    let mut alice = TestClient::connect(closed, Protocol::V5).await;
    assert_eq!(
        alice
            .handshake(hello(Some("alice"), "wonderland", "alice"))
            .await
            .reason,
        ReasonCode::Success
    );
    assert_eq!(
        alice.puback_reason("public/x", b"no").await,
        ReasonCode::NotAuthorized
    );
    // Accepted; nobody subscribes, which MQTT 5 says so.
    assert_eq!(
        anon.puback_reason("public/x", b"yes").await,
        ReasonCode::NoMatchingSubscribers
    );

    // A new password for alice, read at SIGHUP: the old one stops working.
    let hash = PasswordHash::create(b"looking-glass", Algorithm::default()).unwrap();
    std::fs::write(&passwords, format!("alice:{hash}\n")).unwrap();
    server.reload_security().unwrap();
    let mut old = TestClient::connect(closed, Protocol::V5).await;
    assert_eq!(
        old.handshake(hello(Some("alice"), "wonderland", "alice2"))
            .await
            .reason,
        ReasonCode::NotAuthorized
    );
    let mut new = TestClient::connect(closed, Protocol::V5).await;
    assert_eq!(
        new.handshake(hello(Some("alice"), "looking-glass", "alice3"))
            .await
            .reason,
        ReasonCode::Success
    );
    server.shutdown().await;
}

/// As Mosquitto 2.1: before any `listener` line they belong to the
/// default listener (made by `port`), and are dropped with it in
/// local-only mode.
#[test]
fn per_listener_security_options_before_a_listener_go_to_the_default_listener() {
    let text = "per_listener_settings true\nallow_anonymous true\npassword_file p\n\
                acl_file a\nport 1884\nlistener 1883\n";
    let c = ferrymq_broker::Config::parse(text, "m.conf").unwrap();
    assert_eq!(c.listeners[0].addr.port(), 1884);
    assert_eq!(c.listeners[0].security.allow_anonymous, Some(true));
    assert!(c.listeners[0].security.password_file.is_some());
    assert!(c.listeners[0].security.acl_file.is_some());
    let last = c.listeners.last().unwrap();
    assert_eq!(last.addr.port(), 1883);
    assert_eq!(last.security, Default::default());
    let c = ferrymq_broker::Config::parse(
        "per_listener_settings true\nallow_anonymous false\n",
        "m.conf",
    )
    .unwrap();
    assert!(c.listeners.is_empty());
    // Anywhere in the file, per_listener_settings decides where they go.
    let c = ferrymq_broker::Config::parse(
        "listener 1883\nallow_anonymous true\nper_listener_settings true\n",
        "m.conf",
    )
    .unwrap();
    assert_eq!(c.listeners[0].security.allow_anonymous, Some(true));
    assert_eq!(c.allow_anonymous, None);
}

/// With no `listener` line there is no listener section: the default
/// listener keeps Mosquitto 2's local-only default, anonymous allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_listener_settings_without_listeners_keeps_the_local_default() {
    let mut config =
        ferrymq_broker::Config::parse("per_listener_settings true\n", "m.conf").unwrap();
    assert!(config.listeners.is_empty());
    config.listeners = vec![ferrymq_broker::config::ListenerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
    )];
    config.persistence = false;
    let server = tokio::time::timeout(ferrymq_testkit::WAIT, ferrymq_broker::Server::start(config))
        .await
        .unwrap()
        .unwrap();
    let mut c = TestClient::connect(server.local_addrs()[0], Protocol::V5).await;
    assert_eq!(
        c.handshake(connect(Protocol::V5, "local", true))
            .await
            .reason,
        ReasonCode::Success
    );
    server.shutdown().await;
}
