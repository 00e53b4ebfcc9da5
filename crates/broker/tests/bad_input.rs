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

/// Issue 15: the protocol violations a client library would hide, each
/// in raw bytes: MQTT 5 answers with DISCONNECT and its reason, 3.1.1 is
/// closed; the reason code can be read, since the broker reads and
/// discards what the client still sends before it closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_close_with_the_reason_code() {
    let b = TestBroker::start().await;
    // A QoS 1 and a QoS 2 message in flight to the client first, for the
    // acknowledgement cases: `ack(type, qos)` acknowledges the one at `qos`
    // with a packet of `type`.
    type Bytes = Box<dyn Fn(u16, u16) -> Vec<u8>>;
    let fixed = |bytes: Vec<u8>| -> Bytes { Box::new(move |_, _| bytes.clone()) };
    let ack = |first: u8, qos: u8| -> Bytes {
        Box::new(move |q1, q2| {
            let id = if qos == 1 { q1 } else { q2 };
            raw::packet(first, &id.to_be_bytes())
        })
    };
    let cases: Vec<(&str, Bytes, ReasonCode)> = vec![
        (
            "subscription-identifier-in-publish",
            // PUBLISH QoS 0 "t", properties: Subscription Identifier 1.
            fixed(raw::packet(0x30, &[0, 1, b't', 2, 0x0B, 1, b'x'])),
            ReasonCode::ProtocolError,
        ),
        ("pubrec-for-qos1", ack(0x50, 1), ReasonCode::ProtocolError),
        ("pubcomp-for-qos1", ack(0x70, 1), ReasonCode::ProtocolError),
        ("puback-for-qos2", ack(0x40, 2), ReasonCode::ProtocolError),
        (
            "pubcomp-before-pubrec",
            ack(0x70, 2),
            ReasonCode::ProtocolError,
        ),
        (
            "control-char-in-topic",
            fixed(raw::packet(0x30, &[0, 3, b'a', 1, b'b', 0])),
            ReasonCode::MalformedPacket,
        ),
        (
            "c1-control-in-topic",
            fixed(raw::packet(0x30, &[0, 3, b'a', 0xC2, 0x85, 0])),
            ReasonCode::MalformedPacket,
        ),
        (
            "control-char-in-filter",
            fixed(raw::packet(0x82, &[0, 1, 0, 0, 3, b'a', 0x1F, b'#', 0])),
            ReasonCode::MalformedPacket,
        ),
        (
            "reserved-type-0",
            fixed(vec![0x00]),
            ReasonCode::MalformedPacket,
        ),
    ];
    for (name, bytes, reason) in cases {
        let mut s = TestClient::connect(b.addr, Protocol::V5).await;
        s.send_raw(&raw::connect_v5(&format!("v-{name}"), 0x02, 60))
            .await;
        assert!(matches!(s.recv().await, Packet::ConnAck(_)));
        s.subscribe(&[("own/#", QoS::ExactlyOnce)]).await;
        let mut p = b.client(&format!("p-{name}"), true).await;
        p.publish("own/1", b"q1", QoS::AtLeastOnce, false).await;
        p.publish("own/2", b"q2", QoS::ExactlyOnce, false).await;
        let mut ids = [0u16; 3];
        for _ in 0..2 {
            match s.recv().await {
                Packet::Publish(m) => ids[m.qos as usize] = m.packet_id.unwrap().get(),
                other => panic!("{name}: {other:?}"),
            }
        }
        s.send_raw(&bytes(ids[1], ids[2])).await;
        // The client keeps writing after its violation: the DISCONNECT
        // is still read.
        for _ in 0..200 {
            let _ = tokio::io::AsyncWriteExt::write_all(&mut s.stream, &[0xC0, 0x00]).await;
        }
        match s.expect_closed().await.as_slice() {
            [Packet::Disconnect(d)] => assert_eq!(d.reason, reason, "{name}"),
            other => panic!("{name}: expected DISCONNECT, got {other:?}"),
        }
    }
    // 3.1.1: AUTH is refused from its first byte, the rest never awaited.
    let mut c = TestClient::connect(b.addr, Protocol::V3_1_1).await;
    c.send_raw(&raw::connect_v311("auth-byte", 0x02, 60)).await;
    assert!(matches!(c.recv().await, Packet::ConnAck(_)));
    c.send_raw(&[0xF0]).await;
    assert!(c.expect_closed().await.is_empty());
}

/// A malformed CONNECT is never answered in a format the client does not
/// speak: a 3.1.1 (or garbage) CONNECT gets a 3.1.1 CONNACK or none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_connects_are_answered_in_their_own_version_or_not_at_all() {
    let b = TestBroker::start().await;
    let header = |level: u8, flags: u8| {
        let mut body = raw::string(b"MQTT");
        body.extend([level, flags, 0, 60]);
        body
    };
    let mut cases: Vec<Vec<u8>> = Vec::new();
    for flags in [0x01, 0x03, 0x1E, 0x42, 0x18] {
        let mut body = header(4, flags);
        body.extend(raw::string(b"c"));
        cases.push(raw::packet(0x10, &body));
    }
    // A name that is not MQTT, with a 5 where the level would be.
    cases.push(raw::packet(0x10, &[0, 0, 5, 0x02, 0, 60, 0, 1, b'c']));
    cases.push(raw::packet(
        0x10,
        &[0, 3, b'M', b'Q', b'T', 5, 2, 0, 60, 0, 1, b'c'],
    ));
    for bytes in cases {
        let mut c = TestClient::connect(b.addr, Protocol::V3_1_1).await;
        c.send_raw(&bytes).await;
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(
            WAIT,
            tokio::io::AsyncReadExt::read_to_end(&mut c.stream, &mut reply),
        )
        .await
        .expect("closed in time");
        assert!(
            reply.is_empty() || (reply.len() == 4 && reply[..3] == [0x20, 0x02, 0x00]),
            "{bytes:02x?} answered with {reply:02x?}"
        );
    }
}
