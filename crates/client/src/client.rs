//! The handle applications hold ([`Client`]), the stream of what the server
//! sends them ([`Incoming`]), and [`connect`], which opens both.

use std::time::Duration;

use bytes::Bytes;
use ferrymq_codec::{
    PacketId, Properties, Protocol, Publish, QoS, ReasonCode, SubscriptionOptions, TopicFilter,
    TopicName,
};
use tokio::sync::{mpsc, oneshot};

use crate::driver::{self, Command};
use crate::options::ConnectOptions;
use crate::Error;

/// A message received from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: TopicName,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub dup: bool,
    /// The packet id the server used (QoS 1/2), as `mosquitto_sub -F %m` shows.
    pub packet_id: Option<PacketId>,
    /// MQTT 5 properties (empty for 3.x).
    pub properties: Properties,
}

/// What [`Incoming::recv`] yields.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// An application message.
    Message(Message),
    /// The connection was lost. With automatic reconnect the client is
    /// trying again; without, nothing follows.
    Disconnected(Error),
    /// Reconnected after a loss; unacknowledged messages were resent.
    Reconnected { session_present: bool },
}

/// The server's CONNACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAckInfo {
    pub session_present: bool,
    pub properties: Properties,
    /// The client id in use: ours, or the one the server assigned.
    pub client_id: String,
}

/// The outcome of a PUBLISH: for QoS 0, written; for QoS 1 the PUBACK; for
/// QoS 2 the PUBREC's code once PUBCOMP closed the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubAck {
    pub reason: ReasonCode,
    pub properties: Properties,
}

/// A message to publish, with MQTT 5 properties if wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: Properties,
}

impl Outgoing {
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>, qos: QoS) -> Outgoing {
        Outgoing {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain: false,
            properties: Properties::new(),
        }
    }

    pub fn retain(mut self, retain: bool) -> Outgoing {
        self.retain = retain;
        self
    }

    pub fn properties(mut self, properties: Properties) -> Outgoing {
        self.properties = properties;
        self
    }
}

/// The answer to a publish, once the exchange with the server is over.
#[derive(Debug)]
pub struct PublishToken(oneshot::Receiver<Result<PubAck, Error>>);

impl PublishToken {
    pub async fn wait(self) -> Result<PubAck, Error> {
        self.0.await.unwrap_or(Err(Error::Closed))
    }
}

/// A handle on a connection. Cheap to clone; the connection closes (with a
/// DISCONNECT) when the last handle is dropped or [`Client::disconnect`]
/// is called.
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    connack: ConnAckInfo,
    protocol: Protocol,
}

/// The messages and connection events of one client, in order.
#[derive(Debug)]
pub struct Incoming(mpsc::Receiver<Event>);

impl Incoming {
    /// The next event; `None` once the client is closed for good.
    pub async fn recv(&mut self) -> Option<Event> {
        self.0.recv().await
    }

    /// The next message, skipping other events; `None` once closed, or
    /// `Err` when the connection is lost.
    pub async fn next_message(&mut self) -> Result<Option<Message>, Error> {
        loop {
            match self.0.recv().await {
                Some(Event::Message(m)) => return Ok(Some(m)),
                Some(Event::Disconnected(e)) => return Err(e),
                Some(Event::Reconnected { .. }) => {}
                None => return Ok(None),
            }
        }
    }

    /// [`Incoming::next_message`] with a limit: `Err(Timeout)` when nothing
    /// came in time.
    pub async fn next_message_within(&mut self, wait: Duration) -> Result<Option<Message>, Error> {
        tokio::time::timeout(wait, self.next_message())
            .await
            .unwrap_or(Err(Error::Timeout("waiting for a message")))
    }
}

/// Connects (transport, CONNECT, CONNACK) and starts the connection task.
/// Fails with [`Error::Refused`] if the server says no; automatic
/// reconnection applies only after this first success.
pub async fn connect(options: ConnectOptions) -> Result<(Client, Incoming), Error> {
    let (commands_tx, commands_rx) = mpsc::channel(64);
    let (events_tx, events_rx) = mpsc::channel(options.incoming_capacity.max(1));
    let protocol = options.protocol;
    let (connack, task) = driver::Driver::start(options, commands_rx, events_tx).await?;
    tokio::spawn(task.run());
    Ok((
        Client {
            commands: commands_tx,
            connack,
            protocol,
        },
        Incoming(events_rx),
    ))
}

impl Client {
    /// The CONNACK of the first connection.
    pub fn connack(&self) -> &ConnAckInfo {
        &self.connack
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Publishes and waits until the exchange for its QoS is complete.
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Result<PubAck, Error> {
        self.publish_message(Outgoing::new(topic, payload, qos).retain(retain))
            .await
    }

    /// Publishes a message with properties and waits for its completion.
    pub async fn publish_message(&self, message: Outgoing) -> Result<PubAck, Error> {
        self.start_publish(message).await?.wait().await
    }

    /// Hands a message to the connection and returns once it is queued
    /// (possibly waiting for room in the in-flight window); the token
    /// resolves when the server has acknowledged it.
    pub async fn start_publish(&self, message: Outgoing) -> Result<PublishToken, Error> {
        let topic = TopicName::new(message.topic.as_str())
            .map_err(|e| Error::InvalidArgument(format!("topic '{}': {e}", message.topic)))?;
        if topic.is_empty() {
            return Err(Error::InvalidArgument("empty topic".into()));
        }
        let publish = Publish {
            dup: false,
            qos: message.qos,
            retain: message.retain,
            topic,
            packet_id: None,
            properties: self.v5_only(message.properties),
            payload: message.payload,
        };
        let (reply, rx) = oneshot::channel();
        self.send(Command::Publish { publish, reply }).await?;
        Ok(PublishToken(rx))
    }

    /// Subscribes to one filter; returns the SUBACK's code (granted QoS or
    /// a failure, which is not an `Err`).
    pub async fn subscribe(&self, filter: &str, qos: QoS) -> Result<ReasonCode, Error> {
        let codes = self
            .subscribe_many(
                vec![(filter.to_string(), SubscriptionOptions::qos(qos))],
                Properties::new(),
            )
            .await?;
        codes
            .first()
            .copied()
            .ok_or_else(|| Error::Protocol("SUBACK without a reason code".into()))
    }

    /// Subscribes to several filters with full options and properties
    /// (Subscription Identifier, user properties); one code per filter.
    pub async fn subscribe_many(
        &self,
        filters: Vec<(String, SubscriptionOptions)>,
        properties: Properties,
    ) -> Result<Vec<ReasonCode>, Error> {
        let filters = filters
            .into_iter()
            .map(|(f, o)| {
                TopicFilter::new(f.as_str())
                    .map(|t| (t, o))
                    .map_err(|e| Error::InvalidArgument(format!("topic filter '{f}': {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if filters.is_empty() {
            return Err(Error::InvalidArgument("no topic filter".into()));
        }
        let (reply, rx) = oneshot::channel();
        self.send(Command::Subscribe {
            filters,
            properties: self.v5_only(properties),
            reply,
        })
        .await?;
        rx.await.unwrap_or(Err(Error::Closed))
    }

    /// Unsubscribes; returns the UNSUBACK's codes (MQTT 5; empty for 3.x).
    pub async fn unsubscribe(&self, filters: &[&str]) -> Result<Vec<ReasonCode>, Error> {
        let filters = filters
            .iter()
            .map(|f| {
                TopicFilter::new(*f)
                    .map_err(|e| Error::InvalidArgument(format!("topic filter '{f}': {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (reply, rx) = oneshot::channel();
        self.send(Command::Unsubscribe { filters, reply }).await?;
        rx.await.unwrap_or(Err(Error::Closed))
    }

    /// Sends DISCONNECT (normal) and closes the connection.
    pub async fn disconnect(&self) -> Result<(), Error> {
        self.disconnect_with(ReasonCode::NORMAL_DISCONNECTION, Properties::new())
            .await
    }

    /// Sends DISCONNECT with a reason (MQTT 5: 0x04 asks the server to
    /// publish the will) and properties, then closes.
    pub async fn disconnect_with(
        &self,
        reason: ReasonCode,
        properties: Properties,
    ) -> Result<(), Error> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Disconnect {
            reason,
            properties: self.v5_only(properties),
            reply,
        })
        .await?;
        let _ = rx.await;
        Ok(())
    }

    async fn send(&self, command: Command) -> Result<(), Error> {
        self.commands.send(command).await.map_err(|_| Error::Closed)
    }

    fn v5_only(&self, properties: Properties) -> Properties {
        if self.protocol.is_v5() {
            properties
        } else {
            Properties::new()
        }
    }
}
