//! The client's one error type. Each variant is something a caller (or a
//! shell user, through the CLI) can act on differently.

use std::io;

use ferrymq_codec::ReasonCode;

/// Everything that can go wrong between this client and a server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered CONNECT with a failure code.
    #[error("connection refused: {}{}", .reason.description(), detail(.reason_string))]
    Refused {
        reason: ReasonCode,
        reason_string: Option<String>,
    },
    /// A step did not finish in time (connecting, CONNACK, a ping).
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// TLS setup (files, certificates) or the TLS handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// Reaching or talking to the server failed at the socket level.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The WebSocket handshake or framing failed.
    #[error("WebSocket: {0}")]
    WebSocket(String),
    /// The server broke the protocol (bad bytes, an unexpected packet).
    #[error("protocol violation by the server: {0}")]
    Protocol(String),
    /// The server closed the connection without a DISCONNECT.
    #[error("connection closed by the server")]
    ConnectionClosed,
    /// The server sent an MQTT 5 DISCONNECT.
    #[error("disconnected by the server: {}{}", .reason.description(), detail(.reason_string))]
    ServerDisconnect {
        reason: ReasonCode,
        reason_string: Option<String>,
    },
    /// The server refused a PUBLISH (PUBACK/PUBREC with a failure code).
    #[error("publish refused: {}", .0.description())]
    PublishRefused(ReasonCode),
    /// A value given to the client is not valid MQTT (topic, size, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The client was closed (by `disconnect`, or after a fatal error).
    #[error("the client is closed")]
    Closed,
    /// The connection was lost while a request was waiting for its answer.
    #[error("connection lost before the server answered")]
    ConnectionLost,
}

fn detail(reason_string: &Option<String>) -> String {
    match reason_string {
        Some(s) => format!(" ({s})"),
        None => String::new(),
    }
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The server refused the credentials (bad user name or password).
    pub fn is_bad_credentials(&self) -> bool {
        matches!(
            self,
            Error::Refused {
                reason: ReasonCode::BadUserNameOrPassword,
                ..
            }
        )
    }

    /// The server refused the client as not authorized.
    pub fn is_not_authorized(&self) -> bool {
        matches!(
            self,
            Error::Refused {
                reason: ReasonCode::NotAuthorized,
                ..
            } | Error::PublishRefused(ReasonCode::NotAuthorized)
        )
    }
}

impl From<ferrymq_codec::Error> for Error {
    fn from(e: ferrymq_codec::Error) -> Error {
        Error::Protocol(e.to_string())
    }
}
