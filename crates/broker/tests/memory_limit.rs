//! `memory_limit` with the counting allocator the `ferrymq` binary uses:
//! while the heap is at the limit, new clients are refused (MQTT 5: 0x89
//! Server busy; 3.x: closed) and a PUBLISH disconnects its publisher
//! without an acknowledgement (MQTT 5: DISCONNECT 0x97), so nothing is
//! acknowledged that was not kept. Below it again, all is as before.
//!
//! One test in this file: the heap is the whole test process's.

use ferrymq_codec::{Packet, Protocol, QoS, ReasonCode};
use ferrymq_testkit::{connect, publish, test_config, TestBroker, TestClient};

#[global_allocator]
static HEAP: ferrymq_broker::heap::Counting = ferrymq_broker::heap::Counting;

const HEADROOM: usize = 32 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_memory_limit_clients_and_publications_are_refused() {
    let mut config = test_config();
    config.memory_limit = Some(ferrymq_broker::heap::current() + HEADROOM);
    let b = TestBroker::with_config(config).await;
    let mut publisher = b.client_v5("publisher", true).await;
    let mut subscriber = b.client("subscriber", true).await;
    subscriber.subscribe(&[("t", QoS::AtLeastOnce)]).await;
    publisher
        .publish("t", b"below", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(&subscriber.recv_publish().await.payload[..], b"below");

    // Something else in the process takes the headroom.
    let ballast = vec![1u8; 2 * HEADROOM];
    assert!(ferrymq_broker::heap::current() >= 2 * HEADROOM);

    let (_, ack) = b.connect_with(Protocol::V5, "late-v5", |_| {}).await;
    assert_eq!(ack.reason, ReasonCode::ServerBusy);
    let mut v3 = TestClient::connect(b.addr, Protocol::V3_1_1).await;
    v3.send(Packet::Connect(Box::new(connect(
        Protocol::V3_1_1,
        "late-v3",
        true,
    ))))
    .await;
    assert!(
        v3.expect_closed().await.is_empty(),
        "3.x: closed, no CONNACK"
    );

    publisher
        .send(Packet::Publish(publish(
            "t",
            b"above",
            QoS::AtLeastOnce,
            false,
            7,
        )))
        .await;
    let end = publisher.expect_closed().await;
    match end.as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.reason, ReasonCode::QuotaExceeded),
        other => panic!("expected DISCONNECT 0x97 and no PUBACK, got {other:?}"),
    }
    assert_eq!(ballast.len(), 2 * HEADROOM);
    drop(ballast);

    // Below the limit again: the publisher comes back and sends it anew.
    let mut publisher = b.client_v5("publisher", true).await;
    publisher
        .publish("t", b"again", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(&subscriber.recv_publish().await.payload[..], b"again");
}
