//! ferrymq-broker: the MQTT broker.
//!
//! Layout:
//! - [`config`]: settings and the `mosquitto.conf`-syntax parser.
//! - [`broker`]: shared state and the publish path.
//! - [`router`]: the topic index; [`retain`]: retained messages.
//! - [`session`]: session state; [`registry`]: client id → session,
//!   takeover; [`mailbox`]: per-session queues and the overflow policy.
//! - [`handshake`]: CONNECT; [`protocol`]: every packet after it.
//! - [`net`]: listeners and the connection driver (the only socket code).
//! - [`sys`]: `$SYS` topics; [`metrics`]: counters; [`census`]: totals
//!   counted on demand; [`http`]: Prometheus `/metrics` and the admin API.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod alias;
pub mod broker;
pub mod census;
pub mod config;
pub mod handshake;
pub mod heap;
pub mod http;
pub mod mailbox;
pub mod message;
pub mod metrics;
pub mod net;
pub mod persist;
pub mod protocol;
pub mod registry;
pub mod retain;
pub mod router;
pub mod security;
pub mod session;
pub mod shared;
pub mod subscribe;
pub mod sys;
pub mod will;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

pub use broker::Broker;
pub use config::Config;

/// A running broker: its listening addresses and the means to stop it.
#[derive(Debug)]
pub struct Server {
    pub broker: Arc<Broker>,
    addrs: Vec<SocketAddr>,
    /// The HTTP listener's address, if `http_listener` is set.
    http_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// TLS and WebSocket listeners, for `reload_tls`.
    wrappings: Vec<Arc<net::transport::Wrapping>>,
    /// Every security domain, for `reload_security`.
    securities: Vec<Arc<security::Security>>,
    /// The event-loop shards of plain TCP connections.
    shards: Arc<net::shard::Shards>,
}

impl Server {
    /// Binds every configured listener and starts serving.
    pub async fn start(config: Config) -> std::io::Result<Server> {
        let writer = if config.persistence {
            notice_other_stores(&config);
            let store = open_store(&config.store_path())?;
            let loaded = store.load().map_err(std::io::Error::other)?;
            let writer = ferrymq_store::Writer::spawn(store, config.persistence_commit_window);
            Some((writer, loaded))
        } else {
            None
        };
        let (writer, loaded) = match writer {
            Some((w, l)) => (Some(w), Some(l)),
            None => (None, None),
        };
        if config.memory_limit.is_some() && heap::current() == 0 {
            tracing::warn!(
                "memory_limit is set, but this program does not count its heap \
                 (ferrymq_broker::heap::Counting is not its global allocator): no limit applies"
            );
        }
        let security = security::Security::load(&config).map_err(std::io::Error::other)?;
        let broker = Broker::with_parts(config, writer, security);
        let shutdown = CancellationToken::new();
        if let Some(loaded) = loaded {
            persist::recover(&broker, loaded, &shutdown);
        }
        let tracker = TaskTracker::new();
        let permits = Arc::new(Semaphore::new(
            broker.config.max_connections.min(Semaphore::MAX_PERMITS),
        ));
        let mut addrs = Vec::new();
        let mut wrappings = Vec::new();
        let mut limits = std::collections::HashMap::new();
        // One event-loop shard per worker thread for plain TCP connections.
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        let shards = net::shard::Shards::start(&broker, workers, &tracker, &shutdown)?;
        let key_log = match &broker.config.tls_keylog {
            Some(path) => {
                tracing::warn!(
                    file = %path.display(),
                    "TLS key logging is on for every TLS listener: whoever reads the file can \
                     decrypt the traffic. DO NOT USE IN PRODUCTION"
                );
                let log = net::tls::KeyLogFile::open(path).map_err(|e| {
                    std::io::Error::other(format!("--tls-keylog {}: {e}", path.display()))
                })?;
                Some(log)
            }
            None => None,
        };
        // One security domain for all listeners, or with
        // per_listener_settings one per listener (the sockets of one
        // `listener` line share theirs).
        // Without a `listener` line there is no listener section to hold
        // settings: the default listeners keep Mosquitto 2's local-only
        // defaults.
        let mut securities: Vec<(config::ListenerSecurity, Arc<security::Security>)> = Vec::new();
        let per_listener = broker.config.per_listener_settings && broker.config.listeners_from_file;
        for listener in &broker.config.listeners {
            let security = if per_listener {
                match securities.iter().find(|(s, _)| *s == listener.security) {
                    Some((_, shared)) => shared.clone(),
                    None => {
                        let loaded = security::Security::load_listener(&listener.security)
                            .map_err(|e| {
                                std::io::Error::other(format!(
                                    "listener {}: {e}",
                                    listener.describe()
                                ))
                            })?;
                        let loaded = Arc::new(loaded);
                        securities.push((listener.security.clone(), loaded.clone()));
                        loaded
                    }
                }
            } else {
                broker.security.clone()
            };
            // Certificates and keys are read before anything listens, so a
            // bad file stops the start with an error naming it.
            let wrapping = net::tls::wrapping(listener, key_log.clone())
                .map_err(|e| {
                    std::io::Error::other(format!("listener {}: {e}", listener.describe()))
                })?
                .map(Arc::new);
            let socket = match net::listener::bind(listener).await {
                Ok(socket) => socket,
                Err(e) if listener.optional => {
                    tracing::warn!(listener = %listener.describe(), error = %e, "optional listener not started");
                    continue;
                }
                // `listener PORT` with `bind_interface`: an interface
                // without an IPv6 (or IPv4) address is served on the other.
                Err(e)
                    if listener.bind_interface.is_some()
                        && e.kind() == std::io::ErrorKind::AddrNotAvailable
                        && listener.addr.ip().is_unspecified()
                        && broker.config.listeners.iter().any(|other| {
                            other.group == listener.group
                                && other.addr.is_ipv4() != listener.addr.is_ipv4()
                        }) =>
                {
                    tracing::warn!(error = %e, "listener socket not started");
                    continue;
                }
                Err(e) => return Err(e),
            };
            wrappings.extend(wrapping.clone());
            let kind = match (listener.is_tls(), listener.protocol) {
                (false, config::ListenerProtocol::Mqtt) => "MQTT",
                (true, config::ListenerProtocol::Mqtt) => "MQTT over TLS",
                (false, config::ListenerProtocol::WebSockets) => "MQTT over WebSocket",
                (true, config::ListenerProtocol::WebSockets) => "MQTT over secure WebSocket",
            };
            match socket.local_addr() {
                Some(addr) => {
                    info!(%addr, "listening for {kind}");
                    addrs.push(addr);
                }
                None => info!(socket = %listener.describe(), "listening for {kind}"),
            }
            // The sockets of one `listener` line share its limit.
            let limit = listener.max_connections.map(|n| {
                limits
                    .entry(listener.group)
                    .or_insert_with(|| Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS))))
                    .clone()
            });
            let endpoint = Arc::new(net::listener::Endpoint {
                settings: listener.clone(),
                security,
                limit,
                global: permits.clone(),
                shards: Some(shards.clone()),
            });
            tracker.spawn(net::listener::accept_loop(
                broker.clone(),
                socket,
                wrapping,
                endpoint,
                permits.clone(),
                tracker.clone(),
                shutdown.clone(),
            ));
        }
        let http_addr = match broker.config.http.listener {
            Some(addr) => {
                if !broker.config.http.admin_users.is_empty()
                    && broker.config.password_file.is_none()
                {
                    return Err(std::io::Error::other(
                        "http_admin_user needs a password_file to check the user's password",
                    ));
                }
                let socket = http::bind(addr).await?;
                let addr = socket.local_addr()?;
                info!(%addr, "listening for HTTP (/metrics, /api/v1)");
                if !broker.config.http.has_credentials() {
                    tracing::warn!(
                        "the admin API is closed: set http_admin_token or http_admin_user"
                    );
                }
                tracker.spawn(http::serve(
                    broker.clone(),
                    socket,
                    tracker.clone(),
                    shutdown.clone(),
                ));
                Some(addr)
            }
            None => None,
        };
        tracker.spawn(sys::run(broker.clone(), shutdown.clone()));
        tracker.spawn(expire_sessions(broker.clone(), shutdown.clone()));
        if let Some(every) = broker.config.retain_expiry_interval {
            tracker.spawn(expire_retained(broker.clone(), every, shutdown.clone()));
        }
        tracker.spawn(persist::release_acks(broker.clone(), shutdown.clone()));
        let mut securities: Vec<_> = securities.into_iter().map(|(_, s)| s).collect();
        securities.push(broker.security.clone());
        Ok(Server {
            broker,
            addrs,
            http_addr,
            shutdown,
            tracker,
            wrappings,
            securities,
            shards,
        })
    }

    /// Reads every password and ACL file again (at SIGHUP): connected
    /// clients stay, and the new ACLs apply to them from their next
    /// message. A file that cannot be read keeps its previous contents;
    /// the first error is returned after the others were tried.
    pub fn reload_security(&self) -> Result<(), ferrymq_auth::Error> {
        let mut first = None;
        for security in &self.securities {
            if let Err(e) = security.reload() {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Reads the TLS listeners' certificate, key and CA files again (at
    /// SIGHUP): new connections use them, established ones are untouched.
    /// All or nothing: if a file cannot be read, every listener keeps its
    /// previous files and the error names the one that failed.
    pub fn reload_tls(&self) -> Result<usize, String> {
        net::tls::reload(&self.wrappings)
    }

    /// Plain TCP connections the event-loop shards hold now.
    pub fn shard_connections(&self) -> usize {
        self.shards.connections()
    }

    /// The bound addresses, in listener order (useful with port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The HTTP listener's bound address (useful with port 0).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Stops accepting, tells every client (MQTT 5: DISCONNECT 0x8B),
    /// waits for every connection task to finish, then for the store to
    /// make durable what they wrote last (parked sessions, deliveries
    /// acknowledged by subscribers): a clean stop loses and replays
    /// nothing.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        if let Some(p) = &self.broker.persist {
            let flushed = tokio::time::timeout(STORE_FLUSH_AT_SHUTDOWN, p.writer.flush()).await;
            match flushed {
                Ok(true) => info!("store flushed"),
                Ok(false) => tracing::error!("store failed: its last writes are not durable"),
                Err(_) => tracing::error!(
                    "store not flushed within {STORE_FLUSH_AT_SHUTDOWN:?}: its last writes may be lost"
                ),
            }
        }
    }
}

/// How long a shutdown waits for the store's last writes.
const STORE_FLUSH_AT_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(30);

/// Ends parked sessions whose expiry interval has passed, even with nobody
/// connected ([MQTT-3.1.2-23]); their delayed wills are published then.
/// `retain_expiry_interval`: every so often, retained messages past their
/// Message Expiry Interval are removed, so that ones nobody subscribes to
/// do not stay in memory (and the store) for good.
async fn expire_retained(
    broker: Arc<Broker>,
    every: std::time::Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let removed = broker.expire_retained(std::time::Instant::now());
        if removed > 0 {
            tracing::debug!(removed, "expired retained messages removed");
        }
    }
}

async fn expire_sessions(broker: Arc<Broker>, shutdown: CancellationToken) {
    // Expiry is in whole seconds; a quarter-second sweep is ample.
    let mut ticker = tokio::time::interval(std::time::Duration::from_millis(250));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return,
        }
        // The record's deletion is submitted under the registry's lock;
        // `discard_session` then has nothing left to delete.
        let delete_record = |state: &session::SessionState| {
            if state
                .shared
                .durable
                .swap(false, std::sync::atomic::Ordering::Relaxed)
            {
                broker.store(vec![ferrymq_store::Op::DeleteSession {
                    client_id: state.shared.client_id.clone(),
                }]);
            }
        };
        for mut state in broker
            .registry
            .expire(std::time::Instant::now(), delete_record)
        {
            metrics::Metrics::add(&broker.metrics.clients_expired, 1);
            tracing::debug!(client_id = %state.shared.client_id, "session expired");
            if let Some(will) = state.delayed_will.take() {
                will.fire();
            }
            broker.discard_session(&mut state);
        }
    }
}

/// Says what ferrymq does not read at the store's location: Mosquitto's
/// own file, and the store of a ferrymq that kept it in `ferrymq-data`.
fn notice_other_stores(config: &Config) {
    let mosquitto = config.persistence_location.join(&config.persistence_file);
    if mosquitto.is_file() {
        tracing::warn!(
            "{} is Mosquitto's store, which ferrymq does not read: ferrymq keeps its own in {}",
            mosquitto.display(),
            config.store_path().display()
        );
    }
    let earlier = config.persistence_location.join("ferrymq-data");
    if earlier.is_dir() && !config.store_path().exists() {
        tracing::warn!(
            "{} holds the store of an earlier ferrymq, which is not read: to keep it, stop the \
             broker and rename it to {}",
            earlier.display(),
            config.store_path().display()
        );
    }
}

/// Opens the store, with an error that names the path and says what to do
/// when it cannot be read ([issue 6]: never silently discarded).
fn open_store(path: &std::path::Path) -> std::io::Result<Arc<dyn ferrymq_store::Store>> {
    std::fs::create_dir_all(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("store {}: {e}", path.display())))?;
    match ferrymq_store::FjallStore::open(path) {
        Ok(store) => Ok(Arc::new(store)),
        Err(e) => Err(std::io::Error::other(format!(
            "{e}. The store cannot be read; to start with an empty one, move the directory \
             aside (mv {0} {0}.broken) and start again.",
            path.display()
        ))),
    }
}
