//! What the connection driver reads from and writes to. Plain TCP is used
//! as it is, through readiness (`ready`, `try_read_buf`, `try_write`), so an
//! idle plain connection holds no buffer. TLS (rustls) and WebSocket
//! (tungstenite) streams are byte streams with their own buffers; `Buffered`
//! gives them the same readiness interface over a small read and write
//! buffer of its own, so one driver serves every listener. Such connections
//! hold buffers while idle (rustls' and tungstenite's, and ours).
//!
//! The TLS and WebSocket handshakes run here, in the connection's task,
//! under the connect timeout: the accept loop never waits on a client.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Sink, Stream as _};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest, ReadBuf, Ready};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, Instrument};

use crate::broker::Broker;
use crate::net::driver::{self, Identity};
use crate::net::listener::{Endpoint, Stream};
use crate::net::{proxy, x509};

/// Read chunk of a buffered transport.
const READ_CHUNK: usize = 4 * 1024;
/// Output a buffered transport takes before it reports "would block".
const WRITE_LIMIT: usize = 64 * 1024;

/// A byte stream with readiness, as `TcpStream` offers it.
pub(crate) trait Transport: Send + 'static {
    /// Waits until the stream may be read or written, as `interest` asks.
    fn ready(&mut self, interest: Interest) -> impl Future<Output = io::Result<Ready>> + Send + '_;
    /// Appends what is there to `buf`; `WouldBlock` if nothing, 0 at the end.
    fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize>;
    /// Takes what it can of `data` without waiting; `WouldBlock` if nothing.
    fn try_write(&mut self, data: &[u8]) -> io::Result<usize>;
    /// Sends whatever the transport holds back.
    fn flush(&mut self) -> impl Future<Output = io::Result<()>> + Send + '_;
    /// Ends the stream politely (TLS close_notify, WebSocket Close).
    fn close(&mut self) -> impl Future<Output = ()> + Send + '_;
    /// Ends our side of the stream and leaves the client's open: TCP FIN
    /// (`shutdown(Write)`), TLS close_notify, WebSocket Close.
    fn shutdown_write(&mut self) -> impl Future<Output = ()> + Send + '_;
    /// The plain TCP socket underneath, out of the runtime's reactor, for
    /// an event-loop shard (`net::shard`); `Err(self)` for any other
    /// transport, which stays with its task. `Ok(Err(_))`: it was one, and
    /// is gone (the reactor no longer knew it).
    fn into_tcp(self) -> Result<io::Result<std::net::TcpStream>, Self>
    where
        Self: Sized,
    {
        Err(self)
    }
}

/// A stream already closed: what a connection whose socket was lost in a
/// hand-over ends with.
pub(crate) struct Gone;

impl Transport for Gone {
    fn ready(&mut self, _: Interest) -> impl Future<Output = io::Result<Ready>> + Send + '_ {
        std::future::ready(Err(io::ErrorKind::NotConnected.into()))
    }

    fn try_read_buf(&mut self, _: &mut BytesMut) -> io::Result<usize> {
        Ok(0)
    }

    fn try_write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::NotConnected.into())
    }

    fn flush(&mut self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        std::future::ready(Ok(()))
    }

    fn close(&mut self) -> impl Future<Output = ()> + Send + '_ {
        std::future::ready(())
    }

    fn shutdown_write(&mut self) -> impl Future<Output = ()> + Send + '_ {
        std::future::ready(())
    }
}

impl Transport for TcpStream {
    fn ready(&mut self, interest: Interest) -> impl Future<Output = io::Result<Ready>> + Send + '_ {
        TcpStream::ready(self, interest)
    }

    fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        TcpStream::try_read_buf(self, buf)
    }

    fn try_write(&mut self, data: &[u8]) -> io::Result<usize> {
        TcpStream::try_write(self, data)
    }

    fn flush(&mut self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        std::future::ready(Ok(()))
    }

    fn close(&mut self) -> impl Future<Output = ()> + Send + '_ {
        std::future::ready(())
    }

    async fn shutdown_write(&mut self) {
        let _ = tokio::io::AsyncWriteExt::shutdown(self).await;
    }

    fn into_tcp(self) -> Result<io::Result<std::net::TcpStream>, Self> {
        Ok(TcpStream::into_std(self))
    }
}

/// A listener's socket, TCP or Unix, used as it is (readiness, no buffer of
/// its own) on plain listeners, and under TLS and WebSocket otherwise.
impl Transport for Stream {
    async fn ready(&mut self, interest: Interest) -> io::Result<Ready> {
        match self {
            Stream::Tcp(s) => s.ready(interest).await,
            Stream::Unix(s) => s.ready(interest).await,
        }
    }

    fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_read_buf(buf),
            Stream::Unix(s) => s.try_read_buf(buf),
        }
    }

    fn try_write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_write(data),
            Stream::Unix(s) => s.try_write(data),
        }
    }

    fn flush(&mut self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        std::future::ready(Ok(()))
    }

    fn close(&mut self) -> impl Future<Output = ()> + Send + '_ {
        std::future::ready(())
    }

    async fn shutdown_write(&mut self) {
        let _ = AsyncWriteExt::shutdown(self).await;
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, data),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Readiness over an `AsyncRead + AsyncWrite` stream: a read is made while
/// waiting for readability and kept until taken; writes go into a bounded
/// buffer that every wait pushes on.
pub(crate) struct Buffered<S> {
    inner: Box<S>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    needs_flush: bool,
    eof: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Buffered<S> {
    pub(crate) fn new(inner: S) -> Buffered<S> {
        Buffered {
            inner: Box::new(inner),
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            needs_flush: false,
            eof: false,
        }
    }

    /// Pushes buffered output; `Ready` once all of it is written and flushed.
    fn poll_push(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.wbuf.is_empty() {
            match ready!(Pin::new(&mut *self.inner).poll_write(cx, &self.wbuf)) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.wbuf.advance(n),
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        if self.needs_flush {
            ready!(Pin::new(&mut *self.inner).poll_flush(cx))?;
            self.needs_flush = false;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>, interest: Interest) -> Poll<io::Result<Ready>> {
        let mut ready = Ready::EMPTY;
        // Output moves on whatever the caller waits for.
        let pushed = self.poll_push(cx)?;
        if interest.is_writable() && (pushed.is_ready() || self.wbuf.len() < WRITE_LIMIT) {
            ready |= Ready::WRITABLE;
        }
        if interest.is_readable() {
            if self.eof {
                ready |= Ready::READABLE | Ready::READ_CLOSED;
            } else if !self.rbuf.is_empty() {
                ready |= Ready::READABLE;
            } else {
                self.rbuf.reserve(READ_CHUNK);
                match tokio_util::io::poll_read_buf(Pin::new(&mut *self.inner), cx, &mut self.rbuf)
                {
                    Poll::Ready(Ok(0)) => {
                        self.eof = true;
                        ready |= Ready::READABLE | Ready::READ_CLOSED;
                    }
                    Poll::Ready(Ok(_)) => ready |= Ready::READABLE,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
        }
        if ready.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(Ok(ready))
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for Buffered<S> {
    fn ready(&mut self, interest: Interest) -> impl Future<Output = io::Result<Ready>> + Send + '_ {
        std::future::poll_fn(move |cx| self.poll_ready(cx, interest))
    }

    fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        let n = self.rbuf.len();
        if n > 0 {
            if buf.is_empty() {
                std::mem::swap(buf, &mut self.rbuf);
            } else {
                buf.extend_from_slice(&self.rbuf);
                self.rbuf.clear();
            }
            Ok(n)
        } else if self.eof {
            Ok(0)
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    fn try_write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = WRITE_LIMIT.saturating_sub(self.wbuf.len());
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = room.min(data.len());
        self.wbuf
            .extend_from_slice(data.get(..n).unwrap_or_default());
        self.needs_flush = true;
        Ok(n)
    }

    fn flush(&mut self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        std::future::poll_fn(move |cx| self.poll_push(cx))
    }

    async fn close(&mut self) {
        if self.flush().await.is_ok() {
            let _ = self.inner.shutdown().await;
        }
    }

    async fn shutdown_write(&mut self) {
        self.close().await;
    }
}

/// A WebSocket connection as a byte stream: binary frames in, binary
/// frames out. A frame may hold part of a packet or several packets.
pub(crate) struct WsBytes<S> {
    ws: WebSocketStream<S>,
    pending: Bytes,
}

fn ws_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => io::ErrorKind::BrokenPipe.into(),
        e => io::Error::other(e),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsBytes<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = buf.remaining().min(this.pending.len());
                buf.put_slice(&this.pending.split_to(n));
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => this.pending = data,
                // Pings are answered by tungstenite itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text WebSocket frame: MQTT travels in binary frames [MQTT-6.0.0-1]",
                    )))
                }
                Some(Ok(Message::Close(_)))
                | None
                | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                    return Poll::Ready(Ok(()))
                }
                Some(Err(e)) => return Poll::Ready(Err(ws_error(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsBytes<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(ws_error)?;
        Pin::new(&mut this.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(data)))
            .map_err(ws_error)?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(ws_error)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.get_mut().ws).poll_close(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(ws_error(e))),
        }
    }
}

/// How a listener turns an accepted socket into an MQTT byte stream.
pub struct Wrapping {
    /// Replaced by `Server::reload_tls`; connections take a clone when they
    /// start, so a reload never touches an established one.
    pub tls: Option<parking_lot::RwLock<TlsAcceptor>>,
    pub websocket: bool,
    pub identity: IdentitySource,
    /// The settings the acceptor was built from, to build it again.
    pub listener: crate::config::ListenerConfig,
    /// `--tls-keylog`, kept for the same reason.
    pub key_log: Option<Arc<crate::net::tls::KeyLogFile>>,
}

impl std::fmt::Debug for Wrapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wrapping")
            .field("tls", &self.tls.is_some())
            .field("websocket", &self.websocket)
            .field("identity", &self.identity)
            .finish()
    }
}

/// Where the user name of a TLS client comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentitySource {
    /// CONNECT's user name and password (or enhanced authentication).
    Connect,
    /// The client certificate's Common Name (`use_identity_as_username`).
    CommonName,
    /// The client certificate's subject (`use_subject_as_username`).
    Subject,
}

/// Serves one accepted connection of a listener that is not plain TCP: a
/// PROXY header, TLS and WebSocket handshakes (as the listener has them)
/// under the connect timeout, then the driver.
pub(crate) async fn serve_wrapped(
    broker: Arc<Broker>,
    stream: Stream,
    peer: Option<SocketAddr>,
    shutdown: CancellationToken,
    wrapping: Option<Arc<Wrapping>>,
    endpoint: Arc<Endpoint>,
) {
    let span = driver::conn_span(peer);
    async move {
        if let Stream::Tcp(tcp) = &stream {
            if let Err(e) = tcp.set_nodelay(true) {
                debug!(error = %e, "TCP_NODELAY not set");
            }
        }
        let timeout = broker.config.connect_timeout;
        let handshakes = handshakes(&broker, stream, peer, wrapping, &endpoint);
        let wrapped = tokio::select! {
            r = tokio::time::timeout(timeout, Box::pin(handshakes)) => r,
            () = shutdown.cancelled() => return,
        };
        let (wrapped, identity, peer) = match wrapped {
            Err(_) => {
                info!("handshake not done within {timeout:?}; closing");
                crate::metrics::Metrics::add(&broker.metrics.refused.no_connect, 1);
                return;
            }
            Ok(Err(why)) => {
                info!("closing: {why}");
                crate::metrics::Metrics::add(&broker.metrics.refused.no_connect, 1);
                return;
            }
            Ok(Ok(w)) => w,
        };
        match wrapped {
            Wrapped::Plain(io) => {
                driver::connection(broker, io, shutdown, identity, endpoint, peer).await
            }
            Wrapped::Tls(io) => {
                driver::connection(broker, io, shutdown, identity, endpoint, peer).await
            }
            Wrapped::Ws(io) => {
                driver::connection(broker, io, shutdown, identity, endpoint, peer).await
            }
            Wrapped::Wss(io) => {
                driver::connection(broker, io, shutdown, identity, endpoint, peer).await
            }
        }
    }
    .instrument(span)
    .await;
}

/// The PROXY header, then TLS, then the WebSocket upgrade, as the listener
/// has them: the stream to speak MQTT on, who the client is by its
/// certificate, and its address (the proxy's word for it, if any).
async fn handshakes(
    broker: &Broker,
    mut stream: Stream,
    mut peer: Option<SocketAddr>,
    wrapping: Option<Arc<Wrapping>>,
    endpoint: &Endpoint,
) -> Result<(Wrapped, Identity, Option<SocketAddr>), String> {
    let mut identity = Identity::Connect;
    if let Some(version) = endpoint.settings.proxy_protocol {
        let proxied = proxy::read_header(&mut stream, version).await?;
        if let Some(source) = proxied.source {
            tracing::Span::current().record("client", tracing::field::display(source));
            peer = Some(source);
        }
        identity = proxy::identity(&proxied, &endpoint.settings)?;
    }
    let Some(wrapping) = wrapping else {
        return Ok((Wrapped::Plain(stream), identity, peer));
    };
    let origins = &endpoint.settings.websockets_origins;
    let acceptor = wrapping.tls.as_ref().map(|tls| tls.read().clone());
    let wrapped = match acceptor {
        None => {
            let ws = accept_websocket(stream, broker, origins).await?;
            Wrapped::Ws(Buffered::new(ws))
        }
        Some(acceptor) => {
            let tls = acceptor
                .accept(stream)
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            identity = self::identity(&tls, wrapping.identity);
            if wrapping.websocket {
                let ws = accept_websocket(tls, broker, origins).await?;
                Wrapped::Wss(Buffered::new(ws))
            } else {
                Wrapped::Tls(Buffered::new(tls))
            }
        }
    };
    Ok((wrapped, identity, peer))
}

type TlsStream = tokio_rustls::server::TlsStream<Stream>;

enum Wrapped {
    Plain(Stream),
    Tls(Buffered<TlsStream>),
    Ws(Buffered<WsBytes<Stream>>),
    Wss(Buffered<WsBytes<TlsStream>>),
}

/// The user name a verified client certificate gives, as the listener says.
fn identity(tls: &TlsStream, source: IdentitySource) -> Identity {
    let name = |der: &[u8]| match source {
        IdentitySource::Connect => None,
        IdentitySource::CommonName => x509::subject_common_name(der),
        IdentitySource::Subject => x509::subject_rfc2253(der),
    };
    if source == IdentitySource::Connect {
        return Identity::Connect;
    }
    let (_, connection) = tls.get_ref();
    match connection
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|cert| name(cert.as_ref()))
    {
        Some(name) => Identity::Certificate(Arc::from(name)),
        None => Identity::Missing,
    }
}

/// The WebSocket upgrade; refused unless the client offers the `mqtt`
/// subprotocol.
// The callback's error type is tungstenite's (an HTTP response).
#[allow(clippy::result_large_err)]
async fn accept_websocket<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    broker: &Broker,
    origins: &[String],
) -> Result<WsBytes<S>, String> {
    let callback = |request: &Request, mut response: Response| {
        // `websockets_origin`: a browser's Origin must be one of those
        // listed (exactly); clients that send none are not browsers.
        if let Some(origin) = request.headers().get("Origin") {
            let listed = origin
                .to_str()
                .is_ok_and(|o| origins.iter().any(|allowed| allowed == o));
            if !origins.is_empty() && !listed {
                let mut refusal =
                    ErrorResponse::new(Some("Origin not allowed (websockets_origin)".into()));
                *refusal.status_mut() = StatusCode::FORBIDDEN;
                return Err(refusal);
            }
        }
        let offers_mqtt = request
            .headers()
            .get_all("Sec-WebSocket-Protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == "mqtt");
        if !offers_mqtt {
            let mut refusal = ErrorResponse::new(Some(
                "MQTT over WebSocket needs the subprotocol \"mqtt\" (Sec-WebSocket-Protocol)"
                    .into(),
            ));
            *refusal.status_mut() = StatusCode::BAD_REQUEST;
            return Err(refusal);
        }
        response
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
        Ok(response)
    };
    // A frame may carry several packets, but none needs to be much larger
    // than the largest packet.
    let limit = broker.config.max_packet_size.saturating_add(64 * 1024);
    // tungstenite's read buffer is allocated whole for every connection
    // (128 KiB by default, 142 KB of broker memory per idle WebSocket
    // client): it grows when a frame needs more.
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_CHUNK)
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config))
        .await
        .map_err(|e| format!("WebSocket upgrade failed: {e}"))?;
    Ok(WsBytes {
        ws,
        pending: Bytes::new(),
    })
}
