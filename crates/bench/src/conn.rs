//! One bench connection: the byte stream (TCP or TLS, opened by
//! ferrymq-client), the CONNECT/CONNACK exchange, SUBSCRIBE/SUBACK, and a
//! read buffer. The load loops above speak MQTT on it directly.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::{Bytes, BytesMut};
use ferrymq_client::{open_stream, ByteStream, ConnectOptions, TlsOptions, Transport};
use ferrymq_codec::{
    decode, encode, Connect, MqttString, Packet, PacketId, Properties, Protocol, QoS, Subscribe,
    SubscriptionOptions, TopicFilter,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::args::{parse_version, Common};

/// Largest packet a bench client accepts.
const MAX_PACKET: usize = 268_435_460;

/// Where and how every client of a run connects.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub protocol: Protocol,
    pub tls: Option<TlsOptions>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keep_alive: u16,
    pub timeout: Duration,
    /// Room made in the read buffer before each read: large for clients
    /// under load (few system calls), small for idle ones (little memory).
    pub read_chunk: usize,
}

impl Target {
    pub fn from_args(c: &Common) -> anyhow::Result<Target> {
        let tls = (c.tls || c.cafile.is_some()).then(|| TlsOptions {
            ca_file: c.cafile.clone(),
            insecure: c.cafile.is_none(),
            ..TlsOptions::default()
        });
        Ok(Target {
            host: c.host.clone(),
            port: c.port.unwrap_or(if tls.is_some() { 8883 } else { 1883 }),
            protocol: parse_version(&c.version)?,
            tls,
            username: c.username.clone(),
            password: c.password.clone(),
            keep_alive: c.keepalive,
            timeout: Duration::from_secs(10),
            read_chunk: 64 * 1024,
        })
    }

    pub fn describe(&self) -> String {
        let scheme = if self.tls.is_some() { "mqtts" } else { "mqtt" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }
}

/// An established MQTT connection.
pub struct Conn {
    pub rd: ReadHalf<Box<dyn ByteStream>>,
    pub wr: WriteHalf<Box<dyn ByteStream>>,
    pub buf: BytesMut,
    read_chunk: usize,
    pub protocol: Protocol,
    /// The broker's Receive Maximum (65,535 when it sets none).
    pub receive_maximum: u16,
    /// Seconds of silence the broker tolerates (its Server Keep Alive, or
    /// ours); 0: none.
    pub keep_alive: u16,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Opens the stream and completes CONNECT/CONNACK within the target's
    /// timeout.
    pub async fn connect(target: &Target, client_id: &str) -> anyhow::Result<Conn> {
        tokio::time::timeout(target.timeout, Conn::connect_inner(target, client_id))
            .await
            .map_err(|_| anyhow!("no CONNACK within {:?}", target.timeout))?
    }

    async fn connect_inner(target: &Target, client_id: &str) -> anyhow::Result<Conn> {
        let mut options = ConnectOptions::new(target.host.clone(), target.port);
        if let Some(tls) = &target.tls {
            options.transport = Transport::Tls(tls.clone());
        }
        options.connect_timeout = target.timeout;
        let stream = open_stream(&options).await?;
        let (rd, wr) = tokio::io::split(stream);
        let mut conn = Conn {
            rd,
            wr,
            buf: BytesMut::new(),
            read_chunk: target.read_chunk.max(64),
            protocol: target.protocol,
            receive_maximum: u16::MAX,
            keep_alive: target.keep_alive,
        };
        let connect = Connect {
            protocol: target.protocol,
            clean_start: true,
            keep_alive: target.keep_alive,
            properties: Properties::new(),
            client_id: MqttString::try_from(client_id)?,
            will: None,
            username: target
                .username
                .as_deref()
                .map(MqttString::try_from)
                .transpose()?,
            password: target
                .password
                .as_ref()
                .map(|p| Bytes::copy_from_slice(p.as_bytes())),
        };
        conn.send(&Packet::Connect(Box::new(connect))).await?;
        match conn.next_packet().await? {
            Packet::ConnAck(ack) if !ack.reason.is_error() => {
                conn.receive_maximum = ack.properties.receive_maximum().unwrap_or(u16::MAX);
                if let Some(k) = ack.properties.server_keep_alive() {
                    conn.keep_alive = k;
                }
                Ok(conn)
            }
            Packet::ConnAck(ack) => bail!("connection refused: {:?}", ack.reason),
            other => bail!("expected CONNACK, got {:?}", other.packet_type()),
        }
    }

    /// Subscribes to one filter and waits for a granted SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> anyhow::Result<()> {
        let filter = TopicFilter::new(filter).with_context(|| format!("filter {filter:?}"))?;
        let subscribe = Subscribe {
            packet_id: PacketId::MIN,
            properties: Properties::new(),
            filters: vec![(filter, SubscriptionOptions::qos(qos))],
        };
        self.send(&Packet::Subscribe(subscribe)).await?;
        let wait = async {
            loop {
                match self.next_packet().await? {
                    Packet::SubAck(ack) => {
                        return match ack.reasons.first() {
                            Some(r) if !r.is_error() => Ok(()),
                            other => Err(anyhow!("subscription refused: {other:?}")),
                        }
                    }
                    // Retained messages may come before the SUBACK; the
                    // run has not started, so they are not counted.
                    Packet::Publish(_) => {}
                    other => bail!("expected SUBACK, got {:?}", other.packet_type()),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .map_err(|_| anyhow!("no SUBACK within 10 s"))?
    }

    pub async fn send(&mut self, packet: &Packet) -> anyhow::Result<()> {
        let mut out = BytesMut::new();
        encode(packet, self.protocol, &mut out)?;
        self.wr.write_all(&out).await?;
        Ok(())
    }

    /// Decodes the next packet, reading as needed.
    pub async fn next_packet(&mut self) -> anyhow::Result<Packet> {
        loop {
            if let Some(packet) = self.decode()? {
                return Ok(packet);
            }
            self.read().await?;
        }
    }

    /// One packet from what has been read, if complete.
    pub fn decode(&mut self) -> anyhow::Result<Option<Packet>> {
        Ok(decode(&mut self.buf, self.protocol, MAX_PACKET)?)
    }

    /// Reads what is available; an error when the broker closed.
    pub async fn read(&mut self) -> anyhow::Result<usize> {
        if self.buf.capacity() - self.buf.len() < self.read_chunk / 4 {
            self.buf.reserve(self.read_chunk);
        }
        match self.rd.read_buf(&mut self.buf).await? {
            0 => bail!("the broker closed the connection"),
            n => Ok(n),
        }
    }
}
