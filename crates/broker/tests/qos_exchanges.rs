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

fn resume_v5(
    receive_maximum: Option<u16>,
    max_packet: Option<u32>,
) -> impl FnOnce(&mut ferrymq_codec::Connect) {
    move |c| {
        c.clean_start = false;
        c.properties.push(Property::SessionExpiryInterval(600));
        if let Some(rm) = receive_maximum {
            c.properties.push(Property::ReceiveMaximum(rm));
        }
        if let Some(mps) = max_packet {
            c.properties.push(Property::MaximumPacketSize(mps));
        }
    }
}

/// Issue 20, item 15: what was in flight is resent within the new
/// connection's Receive Maximum, in order and with the same packet ids;
/// the rest follows as acknowledgements open the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_resends_within_the_new_receive_maximum() {
    let b = TestBroker::start().await;
    let (mut s, _) = b
        .connect_with(Protocol::V5, "window", resume_v5(Some(10), None))
        .await;
    s.subscribe(&[("w", QoS::AtLeastOnce)]).await;
    let mut p = b.client("p", true).await;
    for i in 0..10u8 {
        p.publish("w", &[i], QoS::AtLeastOnce, false).await;
    }
    let mut first = Vec::new();
    for _ in 0..10 {
        match s.recv().await {
            Packet::Publish(m) => first.push((m.packet_id, m.payload[0])),
            other => panic!("{other:?}"),
        }
    }
    drop(s);
    ferrymq_testkit::wait_until("parked", || b.broker().registry.parked() == 1).await;
    let (mut s, ack) = b
        .connect_with(Protocol::V5, "window", resume_v5(Some(2), None))
        .await;
    assert!(ack.session_present);
    let mut again = Vec::new();
    let mut pending = Vec::new();
    for _ in 0..2 {
        match s.recv().await {
            Packet::Publish(m) => {
                assert!(m.dup);
                again.push((m.packet_id, m.payload[0]));
                pending.push(m);
            }
            other => panic!("{other:?}"),
        }
    }
    s.expect_nothing(Duration::from_millis(150)).await;
    // Each acknowledgement lets one more through.
    while again.len() < 10 {
        let m = pending.remove(0);
        s.ack(&m).await;
        match s.recv().await {
            Packet::Publish(m) => {
                assert!(m.dup);
                again.push((m.packet_id, m.payload[0]));
                pending.push(m);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(again, first, "same order, same packet ids");
}

/// An in-flight message larger than the new connection's Maximum Packet
/// Size is dropped for it ([MQTT-3.1.2-25]), not sent (the client would
/// close at every resend).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_drops_in_flight_messages_too_large_for_it() {
    let b = TestBroker::start().await;
    let (mut s, _) = b
        .connect_with(Protocol::V5, "small", resume_v5(None, None))
        .await;
    s.subscribe(&[("big", QoS::AtLeastOnce)]).await;
    let mut p = b.client("p", true).await;
    p.publish("big", &[7u8; 2000], QoS::AtLeastOnce, false)
        .await;
    p.publish("big", b"small", QoS::AtLeastOnce, false).await;
    for _ in 0..2 {
        assert!(matches!(s.recv().await, Packet::Publish(_)));
    }
    drop(s);
    ferrymq_testkit::wait_until("parked", || b.broker().registry.parked() == 1).await;
    let (mut s, ack) = b
        .connect_with(Protocol::V5, "small", resume_v5(None, Some(1000)))
        .await;
    assert!(ack.session_present);
    let m = s.recv_publish().await;
    assert_eq!((&m.payload[..], m.dup), (&b"small"[..], true));
    s.expect_nothing(Duration::from_millis(150)).await;
    assert_eq!(
        ferrymq_broker::metrics::Metrics::get(&b.broker().metrics.dropped_too_large),
        1
    );
}
