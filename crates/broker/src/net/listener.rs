//! Accept loops. One task per listening socket takes a connection permit,
//! accepts, and spawns the connection task at once: every handshake (PROXY
//! header, TLS, WebSocket, CONNECT) runs in that task under its own
//! deadline, never in the accept loop.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::broker::Broker;
use crate::config::ListenerConfig;
use crate::net::driver;
use crate::net::transport::{self, Wrapping};
use crate::security::Security;

/// A listener as its connections see it: its settings, its security
/// domain (the broker's, or its own with `per_listener_settings true`),
/// and its own `max_connections`, shared by the sockets of its line.
#[derive(Debug)]
pub struct Endpoint {
    pub settings: ListenerConfig,
    pub security: Arc<Security>,
    /// `max_connections`: a connection beyond it is accepted and closed at
    /// once, as Mosquitto does (the global limit instead stops accepting).
    pub limit: Option<Arc<Semaphore>>,
    /// The broker's `max_connections` (the global one).
    pub global: Arc<Semaphore>,
    /// Where plain TCP connections live once accepted (`None`: in their
    /// tasks).
    pub shards: Option<Arc<crate::net::shard::Shards>>,
}

/// A connection's places under the global and the listener's limits,
/// given back when it ends (wherever it lives by then). The permits
/// themselves are forgotten and added back on drop: one pointer a
/// connection instead of two permits of 16 bytes.
#[derive(Debug)]
pub struct Permits {
    endpoint: Arc<Endpoint>,
}

impl Drop for Permits {
    fn drop(&mut self) {
        self.endpoint.global.add_permits(1);
        if let Some(limit) = &self.endpoint.limit {
            limit.add_permits(1);
        }
    }
}

/// A bound listening socket.
#[derive(Debug)]
pub enum Socket {
    Tcp(TcpListener),
    /// `listener 0 PATH`; the path is removed when the listener stops.
    Unix(UnixListener, PathBuf),
}

/// An accepted connection's socket.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Socket {
    /// Where it listens: the TCP address (`None` for a Unix socket).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Socket::Tcp(l) => l.local_addr().ok(),
            Socket::Unix(..) => None,
        }
    }

    async fn accept(&self) -> io::Result<(Stream, Option<SocketAddr>)> {
        match self {
            Socket::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                Ok((Stream::Tcp(s), Some(peer)))
            }
            Socket::Unix(l, _) => {
                let (s, _) = l.accept().await?;
                Ok((Stream::Unix(s), None))
            }
        }
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        if let Socket::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

pub async fn accept_loop(
    broker: Arc<Broker>,
    socket: Socket,
    wrapping: Option<Arc<Wrapping>>,
    endpoint: Arc<Endpoint>,
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
            r = socket.accept() => r,
            () = shutdown.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Usually EMFILE/ENFILE: wait for descriptors to free up
                // rather than spin.
                warn!(error = %e, "accept failed; backing off {backoff:?}");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(5);
        crate::metrics::Metrics::add(&broker.metrics.sockets_accepted, 1);
        let Some(permits) = listener_permit(&endpoint, permit) else {
            info!(
                listener = %endpoint.settings.describe(),
                "connection refused: the listener's max_connections are in use"
            );
            crate::metrics::Metrics::add(&broker.metrics.refused.listener_full, 1);
            continue;
        };
        let broker = broker.clone();
        let shutdown = shutdown.clone();
        let endpoint = endpoint.clone();
        // The connection's future is made here and the permits released by
        // a combinator: an async block would keep the arguments, or the
        // awaited future, twice for the connection's whole life (and tokio
        // rounds a task up to 128 bytes).
        match (stream, &wrapping, endpoint.settings.proxy_protocol) {
            // The permits go with the connection: into a shard, perhaps.
            (Stream::Tcp(stream), None, None) => tracker.spawn(driver::serve(
                broker, stream, peer, shutdown, endpoint, permits,
            )),
            // PROXY header, TLS and WebSocket handshakes run in the new task.
            (stream, wrapping, _) => tracker.spawn(
                transport::serve_wrapped(
                    broker,
                    stream,
                    peer,
                    shutdown,
                    wrapping.clone(),
                    endpoint,
                )
                .map(move |()| drop(permits)),
            ),
        };
    }
}

/// The global permit joined by one of the listener's own, if it has a
/// limit; `None` when that limit is reached.
fn listener_permit(endpoint: &Arc<Endpoint>, global: OwnedSemaphorePermit) -> Option<Permits> {
    if let Some(limit) = &endpoint.limit {
        limit.try_acquire().ok()?.forget();
    }
    global.forget();
    Some(Permits {
        endpoint: endpoint.clone(),
    })
}

/// Binds a listener's socket, logging a clear error on failure.
pub async fn bind(listener: &ListenerConfig) -> io::Result<Socket> {
    let bound = match &listener.unix {
        Some(path) => bind_unix(path).map(|l| Socket::Unix(l, path.clone())),
        None => {
            let addr = match &listener.bind_interface {
                Some(name) => interface_address(name, listener.addr)?,
                None => listener.addr,
            };
            bind_socket(addr).map(Socket::Tcp)
        }
    };
    bound.inspect_err(|e| {
        error!(listener = %listener.describe(), error = %e, "cannot listen");
    })
}

/// Binds a TCP socket at `addr` (the HTTP listener's).
pub fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    bind_socket(addr).inspect_err(|e| {
        error!(%addr, error = %e, "cannot listen");
    })
}

/// A Unix-domain socket at `path`. A socket file left by a broker that
/// is gone is replaced; any other file there is an error, never removed.
fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            // Someone still answers on it: leave it to them.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by another process", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    // Owner and group may connect, as with Mosquitto's socket.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o770))?;
    Ok(listener)
}

/// `bind_interface NAME`: the listener's socket binds the interface's
/// address of its family (as Mosquitto does, which needs no privileges,
/// unlike SO_BINDTODEVICE). With an address on the listener line it must
/// be one of the interface's.
fn interface_address(name: &str, addr: SocketAddr) -> io::Result<SocketAddr> {
    let addresses = interface_addresses(name)?;
    if addresses.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("bind_interface {name}: no such network interface with an address"),
        ));
    }
    let same_family = addresses
        .iter()
        .filter(|ip| ip.is_ipv4() == addr.is_ipv4())
        .copied();
    if addr.ip().is_unspecified() {
        return same_family
            .min_by_key(ip_preference)
            .map(|ip| SocketAddr::new(ip, addr.port()))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::AddrNotAvailable,
                    format!(
                        "bind_interface {name}: the interface has no {} address",
                        if addr.is_ipv4() { "IPv4" } else { "IPv6" }
                    ),
                )
            });
    }
    if addresses.contains(&addr.ip()) {
        return Ok(addr);
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "bind_interface {name}: {} is not an address of the interface",
            addr.ip()
        ),
    ))
}

/// Link-local IPv6 addresses come last: they need a scope to be reached.
fn ip_preference(ip: &std::net::IpAddr) -> bool {
    matches!(ip, std::net::IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

fn interface_addresses(name: &str) -> io::Result<Vec<std::net::IpAddr>> {
    let all = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    Ok(all
        .filter(|ifa| ifa.interface_name == name)
        .filter_map(|ifa| {
            let a = ifa.address?;
            if let Some(v4) = a.as_sockaddr_in() {
                Some(std::net::IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| std::net::IpAddr::V6(v6.ip()))
            }
        })
        .collect())
}

/// IPv6 sockets are IPv6-only, so `listener PORT` can bind `0.0.0.0` and
/// `::` side by side.
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
