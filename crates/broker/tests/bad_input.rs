//! Bad input from the network: raw bytes, never our encoder. Each case
//! closes the offending connection (MQTT 5: with the reason code) and
//! leaves every other client untouched.

use ferrymq_codec::{Packet, Protocol, QoS, ReasonCode};
use ferrymq_testkit::{raw, TestBroker, TestClient, WAIT};

/// Connects a 3.1.1 client, sends `bytes`, and checks that the broker
/// closes it while a bystander keeps working.
async fn rejected_v311(b: &TestBroker, name: &str, bytes: &[u8]) {
    let mut bystander = b.client(&format!("bystander-{name}"), true).await;
    bystander.subscribe(&[("alive", QoS::AtLeastOnce)]).await;

    let mut c = TestClient::connect(b.addr, Protocol::V3_1_1).await;
    c.send_raw(&raw::connect_v311(name, 0x02, 60)).await;
    assert!(matches!(c.recv().await, Packet::ConnAck(_)));
    c.send_raw(bytes).await;
    let seen = c.expect_closed().await;
    assert!(seen.is_empty(), "{name}: {seen:?}");

    let mut p = b.client(&format!("prober-{name}"), true).await;
    p.publish("alive", b"yes", QoS::AtLeastOnce, false).await;
    assert_eq!(
        &bystander.recv_publish().await.payload[..],
        b"yes",
        "{name}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_close_only_their_connection() {
    let b = TestBroker::start().await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("reserved-type-0", vec![0x00, 0x00]),
        ("auth-in-v311", vec![0xF0, 0x00]),
        ("pubrel-bad-flags", vec![0x60, 0x02, 0x00, 0x01]),
        (
            "subscribe-bad-flags",
            raw::packet(0x80, &[0, 1, 0, 1, b'a', 0]),
        ),
        ("qos-3", raw::publish_v311(0x06, b"t", Some(1), b"x")),
        ("varint-5-bytes", vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
        (
            "wildcard-in-topic",
            raw::publish_v311(0x00, b"a/+", None, b"x"),
        ),
        ("hash-in-topic", raw::publish_v311(0x00, b"a/#", None, b"x")),
        ("nul-in-topic", raw::publish_v311(0x00, b"a\0b", None, b"x")),
        (
            "bad-utf8-topic",
            raw::publish_v311(0x00, b"\xC0\xAF", None, b"x"),
        ),
        ("empty-topic", raw::publish_v311(0x00, b"", None, b"x")),
        ("packet-id-0", raw::publish_v311(0x02, b"t", Some(0), b"x")),
        (
            "subscribe-reserved-bits",
            raw::subscribe_v311(1, b"a", 0x04),
        ),
        (
            "subscribe-bad-filter",
            raw::subscribe_v311(1, b"a/#/b", 0x00),
        ),
        ("subscribe-no-filter", raw::packet(0x82, &[0, 1])),
        ("unsubscribe-no-filter", raw::packet(0xA2, &[0, 1])),
        ("pingreq-with-body", vec![0xC0, 0x01, 0x00]),
        ("second-connect", raw::connect_v311("again", 0x02, 60)),
        ("connack-from-client", vec![0x20, 0x02, 0x00, 0x00]),
        ("truncated-string", raw::packet(0x30, &[0x00, 0x09, b'a'])),
    ];
    for (name, bytes) in cases {
        rejected_v311(&b, name, &bytes).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_packet_is_refused_from_its_header() {
    let mut config = ferrymq_testkit::test_config();
    config.max_packet_size = 1024;
    let b = TestBroker::with_config(config).await;
    let mut c = b.client("big", true).await;
    // Announce 1 MiB and send only the header: the broker must not wait
    // for (or allocate) the body.
    c.send_raw(&[0x30, 0x80, 0x80, 0x40]).await;
    assert!(c.expect_closed().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_violations_get_a_disconnect_with_the_reason() {
    let b = TestBroker::start().await;
    let cases: Vec<(&str, Vec<u8>, ReasonCode)> = vec![
        (
            "v5-qos3",
            raw::packet(0x36, &[0, 1, b't', 0, 1, 0]),
            ReasonCode::MalformedPacket,
        ),
        (
            "v5-topic-wildcard",
            raw::packet(0x30, &[0, 1, b'+', 0]),
            ReasonCode::TopicNameInvalid,
        ),
        (
            "v5-dup-property",
            // PUBLISH QoS 0 "t", properties: Message Expiry twice.
            raw::packet(0x30, &[0, 1, b't', 10, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 1]),
            ReasonCode::ProtocolError,
        ),
        (
            "v5-alias-zero",
            raw::packet(0x30, &[0, 1, b't', 3, 0x23, 0, 0]),
            ReasonCode::TopicAliasInvalid,
        ),
    ];
    for (name, bytes, reason) in cases {
        let mut c = TestClient::connect(b.addr, Protocol::V5).await;
        c.send_raw(&raw::connect_v5(name, 0x02, 60)).await;
        assert!(matches!(c.recv().await, Packet::ConnAck(_)));
        c.send_raw(&bytes).await;
        match c.expect_closed().await.as_slice() {
            [Packet::Disconnect(d)] => assert_eq!(d.reason, reason, "{name}"),
            other => panic!("{name}: expected DISCONNECT, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_before_connect_is_closed_without_harm() {
    let b = TestBroker::start().await;
    for bytes in [
        vec![0xFF; 64],
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        raw::packet(0x10, &raw::string(b"HTTP")),
    ] {
        let mut c = TestClient::connect(b.addr, Protocol::V3_1_1).await;
        c.send_raw(&bytes).await;
        let _ = tokio::time::timeout(WAIT, c.expect_closed())
            .await
            .expect("closed");
    }
    b.client("still-fine", true).await.sync().await;
}
