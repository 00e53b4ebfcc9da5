//! Accept loops. One task per listening socket takes a connection permit,
//! accepts, and spawns the connection task at once: every handshake runs in
//! that task under its own deadline, never in the accept loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, warn};

use futures_util::FutureExt;

use crate::broker::Broker;
use crate::net::driver;
use crate::net::transport::{self, Wrapping};

pub async fn accept_loop(
    broker: Arc<Broker>,
    listener: TcpListener,
    wrapping: Option<Arc<Wrapping>>,
    security: Arc<crate::security::Security>,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            () = shutdown.cancelled() => return,
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = shutdown.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                crate::metrics::Metrics::add(&broker.metrics.sockets_accepted, 1);
                let broker = broker.clone();
                let shutdown = shutdown.clone();
                let security = security.clone();
                match &wrapping {
                    // The connection's future is made here and the permit
                    // released by a combinator: an async block would keep
                    // the arguments, or the awaited future, twice for the
                    // connection's whole life (and tokio rounds a task up to
                    // 128 bytes).
                    None => tracker.spawn(
                        driver::serve(broker, stream, peer, shutdown, security)
                            .map(move |()| drop(permit)),
                    ),
                    // TLS and WebSocket handshakes run in the new task.
                    Some(wrapping) => {
                        let wrapping = wrapping.clone();
                        tracker.spawn(
                            transport::serve_wrapped(
                                broker, stream, peer, shutdown, wrapping, security,
                            )
                            .map(move |()| drop(permit)),
                        )
                    }
                };
            }
            Err(e) => {
                // Usually EMFILE/ENFILE: wait for descriptors to free up
                // rather than spin.
                warn!(error = %e, "accept failed; backing off {backoff:?}");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Binds `addr`, logging a clear error on failure. IPv6 sockets are
/// IPv6-only, so `listener PORT` can bind `0.0.0.0` and `::` side by side.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    bind_socket(addr).inspect_err(|e| {
        error!(%addr, error = %e, "cannot listen");
    })
}

fn bind_socket(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}
