//! ferrymq-client: an async MQTT client (tokio) for MQTT 3.1.1 and 5.0.
//!
//! [`connect`] opens a connection and returns a [`Client`] handle (publish,
//! subscribe, unsubscribe, disconnect) and an [`Incoming`] stream of
//! messages and connection events. One task per connection owns all
//! protocol state; handles talk to it over a bounded channel.
//!
//! Layout:
//! - [`options`]: server, transport (TCP, TLS, WebSocket, WSS), CONNECT
//!   fields, in-flight window, reconnect policy.
//! - `client`: the handle, the incoming stream, message types.
//! - `driver`: the connection task (QoS state machines, keep-alive,
//!   reconnect with backoff, resend).
//! - `transport` / `tls`: opening the byte stream.
//! - [`Error`]: what can go wrong, typed.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

mod client;
mod driver;
mod error;
pub mod options;
mod tls;
mod transport;

pub use client::{
    connect, Client, ConnAckInfo, Event, Incoming, Message, Outgoing, PubAck, PublishToken,
};
pub use error::Error;
pub use options::{ConnectOptions, LastWill, Reconnect, TlsOptions, Transport};
pub use transport::{open_stream, ByteStream};

/// The codec's types that appear in this crate's API.
pub use ferrymq_codec::{
    MqttString, PacketId, Properties, Property, Protocol, QoS, ReasonCode, RetainHandling,
    SubscriptionOptions,
};
