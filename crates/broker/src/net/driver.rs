//! A connection's life: its handshake in a task of its own, then rounds of
//! reading and decoding every packet a read brings, handing them to the
//! protocol logic, draining the session's mailbox into one write buffer and
//! writing it with as few syscalls as it can ([`Live`]), in an event-loop
//! shard for plain TCP (`net::shard`) or in this task's loop for the other
//! transports (keep-alive, kicks and shutdown are branches of one
//! `select!` there), then its goodbye in a task again.
//!
//! Buffers are allocated only while there is something in them: an idle
//! connection waits for readability without a read buffer and keeps no
//! write buffer, which is what makes idle connections cheap.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use ferrymq_codec::{decode, FixedHeader, Packet, Protocol, ReasonCode};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, trace, Instrument};

use crate::config::ListenerConfig;
use crate::net::listener::{Endpoint, Permits};
use crate::net::shard::{self, HandOver};
use crate::net::transport::Gone;

use crate::broker::Broker;
use crate::handshake::{self, Accepted};
use crate::metrics::{Metrics, Tally};
use crate::net::enhanced_auth;
use crate::net::transport::Transport;
use crate::protocol::{will_message, Close, Connection, WRITE_HIGH_WATER};
use crate::registry::{ConnectionInfo, Kick, Presence};

/// Smallest read buffer allocated when data arrives.
pub(crate) const READ_CHUNK: usize = 4 * 1024;
/// Packets handled between two yields to the scheduler.
pub(crate) const FAIR_SHARE: usize = 64;
/// Above this much unsent output, stop reading from the client until it
/// drains: a client that writes but never reads cannot grow us unbounded.
const WRITE_BACKPRESSURE: usize = 1024 * 1024;

/// Who the client is before CONNECT says it: TLS listeners with
/// `use_identity_as_username` / `use_subject_as_username` take the user
/// name from the verified client certificate.
#[derive(Debug, Clone)]
pub(crate) enum Identity {
    /// CONNECT's user name and password (or enhanced authentication) decide.
    Connect,
    /// The certificate names this user; CONNECT's credentials are ignored.
    Certificate(Arc<str>),
    /// The listener wants a certificate's name and the client gave none.
    Missing,
}

/// The span every connection's log lines carry: the socket's peer (none
/// on a Unix socket), the client's address a PROXY header gives, the
/// client id once known.
pub(crate) fn conn_span(peer: Option<SocketAddr>) -> tracing::Span {
    let peer = tracing::field::display(Peer(peer));
    info_span!(
        "conn",
        peer,
        client = tracing::field::Empty,
        client_id = tracing::field::Empty
    )
}

struct Peer(Option<SocketAddr>);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("unix"),
        }
    }
}

/// Serves one accepted TCP connection to its end.
pub async fn serve(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: Option<SocketAddr>,
    shutdown: CancellationToken,
    endpoint: Arc<Endpoint>,
    permits: Permits,
) {
    let span = conn_span(peer);
    async move {
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error = %e, "TCP_NODELAY not set");
        }
        // Not through `connection`, and the peer asked again rather than
        // kept: a handshake task stays small (a connection storm has
        // thousands in flight), and until its hand-over to a shard, or for
        // good on a transport that stays in its task, the future holds
        // whatever it captures.
        let peer = stream.peer_addr().ok();
        let mut io = Io {
            stream,
            rbuf: BytesMut::new(),
        };
        let accepted = Box::pin(open(
            &broker,
            &mut io,
            &shutdown,
            Identity::Connect,
            endpoint,
            peer,
        ))
        .await;
        if let Some(accepted) = accepted {
            tracing::Span::current().record("client_id", &*accepted.client_id);
            run(broker, io, accepted, shutdown, Some(permits)).await;
        }
    }
    .instrument(span)
    .await;
}

/// Serves a connection over any transport, from CONNECT to its end.
pub(crate) async fn connection<T: Transport>(
    broker: Arc<Broker>,
    stream: T,
    shutdown: CancellationToken,
    identity: Identity,
    endpoint: Arc<Endpoint>,
    peer: Option<SocketAddr>,
) {
    let mut io = Io {
        stream,
        rbuf: BytesMut::new(),
    };
    let accepted = Box::pin(open(&broker, &mut io, &shutdown, identity, endpoint, peer)).await;
    if let Some(accepted) = accepted {
        tracing::Span::current().record("client_id", &*accepted.client_id);
        run(broker, io, accepted, shutdown, None).await;
    }
}

/// The CONNECT handshake, boxed by callers: its state is large and
/// short-lived, and inline it would set the size of every connection's task
/// for good. Ends the stream politely when the connection is refused.
async fn open<T: Transport>(
    broker: &Arc<Broker>,
    io: &mut Io<T>,
    shutdown: &CancellationToken,
    identity: Identity,
    endpoint: Arc<Endpoint>,
    peer: Option<SocketAddr>,
) -> Option<Accepted> {
    let accepted = handshake(broker, io, shutdown, identity, endpoint, peer).await;
    if accepted.is_none() {
        // TLS close_notify, WebSocket Close; nothing for TCP.
        let _ = tokio::time::timeout(Duration::from_secs(1), io.stream.close()).await;
    }
    accepted
}

/// Reads CONNECT under the deadline and answers it; `None` if the
/// connection is to be closed.
async fn handshake<T: Transport>(
    broker: &Arc<Broker>,
    io: &mut Io<T>,
    shutdown: &CancellationToken,
    identity: Identity,
    endpoint: Arc<Endpoint>,
    peer: Option<SocketAddr>,
) -> Option<Accepted> {
    let connect = tokio::select! {
        r = tokio::time::timeout(broker.config.connect_timeout, read_connect(io, broker, &endpoint.settings)) => r,
        () = shutdown.cancelled() => return None,
    };
    let connect = match connect {
        Err(_) => {
            info!(
                "no CONNECT within {:?}; closing",
                broker.config.connect_timeout
            );
            Metrics::add(&broker.metrics.refused.no_connect, 1);
            return None;
        }
        Ok(Err(why)) => {
            info!("closing before CONNECT: {why}");
            Metrics::add(&broker.metrics.refused.no_connect, 1);
            return None;
        }
        Ok(Ok(connect)) => connect,
    };
    // The CONNECT's bytes are copied out where kept (see handshake), so
    // an idle connection holds no read buffer from here on.
    let protocol = connect.protocol;
    let identity = match identity {
        Identity::Connect => None,
        Identity::Certificate(name) => Some(name),
        Identity::Missing => {
            info!("refused: the listener takes the user name from a client certificate, and there is none");
            Metrics::add(&broker.metrics.refused.not_authorized, 1);
            let refused = handshake::Refused::new(
                connect.client_id.as_str(),
                protocol,
                ReasonCode::NotAuthorized,
                "",
            );
            refuse(io, &refused, &endpoint.settings).await;
            return None;
        }
    };
    // A certificate's name replaces every credential CONNECT carries.
    let authenticated = if identity.is_some() {
        Ok(None)
    } else {
        tokio::time::timeout(
            broker.config.connect_timeout,
            enhanced_auth::authenticate(broker, &endpoint.security, io, &connect),
        )
        .await
        .unwrap_or(Err(ReasonCode::UnspecifiedError))
    };
    io.shrink();
    let authenticated = match authenticated {
        Ok(a) => a,
        Err(reason) => {
            info!(%reason, "enhanced authentication failed");
            Metrics::add(broker.metrics.refused.counter(reason), 1);
            let refused = handshake::Refused::new(
                connect.client_id.as_str(),
                protocol,
                reason,
                "enhanced authentication failed",
            );
            refuse(io, &refused, &endpoint.settings).await;
            return None;
        }
    };
    match handshake::accept(broker, *connect, authenticated, identity, endpoint.clone()).await {
        Ok(accepted) => {
            broker.registry.describe(
                &accepted.client_id,
                accepted.connection_id,
                ConnectionInfo {
                    session: accepted.connection.session.shared.clone(),
                    peer,
                    protocol,
                    keep_alive: accepted.keep_alive,
                    username: accepted.connection.username.clone(),
                    connected_at: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                },
            );
            Some(accepted)
        }
        Err(refused) => {
            info!(client_id = %refused.client_id, reason = %refused.reason, "connection refused: {}", refused.detail);
            Metrics::add(broker.metrics.refused.counter(refused.reason), 1);
            refuse(io, &refused, &endpoint.settings).await;
            None
        }
    }
}

/// Sends the refusing CONNACK, if the refusal has one.
async fn refuse<T: Transport>(
    io: &mut Io<T>,
    refused: &handshake::Refused,
    listener: &ListenerConfig,
) {
    if !refused.answered {
        return;
    }
    let mut out = BytesMut::new();
    let _ = ferrymq_codec::encode(&refused.connack(listener), refused.protocol, &mut out);
    let _ = io.write_all(&mut out).await;
}

pub(crate) struct Io<T = TcpStream> {
    pub(crate) stream: T,
    pub(crate) rbuf: BytesMut,
}

impl<T: Transport> Io<T> {
    /// The bytes read and not yet decoded.
    pub(crate) fn buffer(&mut self) -> &mut BytesMut {
        &mut self.rbuf
    }

    /// Waits for data and reads what is there; `Ok(0)` at end of stream.
    pub(crate) async fn read_some(&mut self) -> io::Result<usize> {
        loop {
            self.stream.ready(Interest::READABLE).await?;
            if let Some(n) = self.try_read()? {
                return Ok(n);
            }
        }
    }

    /// Reads what the socket holds, allocating the buffer only now that
    /// there is data; `None` if the readiness was spurious.
    fn try_read(&mut self) -> io::Result<Option<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 2 {
            self.rbuf.reserve(READ_CHUNK);
        }
        match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes as much of `out` as the socket takes without waiting.
    fn write_now(&mut self, out: &mut BytesMut) -> io::Result<()> {
        while !out.is_empty() {
            match self.stream.try_write(out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => out.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub(crate) async fn write_all(&mut self, out: &mut BytesMut) -> io::Result<()> {
        while !out.is_empty() {
            self.stream.ready(Interest::WRITABLE).await?;
            self.write_now(out)?;
        }
        self.stream.flush().await
    }

    /// Lets go of an empty read buffer, so an idle connection holds none.
    pub(crate) fn shrink(&mut self) {
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
        }
    }
}

/// The protocol of a CONNECT whose fixed header, protocol name and level
/// are in `buf`, so that a refused CONNECT is answered in its version:
/// MQTT 5 only for the name `MQTT` with level 5. Anything else is answered
/// as 3.1.1 where an answer is due (a CONNACK in the MQTT 5 format to a
/// 3.1.1 client, or to garbage, is a malformed packet to it).
fn sniff_protocol(buf: &[u8]) -> Option<Protocol> {
    let header = FixedHeader::parse(buf).ok()??;
    let body = buf.get(header.header_len..)?;
    match body.get(..7)? {
        [0, 4, b'M', b'Q', b'T', b'T', 5] => Some(Protocol::V5),
        _ => Some(Protocol::V3_1_1),
    }
}

async fn read_connect<T: Transport>(
    io: &mut Io<T>,
    broker: &Broker,
    listener: &ListenerConfig,
) -> Result<Box<ferrymq_codec::Connect>, String> {
    loop {
        // Anything but CONNECT is refused from its first byte, without
        // waiting for the rest ([MQTT-3.1.0-1]).
        if io.rbuf.first().is_some_and(|&b| b != 0x10) {
            return Err("first packet is not CONNECT".into());
        }
        // Read before decoding, which consumes the packet's bytes.
        let sniffed = sniff_protocol(&io.rbuf);
        match decode(
            &mut io.rbuf,
            Protocol::V3_1_1,
            broker.config.max_packet_size,
        ) {
            Ok(Some(Packet::Connect(connect))) => return Ok(connect),
            Ok(Some(other)) => {
                return Err(format!(
                    "first packet is {}, not CONNECT",
                    other.packet_type()
                ))
            }
            Ok(None) => {}
            Err(e) => {
                let reply = match &e {
                    // An unknown level gets the 3.1.1 refusal ([MQTT-3.1.2-2]).
                    ferrymq_codec::Error::UnsupportedProtocolLevel(_) => {
                        Some((Protocol::V3_1_1, ReasonCode::UnsupportedProtocolVersion))
                    }
                    _ => match sniffed {
                        Some(Protocol::V5) => Some((Protocol::V5, e.reason_code())),
                        _ => None,
                    },
                };
                if let Some((protocol, reason)) = reply {
                    let refused = handshake::Refused::new("", protocol, reason, "");
                    refuse(io, &refused, listener).await;
                }
                return Err(format!("bad CONNECT: {e}"));
            }
        }
        match io.read_some().await {
            Ok(0) => return Err("closed by peer".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Serves an accepted connection to its end. A plain TCP connection is
/// handed to an event-loop shard once its CONNACK is out (see
/// `net::shard`): no task waits on it while it idles. Any other is served
/// by this task's loop.
async fn run<T: Transport>(
    broker: Arc<Broker>,
    mut io: Io<T>,
    accepted: Accepted,
    shutdown: CancellationToken,
    permits: Option<Permits>,
) {
    let mut live = Live::start(&broker, accepted);
    // Packets the client sent right behind CONNECT, already read.
    let first = live.input(&mut io.rbuf, &broker, live.last_read);
    io.shrink();
    let close = match first {
        Err(close) => close,
        Ok(_) => match shard::hand_over(io, live, permits) {
            HandOver::Taken => return,
            HandOver::Lost(live, close, permits) => {
                let gone = Io {
                    stream: Gone,
                    rbuf: BytesMut::new(),
                };
                live.finish(broker, gone, close, shutdown).await;
                drop(permits);
                return;
            }
            HandOver::Kept(back, kept, permits) => {
                io = back;
                live = kept;
                let close = live.serve(&broker, &mut io, &shutdown).await;
                live.finish(broker, io, close, shutdown).await;
                drop(permits);
                return;
            }
        },
    };
    live.finish(broker, io, close, shutdown).await;
}

/// A connection after its CONNACK: what its task, or its shard, holds
/// between two rounds of reading, handling and writing.
pub(crate) struct Live {
    /// Inline: a shard keeps the whole `Live` in one box.
    pub(crate) connection: Connection,
    pub(crate) last_read: Instant,
    /// Effective keep-alive in seconds (0: none).
    keep_alive: u16,
    /// Packets read and not yet handled, left in the buffer by a pause
    /// (see `Connection::blocked`).
    pub(crate) leftover: bool,
    /// The client id, the connection's number and its presence (kicked by
    /// a takeover or the admin API). Whatever happens, even a panic, the
    /// registry slot is released and a waiting takeover is let through.
    slot_guard: SlotGuard,
}

/// What a live connection waits for after a round.
pub(crate) struct Waits {
    /// The socket is to be read: not paused, output not backed up.
    pub(crate) reading: bool,
    /// Paused: a subscriber this client feeds is full, or its store writes
    /// outran the disk. Not read meanwhile, and not blamed for the silence.
    pub(crate) paused: bool,
    /// When to look again: the instant a full queue would count as stalled
    /// while paused, else the keep-alive deadline.
    pub(crate) deadline: Option<Instant>,
}

impl Live {
    fn start(broker: &Arc<Broker>, accepted: Accepted) -> Live {
        let Accepted {
            connection,
            client_id,
            presence,
            connection_id,
            keep_alive,
        } = accepted;
        let slot_guard = SlotGuard {
            broker: broker.clone(),
            client_id: client_id.clone(),
            connection_id,
            presence,
        };
        connection.session.shared.mailbox.set_online(true);
        broker.metrics.client_connected();
        info!(protocol = %connection.protocol, keep_alive, "client connected");
        Live {
            connection: *connection,
            last_read: Instant::now(),
            keep_alive,
            leftover: false,
            slot_guard,
        }
    }

    pub(crate) fn client_id(&self) -> &str {
        &self.slot_guard.client_id
    }

    /// [MQTT-3.1.2-24]: one and a half times the keep-alive.
    fn keep_alive_limit(&self) -> Option<Duration> {
        (self.keep_alive > 0).then(|| Duration::from_millis(u64::from(self.keep_alive) * 1500))
    }

    /// Handles the packets read into `rbuf`, up to a pause; returns how
    /// many.
    pub(crate) fn input(
        &mut self,
        rbuf: &mut BytesMut,
        broker: &Broker,
        now: Instant,
    ) -> Result<usize, Close> {
        let (n, stopped) = process_input(&mut self.connection, rbuf, broker, now)?;
        self.leftover = stopped;
        Ok(n)
    }

    /// One round of work between two waits: input left by a pause (once
    /// it is lifted), queued deliveries, store writes, acknowledgements,
    /// counters. Returns how many packets it handled, and whether queued
    /// deliveries were left behind by a full output buffer.
    pub(crate) fn round(
        &mut self,
        rbuf: &mut BytesMut,
        broker: &Broker,
        now: Instant,
    ) -> Result<(usize, bool), Close> {
        let mut handled = 0;
        if self.leftover && self.connection.blocked(now).is_none() {
            handled = self.input(rbuf, broker, now)?;
        }
        let connection = &mut self.connection;
        let more_queued = connection.drain_mailbox(now);
        connection.flush_store_ops();
        connection.flush_acks();
        // Counted before the replies go out, so a client that sees its
        // answer also sees it counted in `$SYS` and `/metrics`.
        Tally::flush_thread(&broker.metrics);
        Ok((handled, more_queued))
    }

    /// After a round's writes: what to wait for.
    pub(crate) fn waits(&mut self, now: Instant) -> Waits {
        let out = &mut self.connection.out;
        if out.is_empty() && out.capacity() > 2 * READ_CHUNK {
            *out = BytesMut::new();
        }
        let (paused, deadline) = match self.connection.blocked(now) {
            Some(stall) => (true, stall),
            None => (
                false,
                self.keep_alive_limit().map(|limit| self.last_read + limit),
            ),
        };
        if paused {
            self.last_read = now;
        }
        self.connection.let_go();
        Waits {
            reading: self.connection.out.len() < WRITE_BACKPRESSURE && !paused,
            paused,
            deadline,
        }
    }

    /// When to look at the connection again if nothing happens (see
    /// [`Waits::deadline`]).
    pub(crate) fn deadline(&mut self, now: Instant) -> Option<Instant> {
        match self.connection.blocked(now) {
            Some(stall) => stall,
            None => self.keep_alive_limit().map(|limit| self.last_read + limit),
        }
    }

    /// Whether the client has been silent past its keep-alive at `now`.
    pub(crate) fn timed_out(&self, now: Instant) -> bool {
        self.keep_alive_limit()
            .is_some_and(|limit| now.saturating_duration_since(self.last_read) >= limit)
    }

    /// Why the connection is to end now, if it was kicked or the broker
    /// is shutting down.
    pub(crate) fn kicked(&self, shutdown: &CancellationToken) -> Option<Close> {
        if shutdown.is_cancelled() {
            return Some(Close::ServerShutdown);
        }
        self.slot_guard.presence.kicked().map(|kick| match kick {
            Kick::Administrative => Close::Administrative,
            Kick::TakenOver => Close::TakenOver,
        })
    }

    /// The task's loop: rounds, writes, and waits for the socket, the
    /// mailbox, a kick or a deadline.
    async fn serve<T: Transport>(
        &mut self,
        broker: &Arc<Broker>,
        io: &mut Io<T>,
        shutdown: &CancellationToken,
    ) -> Close {
        let shared = self.connection.session.shared.clone();
        let mailbox = &shared.mailbox;
        let mut since_yield = 0;
        loop {
            // A kick wakes the mailbox, which brings us round here.
            if let Some(close) = self.kicked(shutdown) {
                return close;
            }
            if since_yield >= FAIR_SHARE {
                Tally::flush_thread(&broker.metrics);
                // Fairness: a client that floods us must not hold a worker
                // thread while others wait ([issue 3]: Mosquitto served one
                // publisher 60k messages to the others' 330).
                since_yield = 0;
                tokio::task::yield_now().await;
            }
            let now = Instant::now();
            let more_queued = match self.round(&mut io.rbuf, broker, now) {
                Ok((n, more)) => {
                    since_yield += n;
                    more
                }
                Err(close) => return close,
            };
            io.shrink();
            if let Err(e) = io.write_now(&mut self.connection.out) {
                return Close::Lost(e.to_string());
            }
            let waits = self.waits(now);
            let writing = !self.connection.out.is_empty();
            // One readiness future for both directions keeps the task small.
            let interest = match (waits.reading, writing) {
                (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
                (true, false) => Some(Interest::READABLE),
                (false, true) => Some(Interest::WRITABLE),
                (false, false) => None,
            };
            // Counted on this thread; the task may wake on another.
            Tally::flush_thread(&broker.metrics);
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Close::ServerShutdown,
                // Not polled without an interest: a paused connection with
                // nothing to write waits for a wake-up alone.
                r = io.stream.ready(interest.unwrap_or(Interest::READABLE)), if interest.is_some() => {
                    let ready = match r {
                        Ok(ready) => ready,
                        Err(e) => return Close::Lost(e.to_string()),
                    };
                    if !waits.reading || !(ready.is_readable() || ready.is_read_closed()) {
                        continue;
                    }
                    match io.try_read() {
                        Ok(None) => {
                            io.shrink();
                            continue;
                        }
                        Ok(Some(0)) => return Close::Lost("closed by peer".into()),
                        Ok(Some(n)) => Tally::count(|t| t.bytes_received += n as u64),
                        Err(e) => return Close::Lost(e.to_string()),
                    }
                    self.last_read = Instant::now();
                    let result = self.input(&mut io.rbuf, broker, self.last_read);
                    io.shrink();
                    match result {
                        Ok(n) => since_yield += n,
                        Err(close) => return close,
                    }
                }
                // New deliveries, acknowledgements the store has released,
                // or room in a queue this connection waits for.
                () = mailbox.notified() => {}
                // Queued deliveries left behind by a full buffer that has since
                // been written: go round again, after the branches above had
                // their turn.
                () = std::future::ready(()), if more_queued && self.connection.out.len() < WRITE_HIGH_WATER => {}
                () = sleep_until(waits.deadline) => {
                    if !waits.paused && self.timed_out(Instant::now()) {
                        return Close::KeepAliveTimeout;
                    }
                }
            }
        }
    }

    /// Ends the connection; its state lives in a boxed future only while
    /// it ends (inline it would add to every connection's task for good).
    pub(crate) async fn finish<T: Transport>(
        self,
        broker: Arc<Broker>,
        io: Io<T>,
        close: Close,
        shutdown: CancellationToken,
    ) {
        let Live {
            connection,
            slot_guard,
            ..
        } = self;
        let ending = Ending {
            client_id: slot_guard.client_id.clone(),
            connection_id: slot_guard.connection_id,
            broker,
            shutdown,
            slot_guard,
        };
        Box::pin(finish(ending, io, connection, close)).await;
    }
}

/// What [`finish`] needs besides the socket, the state and the reason.
struct Ending {
    broker: Arc<Broker>,
    client_id: Arc<str>,
    connection_id: u64,
    shutdown: CancellationToken,
    slot_guard: SlotGuard,
}

/// Ends a connection: its reason code, the session parked or discarded,
/// the will, then the socket.
async fn finish<T: Transport>(
    ending: Ending,
    mut io: Io<T>,
    mut connection: Connection,
    close: Close,
) {
    let Ending {
        broker,
        client_id,
        connection_id,
        shutdown,
        slot_guard,
    } = ending;
    let shared = connection.session.shared.clone();
    let mailbox = &shared.mailbox;
    connection.resume(Instant::now());
    connection.session.merge_resend();

    match &close {
        Close::Disconnect { .. } => info!("client disconnected"),
        Close::Violation { .. } => {
            Metrics::add(&broker.metrics.protocol_errors, 1);
            info!("closing connection: {close}");
        }
        _ => info!("connection closed: {close}"),
    }
    Metrics::add(broker.metrics.disconnects.counter(&close), 1);
    connection.say_goodbye(&close);
    Tally::flush_thread(&broker.metrics);
    // Best effort: the reason code, bounded so a client that does not read
    // cannot hold the task.
    let _ = Box::pin(tokio::time::timeout(
        LINGER_TIME,
        io.write_all(&mut connection.out),
    ))
    .await;
    connection.flush_store_ops();
    let now = Instant::now();
    let will = connection.take_will(&close);
    let source = will
        .as_ref()
        .filter(|w| w.retain)
        .and_then(|_| connection.source());
    let dropped = mailbox.set_online(false);
    trace!(dropped, "QoS 0 messages dropped at disconnect");
    Metrics::add(&broker.metrics.dropped_qos0_offline, dropped as u64);
    broker
        .metrics
        .clients_connected
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    let mut session = connection.session;
    // Whatever reached us through share groups and is not done goes to
    // members still connected.
    broker.release_shared(&mut session);
    // `persistent_client_expiration` bounds sessions that would never end.
    session.expiry_interval = broker.session_lifetime(session.expiry_interval);
    if let Some(will) = will {
        // The will waits for its delay, or until the session ends if sooner.
        let delay = will
            .properties
            .will_delay_interval()
            .unwrap_or(0)
            .min(session.expiry_interval);
        let mut message = will_message(will, now);
        message.source = source;
        let message = Arc::new(message);
        if delay == 0 {
            broker.publish(message);
        } else {
            session.delayed_will = Some(Box::new(crate::will::schedule(
                &broker,
                client_id.clone(),
                message,
                Duration::from_secs(u64::from(delay)),
                crate::persist::unix_deadline(delay),
                &shutdown,
            )));
        }
    }
    if session.is_persistent() {
        let expires_at = if session.expiry_interval == u32::MAX {
            0
        } else {
            crate::persist::unix_deadline(session.expiry_interval)
        };
        broker.store_session(&session, expires_at);
        broker
            .registry
            .release(&client_id, connection_id, Some(session), now);
    } else {
        broker.discard_session(&mut session);
        broker
            .registry
            .release(&client_id, connection_id, None, now);
    }
    // The session is parked or gone and a takeover may proceed; the socket
    // is ended last.
    drop(slot_guard);
    let linger = server_closes(&close);
    drop(close);
    let _ = Box::pin(tokio::time::timeout(LINGER_TIME, goodbye(&mut io, linger))).await;
}

/// Ends the stream (TLS close_notify, WebSocket Close). With `linger` (the
/// broker ends the connection, with a reason code for MQTT 5), it first
/// ends only its own side and reads and discards what the client still
/// sends, up to [`LINGER_BYTES`] and within the caller's bound: a socket
/// closed with unread data resets the connection, and a client still
/// writing (one that just passed our Receive Maximum, say) would get
/// ECONNRESET instead of the reason code it has not read yet.
async fn goodbye<T: Transport>(io: &mut Io<T>, linger: bool) -> io::Result<()> {
    if linger {
        io.stream.shutdown_write().await;
        let mut discarded = 0;
        let mut scratch = BytesMut::new();
        while discarded < LINGER_BYTES {
            io.stream.ready(Interest::READABLE).await?;
            scratch.clear();
            scratch.reserve(READ_CHUNK);
            match io.stream.try_read_buf(&mut scratch) {
                Ok(0) => break,
                Ok(n) => discarded += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
    io.stream.close().await;
    Ok(())
}

/// Whether the broker ends the connection (so it lingers, see `goodbye`).
fn server_closes(close: &Close) -> bool {
    !matches!(close, Close::Disconnect { .. } | Close::Lost(_))
}

/// How long a closing connection may take to say goodbye and linger.
const LINGER_TIME: Duration = Duration::from_secs(1);
/// The most a lingering connection reads and discards.
const LINGER_BYTES: usize = 64 * 1024;

struct SlotGuard {
    broker: Arc<Broker>,
    client_id: Arc<str>,
    connection_id: u64,
    presence: Arc<Presence>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        // A no-op when the session was already parked or removed.
        self.broker
            .registry
            .release(&self.client_id, self.connection_id, None, Instant::now());
        self.presence.finish();
    }
}

/// Handles the whole packets in `rbuf`, until one asks the connection to
/// pause (a queue it fed is full): the rest stay in the buffer, so that
/// a paused publisher passes a queue's limit by one message at most.
/// Returns how many were handled, and whether it stopped for a pause.
fn process_input(
    connection: &mut Connection,
    rbuf: &mut BytesMut,
    broker: &Broker,
    now: Instant,
) -> Result<(usize, bool), Close> {
    let mut n = 0;
    loop {
        if connection.must_pause() {
            return Ok((n, !rbuf.is_empty()));
        }
        // A packet of a forbidden type is refused from its first byte,
        // before the rest of its fixed header is awaited: type 0, and AUTH
        // (15) before MQTT 5.
        if let Some(&first) = rbuf.first() {
            let kind = first >> 4;
            if kind == 0 || (kind == 15 && !connection.protocol.is_v5()) {
                return Err(Close::violation(
                    ReasonCode::MalformedPacket,
                    format!("packet of reserved type {kind}"),
                ));
            }
        }
        match decode(rbuf, connection.protocol, broker.config.max_packet_size) {
            Ok(Some(packet)) => {
                n += 1;
                Tally::count(|t| t.messages_received += 1);
                trace!(?packet, "received");
                connection.on_packet(packet, now)?;
            }
            Ok(None) => return Ok((n, false)),
            Err(e) => return Err(Close::violation(e.reason_code(), e.to_string())),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
