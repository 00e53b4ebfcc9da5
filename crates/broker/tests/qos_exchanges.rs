//! Edges of the QoS 1 and 2 exchanges, in raw packets where a client
//! library would smooth them over.

use std::time::Duration;

use ferrymq_codec::{Packet, Property, Protocol, QoS, ReasonCode};
use ferrymq_testkit::{publish, test_config, TestBroker};

/// Issue 20, item 1: a PUBREC with an error code ends the QoS 2 exchange
/// ([MQTT-4.3.3]), so its packet id is free at once. It used to stay in
/// the inbound set: the id's next use got 0x91 Packet Identifier in use,
/// and Receive Maximum such refusals ended the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_pubrec_frees_its_packet_id() {
    let mut config = test_config();
    config.max_queued_messages = 1;
    let b = TestBroker::with_config(config).await;
    let (mut s, _) = b
        .connect_with(Protocol::V5, "full", |c| {
            c.clean_start = false;
            c.properties.push(Property::SessionExpiryInterval(60));
        })
        .await;
    s.subscribe(&[("q", QoS::ExactlyOnce)]).await;
    s.disconnect().await;
    let mut p = b.client_v5("pub", true).await;
    p.publish("q", b"fills the queue", QoS::AtLeastOnce, false)
        .await;
    // Twice Receive Maximum (20) refusals, each id used twice.
    for round in 0..2 {
        for id in 1..=40 {
            p.send(Packet::Publish(publish(
                "q",
                b"x",
                QoS::ExactlyOnce,
                false,
                id,
            )))
            .await;
            match p.recv().await {
                Packet::PubRec(r) => {
                    assert_eq!(r.reason, ReasonCode::QuotaExceeded, "round {round} id {id}")
                }
                other => panic!("round {round} id {id}: {other:?}"),
            }
        }
    }
    p.sync().await;
    // The connection is whole: an accepted exchange completes.
    let mut s = b
        .connect_with(Protocol::V5, "full", |c| {
            c.clean_start = false;
            c.properties.push(Property::SessionExpiryInterval(60));
        })
        .await
        .0;
    assert_eq!(&s.recv_publish().await.payload[..], b"fills the queue");
    p.publish("q", b"after", QoS::ExactlyOnce, false).await;
    assert_eq!(&s.recv_publish().await.payload[..], b"after");
    s.expect_nothing(Duration::from_millis(100)).await;
}
