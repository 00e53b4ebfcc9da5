//! The HTTP listener (`http_listener`): Prometheus metrics at `/metrics`
//! ([`prometheus`]) and the admin API under `/api/v1/` ([`admin`]).
//!
//! HTTP/1.1 by hyper, one task per connection. Everything a client sends is
//! bounded: `http_max_connections` at once and `http_max_connections_per_peer`
//! from one address, an idle connection giving way to a newcomer
//! ([`slots`]); headers within [`MAX_HEADER_BYTES`] and
//! `http_header_timeout`, a whole connection within [`CONNECTION_TIMEOUT`];
//! request bodies are never read. Nothing here touches the MQTT
//! connections except through the registry's kick.

pub mod admin;
pub mod prometheus;
mod slots;

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::broker::Broker;

/// Request line and headers, at most (hyper's smallest allowed buffer is 8 KB).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Time a connection may stay open, requests included.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a newcomer waits for room when every connection is busy.
const ADMIT_PATIENCE: Duration = Duration::from_secs(2);

/// The HTTP listener's settings (Mosquitto has none of these options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// `http_listener PORT [ADDRESS]` (address default 127.0.0.1); off
    /// when unset.
    pub listener: Option<SocketAddr>,
    /// `http_admin_token TOKEN`: `Authorization: Bearer TOKEN` opens the
    /// admin API.
    pub admin_token: Option<String>,
    /// `http_admin_user NAME` (repeatable): these users of `password_file`
    /// open the admin API with HTTP Basic authentication.
    pub admin_users: Vec<String>,
    /// `http_metrics_auth true`: `/metrics` asks for the same credentials.
    pub metrics_auth: bool,
    /// `http_max_connections` (default 64): connections at once.
    pub max_connections: usize,
    /// `http_max_connections_per_peer` (default 8): connections from one
    /// address at once.
    pub max_connections_per_peer: usize,
    /// `http_header_timeout` (seconds, default 3): time a client has to
    /// send a request's headers.
    pub header_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            listener: None,
            admin_token: None,
            admin_users: Vec::new(),
            metrics_auth: false,
            max_connections: 64,
            max_connections_per_peer: 8,
            header_timeout: Duration::from_secs(3),
        }
    }
}

impl HttpConfig {
    /// The configuration options this struct reads.
    pub const OPTIONS: [&'static str; 7] = [
        "http_listener",
        "http_admin_token",
        "http_admin_user",
        "http_metrics_auth",
        "http_max_connections",
        "http_max_connections_per_peer",
        "http_header_timeout",
    ];

    /// Applies one configuration line; the error says what is wrong.
    pub fn set(&mut self, option: &str, args: &[&str]) -> Result<(), String> {
        let one = || match args {
            [value] => Ok(*value),
            _ => Err(format!("{option} takes exactly one value")),
        };
        match option {
            "http_listener" => {
                let (port, host) = match args {
                    [port] => (*port, None),
                    [port, host] => (*port, Some(*host)),
                    _ => return Err("http_listener takes PORT [ADDRESS]".into()),
                };
                let port: u16 = port
                    .parse()
                    .map_err(|_| format!("http_listener: {port:?} is not a port"))?;
                let ip = match host {
                    Some(host) => host
                        .parse()
                        .map_err(|_| format!("http_listener: {host:?} is not an IP address"))?,
                    // Loopback unless asked: the admin API can disconnect clients.
                    None => IpAddr::V4(Ipv4Addr::LOCALHOST),
                };
                self.listener = Some(SocketAddr::new(ip, port));
            }
            "http_admin_token" => self.admin_token = Some(one()?.to_string()),
            "http_admin_user" => self.admin_users.push(one()?.to_string()),
            "http_metrics_auth" => {
                self.metrics_auth = match one()? {
                    "true" => true,
                    "false" => false,
                    other => return Err(format!("{option}: {other:?} is not true or false")),
                }
            }
            "http_max_connections" | "http_max_connections_per_peer" | "http_header_timeout" => {
                let value = one()?;
                let n: u32 = value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{option}: {value:?} is not a number above 0"))?;
                match option {
                    "http_max_connections" => self.max_connections = n as usize,
                    "http_max_connections_per_peer" => self.max_connections_per_peer = n as usize,
                    _ => self.header_timeout = Duration::from_secs(u64::from(n.min(3600))),
                }
            }
            other => return Err(format!("{other} is not an HTTP listener option")),
        }
        Ok(())
    }

    /// Whether any credential opens the admin API.
    pub fn has_credentials(&self) -> bool {
        self.admin_token.is_some() || !self.admin_users.is_empty()
    }
}

/// Accepts HTTP connections until shutdown.
pub async fn serve(
    broker: Arc<Broker>,
    listener: TcpListener,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let config = &broker.config.http;
    let slots = slots::Slots::new(config.max_connections, config.max_connections_per_peer);
    let header_timeout = config.header_timeout;
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually out of descriptors: MQTT clients matter more.
                    warn!(error = %e, "HTTP accept failed");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                        () = shutdown.cancelled() => return,
                    }
                }
            },
            () = shutdown.cancelled() => return,
        };
        let ticket = tokio::select! {
            t = slots.admit(peer.ip(), ADMIT_PATIENCE) => t,
            () = shutdown.cancelled() => return,
        };
        let Some(ticket) = ticket else {
            debug!(%peer, "HTTP connection refused: every connection is busy");
            continue;
        };
        let broker = broker.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let busy = ticket.busy.clone();
            let service = hyper::service::service_fn(move |request| {
                let (broker, busy) = (broker.clone(), busy.clone());
                async move {
                    // A request read whole: this connection is not to give
                    // way until it is answered.
                    busy.store(true, std::sync::atomic::Ordering::Relaxed);
                    let reply = handle(&broker, request).await;
                    busy.store(false, std::sync::atomic::Ordering::Relaxed);
                    Ok::<_, Infallible>(reply)
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(MAX_HEADER_BYTES)
                .keep_alive(true);
            let connection =
                builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                r = tokio::time::timeout(CONNECTION_TIMEOUT, connection) => match r {
                    Ok(Err(e)) => debug!(%peer, error = %e, "HTTP connection ended"),
                    Err(_) => debug!(%peer, "HTTP connection timed out"),
                    Ok(Ok(())) => {}
                },
                () = ticket.close.cancelled() => {}
                () = shutdown.cancelled() => {}
            }
            drop(ticket);
        });
    }
}

type Reply = Response<Full<Bytes>>;

/// Routes one request.
async fn handle<B>(broker: &Arc<Broker>, request: Request<B>) -> Reply {
    let path = request.uri().path();
    let config = &broker.config.http;
    if path == "/metrics" {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return error(StatusCode::METHOD_NOT_ALLOWED, "use GET");
        }
        if config.metrics_auth && !authorized(broker, request.headers()).await {
            return unauthorized(config);
        }
        let mut reply = Response::new(Full::new(Bytes::from(prometheus::render(broker))));
        reply.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        return reply;
    }
    if let Some(route) = path.strip_prefix("/api/v1/") {
        if !authorized(broker, request.headers()).await {
            return unauthorized(config);
        }
        let query = request.uri().query().unwrap_or_default();
        return admin::route(broker, request.method(), route, query);
    }
    error(StatusCode::NOT_FOUND, "no such resource")
}

/// Whether the request carries a credential that opens the admin API: the
/// configured Bearer token, or Basic credentials of an admin user that the
/// password file accepts.
async fn authorized(broker: &Broker, headers: &HeaderMap) -> bool {
    let config = &broker.config.http;
    let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, credentials)) = value.trim().split_once(' ') else {
        return false;
    };
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        // Constant time: the comparison does not tell how much matched.
        return config
            .admin_token
            .as_ref()
            .is_some_and(|token| bool::from(token.as_bytes().ct_eq(credentials.as_bytes())));
    }
    if !scheme.eq_ignore_ascii_case("basic") || config.admin_users.is_empty() {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(credentials) else {
        return false;
    };
    let Ok(decoded) = String::from_utf8(decoded) else {
        return false;
    };
    let Some((user, password)) = decoded.split_once(':') else {
        return false;
    };
    let Some(file) = broker.security.passwords() else {
        return false;
    };
    let is_admin = config.admin_users.iter().any(|u| u == user);
    let (user, password) = (user.to_string(), password.as_bytes().to_vec());
    // Verified even for a user who is not an admin, so the time taken does
    // not tell admins apart; the hash is slow on purpose, so off the runtime.
    let verified = tokio::task::spawn_blocking(move || file.verify(&user, &password))
        .await
        .unwrap_or(false);
    verified && is_admin
}

fn unauthorized(config: &HttpConfig) -> Reply {
    let message = if config.has_credentials() {
        "credentials required: Authorization: Bearer <http_admin_token> or Basic (an http_admin_user)"
    } else {
        "the admin API is closed: set http_admin_token or http_admin_user in the configuration"
    };
    let mut reply = error(StatusCode::UNAUTHORIZED, message);
    reply.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"ferrymq\""),
    );
    reply.headers_mut().append(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"ferrymq\""),
    );
    reply
}

/// A JSON reply.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(value.to_string())));
    *reply.status_mut() = status;
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    reply
}

/// A JSON error: `{"error": message}`.
pub(crate) fn error(status: StatusCode, message: &str) -> Reply {
    json(status, &serde_json::json!({ "error": message }))
}

/// Binds the HTTP listener's socket.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    crate::net::listener::bind_tcp(addr)
}
