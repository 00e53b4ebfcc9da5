//! Opening a connection (TCP, TLS, WebSocket, secure WebSocket) and moving
//! bytes over it. WebSocket frames are unwrapped here, so the connection
//! task above sees one byte stream whatever the transport.

use std::sync::Arc;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::options::{ConnectOptions, TlsOptions, Transport};
use crate::{tls, Error};

/// A byte stream: TCP or TLS.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}

/// An open connection to the server.
pub(crate) enum Connection {
    Stream(Box<dyn ByteStream>),
    WebSocket(Box<WebSocketStream<Box<dyn ByteStream>>>),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Connection::Stream(_) => "Connection::Stream",
            Connection::WebSocket(_) => "Connection::WebSocket",
        })
    }
}

impl Connection {
    /// Reads what is available into `buf`; 0 means the server closed.
    /// Cancel-safe: nothing is lost if the future is dropped.
    pub(crate) async fn read(&mut self, buf: &mut BytesMut) -> Result<usize, Error> {
        match self {
            Connection::Stream(s) => {
                buf.reserve(8 * 1024);
                s.read_buf(buf).await.map_err(|e| Error::io("reading", e))
            }
            Connection::WebSocket(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Binary(data))) => {
                        buf.extend_from_slice(&data);
                        if !data.is_empty() {
                            return Ok(data.len());
                        }
                    }
                    // Pings are answered by tungstenite itself.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Text(_))) => {
                        return Err(Error::Protocol(
                            "text frame on an MQTT WebSocket".to_string(),
                        ))
                    }
                    Some(Ok(Message::Close(_))) | None => return Ok(0),
                    Some(Err(e)) => return Err(Error::WebSocket(e.to_string())),
                }
            },
        }
    }

    pub(crate) async fn write_all(&mut self, data: &[u8]) -> Result<(), Error> {
        match self {
            Connection::Stream(s) => {
                s.write_all(data)
                    .await
                    .map_err(|e| Error::io("writing", e))?;
                s.flush().await.map_err(|e| Error::io("writing", e))
            }
            Connection::WebSocket(ws) => ws
                .send(Message::binary(data.to_vec()))
                .await
                .map_err(|e| Error::WebSocket(e.to_string())),
        }
    }

    pub(crate) async fn shutdown(&mut self) {
        match self {
            Connection::Stream(s) => {
                let _ = s.shutdown().await;
            }
            Connection::WebSocket(ws) => {
                let _ = WebSocketStream::close(ws.as_mut(), None).await;
            }
        }
    }
}

/// Opens a TCP or TLS byte stream to `options.host:port`, with no MQTT
/// on it yet: for tools that speak the protocol themselves (the bench
/// tool's load generator, which batches packets in ways a client handle
/// cannot). WebSocket transports are refused here.
pub async fn open_stream(options: &ConnectOptions) -> Result<Box<dyn ByteStream>, Error> {
    match open(options).await? {
        Connection::Stream(stream) => Ok(stream),
        Connection::WebSocket(_) => Err(Error::InvalidArgument(
            "a raw byte stream is TCP or TLS, not WebSocket".into(),
        )),
    }
}

/// Opens the transport (not yet MQTT's CONNECT).
pub(crate) async fn open(options: &ConnectOptions) -> Result<Connection, Error> {
    let addr = (options.host.as_str(), options.port);
    let tcp = TcpStream::connect(addr).await.map_err(|e| {
        Error::io(
            format!("connecting to {}:{}", options.host, options.port),
            e,
        )
    })?;
    let _ = tcp.set_nodelay(true);
    match &options.transport {
        Transport::Tcp => Ok(Connection::Stream(Box::new(tcp))),
        Transport::Tls(tls) => Ok(Connection::Stream(wrap_tls(tcp, &options.host, tls).await?)),
        Transport::WebSocket { path } => {
            let ws = websocket(Box::new(tcp), "ws", options, path).await?;
            Ok(Connection::WebSocket(Box::new(ws)))
        }
        Transport::SecureWebSocket { path, tls } => {
            let stream = wrap_tls(tcp, &options.host, tls).await?;
            let ws = websocket(stream, "wss", options, path).await?;
            Ok(Connection::WebSocket(Box::new(ws)))
        }
    }
}

async fn wrap_tls(
    tcp: TcpStream,
    host: &str,
    options: &TlsOptions,
) -> Result<Box<dyn ByteStream>, Error> {
    let config = tls::client_config(options)?;
    let name = options.server_name.as_deref().unwrap_or(host).to_string();
    let server_name = ServerName::try_from(name.clone())
        .map_err(|_| Error::Tls(format!("'{name}' is not a valid server name")))?;
    let stream = TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| Error::Tls(tls::describe_io(&e)))?;
    Ok(Box::new(stream))
}

async fn websocket(
    stream: Box<dyn ByteStream>,
    scheme: &str,
    options: &ConnectOptions,
    path: &str,
) -> Result<WebSocketStream<Box<dyn ByteStream>>, Error> {
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let host = if options.host.contains(':') {
        format!("[{}]", options.host)
    } else {
        options.host.clone()
    };
    let url = format!("{scheme}://{host}:{}{path}", options.port);
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| Error::InvalidArgument(format!("WebSocket URL {url}: {e}")))?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
    let (ws, _response) = tokio_tungstenite::client_async(request, stream)
        .await
        .map_err(|e| Error::WebSocket(e.to_string()))?;
    Ok(ws)
}
