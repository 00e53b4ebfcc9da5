//! MQTT 5: CONNACK properties, flow control, topic aliases, subscription
//! options and identifiers, shared subscriptions, request/response, AUTH.

use std::time::Duration;

use ferrymq_codec::{
    Packet, Properties, Property, Protocol, QoS, ReasonCode, RetainHandling, Subscribe,
    SubscriptionOptions, TopicFilter,
};
use ferrymq_testkit::{pid, publish, raw, TestBroker, TestClient};

const QUIET: Duration = Duration::from_millis(200);

fn subscribe(filters: &[(&str, SubscriptionOptions)], id: Option<u32>) -> Subscribe {
    let mut properties = Properties::new();
    if let Some(id) = id {
        properties.push(Property::SubscriptionIdentifier(id));
    }
    Subscribe {
        packet_id: pid(1),
        properties,
        filters: filters
            .iter()
            .map(|(f, o)| (TopicFilter::new(*f).unwrap(), *o))
            .collect(),
    }
}

/// The CONNACK states what differs from the protocol's defaults, as
/// Mosquitto does (the bytes are checked in `connack.rs`), and answers a
/// request for response information.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_announces_what_the_broker_supports() {
    let b = TestBroker::start().await;
    let (_c, ack) = b
        .connect_with(Protocol::V5, "props", |c| {
            c.properties.push(Property::RequestResponseInformation(1));
        })
        .await;
    let p = &ack.properties;
    assert_eq!(p.receive_maximum(), Some(20));
    assert_eq!(p.topic_alias_maximum(), Some(10));
    assert_eq!(p.maximum_packet_size(), Some(2_000_000));
    assert_eq!(p.retain_available(), None, "absent means available");
    assert_eq!(p.maximum_qos(), None, "absent means QoS 2");
    assert!(
        !p.iter().any(|p| matches!(
            p,
            Property::WildcardSubscriptionAvailable(_)
                | Property::SubscriptionIdentifierAvailable(_)
                | Property::SharedSubscriptionAvailable(_)
        )),
        "availability at its default is not stated: {p:?}"
    );
    assert_eq!(p.response_information().unwrap().as_str(), "response/props");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_receive_maximum_bounds_messages_in_flight() {
    let b = TestBroker::start().await;
    let (mut s, _) = b
        .connect_with(Protocol::V5, "rm", |c| {
            c.properties.push(Property::ReceiveMaximum(2))
        })
        .await;
    s.subscribe(&[("rm", QoS::AtLeastOnce)]).await;
    let mut p = b.client_v5("p", true).await;
    for i in 0..4u8 {
        p.publish("rm", &[i], QoS::AtLeastOnce, false).await;
    }
    let first = s.recv().await;
    let second = s.recv().await;
    s.expect_nothing(QUIET).await;
    for m in [first, second] {
        let Packet::Publish(m) = m else { panic!() };
        s.ack(&m).await;
    }
    assert_eq!(s.recv_publish().await.payload[0], 2);
    assert_eq!(s.recv_publish().await.payload[0], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_for_one_client_is_dropped_for_that_client_only() {
    let b = TestBroker::start().await;
    let (mut small, _) = b
        .connect_with(Protocol::V5, "small", |c| {
            c.properties.push(Property::MaximumPacketSize(64))
        })
        .await;
    small.subscribe(&[("big", QoS::AtMostOnce)]).await;
    let mut large = b.client_v5("large", true).await;
    large.subscribe(&[("big", QoS::AtMostOnce)]).await;
    let mut p = b.client_v5("p", true).await;
    p.publish("big", &[0u8; 200], QoS::AtMostOnce, false).await;
    p.publish("big", b"fits", QoS::AtMostOnce, false).await;
    assert_eq!(large.recv_publish().await.payload.len(), 200);
    assert_eq!(&small.recv_publish().await.payload[..], b"fits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_topic_aliases() {
    let b = TestBroker::start().await;
    let mut s = b.client_v5("s", true).await;
    s.subscribe(&[("alias/#", QoS::AtMostOnce)]).await;
    let mut p = b.client_v5("p", true).await;
    let mut first = publish("alias/x", b"1", QoS::AtMostOnce, false, 0);
    first.properties.push(Property::TopicAlias(3));
    p.send(Packet::Publish(first)).await;
    let mut second = publish("alias/x", b"2", QoS::AtMostOnce, false, 0);
    second.topic = Default::default();
    second.properties.push(Property::TopicAlias(3));
    p.send(Packet::Publish(second)).await;
    for payload in [b"1", b"2"] {
        let m = s.recv_publish().await;
        assert_eq!((&m.topic[..], &m.payload[..]), ("alias/x", &payload[..]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_topic_aliases_close_with_the_right_reason() {
    let b = TestBroker::start().await;
    // Above the maximum of 10: 0x94.
    let mut c = b.client_v5("above", true).await;
    let mut m = publish("t", b"x", QoS::AtMostOnce, false, 0);
    m.properties.push(Property::TopicAlias(11));
    c.send(Packet::Publish(m)).await;
    match c.expect_closed().await.as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.reason, ReasonCode::TopicAliasInvalid),
        other => panic!("{other:?}"),
    }
    // Used before it was set: Protocol Error.
    let mut c = b.client_v5("unset", true).await;
    c.send_raw(&raw::packet(0x30, &[0, 0, 3, 0x23, 0, 5, b'x']))
        .await;
    match c.expect_closed().await.as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.reason, ReasonCode::ProtocolError),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_topic_aliases_for_clients_that_accept_them() {
    let b = TestBroker::start().await;
    let (mut s, _) = b
        .connect_with(Protocol::V5, "aliased", |c| {
            c.properties.push(Property::TopicAliasMaximum(4))
        })
        .await;
    s.subscribe(&[("out/#", QoS::AtMostOnce)]).await;
    let mut p = b.client_v5("p", true).await;
    p.publish("out/a", b"1", QoS::AtMostOnce, false).await;
    p.publish("out/a", b"2", QoS::AtMostOnce, false).await;
    let first = s.recv_publish().await;
    assert_eq!(&first.topic[..], "out/a");
    let alias = first.properties.topic_alias().expect("alias assigned");
    let second = s.recv_publish().await;
    assert!(
        second.topic.is_empty(),
        "second message uses the alias alone"
    );
    assert_eq!(second.properties.topic_alias(), Some(alias));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_local_and_retain_as_published() {
    let b = TestBroker::start().await;
    let mut c = b.client_v5("self", true).await;
    let no_local = SubscriptionOptions {
        no_local: true,
        ..SubscriptionOptions::qos(QoS::AtMostOnce)
    };
    let rap = SubscriptionOptions {
        retain_as_published: true,
        ..SubscriptionOptions::qos(QoS::AtMostOnce)
    };
    c.subscribe_packet(subscribe(&[("nl", no_local), ("rap", rap)], None))
        .await;
    c.publish("nl", b"mine", QoS::AtMostOnce, false).await;
    c.publish("rap", b"kept", QoS::AtMostOnce, true).await;
    let m = c.recv_publish().await;
    assert_eq!(
        &m.topic[..],
        "rap",
        "No Local suppressed our own 'nl' message"
    );
    assert!(m.retain, "Retain As Published keeps the flag");
    let mut other = b.client_v5("other", true).await;
    other.publish("nl", b"theirs", QoS::AtMostOnce, false).await;
    assert_eq!(&c.recv_publish().await.payload[..], b"theirs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_handling_0_1_2() {
    let b = TestBroker::start().await;
    let mut p = b.client_v5("p", true).await;
    p.publish("rh", b"r", QoS::AtMostOnce, true).await;
    // Retained before anyone subscribes: otherwise it may arrive live.
    p.sync().await;
    let mut c = b.client_v5("c", true).await;
    let opts = |rh| SubscriptionOptions {
        retain_handling: rh,
        ..SubscriptionOptions::qos(QoS::AtMostOnce)
    };
    // 2: never.
    c.subscribe_packet(subscribe(&[("rh", opts(RetainHandling::DoNotSend))], None))
        .await;
    c.expect_nothing(QUIET).await;
    // 1: only if new; the subscription exists, so nothing.
    c.subscribe_packet(subscribe(&[("rh", opts(RetainHandling::SendIfNew))], None))
        .await;
    c.expect_nothing(QUIET).await;
    // 0: always.
    c.subscribe_packet(subscribe(
        &[("rh", opts(RetainHandling::SendAtSubscribe))],
        None,
    ))
    .await;
    assert!(c.recv_publish().await.retain);
    // 1 on a new subscription: sent.
    let mut d = b.client_v5("d", true).await;
    d.subscribe_packet(subscribe(&[("rh", opts(RetainHandling::SendIfNew))], None))
        .await;
    assert!(d.recv_publish().await.retain);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_matching_subscription_identifier_is_delivered() {
    let b = TestBroker::start().await;
    let mut c = b.client_v5("ids", true).await;
    let q1 = SubscriptionOptions::qos(QoS::AtLeastOnce);
    c.subscribe_packet(subscribe(&[("id/+", q1)], Some(7)))
        .await;
    c.subscribe_packet(subscribe(&[("id/#", q1)], Some(9)))
        .await;
    let mut p = b.client_v5("p", true).await;
    p.publish("id/x", b"x", QoS::AtLeastOnce, false).await;
    let m = c.recv_publish().await;
    let mut ids: Vec<u32> = m.properties.subscription_identifiers().collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![7, 9]);
    c.expect_nothing(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_round_robin_across_v5_and_v311_members() {
    let b = TestBroker::start().await;
    let mut a = b.client_v5("member-a", true).await;
    let mut m = b.client("member-b", true).await;
    assert_eq!(
        a.subscribe(&[("$share/g/work/+", QoS::AtLeastOnce)]).await,
        vec![ReasonCode::GrantedQoS1]
    );
    assert_eq!(
        m.subscribe(&[("$share/g/work/+", QoS::AtLeastOnce)]).await,
        vec![ReasonCode::GrantedQoS1]
    );
    let mut normal = b.client("normal", true).await;
    normal.subscribe(&[("work/+", QoS::AtLeastOnce)]).await;
    let mut p = b.client_v5("p", true).await;
    for i in 0..10u8 {
        p.publish("work/job", &[i], QoS::AtLeastOnce, true).await;
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(a.recv_publish().await.payload[0]);
        got.push(m.recv_publish().await.payload[0]);
    }
    got.sort_unstable();
    assert_eq!(
        got,
        (0..10).collect::<Vec<u8>>(),
        "each message to one member"
    );
    a.expect_nothing(QUIET).await;
    m.expect_nothing(QUIET).await;
    for _ in 0..10 {
        normal.recv_publish().await;
    }
    // No retained messages on a shared subscription.
    let mut late = b.client_v5("late", true).await;
    late.subscribe(&[("$share/h/work/+", QoS::AtMostOnce)])
        .await;
    late.expect_nothing(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_messages_of_a_leaving_member_go_to_another() {
    let b = TestBroker::start().await;
    let mut stay = b.client_v5("stay", true).await;
    stay.subscribe(&[("$share/g/job", QoS::AtLeastOnce)]).await;
    let mut leave = b.client_v5("leave", true).await;
    leave.subscribe(&[("$share/g/job", QoS::AtLeastOnce)]).await;
    let mut p = b.client_v5("p", true).await;
    for i in 0..4u8 {
        p.publish("job", &[i], QoS::AtLeastOnce, false).await;
    }
    // `leave` receives its share and drops the connection without acking.
    let mut unacked = Vec::new();
    for _ in 0..2 {
        match leave.recv().await {
            Packet::Publish(m) => unacked.push(m.payload[0]),
            other => panic!("{other:?}"),
        }
    }
    drop(leave);
    let mut got: Vec<u8> = Vec::new();
    for _ in 0..4 {
        got.push(stay.recv_publish().await.payload[0]);
    }
    got.sort_unstable();
    assert_eq!(got, vec![0, 1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_response_properties_are_forwarded_in_order() {
    let b = TestBroker::start().await;
    let mut responder = b.client_v5("responder", true).await;
    responder.subscribe(&[("req", QoS::AtLeastOnce)]).await;
    let mut req = publish("req", b"{}", QoS::AtLeastOnce, false, 1);
    req.properties = Properties(vec![
        Property::UserProperty("b".try_into().unwrap(), "2".try_into().unwrap()),
        Property::ResponseTopic("resp/1".try_into().unwrap()),
        Property::CorrelationData(bytes::Bytes::from_static(b"\x01\x02")),
        Property::PayloadFormatIndicator(1),
        Property::ContentType("application/json".try_into().unwrap()),
        Property::UserProperty("a".try_into().unwrap(), "1".try_into().unwrap()),
        Property::UserProperty("b".try_into().unwrap(), "3".try_into().unwrap()),
    ]);
    let sent = req.properties.clone();
    let mut p = b.client_v5("requester", true).await;
    p.send(Packet::Publish(req)).await;
    let m = responder.recv_publish().await;
    assert_eq!(m.properties, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_v311_and_v5_subscribers_on_one_topic() {
    let b = TestBroker::start().await;
    let mut v3 = b.client("v3", true).await;
    v3.subscribe(&[("mix", QoS::ExactlyOnce)]).await;
    let mut v5 = b.client_v5("v5", true).await;
    v5.subscribe(&[("mix", QoS::ExactlyOnce)]).await;
    let mut p = b.client_v5("p", true).await;
    let mut m = publish("mix", b"both", QoS::ExactlyOnce, false, 1);
    m.properties.push(Property::UserProperty(
        "k".try_into().unwrap(),
        "v".try_into().unwrap(),
    ));
    p.send(Packet::Publish(m)).await;
    assert!(v3.recv_publish().await.properties.is_empty());
    assert_eq!(
        v5.recv_publish().await.properties.user_properties().count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_authentication_method_gets_0x8c() {
    let b = TestBroker::start().await;
    let mut c = TestClient::connect(b.addr, Protocol::V5).await;
    let mut conn = ferrymq_testkit::connect(Protocol::V5, "auth", true);
    conn.properties.push(Property::AuthenticationMethod(
        "KERBEROS-9".try_into().unwrap(),
    ));
    let ack = c.handshake(conn).await;
    assert_eq!(ack.reason, ReasonCode::BadAuthenticationMethod);
    assert!(c.expect_closed().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_maximum_exceeded_by_the_client() {
    let mut config = ferrymq_testkit::test_config();
    config.max_inflight_messages = 2;
    let b = TestBroker::with_config(config).await;
    let mut c = b.client_v5("greedy", true).await;
    for id in 1..=3 {
        c.send(Packet::Publish(publish(
            "q2",
            b"x",
            QoS::ExactlyOnce,
            false,
            id,
        )))
        .await;
    }
    let seen = c.expect_closed().await;
    assert!(
        matches!(seen.last(), Some(Packet::Disconnect(d)) if d.reason == ReasonCode::ReceiveMaximumExceeded),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_bad_input() {
    let b = TestBroker::start().await;
    let mut c = b.client_v5("share-bad", true).await;
    let q0 = SubscriptionOptions::qos(QoS::AtMostOnce);
    assert_eq!(
        c.subscribe_packet(subscribe(&[("$share//t", q0), ("$share/g", q0)], None))
            .await,
        vec![
            ReasonCode::TopicFilterInvalid,
            ReasonCode::TopicFilterInvalid
        ]
    );
    let no_local = SubscriptionOptions {
        no_local: true,
        ..q0
    };
    c.send(Packet::Subscribe(subscribe(
        &[("$share/g/t", no_local)],
        None,
    )))
    .await;
    match c.expect_closed().await.as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.reason, ReasonCode::ProtocolError),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_bad_properties_in_connect_and_subscribe() {
    let b = TestBroker::start().await;
    // CONNECT with Receive Maximum 0: CONNACK 0x82 (Protocol Error).
    let mut body = raw::string(b"MQTT");
    body.extend_from_slice(&[5, 0x02, 0, 60, 3, 0x21, 0, 0]);
    body.extend_from_slice(&raw::string(b"rm0"));
    let mut c = TestClient::connect(b.addr, Protocol::V5).await;
    c.send_raw(&raw::packet(0x10, &body)).await;
    match c.expect_closed().await.as_slice() {
        [Packet::ConnAck(a)] => assert_eq!(a.reason, ReasonCode::ProtocolError),
        other => panic!("{other:?}"),
    }
    // CONNECT with Maximum Packet Size 0.
    let mut body = raw::string(b"MQTT");
    body.extend_from_slice(&[5, 0x02, 0, 60, 5, 0x27, 0, 0, 0, 0]);
    body.extend_from_slice(&raw::string(b"mps0"));
    let mut c = TestClient::connect(b.addr, Protocol::V5).await;
    c.send_raw(&raw::packet(0x10, &body)).await;
    match c.expect_closed().await.as_slice() {
        [Packet::ConnAck(a)] => assert_eq!(a.reason, ReasonCode::ProtocolError),
        other => panic!("{other:?}"),
    }
    // SUBSCRIBE with Subscription Identifier 0.
    let mut c = b.client_v5("sid0", true).await;
    c.send_raw(&raw::packet(0x82, &[0, 1, 2, 0x0B, 0, 0, 1, b't', 0]))
        .await;
    match c.expect_closed().await.as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.reason, ReasonCode::ProtocolError),
        other => panic!("{other:?}"),
    }
    // A property that does not belong in PUBLISH (Session Expiry Interval).
    let mut c = b.client_v5("wrongprop", true).await;
    c.send_raw(&raw::packet(0x30, &[0, 1, b't', 5, 0x11, 0, 0, 0, 1]))
        .await;
    match c.expect_closed().await.as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.reason, ReasonCode::MalformedPacket),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_shutdown_sends_0x8b() {
    let b = TestBroker::start().await;
    let mut c = b.client_v5("bye", true).await;
    c.sync().await;
    let server = b.server;
    let shutdown = tokio::spawn(server.shutdown());
    match c.expect_closed().await.as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.reason, ReasonCode::ServerShuttingDown),
        other => panic!("{other:?}"),
    }
    tokio::time::timeout(ferrymq_testkit::WAIT, shutdown)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_timeout_sends_0x8d() {
    let b = TestBroker::start().await;
    let (mut c, _) = b
        .connect_with(Protocol::V5, "ka", |c| c.keep_alive = 1)
        .await;
    match c.expect_closed().await.as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.reason, ReasonCode::KeepAliveTimeout),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_reusing_an_id_awaiting_pubrel_gets_0x91() {
    let b = TestBroker::start().await;
    let mut c = b.client_v5("reuse", true).await;
    let m = publish("t", b"x", QoS::ExactlyOnce, false, 9);
    c.send(Packet::Publish(m.clone())).await;
    assert!(
        matches!(c.recv().await, Packet::PubRec(r) if r.reason != ReasonCode::PacketIdentifierInUse)
    );
    // Not a resend (no DUP): a new message with an id still in use.
    c.send(Packet::Publish(m)).await;
    match c.recv().await {
        Packet::PubRec(r) => assert_eq!(r.reason, ReasonCode::PacketIdentifierInUse),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_dropped_by_a_full_queue_is_reported_with_0x97() {
    let mut config = ferrymq_testkit::test_config();
    config.max_queued_messages = 2;
    let b = TestBroker::with_config(config).await;
    let (mut s, _) = b
        .connect_with(Protocol::V5, "full", |c| {
            c.clean_start = false;
            c.properties.push(Property::SessionExpiryInterval(60));
        })
        .await;
    s.subscribe(&[("q", QoS::AtLeastOnce)]).await;
    s.disconnect().await;
    let mut p = b.client_v5("p", true).await;
    let mut reasons = Vec::new();
    for id in 1..=3 {
        p.send(Packet::Publish(publish(
            "q",
            b"x",
            QoS::AtLeastOnce,
            false,
            id,
        )))
        .await;
        match p.recv().await {
            Packet::PubAck(a) => reasons.push(a.reason),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        reasons,
        vec![
            ReasonCode::Success,
            ReasonCode::Success,
            ReasonCode::QuotaExceeded
        ]
    );
}

/// [MQTT-4.8.2-4]/[MQTT-4.8.2-5]: a QoS 2 message sent to a share-group
/// member that disconnects is completed with that member, never sent to
/// another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_qos2_in_flight_stays_with_its_member() {
    let b = TestBroker::start().await;
    let mut other = b.client_v5("other", true).await;
    other.subscribe(&[("$share/g/q2", QoS::ExactlyOnce)]).await;
    let (mut leaver, _) = b
        .connect_with(Protocol::V5, "leaver", |c| {
            c.clean_start = false;
            c.properties.push(Property::SessionExpiryInterval(60));
        })
        .await;
    leaver.subscribe(&[("$share/g/q2", QoS::ExactlyOnce)]).await;
    let mut p = b.client_v5("p", true).await;
    let mut to_leaver = None;
    for i in 0..2u8 {
        p.publish("q2", &[i], QoS::ExactlyOnce, false).await;
    }
    // One of the two went to `leaver`; it receives it and drops the socket.
    if let Ok(Some(Packet::Publish(m))) =
        tokio::time::timeout(QUIET, leaver.try_recv(ferrymq_testkit::WAIT)).await
    {
        to_leaver = Some(m);
    }
    let sent = to_leaver.expect("round robin gave leaver one message");
    drop(leaver);
    let for_other = other.recv_publish().await;
    assert_ne!(for_other.payload, sent.payload);
    other.expect_nothing(QUIET).await;
    // Back again: the message is completed with the same packet id.
    let (mut back, ack) = b
        .connect_with(Protocol::V5, "leaver", |c| {
            c.clean_start = false;
            c.properties.push(Property::SessionExpiryInterval(60));
        })
        .await;
    assert!(ack.session_present);
    let again = back.recv_publish().await;
    assert_eq!((again.packet_id, again.dup), (sent.packet_id, true));
}
