//! Test helpers for ferrymq: an in-process broker on port 0, a packet-level
//! test client with bounded waits, and [`raw`], a packet builder that does
//! not use our encoder (so a codec bug cannot hide itself in a test).
//!
//! Test code: panics on unexpected conditions are the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod raw;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use ferrymq_broker::{config::ListenerConfig, Config, Server};
use ferrymq_codec::{
    decode, encode, ConnAck, Connect, MqttString, Packet, PacketId, Properties, Protocol,
    PubResponse, Publish, QoS, ReasonCode, Subscribe, SubscriptionOptions, TopicFilter, TopicName,
    Unsubscribe, Will,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// Polls `cond` until it holds, failing the test after [`WAIT`]: for state
/// the broker changes on its own (a session expiring, a counter moving)
/// that no packet announces.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A broker config listening on 127.0.0.1 port 0, with `$SYS` off so
/// tests see only their own traffic.
pub fn test_config() -> Config {
    Config {
        listeners: vec![ListenerConfig::new("127.0.0.1:0".parse().unwrap())],
        sys_interval: Duration::ZERO,
        persistence: false,
        allow_anonymous: Some(true),
        ..Config::default()
    }
}

/// `config` with the HTTP listener (metrics, admin API) on 127.0.0.1
/// port 0 and `token` as the admin token.
pub fn with_http(mut config: Config, token: &str) -> Config {
    config.http.listener = Some("127.0.0.1:0".parse().unwrap());
    config.http.admin_token = Some(token.to_string());
    config
}

/// A running in-process broker.
#[derive(Debug)]
pub struct TestBroker {
    pub server: Server,
    pub addr: SocketAddr,
}

impl TestBroker {
    pub async fn start() -> TestBroker {
        TestBroker::with_config(test_config()).await
    }

    pub async fn with_config(config: Config) -> TestBroker {
        let server = Server::start(config).await.expect("broker starts");
        let addr = server.local_addrs()[0];
        TestBroker { server, addr }
    }

    pub fn broker(&self) -> &ferrymq_broker::Broker {
        &self.server.broker
    }

    /// The HTTP listener's address: set `config.http.listener` to
    /// `127.0.0.1:0` (see [`with_http`]) to get one on a free port.
    pub fn http_addr(&self) -> SocketAddr {
        self.server
            .http_addr()
            .expect("the config sets http.listener")
    }

    /// Connects with MQTT 3.1.1 and returns the client after a successful CONNACK.
    pub async fn client(&self, client_id: &str, clean: bool) -> TestClient {
        let mut c = TestClient::connect(self.addr, Protocol::V3_1_1).await;
        let ack = c
            .handshake(connect(Protocol::V3_1_1, client_id, clean))
            .await;
        assert_eq!(ack.reason, ReasonCode::Success, "CONNACK for {client_id}");
        c
    }

    /// Connects with a CONNECT the caller adjusts; returns the CONNACK too.
    pub async fn connect_with(
        &self,
        protocol: Protocol,
        client_id: &str,
        adjust: impl FnOnce(&mut Connect),
    ) -> (TestClient, ConnAck) {
        let mut c = TestClient::connect(self.addr, protocol).await;
        let mut conn = connect(protocol, client_id, true);
        adjust(&mut conn);
        let ack = c.handshake(conn).await;
        (c, ack)
    }

    pub async fn client_v5(&self, client_id: &str, clean: bool) -> TestClient {
        let mut c = TestClient::connect(self.addr, Protocol::V5).await;
        let ack = c.handshake(connect(Protocol::V5, client_id, clean)).await;
        assert_eq!(ack.reason, ReasonCode::Success, "CONNACK for {client_id}");
        c
    }
}

/// A CONNECT with the given identity and nothing else.
pub fn connect(protocol: Protocol, client_id: &str, clean: bool) -> Connect {
    Connect {
        protocol,
        clean_start: clean,
        keep_alive: 60,
        properties: Properties::new(),
        client_id: MqttString::try_from(client_id).unwrap(),
        will: None,
        username: None,
        password: None,
    }
}

pub fn will(topic: &str, payload: &str, qos: QoS, retain: bool) -> Will {
    Will {
        qos,
        retain,
        properties: Properties::new(),
        topic: TopicName::new(topic).unwrap(),
        payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
    }
}

pub fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

pub fn publish(topic: &str, payload: &[u8], qos: QoS, retain: bool, id: u16) -> Publish {
    Publish {
        dup: false,
        qos,
        retain,
        topic: TopicName::new(topic).unwrap(),
        packet_id: (qos != QoS::AtMostOnce).then(|| pid(id)),
        properties: Properties::new(),
        payload: bytes::Bytes::copy_from_slice(payload),
    }
}

/// A packet-level MQTT client for tests. Every wait is bounded by [`WAIT`].
#[derive(Debug)]
pub struct TestClient {
    pub stream: TcpStream,
    pub protocol: Protocol,
    buf: BytesMut,
    next_id: u16,
    /// Packets that arrived while waiting for a specific one.
    stash: std::collections::VecDeque<Packet>,
}

impl TestClient {
    pub async fn connect(addr: SocketAddr, protocol: Protocol) -> TestClient {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        stream.set_nodelay(true).unwrap();
        TestClient {
            stream,
            protocol,
            buf: BytesMut::new(),
            next_id: 1,
            stash: Default::default(),
        }
    }

    /// Sends CONNECT and returns the CONNACK.
    pub async fn handshake(&mut self, connect: Connect) -> ConnAck {
        self.protocol = connect.protocol;
        self.send(Packet::Connect(Box::new(connect))).await;
        match self.recv().await {
            Packet::ConnAck(ack) => ack,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        encode(&packet, self.protocol, &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    /// Sends `packet`; false if the connection is gone.
    pub async fn try_send(&mut self, packet: Packet) -> bool {
        let mut out = BytesMut::new();
        encode(&packet, self.protocol, &mut out).unwrap();
        self.stream.write_all(&out).await.is_ok()
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next packet from the broker; panics after [`WAIT`] or on close.
    pub async fn recv(&mut self) -> Packet {
        match self.try_recv(WAIT).await {
            Some(p) => p,
            None => panic!("connection closed while waiting for a packet"),
        }
    }

    /// The next packet, `None` if the broker closed the connection; panics
    /// if nothing happens within `wait`.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Packet> {
        if let Some(p) = self.stash.pop_front() {
            return Some(p);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(p) = decode(&mut self.buf, self.protocol, usize::MAX).unwrap() {
                return Some(p);
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(16 * 1024);
            }
            let n = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf))
                .await
                .expect("broker answered in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    /// Asserts that nothing arrives within `quiet` (a bounded negative check).
    pub async fn expect_nothing(&mut self, quiet: Duration) {
        if let Some(p) = self.stash.pop_front() {
            panic!("unexpected packet {p:?}");
        }
        if let Some(p) = decode(&mut self.buf, self.protocol, usize::MAX).unwrap() {
            panic!("unexpected packet {p:?}");
        }
        if let Ok(r) = tokio::time::timeout(quiet, self.stream.read_buf(&mut self.buf)).await {
            let n = r.unwrap_or(0);
            assert!(n > 0, "connection closed unexpectedly");
            let p = decode(&mut self.buf, self.protocol, usize::MAX).unwrap();
            panic!("unexpected packet {p:?}");
        }
    }

    /// Waits for the broker to close the connection, returning any packets
    /// it sent first (an MQTT 5 DISCONNECT, say).
    pub async fn expect_closed(&mut self) -> Vec<Packet> {
        let mut seen = Vec::new();
        while let Some(p) = self.try_recv(WAIT).await {
            seen.push(p);
        }
        seen
    }

    fn next_pid(&mut self) -> PacketId {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        pid(id)
    }

    /// Subscribes and returns the SUBACK reason codes.
    pub async fn subscribe(&mut self, filters: &[(&str, QoS)]) -> Vec<ReasonCode> {
        let packet_id = self.next_pid();
        self.send(Packet::Subscribe(Subscribe {
            packet_id,
            properties: Properties::new(),
            filters: filters
                .iter()
                .map(|(f, q)| (TopicFilter::new(*f).unwrap(), SubscriptionOptions::qos(*q)))
                .collect(),
        }))
        .await;
        match self.recv().await {
            Packet::SubAck(ack) => {
                assert_eq!(ack.packet_id, packet_id);
                ack.reasons
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Sends a SUBSCRIBE built by the caller and returns the SUBACK codes.
    pub async fn subscribe_packet(&mut self, mut subscribe: Subscribe) -> Vec<ReasonCode> {
        let packet_id = self.next_pid();
        subscribe.packet_id = packet_id;
        self.send(Packet::Subscribe(subscribe)).await;
        match self.recv().await {
            Packet::SubAck(ack) => {
                assert_eq!(ack.packet_id, packet_id);
                ack.reasons
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    pub async fn unsubscribe(&mut self, filters: &[&str]) -> Vec<ReasonCode> {
        let packet_id = self.next_pid();
        self.send(Packet::Unsubscribe(Unsubscribe {
            packet_id,
            properties: Properties::new(),
            filters: filters
                .iter()
                .map(|f| TopicFilter::new(*f).unwrap())
                .collect(),
        }))
        .await;
        match self.recv().await {
            Packet::UnsubAck(ack) => {
                assert_eq!(ack.packet_id, packet_id);
                ack.reasons
            }
            other => panic!("expected UNSUBACK, got {other:?}"),
        }
    }

    /// Publishes and completes the QoS exchange as a well-behaved client.
    pub async fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
        let id = self.next_pid().get();
        self.send(Packet::Publish(publish(topic, payload, qos, retain, id)))
            .await;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => match self.recv().await {
                Packet::PubAck(a) => assert_eq!(a.packet_id.get(), id),
                other => panic!("expected PUBACK, got {other:?}"),
            },
            QoS::ExactlyOnce => {
                match self.recv().await {
                    Packet::PubRec(a) => assert_eq!(a.packet_id.get(), id),
                    other => panic!("expected PUBREC, got {other:?}"),
                }
                self.send(Packet::PubRel(PubResponse::new(pid(id)))).await;
                match self.recv().await {
                    Packet::PubComp(a) => assert_eq!(a.packet_id.get(), id),
                    other => panic!("expected PUBCOMP, got {other:?}"),
                }
            }
        }
    }

    /// Sends a QoS 1 PUBLISH and returns the reason code of its PUBACK
    /// (checked to answer it): how the broker took the message.
    pub async fn puback_reason(&mut self, topic: &str, payload: &[u8]) -> ReasonCode {
        let id = self.next_pid().get();
        self.send(Packet::Publish(publish(
            topic,
            payload,
            QoS::AtLeastOnce,
            false,
            id,
        )))
        .await;
        match self.recv().await {
            Packet::PubAck(a) => {
                assert_eq!(a.packet_id.get(), id);
                a.reason
            }
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }

    /// Receives one PUBLISH and acknowledges it as a well-behaved client.
    pub async fn recv_publish(&mut self) -> Publish {
        let p = match self.recv().await {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        };
        self.ack(&p).await;
        p
    }

    /// Completes the acknowledgement of a received PUBLISH.
    pub async fn ack(&mut self, p: &Publish) {
        match (p.qos, p.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => self.send(Packet::PubAck(PubResponse::new(id))).await,
            (QoS::ExactlyOnce, Some(id)) => {
                self.send(Packet::PubRec(PubResponse::new(id))).await;
                // Other packets may come first; keep them for later.
                let mut skipped = Vec::new();
                loop {
                    match self.recv().await {
                        Packet::PubRel(r) if r.packet_id == id => break,
                        other => skipped.push(other),
                    }
                }
                for p in skipped.into_iter().rev() {
                    self.stash.push_front(p);
                }
                self.send(Packet::PubComp(PubResponse::new(id))).await;
            }
            _ => {}
        }
    }

    /// A PINGREQ/PINGRESP round trip: once it returns, the broker has
    /// processed everything this client sent before it.
    pub async fn sync(&mut self) {
        self.send(Packet::PingReq).await;
        match self.recv().await {
            Packet::PingResp => {}
            other => panic!("expected PINGRESP, got {other:?}"),
        }
    }

    /// Sends DISCONNECT and waits until the broker closes the socket, which
    /// it does only after the session is parked or removed.
    pub async fn disconnect(mut self) {
        self.send(Packet::Disconnect(Default::default())).await;
        let rest = self.expect_closed().await;
        assert!(rest.is_empty(), "packets after DISCONNECT: {rest:?}");
    }
}
