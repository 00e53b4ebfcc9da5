//! Event-loop shards: where plain TCP connections live after their
//! CONNACK, so that an idle connection is a few hundred bytes of state in a
//! slab rather than a task with its future, a reactor registration and a
//! tracing span (issue 16: an idle connection in about a kilobyte).
//!
//! A connection's handshake still runs in a task of its own (CONNECT,
//! authentication, takeover all wait on something); once it is accepted
//! and its first round is out, the task hands the socket and the
//! connection's state ([`Live`]) to a shard and ends. When the connection
//! ends, the shard hands it back to a new task for the goodbye (reason
//! code, will, parking the session, lingering), which waits too.
//!
//! Each shard is one task with a `mio::Poll` of its own, whose descriptor
//! the runtime's reactor watches: a readiness event, a mailbox wake-up (a
//! delivery, a store acknowledgement, room in a queue, a kick) or a timer
//! (keep-alive, a stalled queue) makes the shard run the connection's round
//! ([`Live::round`], the same one a task runs), write what it produced and
//! read what the socket holds, a fair share at a time. Sockets are
//! registered edge-triggered for both directions once; a connection keeps
//! flags of what may be readable or writable. TLS, WebSocket, Unix-socket
//! and PROXY connections stay with their tasks.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};
use parking_lot::Mutex;
use slab::Slab;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, warn, Instrument};

use crate::broker::Broker;
use crate::metrics::Tally;
use crate::net::driver::{conn_span, Io, Live, FAIR_SHARE, READ_CHUNK};
use crate::net::listener::Permits;
use crate::net::transport::{Gone, Transport};
use crate::protocol::{Close, WRITE_HIGH_WATER};

/// Readiness events taken from a shard's poll at once.
const EVENTS: usize = 1024;

/// The shards of a broker: connections are spread over them in turn.
#[derive(Debug)]
pub struct Shards {
    shards: Vec<Arc<Shard>>,
    next: AtomicUsize,
}

/// What other threads share with a shard's task: connections handed over,
/// and connections woken.
struct Shard {
    incoming: Mutex<Vec<Adopted>>,
    woken: Mutex<Vec<(usize, u32)>>,
    notify: Notify,
    /// Connections it holds now.
    held: AtomicUsize,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard").finish_non_exhaustive()
    }
}

/// A connection on its way into a shard.
struct Adopted {
    stream: std::net::TcpStream,
    rbuf: BytesMut,
    live: Live,
    permits: Option<Permits>,
}

/// A connection in a shard.
struct Conn {
    stream: MioStream,
    rbuf: BytesMut,
    live: Live,
    /// Given to the session's mailbox: pushes this connection onto the
    /// shard's woken list.
    waker: Waker,
    /// The socket may have data (edge-triggered: set by an event, cleared
    /// when a read would block).
    readable: bool,
    /// The socket may take data (likewise).
    writable: bool,
    /// On the shard's list of connections to step again.
    again: bool,
    /// The deadline of this connection's entry in the timer heap, if any.
    timer: Option<Instant>,
    /// Tells a reused slot's connection from the one a stale wake-up or
    /// timer meant.
    generation: u32,
    permits: Option<Permits>,
}

/// What a connection's step asks for next.
enum Next {
    /// Wait for an event, a wake-up or its deadline.
    Wait,
    /// It has more to do now: step it again after the others had a turn.
    Again,
    Close(Close),
}

struct ConnWaker {
    shard: Weak<Shard>,
    token: usize,
    generation: u32,
}

impl Wake for ConnWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(shard) = self.shard.upgrade() {
            shard.woken.lock().push((self.token, self.generation));
            shard.notify.notify_one();
        }
    }
}

impl Shards {
    /// One shard per `threads`, each a task tracked by `tracker`, until
    /// `shutdown`.
    pub fn start(
        broker: &Arc<Broker>,
        threads: usize,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> io::Result<Arc<Shards>> {
        let mut shards = Vec::new();
        for _ in 0..threads.max(1) {
            let fd = watch(Poll::new()?)?;
            let shard = Arc::new(Shard {
                incoming: Mutex::new(Vec::new()),
                woken: Mutex::new(Vec::new()),
                notify: Notify::new(),
                held: AtomicUsize::new(0),
            });
            let task = Runner {
                shard: shard.clone(),
                fd,
                conns: Slab::new(),
                timers: BinaryHeap::new(),
                generation: 0,
                broker: broker.clone(),
                shutdown: shutdown.clone(),
                tracker: tracker.clone(),
            };
            tracker.spawn(task.run());
            shards.push(shard);
        }
        Ok(Arc::new(Shards {
            shards,
            next: AtomicUsize::new(0),
        }))
    }

    /// Connections the shards hold now.
    pub fn connections(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.held.load(Ordering::Relaxed))
            .sum()
    }

    fn adopt(&self, adopted: Adopted) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.shards.len();
        if let Some(shard) = self.shards.get(i) {
            shard.incoming.lock().push(adopted);
            shard.notify.notify_one();
        }
    }
}

/// What became of a connection offered to a shard.
pub(crate) enum HandOver<T> {
    /// A shard has it.
    Taken,
    /// Not plain TCP, or no shards: its task keeps it.
    Kept(Io<T>, Live, Option<Permits>),
    /// Its socket was lost on the way (the reactor no longer knew it).
    Lost(Live, Close, Option<Permits>),
}

/// Hands a live connection to a shard, if it is plain TCP and the broker
/// has shards.
pub(crate) fn hand_over<T: Transport>(
    io: Io<T>,
    live: Live,
    permits: Option<Permits>,
) -> HandOver<T> {
    let Some(shards) = live.connection.endpoint.shards.clone() else {
        return HandOver::Kept(io, live, permits);
    };
    let Io { stream, rbuf } = io;
    match stream.into_tcp() {
        Err(stream) => HandOver::Kept(Io { stream, rbuf }, live, permits),
        Ok(Ok(stream)) => {
            shards.adopt(Adopted {
                stream,
                rbuf,
                live,
                permits,
            });
            HandOver::Taken
        }
        Ok(Err(e)) => HandOver::Lost(live, Close::Lost(e.to_string()), permits),
    }
}

/// A shard's task and what only it touches.
struct Runner {
    shard: Arc<Shard>,
    fd: AsyncFd<Poll>,
    /// Boxed: a slab grows by doubling, and empty slots of a pointer
    /// cost less than empty slots of a connection.
    conns: Slab<Box<Conn>>,
    /// Deadlines: (when, token, generation), soonest first.
    timers: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    generation: u32,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Runner {
    async fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS);
        let mut ready: Vec<(usize, u32)> = Vec::new();
        let mut again: Vec<(usize, u32)> = Vec::new();
        loop {
            if again.is_empty() {
                let next = self.timers.peek().map(|Reverse((at, _, _))| *at);
                tokio::select! {
                    biased;
                    () = self.shutdown.cancelled() => break,
                    r = self.fd.readable() => match r {
                        Ok(mut guard) => guard.clear_ready(),
                        Err(e) => {
                            warn!(error = %e, "event-loop shard cannot wait for its poll");
                            break;
                        }
                    },
                    () = self.shard.notify.notified() => {}
                    () = sleep_until(next) => {}
                }
            } else {
                // Connections with more to do go on after the rest of the
                // runtime had a turn.
                tokio::task::yield_now().await;
                if self.shutdown.is_cancelled() {
                    break;
                }
            }
            ready.append(&mut again);
            self.gather(&mut events, &mut ready);
            let now = Instant::now();
            for (token, generation) in ready.drain(..) {
                let Some(conn) = self.conns.get_mut(token) else {
                    continue;
                };
                if conn.generation != generation {
                    continue;
                }
                conn.again = false;
                // A bug that panics in one connection's step must not take
                // the shard's other connections with it: that connection
                // ends, its goodbye in a task of its own as any other's.
                let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    step(conn, &self.broker, &self.shutdown, now)
                }));
                // Whatever the step counted, before anything else runs here.
                Tally::flush_thread(&self.broker.metrics);
                match stepped {
                    Ok(Next::Wait) => self.schedule(token, now),
                    Ok(Next::Again) => {
                        if let Some(conn) = self.conns.get_mut(token) {
                            if !conn.again {
                                conn.again = true;
                                again.push((token, generation));
                            }
                        }
                    }
                    Ok(Next::Close(close)) => self.close(token, close),
                    Err(_) => {
                        error!(token, "a connection's step panicked; closing it");
                        self.close(token, Close::Lost("internal error".into()));
                    }
                }
            }
        }
        // Shutdown: every connection says goodbye from a task of its own.
        let tokens: Vec<usize> = self.conns.iter().map(|(t, _)| t).collect();
        for token in tokens {
            self.close(token, Close::ServerShutdown);
        }
        for adopted in std::mem::take(&mut *self.shard.incoming.lock()) {
            self.farewell(adopted, Close::ServerShutdown);
        }
    }

    /// Collects what is ready now: readiness events, new connections,
    /// wake-ups, deadlines due.
    fn gather(&mut self, events: &mut Events, ready: &mut Vec<(usize, u32)>) {
        loop {
            if let Err(e) = self.fd.get_mut().poll(events, Some(Duration::ZERO)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    warn!(error = %e, "event-loop shard poll failed");
                }
                break;
            }
            let mut n = 0;
            for event in events.iter() {
                n += 1;
                let token = event.token().0;
                if let Some(conn) = self.conns.get_mut(token) {
                    conn.readable |= event.is_readable() || event.is_read_closed();
                    conn.writable |= event.is_writable() || event.is_write_closed();
                    if event.is_error() {
                        conn.readable = true;
                    }
                    ready.push((token, conn.generation));
                }
            }
            if n < EVENTS {
                break;
            }
        }
        let incoming = std::mem::take(&mut *self.shard.incoming.lock());
        for adopted in incoming {
            if let Some(token) = self.insert(adopted) {
                if let Some(conn) = self.conns.get(token) {
                    ready.push((token, conn.generation));
                }
            }
        }
        ready.append(&mut self.shard.woken.lock());
        let now = Instant::now();
        while let Some(Reverse((at, token, generation))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(conn) = self.conns.get_mut(token) {
                if conn.generation == generation && conn.timer == Some(at) {
                    conn.timer = None;
                    ready.push((token, generation));
                }
            }
        }
    }

    /// Takes a handed-over connection in: registered for both directions,
    /// its mailbox waking this shard.
    fn insert(&mut self, adopted: Adopted) -> Option<usize> {
        if self.shutdown.is_cancelled() {
            self.farewell(adopted, Close::ServerShutdown);
            return None;
        }
        let Adopted {
            stream,
            rbuf,
            live,
            permits,
        } = adopted;
        let mut stream = MioStream::from_std(stream);
        let entry = self.conns.vacant_entry();
        let token = entry.key();
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        if let Err(e) = self.fd.get_ref().registry().register(
            &mut stream,
            Token(token),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            debug!(error = %e, "cannot watch a handed-over connection");
            let stream = std::net::TcpStream::from(stream);
            self.farewell(
                Adopted {
                    stream,
                    rbuf,
                    live,
                    permits,
                },
                Close::Lost(e.to_string()),
            );
            return None;
        }
        let waker = Waker::from(Arc::new(ConnWaker {
            shard: Arc::downgrade(&self.shard),
            token,
            generation,
        }));
        self.shard.held.fetch_add(1, Ordering::Relaxed);
        entry.insert(Box::new(Conn {
            stream,
            rbuf,
            live,
            waker,
            // The edges before the registration were not seen.
            readable: true,
            writable: true,
            again: false,
            timer: None,
            generation,
            permits,
        }));
        Some(token)
    }

    /// Puts the connection's deadline in the timer heap, unless an entry
    /// as early is there.
    fn schedule(&mut self, token: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        let Some(at) = conn.live.deadline(now) else {
            return;
        };
        if conn.timer.is_none_or(|t| at < t) {
            conn.timer = Some(at);
            self.timers.push(Reverse((at, token, conn.generation)));
        }
    }

    /// A closed connection's deadline stays in the heap until it is due
    /// (a heap cannot remove from its middle): under connection churn
    /// those would pile up for a keep-alive period. Once they outnumber
    /// the live ones, the heap keeps only live entries: linear, and at
    /// most once per as many closes as there are connections.
    fn forget_stale_timers(&mut self) {
        if self.timers.len() <= 2 * self.conns.len() + 64 {
            return;
        }
        let conns = &self.conns;
        self.timers.retain(|Reverse((at, token, generation))| {
            conns
                .get(*token)
                .is_some_and(|c| c.generation == *generation && c.timer == Some(*at))
        });
        if self.timers.capacity() > 4 * self.timers.len() + 64 {
            self.timers.shrink_to(2 * self.timers.len());
        }
    }

    /// Ends a connection: out of the shard, into a task for its goodbye.
    fn close(&mut self, token: usize, close: Close) {
        let Some(conn) = self.conns.try_remove(token) else {
            return;
        };
        let mut conn = *conn;
        self.forget_stale_timers();
        self.shard.held.fetch_sub(1, Ordering::Relaxed);
        let _ = self.fd.get_ref().registry().deregister(&mut conn.stream);
        let adopted = Adopted {
            stream: std::net::TcpStream::from(conn.stream),
            rbuf: conn.rbuf,
            live: conn.live,
            permits: conn.permits,
        };
        self.farewell(adopted, close);
    }

    /// The goodbye of a connection, in a task of its own, back in the
    /// runtime's reactor.
    fn farewell(&self, adopted: Adopted, close: Close) {
        let Adopted {
            stream,
            rbuf,
            live,
            permits,
        } = adopted;
        let peer = stream.peer_addr().ok();
        let span = conn_span(peer);
        span.record("client_id", live.client_id());
        match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => self.spawn_finish(live, Io { stream, rbuf }, close, permits, span),
            Err(e) => {
                let io = Io {
                    stream: Gone,
                    rbuf: BytesMut::new(),
                };
                self.spawn_finish(live, io, Close::Lost(e.to_string()), permits, span);
            }
        }
    }

    fn spawn_finish<T: Transport>(
        &self,
        live: Live,
        io: Io<T>,
        close: Close,
        permits: Option<Permits>,
        span: tracing::Span,
    ) {
        let (broker, shutdown) = (self.broker.clone(), self.shutdown.clone());
        self.tracker.spawn(
            async move {
                live.finish(broker, io, close, shutdown).await;
                drop(permits);
            }
            .instrument(span),
        );
    }
}

/// One step of a connection: rounds of work, writing and reading, a fair
/// share of packets at most.
fn step(conn: &mut Conn, broker: &Arc<Broker>, shutdown: &CancellationToken, now: Instant) -> Next {
    let _span = tracing::enabled!(tracing::Level::DEBUG).then(|| {
        let span = conn_span(conn.stream.peer_addr().ok());
        span.record("client_id", conn.live.client_id());
        span.entered()
    });
    // Wake-ups use this shard's waker from now on (a wake takes it).
    conn.live
        .connection
        .session
        .shared
        .mailbox
        .set_waker(&conn.waker);
    if let Some(close) = conn.live.kicked(shutdown) {
        return Next::Close(close);
    }
    let mut handled = 0;
    let mut rounds = 0;
    loop {
        rounds += 1;
        let more_queued = match conn.live.round(&mut conn.rbuf, broker, now) {
            Ok((n, more)) => {
                handled += n;
                more
            }
            Err(close) => return Next::Close(close),
        };
        if let Err(e) = write(conn) {
            return Next::Close(Close::Lost(e.to_string()));
        }
        let waits = conn.live.waits(now);
        if !waits.paused && conn.live.timed_out(now) {
            return Next::Close(Close::KeepAliveTimeout);
        }
        if waits.reading && conn.readable {
            if handled >= FAIR_SHARE || rounds > FAIR_SHARE {
                return Next::Again;
            }
            match read(conn) {
                Ok(0) => {}
                Ok(n) => {
                    Tally::count(|t| t.bytes_received += n as u64);
                    conn.live.last_read = now;
                    match conn.live.input(&mut conn.rbuf, broker, now) {
                        Ok(n) => handled += n,
                        Err(close) => return Next::Close(close),
                    }
                    continue;
                }
                Err(close) => return Next::Close(close),
            }
        }
        if conn.rbuf.is_empty() {
            conn.rbuf = BytesMut::new();
        }
        let room = conn.live.connection.out.len() < WRITE_HIGH_WATER;
        if more_queued && room && (conn.writable || conn.live.connection.out.is_empty()) {
            if rounds > FAIR_SHARE {
                return Next::Again;
            }
            continue;
        }
        return Next::Wait;
    }
}

/// Writes what the connection's buffer holds, as far as the socket takes.
fn write(conn: &mut Conn) -> io::Result<()> {
    let out = &mut conn.live.connection.out;
    while conn.writable && !out.is_empty() {
        match (&conn.stream).write(out) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => out.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.writable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads what the socket holds into the connection's buffer, one chunk;
/// `Ok(0)` when it would block. The end of the stream is a lost
/// connection.
fn read(conn: &mut Conn) -> Result<usize, Close> {
    let rbuf = &mut conn.rbuf;
    let start = rbuf.len();
    if rbuf.capacity() - start < READ_CHUNK / 2 {
        rbuf.reserve(READ_CHUNK);
    }
    let room = rbuf.capacity() - start;
    rbuf.resize(start + room, 0);
    let result = loop {
        match (&conn.stream).read(rbuf.get_mut(start..).unwrap_or_default()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other,
        }
    };
    match result {
        Ok(0) => {
            rbuf.truncate(start);
            Err(Close::Lost("closed by peer".into()))
        }
        Ok(n) => {
            rbuf.truncate(start + n);
            Ok(n)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            rbuf.truncate(start);
            conn.readable = false;
            Ok(0)
        }
        Err(e) => {
            rbuf.truncate(start);
            Err(Close::Lost(e.to_string()))
        }
    }
}

/// The runtime's reactor watches the poll's own descriptor, readable when
/// one of its sockets has an event.
#[allow(unsafe_code)]
fn watch(poll: Poll) -> io::Result<AsyncFd<Poll>> {
    // SAFETY: the epoll descriptor is the `Poll`'s own, open from its
    // creation until it is dropped, and `as_raw_fd` always returns it; the
    // `AsyncFd` owns the `Poll`, so neither outlives the other.
    unsafe { AsyncFd::register_with_interest(poll, tokio::io::Interest::READABLE) }
        .map_err(io::Error::from)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
