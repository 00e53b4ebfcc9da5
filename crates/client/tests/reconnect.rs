//! Connection loss against a scripted server: resend of unacknowledged
//! QoS 1 messages with DUP after an automatic reconnect, keep-alive
//! timeout, and the events the application sees.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::BytesMut;
use ferrymq_client::{connect, ConnectOptions, Error, Event, QoS, Reconnect};
use ferrymq_codec::{decode, Packet, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);

/// One accepted connection of the scripted server.
struct Peer {
    stream: TcpStream,
    buf: BytesMut,
}

impl Peer {
    async fn accept(listener: &TcpListener, session_present: bool) -> Peer {
        let (stream, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
        let mut peer = Peer {
            stream,
            buf: BytesMut::new(),
        };
        assert!(matches!(peer.recv().await, Packet::Connect(_)));
        peer.stream
            .write_all(&[0x20, 0x02, u8::from(session_present), 0x00])
            .await
            .unwrap();
        peer
    }

    async fn recv(&mut self) -> Packet {
        timeout(WAIT, async {
            loop {
                if let Some(p) = decode(&mut self.buf, Protocol::V3_1_1, 1 << 20).unwrap() {
                    return p;
                }
                let n = self.stream.read_buf(&mut self.buf).await.unwrap();
                assert!(n > 0, "client closed");
            }
        })
        .await
        .expect("packet from the client in time")
    }
}

#[tokio::test]
async fn unacknowledged_qos1_is_resent_with_dup_after_reconnect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let options = ConnectOptions::new("127.0.0.1", port)
        .client_id("resender")
        .clean_start(false)
        .reconnect(Some(Reconnect {
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
        }));
    let (server, connected) = tokio::join!(Peer::accept(&listener, false), connect(options));
    let mut first = server;
    let (client, mut incoming) = connected.unwrap();

    let publishing = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .publish("t", "important", QoS::AtLeastOnce, false)
                .await
        }
    });
    let Packet::Publish(p) = first.recv().await else {
        panic!("PUBLISH expected")
    };
    assert!(!p.dup);
    let id = p.packet_id.unwrap();
    drop(first); // the connection breaks before the PUBACK

    let mut second = Peer::accept(&listener, true).await;
    let Packet::Publish(again) = second.recv().await else {
        panic!("resent PUBLISH expected")
    };
    assert!(again.dup, "resent with DUP");
    assert_eq!(again.packet_id, Some(id), "same packet id");
    assert_eq!(&again.payload[..], b"important");
    // PUBACK
    let [hi, lo] = id.get().to_be_bytes();
    second
        .stream
        .write_all(&[0x40, 0x02, hi, lo])
        .await
        .unwrap();
    timeout(WAIT, publishing).await.unwrap().unwrap().unwrap();

    assert!(matches!(
        incoming.recv().await,
        Some(Event::Disconnected(_))
    ));
    assert!(matches!(
        incoming.recv().await,
        Some(Event::Reconnected {
            session_present: true
        })
    ));
}

#[tokio::test]
async fn no_pingresp_is_a_keep_alive_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let options = ConnectOptions::new("127.0.0.1", port)
        .client_id("pinger")
        .keep_alive(1);
    let (server, connected) = tokio::join!(Peer::accept(&listener, false), connect(options));
    let mut server = server;
    let (_client, mut incoming) = connected.unwrap();
    assert!(matches!(server.recv().await, Packet::PingReq));
    // Never answer: the client gives up one keep-alive period later.
    match timeout(WAIT, incoming.recv()).await.unwrap() {
        Some(Event::Disconnected(Error::Timeout(what))) => assert!(what.contains("PINGRESP")),
        other => panic!("expected a keep-alive timeout, got {other:?}"),
    }
    assert!(incoming.recv().await.is_none());
}

#[tokio::test]
async fn server_that_never_answers_connect_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let options =
        ConnectOptions::new("127.0.0.1", port).connect_timeout(Duration::from_millis(200));
    let err = connect(options).await.unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    drop(listener);
}

#[tokio::test]
async fn lost_connection_without_reconnect_fails_pending_publishes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let options = ConnectOptions::new("127.0.0.1", port).client_id("fails");
    let (server, connected) = tokio::join!(Peer::accept(&listener, false), connect(options));
    let mut server = server;
    let (client, mut incoming) = connected.unwrap();
    let publishing = tokio::spawn({
        let client = client.clone();
        async move { client.publish("t", "x", QoS::ExactlyOnce, false).await }
    });
    assert!(matches!(server.recv().await, Packet::Publish(_)));
    drop(server);
    let result = timeout(WAIT, publishing).await.unwrap().unwrap();
    assert!(matches!(result, Err(Error::ConnectionLost)), "{result:?}");
    assert!(matches!(
        incoming.recv().await,
        Some(Event::Disconnected(Error::ConnectionClosed))
    ));
    assert!(matches!(
        client.publish("t", "x", QoS::AtMostOnce, false).await,
        Err(Error::Closed)
    ));
}
