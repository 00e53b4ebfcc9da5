//! TLS, WebSocket and secure WebSocket listeners over real sockets:
//! certificates made here with rcgen, clients from ferrymq-client and
//! hand-driven tokio-rustls / tokio-tungstenite where a test needs to look
//! at the handshake itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferrymq_broker::config::{ListenerConfig, ListenerProtocol, TlsVersion};
use ferrymq_broker::{Config, Server};
use ferrymq_client::{
    connect, ConnectOptions, Error, Protocol, QoS, ReasonCode, TlsOptions, Transport,
};
use ferrymq_codec::{decode, Packet};
use ferrymq_testkit::{raw, test_config, WAIT};
use futures_util::{SinkExt, StreamExt};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, crypto::ring, ClientConfig, RootCertStore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// A CA, a server certificate for localhost and client certificates, all
/// written as PEM files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "ferrymq test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        let pki = Pki { dir, ca, ca_key };
        pki.issue("server", "localhost", ExtendedKeyUsagePurpose::ServerAuth);
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ca_file(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// Writes `NAME.pem` and `NAME.key`, signed by this CA.
    fn issue(&self, name: &str, common_name: &str, usage: ExtendedKeyUsagePurpose) {
        self.issue_with(name, common_name, usage, |_| {});
    }

    /// As `issue`, with the certificate's parameters adjusted first.
    fn issue_with(
        &self,
        name: &str,
        common_name: &str,
        usage: ExtendedKeyUsagePurpose,
        adjust: impl FnOnce(&mut CertificateParams),
    ) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        adjust(&mut params);
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).unwrap();
    }

    fn client_cert(&self, common_name: &str) -> (PathBuf, PathBuf) {
        self.client_cert_with(common_name, |_| {})
    }

    fn client_cert_with(
        &self,
        common_name: &str,
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> (PathBuf, PathBuf) {
        let name = format!("client-{common_name}");
        self.issue_with(
            &name,
            common_name,
            ExtendedKeyUsagePurpose::ClientAuth,
            adjust,
        );
        (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.key")),
        )
    }

    /// Writes `NAME` with a CRL of this CA revoking `serials`, valid until
    /// the start of `until_year`.
    fn crl(&self, name: &str, serials: &[u64], until_year: i32) {
        let params = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 1),
            next_update: rcgen::date_time_ymd(until_year, 1, 1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|&n| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(n),
                    revocation_time: rcgen::date_time_ymd(2020, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.ca, &self.ca_key).unwrap();
        std::fs::write(self.path(name), crl.pem().unwrap()).unwrap();
    }

    /// A listener on 127.0.0.1 port 0 with this PKI's server certificate.
    fn tls_listener(&self) -> ListenerConfig {
        ListenerConfig {
            certfile: Some(self.path("server.pem")),
            keyfile: Some(self.path("server.key")),
            ..plain_listener()
        }
    }

    fn client_tls(&self) -> TlsOptions {
        TlsOptions {
            ca_file: Some(self.ca_file()),
            server_name: Some("localhost".into()),
            ..TlsOptions::default()
        }
    }
}

fn plain_listener() -> ListenerConfig {
    ListenerConfig::new("127.0.0.1:0".parse().unwrap())
}

async fn start(listeners: Vec<ListenerConfig>) -> Server {
    start_with(Config {
        listeners,
        ..test_config()
    })
    .await
}

async fn start_with(config: Config) -> Server {
    tokio::time::timeout(WAIT, Server::start(config))
        .await
        .unwrap()
        .unwrap()
}

fn options(addr: SocketAddr, transport: Transport, client_id: &str) -> ConnectOptions {
    ConnectOptions::new("127.0.0.1", addr.port())
        .client_id(client_id)
        .transport(transport)
        .connect_timeout(WAIT)
}

/// Subscribes and publishes to itself at every QoS.
async fn round_trip(addr: SocketAddr, transport: Transport, protocol: Protocol) {
    let (client, mut incoming) = tokio::time::timeout(
        WAIT,
        connect(options(addr, transport, "round-trip").protocol(protocol)),
    )
    .await
    .unwrap()
    .unwrap();
    client.subscribe("x/#", QoS::ExactlyOnce).await.unwrap();
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let payload = format!("through at {qos:?}");
        client
            .publish("x/1", payload.clone(), qos, false)
            .await
            .unwrap();
        let m = incoming.next_message_within(WAIT).await.unwrap().unwrap();
        assert_eq!(m.payload, Bytes::from(payload));
    }
    client.disconnect().await.unwrap();
}

/// A raw rustls client limited to `versions`; returns the negotiated version.
async fn tls_handshake(
    addr: SocketAddr,
    ca: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> std::io::Result<rustls::ProtocolVersion> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = tokio::time::timeout(
        WAIT,
        connector.connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .unwrap()?;
    // A CONNECT and its CONNACK prove the broker speaks MQTT inside.
    tls.write_all(&raw::connect_v311("raw-tls", 0x02, 60))
        .await?;
    let mut connack = [0u8; 4];
    tokio::time::timeout(WAIT, tls.read_exact(&mut connack))
        .await
        .unwrap()?;
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    Ok(tls.get_ref().1.protocol_version().unwrap())
}

/// Reads until the peer closes; fails the test if it takes longer than WAIT.
async fn closed_by_peer(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(WAIT, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the broker closes the connection");
}

#[tokio::test]
async fn tls_1_2_and_1_3_connect_publish_subscribe() {
    let pki = Pki::new();
    let server = start(vec![
        ListenerConfig {
            tls_version: Some(TlsVersion::Tls12),
            ..pki.tls_listener()
        },
        ListenerConfig {
            tls_version: Some(TlsVersion::Tls13),
            ..pki.tls_listener()
        },
        pki.tls_listener(),
    ])
    .await;
    let [v12, v13, both] = server.local_addrs() else {
        panic!("three listeners");
    };
    for addr in [v12, v13, both] {
        round_trip(*addr, Transport::Tls(pki.client_tls()), Protocol::V3_1_1).await;
        round_trip(*addr, Transport::Tls(pki.client_tls()), Protocol::V5).await;
    }
    let ca = pki.ca_file();
    let all = rustls::ALL_VERSIONS;
    assert_eq!(
        tls_handshake(*v12, &ca, all).await.unwrap(),
        rustls::ProtocolVersion::TLSv1_2
    );
    assert_eq!(
        tls_handshake(*v13, &ca, all).await.unwrap(),
        rustls::ProtocolVersion::TLSv1_3
    );
    assert_eq!(
        tls_handshake(*both, &ca, all).await.unwrap(),
        rustls::ProtocolVersion::TLSv1_3
    );
    assert_eq!(
        tls_handshake(*both, &ca, &[&rustls::version::TLS12])
            .await
            .unwrap(),
        rustls::ProtocolVersion::TLSv1_2
    );
    // A listener pinned to one version refuses the other.
    assert!(tls_handshake(*v12, &ca, &[&rustls::version::TLS13])
        .await
        .is_err());
    assert!(tls_handshake(*v13, &ca, &[&rustls::version::TLS12])
        .await
        .is_err());
    server.shutdown().await;
}

#[tokio::test]
async fn tls_with_the_wrong_ca_is_refused() {
    let pki = Pki::new();
    let other = Pki::new();
    let server = start(vec![pki.tls_listener()]).await;
    let addr = server.local_addrs()[0];
    let err = connect(options(
        addr,
        Transport::Tls(other.client_tls()),
        "wrong-ca",
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Tls(_)), "{err:?}");
    // The listener still serves clients that trust it.
    round_trip(addr, Transport::Tls(pki.client_tls()), Protocol::V5).await;
    server.shutdown().await;
}

#[tokio::test]
async fn plain_mqtt_to_a_tls_port_is_closed_without_harm_to_others() {
    let pki = Pki::new();
    let server = start(vec![pki.tls_listener()]).await;
    let addr = server.local_addrs()[0];
    let (good, mut incoming) = connect(options(addr, Transport::Tls(pki.client_tls()), "good"))
        .await
        .unwrap();
    good.subscribe("still/here", QoS::AtLeastOnce)
        .await
        .unwrap();

    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(&raw::connect_v311("plain", 0x02, 60))
        .await
        .unwrap();
    closed_by_peer(&mut plain).await;

    good.publish("still/here", "yes", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    let m = incoming.next_message_within(WAIT).await.unwrap().unwrap();
    assert_eq!(m.payload, Bytes::from_static(b"yes"));
    good.disconnect().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn require_certificate_refuses_clients_without_one() {
    let pki = Pki::new();
    let server = start(vec![ListenerConfig {
        cafile: Some(pki.ca_file()),
        require_certificate: true,
        ..pki.tls_listener()
    }])
    .await;
    let addr = server.local_addrs()[0];
    // No certificate: the handshake (or, in TLS 1.3, the first read) fails.
    let refused = tokio::time::timeout(
        WAIT,
        connect(options(addr, Transport::Tls(pki.client_tls()), "no-cert")),
    )
    .await
    .unwrap();
    assert!(refused.is_err(), "{refused:?}");

    // A certificate from another CA is refused too.
    let other = Pki::new();
    let (cert, key) = other.client_cert("intruder");
    let tls = TlsOptions {
        cert_file: Some(cert),
        key_file: Some(key),
        ..pki.client_tls()
    };
    let refused = tokio::time::timeout(
        WAIT,
        connect(options(addr, Transport::Tls(tls), "other-ca")),
    )
    .await
    .unwrap();
    assert!(refused.is_err(), "{refused:?}");

    let (cert, key) = pki.client_cert("device-1");
    let tls = TlsOptions {
        cert_file: Some(cert),
        key_file: Some(key),
        ..pki.client_tls()
    };
    round_trip(addr, Transport::Tls(tls.clone()), Protocol::V3_1_1).await;
    round_trip(addr, Transport::Tls(tls), Protocol::V5).await;
    server.shutdown().await;
}

#[tokio::test]
async fn use_identity_as_username_applies_the_acl_to_the_common_name() {
    let pki = Pki::new();
    let acl = pki.path("acl");
    std::fs::write(
        &acl,
        "user sensor-7\ntopic readwrite sensors/7/#\nuser sensor-8\ntopic readwrite sensors/8/#\n",
    )
    .unwrap();
    let server = start_with(Config {
        listeners: vec![ListenerConfig {
            cafile: Some(pki.ca_file()),
            require_certificate: true,
            use_identity_as_username: true,
            ..pki.tls_listener()
        }],
        // No password file and no anonymous access: only the certificate's
        // name can let a client in.
        allow_anonymous: Some(false),
        acl_file: Some(acl),
        ..test_config()
    })
    .await;
    let addr = server.local_addrs()[0];
    let (cert, key) = pki.client_cert("sensor-7");
    let tls = TlsOptions {
        cert_file: Some(cert),
        key_file: Some(key),
        ..pki.client_tls()
    };
    // CONNECT's user name and password are ignored.
    let (client, mut incoming) = connect(
        options(addr, Transport::Tls(tls), "s7")
            .protocol(Protocol::V5)
            .credentials("sensor-8", "wrong password"),
    )
    .await
    .unwrap();
    assert_eq!(
        client
            .subscribe("sensors/7/#", QoS::AtLeastOnce)
            .await
            .unwrap(),
        ReasonCode::GrantedQoS1
    );
    assert_eq!(
        client
            .subscribe("sensors/8/#", QoS::AtLeastOnce)
            .await
            .unwrap(),
        ReasonCode::NotAuthorized
    );
    client
        .publish("sensors/7/t", "21.5", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    let m = incoming.next_message_within(WAIT).await.unwrap().unwrap();
    assert_eq!(m.payload, Bytes::from_static(b"21.5"));
    let refused = client
        .publish("sensors/8/t", "spoofed", QoS::AtLeastOnce, false)
        .await;
    assert!(
        matches!(
            refused,
            Err(Error::PublishRefused(ReasonCode::NotAuthorized))
        ),
        "{refused:?}"
    );
    client.disconnect().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn websocket_and_secure_websocket_round_trip() {
    let pki = Pki::new();
    let server = start(vec![
        ListenerConfig {
            protocol: ListenerProtocol::WebSockets,
            ..plain_listener()
        },
        ListenerConfig {
            protocol: ListenerProtocol::WebSockets,
            ..pki.tls_listener()
        },
    ])
    .await;
    let [ws, wss] = server.local_addrs() else {
        panic!("two listeners");
    };
    let path = "/mqtt".to_string();
    for protocol in [Protocol::V3_1_1, Protocol::V5] {
        round_trip(*ws, Transport::WebSocket { path: path.clone() }, protocol).await;
        round_trip(
            *wss,
            Transport::SecureWebSocket {
                path: path.clone(),
                tls: pki.client_tls(),
            },
            protocol,
        )
        .await;
    }
    server.shutdown().await;
}

async fn ws_client(
    addr: SocketAddr,
    subprotocol: Option<&str>,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("ws://{addr}/mqtt").into_client_request().unwrap();
    if let Some(p) = subprotocol {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p).unwrap());
    }
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, tcp))
        .await
        .unwrap()?;
    Ok(ws)
}

#[tokio::test]
async fn websocket_upgrade_without_the_mqtt_subprotocol_is_refused() {
    let server = start(vec![ListenerConfig {
        protocol: ListenerProtocol::WebSockets,
        ..plain_listener()
    }])
    .await;
    let addr = server.local_addrs()[0];
    for offered in [None, Some("mqttv3.1"), Some("chat, superchat")] {
        match ws_client(addr, offered).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 400, "{offered:?}")
            }
            other => panic!("{offered:?}: {other:?}"),
        }
    }
    // Among several offered subprotocols, mqtt is chosen.
    let ws = ws_client(addr, Some("chat, mqtt")).await.unwrap();
    drop(ws);
    server.shutdown().await;
}

/// Reads binary frames until `n` whole packets have arrived.
async fn ws_packets(
    ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>,
    protocol: Protocol,
    n: usize,
) -> Vec<Packet> {
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    while packets.len() < n {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Binary(data))) => buf.extend_from_slice(&data),
            other => panic!("{other:?}"),
        }
        while let Some(p) = decode(&mut buf, protocol, 1 << 20).unwrap() {
            packets.push(p);
        }
    }
    packets
}

#[tokio::test]
async fn websocket_frames_may_split_and_join_packets() {
    let server = start(vec![ListenerConfig {
        protocol: ListenerProtocol::WebSockets,
        ..plain_listener()
    }])
    .await;
    let addr = server.local_addrs()[0];
    let mut ws = ws_client(addr, Some("mqtt")).await.unwrap();
    let connect = raw::connect_v311("frames", 0x02, 60);
    let mut rest = connect[3..].to_vec();
    rest.extend_from_slice(&raw::subscribe_v311(1, b"f/#", 1));
    rest.extend_from_slice(&raw::publish_v311(0x00, b"f/1", None, b"joined"));
    ws.send(Message::binary(connect[..3].to_vec()))
        .await
        .unwrap();
    ws.send(Message::binary(rest)).await.unwrap();
    let packets = ws_packets(&mut ws, Protocol::V3_1_1, 3).await;
    assert!(matches!(&packets[0], Packet::ConnAck(c) if c.reason == ReasonCode::Success));
    assert!(matches!(&packets[1], Packet::SubAck(_)), "{:?}", packets[1]);
    match &packets[2] {
        Packet::Publish(p) => assert_eq!(p.payload, Bytes::from_static(b"joined")),
        other => panic!("{other:?}"),
    }
    // A text frame is not MQTT: the connection ends.
    ws.send(Message::text("hello")).await.unwrap();
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the broker closes after a text frame");
    server.shutdown().await;
}

#[tokio::test]
async fn handshakes_never_completed_are_closed_at_the_deadline() {
    let pki = Pki::new();
    let server = start_with(Config {
        listeners: vec![
            pki.tls_listener(),
            ListenerConfig {
                protocol: ListenerProtocol::WebSockets,
                ..plain_listener()
            },
            ListenerConfig {
                protocol: ListenerProtocol::WebSockets,
                ..pki.tls_listener()
            },
        ],
        connect_timeout: Duration::from_millis(300),
        ..test_config()
    })
    .await;
    let [tls, ws, wss] = [0, 1, 2].map(|i| server.local_addrs()[i]);
    let mut stalled = Vec::new();
    for i in 0..40 {
        for addr in [tls, ws, wss] {
            let mut s = TcpStream::connect(addr).await.unwrap();
            // Some say nothing, some start a handshake and stop.
            if i % 2 == 1 {
                let partial: &[u8] = if addr == ws {
                    b"GET /mqtt HTTP/1.1\r\nHost: x\r\n"
                } else {
                    &[0x16, 0x03, 0x01, 0x00]
                };
                s.write_all(partial).await.unwrap();
            }
            stalled.push(s);
        }
    }
    // The accept loops are not held up: a real client gets through now.
    round_trip(tls, Transport::Tls(pki.client_tls()), Protocol::V5).await;
    round_trip(ws, Transport::WebSocket { path: "/".into() }, Protocol::V5).await;
    for s in &mut stalled {
        closed_by_peer(s).await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn tls_files_that_cannot_be_read_stop_the_start_naming_them() {
    let pki = Pki::new();
    let missing = pki.path("missing.pem");
    let err = Server::start(Config {
        listeners: vec![ListenerConfig {
            certfile: Some(missing.clone()),
            ..pki.tls_listener()
        }],
        ..test_config()
    })
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains(&*missing.to_string_lossy()),
        "{err}"
    );
    let err = Server::start(Config {
        listeners: vec![ListenerConfig {
            keyfile: Some(pki.ca_file()),
            ..pki.tls_listener()
        }],
        ..test_config()
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("keyfile"), "{err}");
}

#[tokio::test]
async fn use_identity_as_username_without_a_certificate_is_not_authorized() {
    let pki = Pki::new();
    let server = start(vec![ListenerConfig {
        cafile: Some(pki.ca_file()),
        use_identity_as_username: true,
        ..pki.tls_listener()
    }])
    .await;
    let addr = server.local_addrs()[0];
    let err = connect(options(addr, Transport::Tls(pki.client_tls()), "anon"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Refused {
                reason: ReasonCode::NotAuthorized,
                ..
            }
        ),
        "{err:?}"
    );
    server.shutdown().await;
}

/// Regression: packets that arrive in the same read as CONNECT were left in
/// the buffer until the client sent more (found by the WebSocket test).
#[tokio::test]
async fn packets_sent_with_connect_are_handled_over_tcp() {
    let server = start(vec![plain_listener()]).await;
    let mut tcp = TcpStream::connect(server.local_addrs()[0]).await.unwrap();
    let mut bytes = raw::connect_v311("pipelined", 0x02, 60);
    bytes.extend_from_slice(&raw::subscribe_v311(1, b"p/#", 0));
    bytes.extend_from_slice(&raw::publish_v311(0x00, b"p/1", None, b"at once"));
    tcp.write_all(&bytes).await.unwrap();
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    while packets.len() < 3 {
        let n = tokio::time::timeout(WAIT, tcp.read_buf(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed after {packets:?}");
        while let Some(p) = decode(&mut buf, Protocol::V3_1_1, 1 << 20).unwrap() {
            packets.push(p);
        }
    }
    assert!(
        matches!(&packets[2], Packet::Publish(p) if p.payload == Bytes::from_static(b"at once"))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn use_subject_as_username_applies_the_acl_to_the_subject() {
    let pki = Pki::new();
    let acl = pki.path("acl");
    std::fs::write(&acl, "user CN=sensor-9\ntopic readwrite sensors/9/#\n").unwrap();
    let server = start_with(Config {
        listeners: vec![ListenerConfig {
            cafile: Some(pki.ca_file()),
            require_certificate: true,
            use_subject_as_username: true,
            ..pki.tls_listener()
        }],
        allow_anonymous: Some(false),
        acl_file: Some(acl),
        ..test_config()
    })
    .await;
    let (cert, key) = pki.client_cert("sensor-9");
    let tls = TlsOptions {
        cert_file: Some(cert),
        key_file: Some(key),
        ..pki.client_tls()
    };
    let (client, _incoming) =
        connect(options(server.local_addrs()[0], Transport::Tls(tls), "s9").protocol(Protocol::V5))
            .await
            .unwrap();
    assert_eq!(
        client
            .subscribe("sensors/9/#", QoS::AtMostOnce)
            .await
            .unwrap(),
        ReasonCode::Success
    );
    assert_eq!(
        client
            .subscribe("sensors/1/#", QoS::AtMostOnce)
            .await
            .unwrap(),
        ReasonCode::NotAuthorized
    );
    client.disconnect().await.unwrap();
    server.shutdown().await;
}

/// The path a Mosquitto user takes: a mosquitto.conf with TLS and
/// WebSocket listeners, parsed and started.
#[tokio::test]
async fn listeners_from_a_mosquitto_conf() {
    let pki = Pki::new();
    let conf = format!(
        "persistence false\nallow_anonymous true\nsys_interval 0\n\
         listener 0 127.0.0.1\nprotocol websockets\n\
         listener 0 127.0.0.1\ncertfile {0}/server.pem\nkeyfile {0}/server.key\n\
         listener 0 127.0.0.1\nprotocol websockets\ncertfile {0}/server.pem\n\
         keyfile {0}/server.key\ntls_version tlsv1.2\n",
        pki.dir.path().display()
    );
    let config = Config::parse(&conf, "mosquitto.conf").unwrap();
    let server = start_with(config).await;
    let [ws, tls, wss] = [0, 1, 2].map(|i| server.local_addrs()[i]);
    let path = "/mqtt".to_string();
    round_trip(
        ws,
        Transport::WebSocket { path: path.clone() },
        Protocol::V5,
    )
    .await;
    round_trip(tls, Transport::Tls(pki.client_tls()), Protocol::V5).await;
    round_trip(
        wss,
        Transport::SecureWebSocket {
            path,
            tls: pki.client_tls(),
        },
        Protocol::V3_1_1,
    )
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn reload_tls_serves_new_certificates_to_new_connections_only() {
    let old = Pki::new();
    let new = Pki::new();
    let server = start(vec![old.tls_listener()]).await;
    let addr = server.local_addrs()[0];
    let (kept, mut kept_incoming) =
        connect(options(addr, Transport::Tls(old.client_tls()), "kept"))
            .await
            .unwrap();
    kept.subscribe("reload/#", QoS::AtLeastOnce).await.unwrap();

    // A file that cannot be read: nothing changes.
    std::fs::write(old.path("server.key"), "not a key").unwrap();
    let err = server.reload_tls().unwrap_err();
    assert!(err.contains("keyfile"), "{err}");
    round_trip(addr, Transport::Tls(old.client_tls()), Protocol::V5).await;

    // The listener's files now hold the new CA's certificate.
    for f in ["server.pem", "server.key"] {
        std::fs::copy(new.path(f), old.path(f)).unwrap();
    }
    assert_eq!(server.reload_tls().unwrap(), 1);
    round_trip(addr, Transport::Tls(new.client_tls()), Protocol::V5).await;
    let refused = connect(options(addr, Transport::Tls(old.client_tls()), "stale")).await;
    assert!(matches!(refused, Err(Error::Tls(_))), "{refused:?}");

    // The connection made before the reload carries on.
    kept.publish("reload/1", "still", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    let m = kept_incoming
        .next_message_within(WAIT)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.payload, Bytes::from_static(b"still"));
    kept.disconnect().await.unwrap();
    server.shutdown().await;
}

/// `capath`: every CA in the directory is trusted for client certificates
/// (`*.pem`, `*.crt`, and `openssl rehash` names); a CA outside it is not.
#[tokio::test]
async fn capath_trusts_every_ca_in_the_directory() {
    let first = Pki::new();
    let second = Pki::new();
    let outsider = Pki::new();
    let capath = tempfile::tempdir().unwrap();
    std::fs::copy(first.ca_file(), capath.path().join("first.pem")).unwrap();
    std::fs::copy(second.ca_file(), capath.path().join("second.crt")).unwrap();
    // Neither *.pem nor a hashed name: not read.
    std::fs::copy(outsider.ca_file(), capath.path().join("outsider.txt")).unwrap();
    let server = start(vec![ListenerConfig {
        capath: Some(capath.path().to_path_buf()),
        require_certificate: true,
        ..first.tls_listener()
    }])
    .await;
    let addr = server.local_addrs()[0];
    for (pki, name) in [(&first, "one"), (&second, "two")] {
        let (cert, key) = pki.client_cert(name);
        let tls = TlsOptions {
            cert_file: Some(cert),
            key_file: Some(key),
            ..first.client_tls()
        };
        round_trip(addr, Transport::Tls(tls), Protocol::V5).await;
    }
    let (cert, key) = outsider.client_cert("three");
    let tls = TlsOptions {
        cert_file: Some(cert),
        key_file: Some(key),
        ..first.client_tls()
    };
    let refused = tokio::time::timeout(WAIT, connect(options(addr, Transport::Tls(tls), "x")))
        .await
        .unwrap();
    assert!(refused.is_err(), "{refused:?}");
    server.shutdown().await;

    // An empty directory stops the start with an error naming it.
    let empty = tempfile::tempdir().unwrap();
    let listener = ListenerConfig {
        capath: Some(empty.path().to_path_buf()),
        require_certificate: true,
        ..first.tls_listener()
    };
    let e = ferrymq_broker::net::tls::wrapping(&listener, None).unwrap_err();
    assert!(
        e.contains("capath") && e.contains(&empty.path().display().to_string()),
        "{e}"
    );
}

/// TLS options for a client presenting `cert`/`key`.
fn with_cert(pki: &Pki, (cert, key): (PathBuf, PathBuf)) -> TlsOptions {
    TlsOptions {
        cert_file: Some(cert),
        key_file: Some(key),
        ..pki.client_tls()
    }
}

/// Whether a client with `tls` gets through the TLS handshake and CONNECT.
async fn admitted(addr: SocketAddr, tls: &TlsOptions, client_id: &str) -> bool {
    let attempt = tokio::time::timeout(
        WAIT,
        connect(options(addr, Transport::Tls(tls.clone()), client_id)),
    )
    .await
    .unwrap();
    match attempt {
        Ok((client, _)) => {
            // TLS 1.3 reports a refused certificate only at the first read:
            // a round trip proves the session is good.
            let ok = client.subscribe("probe", QoS::AtLeastOnce).await.is_ok();
            let _ = client.disconnect().await;
            ok
        }
        Err(_) => false,
    }
}

/// `crlfile`: revoked client certificates are refused, as are all when the
/// list has expired; SIGHUP (`reload_tls`) reads the list again, and a
/// broken one leaves the last good one in force.
#[tokio::test]
async fn crlfile_refuses_revoked_client_certificates_and_reloads() {
    let pki = Pki::new();
    let serial = |n: u64| move |p: &mut CertificateParams| p.serial_number = Some(n.into());
    let good = with_cert(&pki, pki.client_cert_with("good", serial(1001)));
    let revoked = with_cert(&pki, pki.client_cert_with("revoked", serial(1002)));
    let later = with_cert(&pki, pki.client_cert_with("later", serial(1003)));
    pki.crl("crl.pem", &[1002], 2200);
    let listener = ListenerConfig {
        cafile: Some(pki.ca_file()),
        crlfile: Some(pki.path("crl.pem")),
        require_certificate: true,
        ..pki.tls_listener()
    };
    let server = start(vec![listener.clone()]).await;
    let addr = server.local_addrs()[0];
    assert!(admitted(addr, &good, "good").await);
    assert!(!admitted(addr, &revoked, "revoked").await);

    pki.crl("crl.pem", &[1001, 1002], 2200);
    assert_eq!(server.reload_tls(), Ok(1));
    assert!(!admitted(addr, &good, "good").await);
    assert!(admitted(addr, &later, "later").await);

    std::fs::write(pki.path("crl.pem"), "not a CRL").unwrap();
    let e = server.reload_tls().unwrap_err();
    assert!(e.contains("crlfile"), "{e}");
    assert!(
        !admitted(addr, &good, "good").await,
        "the last good list stays"
    );
    assert!(admitted(addr, &later, "later").await);
    server.shutdown().await;

    // An expired list admits nobody; a broken one stops the start.
    pki.crl("crl.pem", &[], 2021);
    let server = start(vec![listener.clone()]).await;
    assert!(!admitted(server.local_addrs()[0], &later, "later").await);
    server.shutdown().await;
    std::fs::write(pki.path("crl.pem"), "not a CRL").unwrap();
    let config = Config {
        listeners: vec![listener],
        ..test_config()
    };
    let e = Server::start(config).await.unwrap_err();
    assert!(e.to_string().contains("crlfile"), "{e}");
}

/// `disable_client_cert_date_checks`: an expired client certificate is
/// refused, unless the listener says dates do not matter.
#[tokio::test]
async fn disable_client_cert_date_checks_admits_expired_certificates() {
    let pki = Pki::new();
    let expired = with_cert(
        &pki,
        pki.client_cert_with("expired", |p| {
            p.not_before = rcgen::date_time_ymd(2000, 1, 1);
            p.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }),
    );
    let strict = ListenerConfig {
        cafile: Some(pki.ca_file()),
        require_certificate: true,
        ..pki.tls_listener()
    };
    let lenient = ListenerConfig {
        disable_client_cert_date_checks: true,
        ..strict.clone()
    };
    let server = start(vec![strict, lenient]).await;
    let [strict, lenient] = server.local_addrs() else {
        panic!("two listeners");
    };
    assert!(!admitted(*strict, &expired, "expired").await);
    assert!(admitted(*lenient, &expired, "expired").await);
    // Other CAs are still refused.
    let other = Pki::new();
    let stranger = with_cert(&pki, other.client_cert("stranger"));
    assert!(!admitted(*lenient, &stranger, "stranger").await);
    server.shutdown().await;
}

/// A certfile with only the server's certificate, issued by an
/// intermediate CA that the cafile holds: the server sends the
/// intermediate, as Mosquitto (OpenSSL) does, so clients that trust only
/// the root connect.
#[tokio::test]
async fn the_server_chain_is_completed_from_the_ca_files() {
    let root = Pki::new();
    let intermediate_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "ferrymq intermediate CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let intermediate = params
        .signed_by(&intermediate_key, &root.ca, &root.ca_key)
        .unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf = params
        .signed_by(&leaf_key, &intermediate, &intermediate_key)
        .unwrap();
    std::fs::write(root.path("leaf.pem"), leaf.pem()).unwrap();
    std::fs::write(root.path("leaf.key"), leaf_key.serialize_pem()).unwrap();
    std::fs::write(
        root.path("cas.pem"),
        format!("{}{}", intermediate.pem(), root.ca.pem()),
    )
    .unwrap();
    let listener = |cafile: Option<PathBuf>| ListenerConfig {
        certfile: Some(root.path("leaf.pem")),
        keyfile: Some(root.path("leaf.key")),
        cafile,
        ..plain_listener()
    };
    let server = start(vec![listener(Some(root.path("cas.pem"))), listener(None)]).await;
    let [completed, bare] = server.local_addrs() else {
        panic!("two listeners");
    };
    let ca = root.ca_file();
    assert!(tls_handshake(*completed, &ca, rustls::ALL_VERSIONS)
        .await
        .is_ok());
    assert!(tls_handshake(*bare, &ca, rustls::ALL_VERSIONS)
        .await
        .is_err());
    server.shutdown().await;
}

/// `--tls-keylog FILE` (`Config::tls_keylog`): the secrets of TLS 1.2 and
/// 1.3 sessions land in FILE in the NSS key log format Wireshark reads.
#[tokio::test]
async fn tls_keylog_writes_the_session_secrets() {
    let pki = Pki::new();
    let keylog = pki.path("keys.log");
    let server = start_with(Config {
        listeners: vec![pki.tls_listener()],
        tls_keylog: Some(keylog.clone()),
        ..test_config()
    })
    .await;
    let addr = server.local_addrs()[0];
    let ca = pki.ca_file();
    tls_handshake(addr, &ca, &[&rustls::version::TLS13])
        .await
        .unwrap();
    tls_handshake(addr, &ca, &[&rustls::version::TLS12])
        .await
        .unwrap();
    let text = std::fs::read_to_string(&keylog).unwrap();
    for label in [
        "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
        "CLIENT_TRAFFIC_SECRET_0",
        "CLIENT_RANDOM",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("{label} in {text}"));
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 3, "{line}");
        assert_eq!(fields[1].len(), 64, "client random, hex: {line}");
        assert!(fields[2].chars().all(|c| c.is_ascii_hexdigit()), "{line}");
    }
    server.shutdown().await;
}
