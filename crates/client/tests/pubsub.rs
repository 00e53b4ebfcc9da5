//! ferrymq-client against the in-process broker over TCP: QoS 0/1/2 both
//! ways in MQTT 3.1.1 and 5.0, properties, retained messages, persistent
//! sessions, refusals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use ferrymq_client::{
    connect, ConnectOptions, Error, Outgoing, Properties, Property, Protocol, QoS, ReasonCode,
};
use ferrymq_testkit::TestBroker;

const WAIT: Duration = Duration::from_secs(5);

fn options(broker: &TestBroker, protocol: Protocol, id: &str) -> ConnectOptions {
    ConnectOptions::new("127.0.0.1", broker.addr.port())
        .protocol(protocol)
        .client_id(id)
}

#[tokio::test]
async fn every_qos_round_trips_in_both_versions() {
    let broker = TestBroker::start().await;
    for protocol in [Protocol::V3_1_1, Protocol::V5] {
        let (sub, mut incoming) = connect(options(&broker, protocol, "sub")).await.unwrap();
        assert_eq!(
            sub.subscribe("t/#", QoS::ExactlyOnce).await.unwrap(),
            ReasonCode::GrantedQoS2
        );
        let (publisher, _) = connect(options(&broker, protocol, "pub")).await.unwrap();
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let payload = format!("{protocol} {qos:?}");
            let ack = publisher
                .publish("t/x", payload.clone(), qos, false)
                .await
                .unwrap();
            assert!(!ack.reason.is_error());
            let m = incoming.next_message_within(WAIT).await.unwrap().unwrap();
            assert_eq!(&*m.topic, "t/x");
            assert_eq!(m.payload, Bytes::from(payload));
            assert_eq!(m.qos, qos);
        }
        publisher.disconnect().await.unwrap();
        sub.disconnect().await.unwrap();
        assert!(
            incoming.recv().await.is_none(),
            "incoming ends after disconnect"
        );
    }
}

#[tokio::test]
async fn many_qos1_and_qos2_messages_through_a_small_window() {
    let broker = TestBroker::start().await;
    let (sub, mut incoming) = connect(options(&broker, Protocol::V5, "sub"))
        .await
        .unwrap();
    sub.subscribe("w", QoS::ExactlyOnce).await.unwrap();
    let (publisher, _) = connect(options(&broker, Protocol::V5, "pub").max_inflight(3))
        .await
        .unwrap();
    let mut tokens = Vec::new();
    for i in 0..200u32 {
        let qos = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        tokens.push(
            publisher
                .start_publish(Outgoing::new("w", i.to_string(), qos))
                .await
                .unwrap(),
        );
    }
    for token in tokens {
        tokio::time::timeout(WAIT, token.wait())
            .await
            .unwrap()
            .unwrap();
    }
    for i in 0..200u32 {
        let m = incoming.next_message_within(WAIT).await.unwrap().unwrap();
        assert_eq!(m.payload, Bytes::from(i.to_string()), "in order");
    }
}

#[tokio::test]
async fn v5_properties_reach_the_subscriber() {
    let broker = TestBroker::start().await;
    let (sub, mut incoming) = connect(options(&broker, Protocol::V5, "sub"))
        .await
        .unwrap();
    sub.subscribe("req", QoS::AtLeastOnce).await.unwrap();
    let (publisher, _) = connect(options(&broker, Protocol::V5, "pub"))
        .await
        .unwrap();
    let properties = Properties::from(vec![
        Property::ResponseTopic("resp/1".try_into().unwrap()),
        Property::CorrelationData(Bytes::from_static(b"\x01\x02")),
        Property::ContentType("text/plain".try_into().unwrap()),
        Property::UserProperty("k".try_into().unwrap(), "v".try_into().unwrap()),
    ]);
    publisher
        .publish_message(Outgoing::new("req", "hi", QoS::AtLeastOnce).properties(properties))
        .await
        .unwrap();
    let m = incoming.next_message_within(WAIT).await.unwrap().unwrap();
    assert_eq!(m.properties.response_topic().unwrap().as_str(), "resp/1");
    assert_eq!(
        m.properties.correlation_data().unwrap(),
        Bytes::from_static(b"\x01\x02")
    );
    assert_eq!(m.properties.content_type().unwrap().as_str(), "text/plain");
    assert_eq!(m.properties.user_properties().count(), 1);
}

#[tokio::test]
async fn retained_message_arrives_flagged() {
    let broker = TestBroker::start().await;
    let (publisher, _) = connect(options(&broker, Protocol::V3_1_1, "pub"))
        .await
        .unwrap();
    publisher
        .publish("r/1", "kept", QoS::AtLeastOnce, true)
        .await
        .unwrap();
    let (sub, mut incoming) = connect(options(&broker, Protocol::V3_1_1, "sub"))
        .await
        .unwrap();
    sub.subscribe("r/#", QoS::AtLeastOnce).await.unwrap();
    let m = incoming.next_message_within(WAIT).await.unwrap().unwrap();
    assert!(m.retain);
    assert_eq!(m.payload, Bytes::from_static(b"kept"));
}

#[tokio::test]
async fn persistent_session_keeps_messages_while_away() {
    let broker = TestBroker::start().await;
    let opts = options(&broker, Protocol::V3_1_1, "keeper").clean_start(false);
    let (sub, _incoming) = connect(opts.clone()).await.unwrap();
    assert!(!sub.connack().session_present);
    sub.subscribe("p", QoS::AtLeastOnce).await.unwrap();
    sub.disconnect().await.unwrap();

    let (publisher, _) = connect(options(&broker, Protocol::V3_1_1, "pub"))
        .await
        .unwrap();
    publisher
        .publish("p", "while away", QoS::AtLeastOnce, false)
        .await
        .unwrap();

    let (sub, mut incoming) = connect(opts).await.unwrap();
    assert!(sub.connack().session_present);
    let m = incoming.next_message_within(WAIT).await.unwrap().unwrap();
    assert_eq!(m.payload, Bytes::from_static(b"while away"));
}

#[tokio::test]
async fn server_assigns_a_client_id_in_v5() {
    let broker = TestBroker::start().await;
    let (client, _) = connect(options(&broker, Protocol::V5, "")).await.unwrap();
    assert!(!client.connack().client_id.is_empty());
}

#[tokio::test]
async fn refusal_carries_the_reason_code() {
    let broker = TestBroker::start().await;
    // MQTT 3.1.1: an empty client id needs a clean session ([MQTT-3.1.3-8]).
    let err = connect(options(&broker, Protocol::V3_1_1, "").clean_start(false))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Refused {
                reason: ReasonCode::ClientIdentifierNotValid,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("Client Identifier not valid"),
        "{err}"
    );
}

#[tokio::test]
async fn nothing_listening_is_an_io_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let err = connect(ConnectOptions::new("127.0.0.1", port))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
}

#[tokio::test]
async fn invalid_topics_are_refused_locally() {
    let broker = TestBroker::start().await;
    let (client, _) = connect(options(&broker, Protocol::V5, "c")).await.unwrap();
    assert!(matches!(
        client.publish("a/+", "x", QoS::AtMostOnce, false).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        client.subscribe("a/#/b", QoS::AtMostOnce).await,
        Err(Error::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let broker = TestBroker::start().await;
    let (sub, mut incoming) = connect(options(&broker, Protocol::V5, "sub"))
        .await
        .unwrap();
    sub.subscribe("u/1", QoS::AtLeastOnce).await.unwrap();
    sub.subscribe("u/2", QoS::AtLeastOnce).await.unwrap();
    let codes = sub.unsubscribe(&["u/1"]).await.unwrap();
    assert_eq!(codes, vec![ReasonCode::Success]);
    let (publisher, _) = connect(options(&broker, Protocol::V5, "pub"))
        .await
        .unwrap();
    publisher
        .publish("u/1", "no", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    publisher
        .publish("u/2", "yes", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    let m = incoming.next_message_within(WAIT).await.unwrap().unwrap();
    assert_eq!(&*m.topic, "u/2");
}
