//! Sockets: listeners and the per-connection driver. Protocol logic lives
//! outside this module so it can be tested without a network.

pub mod driver;
pub mod enhanced_auth;
pub mod listener;
pub mod proxy;
pub mod shard;
pub mod tls;
pub mod transport;
pub mod x509;
