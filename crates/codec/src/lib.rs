//! ferrymq-codec: MQTT 3.1, 3.1.1 and 5.0 control packets, sans IO.
//!
//! Bytes in, packets out, and back; no sockets, no runtime, no clock.
//!
//! Layout:
//! - [`types`]: protocol versions, QoS, packet ids, validated strings,
//!   topic names and filters.
//! - [`packet`]: the packets, one model for every version.
//! - [`property`]: MQTT 5 properties and where each may appear.
//! - [`reason`]: MQTT 5 reason codes and the 3.x CONNACK codes.
//! - [`decode`] / [`encode`]: the wire format.
//! - [`varint`]: Variable Byte Integers.
//! - [`Error`]: everything that can be wrong, mapped onto reason codes.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod decode;
pub mod encode;
mod error;
pub mod packet;
pub mod property;
pub mod reason;
pub mod types;
pub mod varint;

pub use decode::{decode, FixedHeader};
pub use encode::{encode, encode_publish, encoded_len};
pub use error::Error;
pub use packet::*;
pub use property::{Properties, Property};
pub use reason::ReasonCode;
pub use types::{filter_matches, MqttString, PacketId, Protocol, QoS, TopicFilter, TopicName};
