//! ferrymq-auth: who may connect, and what they may read and write.
//!
//! Self-contained building blocks, Mosquitto-compatible, with no I/O on
//! the hot path:
//! - [`password`]: password files in every `mosquitto_passwd` format
//!   (`$6$`, `$7$`, `$argon2id$`); verification, hashing, and the
//!   SCRAM-SHA-512 keys a `$7$` entry yields. [`hash`] holds one entry's
//!   hash.
//! - [`acl`]: ACL files (`user`, `topic`, `pattern` with `%c`/`%u`),
//!   precompiled; `check` for PUBLISH and delivery, `can_ever_read` for
//!   SUBSCRIBE.
//! - [`scram`]: a SCRAM-SHA-512 server exchange (RFC 5802) for MQTT 5
//!   enhanced authentication.
//!
//! Hashing is deliberately slow (PBKDF2, Argon2): callers on an async
//! runtime run [`password::PasswordFile::verify`] on a blocking thread.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod acl;
pub mod hash;
pub mod password;
pub mod scram;

use std::path::PathBuf;

pub use acl::{Access, AclFile};
pub use hash::{Algorithm, PasswordHash};
pub use password::PasswordFile;
pub use scram::{ScramKeys, ServerExchange};

/// Every error of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line of a password or ACL file is not understood.
    #[error("{}:{line}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A password hash string is malformed.
    #[error("invalid password hash: {0}")]
    InvalidHash(&'static str),
    /// Hashing a new password failed (bad parameters, no randomness).
    #[error("cannot hash password: {0}")]
    Hashing(String),
    /// A SCRAM message is malformed or uses an unsupported feature.
    #[error("SCRAM: {0}")]
    ScramProtocol(&'static str),
    /// The SCRAM client proof is wrong: bad username or password.
    #[error("SCRAM: authentication failed")]
    ScramAuthFailed,
}
