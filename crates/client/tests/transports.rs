//! TLS, WebSocket and secure WebSocket: the broker has no such listeners
//! yet, so each test puts an in-test acceptor (tokio-rustls with an rcgen
//! certificate, tokio-tungstenite) in front of the in-process broker's TCP
//! port and forwards bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferrymq_client::{connect, ConnectOptions, Error, Protocol, QoS, TlsOptions, Transport};
use ferrymq_testkit::TestBroker;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{crypto::ring, ServerConfig};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(5);

struct Cert {
    pem_file: PathBuf,
    acceptor: TlsAcceptor,
}

/// A self-signed certificate for "localhost", its PEM written to a file.
fn certificate(name: &str) -> Cert {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let pem_file = std::env::temp_dir().join(format!(
        "ferrymq-client-test-{}-{name}.pem",
        std::process::id()
    ));
    std::fs::write(&pem_file, ck.cert.pem()).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(ck.cert.der().to_vec())], key)
        .unwrap();
    Cert {
        pem_file,
        acceptor: TlsAcceptor::from(Arc::new(config)),
    }
}

#[derive(Clone, Copy)]
enum Front {
    Tls,
    Ws,
    Wss,
}

/// Listens on port 0; each connection is unwrapped (TLS and/or WebSocket)
/// and its bytes forwarded to the broker.
async fn front(broker: SocketAddr, kind: Front, acceptor: Option<TlsAcceptor>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let upstream = TcpStream::connect(broker).await.unwrap();
                match kind {
                    Front::Tls => {
                        let Ok(tls) = acceptor.unwrap().accept(tcp).await else {
                            return;
                        };
                        splice(tls, upstream).await;
                    }
                    Front::Ws => ws_splice(tcp, upstream).await,
                    Front::Wss => {
                        let Ok(tls) = acceptor.unwrap().accept(tcp).await else {
                            return;
                        };
                        ws_splice(tls, upstream).await;
                    }
                }
            });
        }
    });
    port
}

async fn splice<S: AsyncRead + AsyncWrite + Unpin>(mut a: S, mut b: TcpStream) {
    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
}

async fn ws_splice<S: AsyncRead + AsyncWrite + Unpin>(stream: S, mut upstream: TcpStream) {
    let callback = |request: &Request, mut response: Response| {
        let asked = request
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(
            asked.as_deref(),
            Some("mqtt"),
            "client asks for the mqtt subprotocol"
        );
        response
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
        Ok(response)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(Message::Binary(data))) => {
                    if upstream.write_all(&data).await.is_err() { return }
                }
                Some(Ok(_)) => {}
                _ => return,
            },
            n = upstream.read(&mut buf) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if ws.send(Message::binary(buf[..n].to_vec())).await.is_err() { return }
                }
            },
        }
    }
}

/// Subscribes and publishes to itself over `transport`.
async fn round_trip(port: u16, transport: Transport, protocol: Protocol) {
    let options = ConnectOptions::new("127.0.0.1", port)
        .protocol(protocol)
        .client_id("over-transport")
        .transport(transport);
    let (client, mut incoming) = connect(options).await.unwrap();
    client.subscribe("x/#", QoS::ExactlyOnce).await.unwrap();
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        client.publish("x/1", "through", qos, false).await.unwrap();
        let m = incoming.next_message_within(WAIT).await.unwrap().unwrap();
        assert_eq!(m.payload, Bytes::from_static(b"through"));
    }
    client.disconnect().await.unwrap();
}

fn tls_options(cert: &Cert) -> TlsOptions {
    TlsOptions {
        ca_file: Some(cert.pem_file.clone()),
        server_name: Some("localhost".into()),
        ..TlsOptions::default()
    }
}

#[tokio::test]
async fn tls_with_a_ca_file() {
    let broker = TestBroker::start().await;
    let cert = certificate("tls");
    let port = front(broker.addr, Front::Tls, Some(cert.acceptor.clone())).await;
    round_trip(port, Transport::Tls(tls_options(&cert)), Protocol::V3_1_1).await;
    round_trip(port, Transport::Tls(tls_options(&cert)), Protocol::V5).await;
}

#[tokio::test]
async fn tls_insecure_skips_verification() {
    let broker = TestBroker::start().await;
    let cert = certificate("insecure");
    let port = front(broker.addr, Front::Tls, Some(cert.acceptor.clone())).await;
    let tls = TlsOptions {
        insecure: true,
        ..TlsOptions::default()
    };
    round_trip(port, Transport::Tls(tls), Protocol::V5).await;
}

#[tokio::test]
async fn tls_with_the_wrong_ca_is_a_tls_error() {
    let broker = TestBroker::start().await;
    let served = certificate("served");
    let other = certificate("other");
    let port = front(broker.addr, Front::Tls, Some(served.acceptor.clone())).await;
    let options =
        ConnectOptions::new("127.0.0.1", port).transport(Transport::Tls(tls_options(&other)));
    let err = connect(options).await.unwrap_err();
    assert!(matches!(err, Error::Tls(_)), "{err:?}");
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[tokio::test]
async fn tls_with_a_missing_ca_file_is_a_tls_error() {
    let options = ConnectOptions::new("127.0.0.1", 1).transport(Transport::Tls(TlsOptions {
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..TlsOptions::default()
    }));
    // Port 1 refuses before TLS is tried, so check the config directly via
    // a listener that accepts.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let options = ConnectOptions {
        port: listener.local_addr().unwrap().port(),
        ..options
    };
    let err = connect(options).await.unwrap_err();
    assert!(
        matches!(err, Error::Tls(ref m) if m.contains("/nonexistent/ca.pem")),
        "{err:?}"
    );
}

#[tokio::test]
async fn websocket() {
    let broker = TestBroker::start().await;
    let port = front(broker.addr, Front::Ws, None).await;
    let ws = Transport::WebSocket {
        path: "/mqtt".into(),
    };
    round_trip(port, ws.clone(), Protocol::V3_1_1).await;
    round_trip(port, ws, Protocol::V5).await;
}

#[tokio::test]
async fn secure_websocket() {
    let broker = TestBroker::start().await;
    let cert = certificate("wss");
    let port = front(broker.addr, Front::Wss, Some(cert.acceptor.clone())).await;
    let wss = Transport::SecureWebSocket {
        path: "/mqtt".into(),
        tls: tls_options(&cert),
    };
    round_trip(port, wss, Protocol::V5).await;
}
