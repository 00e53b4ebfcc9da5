//! The MQTT 5 CONNACK, byte for byte (issue 15): the properties Mosquitto
//! 2.1 sends for the same configuration and CONNECT, in its order, and
//! nothing the protocol already implies (test rigs that compare bytes
//! check the first packet of every connection). The interop suite compares
//! the same bytes with Debian's Mosquitto where 2.0 and 2.1 agree.

use ferrymq_broker::Config;
use ferrymq_testkit::{raw, test_config, TestBroker, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A CONNECT for MQTT 5 with a client id and keep-alive, no properties.
fn connect(client_id: &str, keep_alive: u16) -> Vec<u8> {
    raw::connect_v5(client_id, 0x02, keep_alive)
}

/// The CONNACK the broker sends for `connect`, as bytes.
async fn connack(config: Config, connect: &[u8]) -> Vec<u8> {
    let b = TestBroker::with_config(config).await;
    let mut s = tokio::net::TcpStream::connect(b.addr).await.unwrap();
    s.write_all(connect).await.unwrap();
    let mut head = [0u8; 2];
    tokio::time::timeout(WAIT, s.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    let mut body = vec![0u8; usize::from(head[1])];
    s.read_exact(&mut body).await.unwrap();
    [head.to_vec(), body].concat()
}

fn with(adjust: impl FnOnce(&mut Config)) -> Config {
    let mut c = test_config();
    adjust(&mut c);
    c
}

/// Topic Alias Maximum 10, Maximum Packet Size 2,000,000, Receive
/// Maximum 20: Mosquitto 2.1's defaults, in its order.
const DEFAULTS: [u8; 11] = [0x22, 0, 10, 0x27, 0, 0x1E, 0x84, 0x80, 0x21, 0, 20];

fn expected(properties: &[u8]) -> Vec<u8> {
    let mut out = vec![
        0x20,
        3 + properties.len() as u8,
        0,
        0,
        properties.len() as u8,
    ];
    out.extend_from_slice(properties);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_defaults() {
    let got = connack(test_config(), &connect("c1", 60)).await;
    assert_eq!(got, expected(&DEFAULTS));
    // A keep-alive of 0 is no reason for Server Keep Alive while
    // max_keepalive is 0 (Mosquitto 2.1's default).
    let got = connack(test_config(), &connect("c1", 0)).await;
    assert_eq!(got, expected(&DEFAULTS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_max_qos() {
    let got = connack(
        with(|c| c.listeners[0].max_qos = ferrymq_codec::QoS::AtLeastOnce),
        &connect("c1", 60),
    )
    .await;
    assert_eq!(got, expected(&[&DEFAULTS[..], &[0x24, 1]].concat()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_retain_available_false() {
    let got = connack(with(|c| c.retain_available = false), &connect("c1", 60)).await;
    let props = [&DEFAULTS[..3], &[0x25, 0], &DEFAULTS[3..]].concat();
    assert_eq!(got, expected(&props));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_assigned_client_identifier() {
    let got = connack(test_config(), &connect("", 60)).await;
    // auto-<UUID>: 41 bytes, between Topic Alias Maximum and the rest.
    let id_len = 5 + 36;
    assert_eq!(got.len(), 5 + DEFAULTS.len() + 3 + id_len);
    assert_eq!(got[..5], [0x20, got[1], 0, 0, got[4]]);
    assert_eq!(got[5..8], DEFAULTS[..3]);
    assert_eq!(got[8..11], [0x12, 0, id_len as u8]);
    assert!(got[11..16].eq(b"auto-"));
    assert_eq!(got[11 + id_len..], DEFAULTS[3..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_server_keep_alive() {
    let config = || with(|c| c.max_keepalive = 30);
    let props = [&[0x13, 0, 30][..], &DEFAULTS].concat();
    assert_eq!(
        connack(config(), &connect("c1", 60)).await,
        expected(&props)
    );
    assert_eq!(connack(config(), &connect("c1", 0)).await, expected(&props));
    assert_eq!(
        connack(config(), &connect("c1", 20)).await,
        expected(&DEFAULTS)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_maximum_packet_size() {
    let got = connack(with(|c| c.max_packet_size = 10_000), &connect("c1", 60)).await;
    let props = [&DEFAULTS[..3], &[0x27, 0, 0, 0x27, 0x10], &DEFAULTS[8..]].concat();
    assert_eq!(got, expected(&props));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_topic_alias_maximum_0_and_no_window() {
    let got = connack(
        with(|c| c.listeners[0].max_topic_alias = 0),
        &connect("c1", 60),
    )
    .await;
    assert_eq!(got, expected(&DEFAULTS[3..]));
    // max_inflight_messages 0 (no limit): no Receive Maximum.
    let got = connack(
        with(|c| c.max_inflight_messages = u16::MAX),
        &connect("c1", 60),
    )
    .await;
    assert_eq!(got, expected(&DEFAULTS[..8]));
}

/// A refusal states Maximum QoS when below 2, as Mosquitto does, then why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_says_maximum_qos_and_why() {
    let config = with(|c| {
        c.listeners[0].max_qos = ferrymq_codec::QoS::AtMostOnce;
        c.allow_anonymous = Some(false);
    });
    let got = connack(config, &connect("c1", 60)).await;
    assert_eq!(got[..3], [0x20, got[1], 0]);
    assert_eq!(got[3], 0x87, "not authorized");
    assert_eq!(got[5..7], [0x24, 0]);
    assert_eq!(got[7], 0x1F, "then a Reason String");
}
