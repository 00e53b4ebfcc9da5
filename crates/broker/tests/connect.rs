//! Section 3.1 / 3.2: CONNECT and CONNACK, over real TCP.

use std::time::Duration;

use ferrymq_codec::{Packet, Protocol, QoS, ReasonCode};
use ferrymq_testkit::{connect, raw, TestBroker, TestClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_accepts_v311_and_v31_and_v5() {
    let b = TestBroker::start().await;
    for (protocol, id) in [
        (Protocol::V3_1_1, "a"),
        (Protocol::V3_1, "b"),
        (Protocol::V5, "c"),
    ] {
        let mut c = TestClient::connect(b.addr, protocol).await;
        let ack = c.handshake(connect(protocol, id, true)).await;
        assert_eq!(ack.reason, ReasonCode::Success, "{protocol}");
        assert!(!ack.session_present);
        c.sync().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_level_gets_connack_0x01() {
    let b = TestBroker::start().await;
    let mut c = TestClient::connect(b.addr, Protocol::V3_1_1).await;
    let mut body = raw::string(b"MQTT");
    body.extend_from_slice(&[6, 0x02, 0, 60]);
    body.extend_from_slice(&raw::string(b"x"));
    c.send_raw(&raw::packet(0x10, &body)).await;
    // [MQTT-3.1.2-2]: CONNACK with return code 0x01, then close.
    let seen = c.expect_closed().await;
    match seen.as_slice() {
        [Packet::ConnAck(ack)] => assert_eq!(ack.reason, ReasonCode::UnsupportedProtocolVersion),
        other => panic!("expected one CONNACK, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_client_id_rules() {
    let b = TestBroker::start().await;
    // 3.1.1, clean session: an identifier is assigned.
    let mut c = TestClient::connect(b.addr, Protocol::V3_1_1).await;
    assert_eq!(
        c.handshake(connect(Protocol::V3_1_1, "", true))
            .await
            .reason,
        ReasonCode::Success
    );
    // 3.1.1, persistent session: 0x02.
    let mut c = TestClient::connect(b.addr, Protocol::V3_1_1).await;
    let ack = c.handshake(connect(Protocol::V3_1_1, "", false)).await;
    assert_eq!(ack.reason, ReasonCode::ClientIdentifierNotValid);
    assert!(c.expect_closed().await.is_empty());
    // 3.1: identifiers are mandatory.
    let mut c = TestClient::connect(b.addr, Protocol::V3_1).await;
    let ack = c.handshake(connect(Protocol::V3_1, "", true)).await;
    assert_eq!(ack.reason, ReasonCode::ClientIdentifierNotValid);
    // 5.0: assigned and announced.
    let mut c = TestClient::connect(b.addr, Protocol::V5).await;
    let ack = c.handshake(connect(Protocol::V5, "", false)).await;
    assert_eq!(ack.reason, ReasonCode::Success);
    let id = ack
        .properties
        .assigned_client_identifier()
        .expect("assigned id");
    assert!(id.starts_with("auto-"), "{id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ids_the_store_cannot_key_are_refused() {
    let b = TestBroker::start().await;
    let long = "x".repeat(65_001);
    let mut c = TestClient::connect(b.addr, Protocol::V5).await;
    let ack = c.handshake(connect(Protocol::V5, &long, true)).await;
    assert_eq!(ack.reason, ReasonCode::ClientIdentifierNotValid);
    let mut c = TestClient::connect(b.addr, Protocol::V3_1_1).await;
    let ack = c.handshake(connect(Protocol::V3_1_1, &long, false)).await;
    assert_eq!(ack.reason, ReasonCode::ClientIdentifierNotValid);
    let mut c = TestClient::connect(b.addr, Protocol::V3_1_1).await;
    let ack = c
        .handshake(connect(Protocol::V3_1_1, &long[1..], false))
        .await;
    assert_eq!(ack.reason, ReasonCode::Success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_packet_must_be_connect() {
    let b = TestBroker::start().await;
    let mut c = TestClient::connect(b.addr, Protocol::V3_1_1).await;
    c.send_raw(&[0xC0, 0x00]).await; // PINGREQ
    assert!(c.expect_closed().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_connect_closes_the_connection() {
    let b = TestBroker::start().await;
    let mut c = b.client("twice", true).await;
    c.send_raw(&raw::connect_v311("twice", 0x02, 60)).await;
    assert!(c.expect_closed().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_deadline_closes_silent_sockets() {
    let mut config = ferrymq_testkit::test_config();
    config.connect_timeout = Duration::from_millis(300);
    let b = TestBroker::with_config(config).await;
    let mut c = TestClient::connect(b.addr, Protocol::V3_1_1).await;
    // Half a CONNECT, then silence.
    c.send_raw(&[0x10, 0x20, 0x00]).await;
    assert!(c.expect_closed().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_closes_the_first_and_inherits_the_session() {
    let b = TestBroker::start().await;
    let mut first = b.client("dup", false).await;
    assert_eq!(
        first.subscribe(&[("t/#", QoS::AtLeastOnce)]).await,
        vec![ReasonCode::GrantedQoS1]
    );
    let mut second = TestClient::connect(b.addr, Protocol::V3_1_1).await;
    let ack = second
        .handshake(connect(Protocol::V3_1_1, "dup", false))
        .await;
    assert_eq!(ack.reason, ReasonCode::Success);
    assert!(ack.session_present, "the session was inherited");
    assert!(first.expect_closed().await.is_empty());
    // The inherited subscription works on the new connection.
    let mut p = b.client("pub", true).await;
    p.publish("t/x", b"hi", QoS::AtLeastOnce, false).await;
    let got = second.recv_publish().await;
    assert_eq!(&got.payload[..], b"hi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_takeover_sends_disconnect_0x8e() {
    let b = TestBroker::start().await;
    let mut first = b.client_v5("dup5", true).await;
    let _second = b.client_v5("dup5", true).await;
    match first.expect_closed().await.as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.reason, ReasonCode::SessionTakenOver),
        other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_timeout_after_one_and_a_half_periods() {
    let b = TestBroker::start().await;
    let mut c = TestClient::connect(b.addr, Protocol::V3_1_1).await;
    let mut conn = connect(Protocol::V3_1_1, "sleepy", true);
    conn.keep_alive = 1;
    c.handshake(conn).await;
    let started = std::time::Instant::now();
    c.sync().await;
    assert!(c.expect_closed().await.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "closed too early"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pingreq_gets_pingresp() {
    let b = TestBroker::start().await;
    let mut c = b.client("ping", true).await;
    c.send_raw(&[0xC0, 0x00]).await;
    assert_eq!(c.recv().await, Packet::PingResp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_holds_and_frees_up() {
    let mut config = ferrymq_testkit::test_config();
    config.max_connections = 3;
    let b = TestBroker::with_config(config).await;
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(b.client(&format!("held-{i}"), true).await);
    }
    // The fourth is not served while three connections exist...
    let mut fourth = TestClient::connect(b.addr, Protocol::V3_1_1).await;
    fourth
        .send(Packet::Connect(Box::new(connect(
            Protocol::V3_1_1,
            "fourth",
            true,
        ))))
        .await;
    fourth.expect_nothing(Duration::from_millis(300)).await;
    // ...and is as soon as one of them goes.
    held.pop().unwrap().disconnect().await;
    match fourth.recv().await {
        Packet::ConnAck(ack) => assert_eq!(ack.reason, ReasonCode::Success),
        other => panic!("{other:?}"),
    }
}
