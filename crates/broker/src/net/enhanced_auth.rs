//! MQTT 5 enhanced authentication ([MQTT-4.12]) during CONNECT: the AUTH
//! exchange on the socket, with SCRAM-SHA-512 against the password file's
//! `$7$` entries (PBKDF2-HMAC-SHA512 hashes are exactly SCRAM-SHA-512's
//! salted passwords, so no second credential store is needed).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use ferrymq_auth::scram::ClientFirst;
use ferrymq_auth::{ScramKeys, ServerExchange};
use ferrymq_codec::{decode, Auth, Connect, Packet, Properties, Property, Protocol, ReasonCode};

use crate::broker::Broker;
use crate::handshake::Authenticated;

use super::driver::Io;
use super::transport::Transport;

pub const SCRAM_SHA_512: &str = "SCRAM-SHA-512";

/// Runs the exchange the CONNECT asks for. `Ok(None)`: no enhanced
/// authentication was asked for. `Err(reason)`: refuse with CONNACK `reason`.
pub(crate) async fn authenticate<T: Transport>(
    broker: &Broker,
    security: &crate::security::Security,
    io: &mut Io<T>,
    connect: &Connect,
) -> Result<Option<Authenticated>, ReasonCode> {
    if !connect.protocol.is_v5() {
        return Ok(None);
    }
    let Some(method) = connect.properties.authentication_method() else {
        return Ok(None);
    };
    if method.as_str() != SCRAM_SHA_512 {
        return Err(ReasonCode::BadAuthenticationMethod);
    }
    let data = connect
        .properties
        .authentication_data()
        .ok_or(ReasonCode::ProtocolError)?;
    let first = ClientFirst::parse(&data).map_err(|_| ReasonCode::ProtocolError)?;
    let username = first.username().to_string();
    // An unknown user gets a decoy exchange that fails at the proof, so the
    // answer does not tell which users exist.
    let keys = security
        .passwords()
        .and_then(|p| p.scram_sha512_keys(&username))
        .unwrap_or_else(|| ScramKeys::decoy(&username, broker.secret()));
    let (exchange, server_first) =
        ServerExchange::start(&first, keys).map_err(|_| ReasonCode::UnspecifiedError)?;
    send(
        io,
        auth_packet(ReasonCode::ContinueAuthentication, &method, server_first),
    )
    .await?;
    let client_final = match read_packet(io, broker).await? {
        Packet::Auth(a) if a.reason == ReasonCode::ContinueAuthentication => a
            .properties
            .authentication_data()
            .ok_or(ReasonCode::ProtocolError)?,
        _ => return Err(ReasonCode::ProtocolError),
    };
    let server_final = exchange
        .finish(&client_final)
        .map_err(|_| ReasonCode::BadUserNameOrPassword)?;
    let mut connack = Properties::new();
    connack.push(Property::AuthenticationMethod(method));
    connack.push(Property::AuthenticationData(Bytes::from(server_final)));
    Ok(Some(Authenticated {
        username: Arc::from(username),
        connack_properties: connack,
    }))
}

fn auth_packet(reason: ReasonCode, method: &ferrymq_codec::MqttString, data: Vec<u8>) -> Packet {
    let mut properties = Properties::new();
    properties.push(Property::AuthenticationMethod(method.clone()));
    properties.push(Property::AuthenticationData(Bytes::from(data)));
    Packet::Auth(Auth { reason, properties })
}

async fn send<T: Transport>(io: &mut Io<T>, packet: Packet) -> Result<(), ReasonCode> {
    let mut out = BytesMut::new();
    ferrymq_codec::encode(&packet, Protocol::V5, &mut out)
        .map_err(|_| ReasonCode::UnspecifiedError)?;
    io.write_all(&mut out)
        .await
        .map_err(|_| ReasonCode::UnspecifiedError)
}

async fn read_packet<T: Transport>(io: &mut Io<T>, broker: &Broker) -> Result<Packet, ReasonCode> {
    loop {
        match decode(io.buffer(), Protocol::V5, broker.config.max_packet_size) {
            Ok(Some(p)) => return Ok(p),
            Ok(None) => {}
            Err(e) => return Err(e.reason_code()),
        }
        match io.read_some().await {
            Ok(n) if n > 0 => {}
            _ => return Err(ReasonCode::UnspecifiedError),
        }
    }
}
