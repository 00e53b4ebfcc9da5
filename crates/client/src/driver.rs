//! The connection task: owns the socket and every piece of protocol state
//! (in-flight window, packet ids, inbound QoS 2 ids, topic aliases,
//! keep-alive), takes commands from [`crate::Client`] handles and hands
//! received messages to [`crate::Incoming`]. It reconnects with backoff
//! when told to and resends what the server had not acknowledged.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use bytes::BytesMut;
use ferrymq_codec::{
    decode, encode, encoded_len, ConnAck, Connect, Disconnect, MqttString, Packet, PacketId,
    Properties, Property, Protocol, PubResponse, Publish, QoS, ReasonCode, Subscribe,
    SubscriptionOptions, TopicFilter, TopicName, Unsubscribe, Will,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, timeout, Instant};
use tracing::{debug, trace};

use crate::client::{ConnAckInfo, Event, Message, PubAck};
use crate::options::ConnectOptions;
use crate::transport::{self, Connection};
use crate::Error;

type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// What a [`crate::Client`] asks of the task.
#[derive(Debug)]
pub(crate) enum Command {
    Publish {
        publish: Publish,
        reply: Reply<PubAck>,
    },
    Subscribe {
        filters: Vec<(TopicFilter, SubscriptionOptions)>,
        properties: Properties,
        reply: Reply<Vec<ReasonCode>>,
    },
    Unsubscribe {
        filters: Vec<TopicFilter>,
        reply: Reply<Vec<ReasonCode>>,
    },
    Disconnect {
        reason: ReasonCode,
        properties: Properties,
        reply: oneshot::Sender<()>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)]
enum Stage {
    /// QoS 1, waiting for PUBACK.
    PubAck,
    /// QoS 2, waiting for PUBREC.
    PubRec,
    /// QoS 2, PUBREL sent, waiting for PUBCOMP.
    PubComp,
}

#[derive(Debug)]
struct InFlight {
    seq: u64,
    publish: Publish,
    stage: Stage,
    rec: Option<PubAck>,
    reply: Option<Reply<PubAck>>,
}

#[derive(Debug)]
enum Request {
    Subscribe(Reply<Vec<ReasonCode>>),
    Unsubscribe(Reply<Vec<ReasonCode>>),
    /// A re-subscription after reconnecting to a fresh session.
    Internal,
}

/// Why the connected loop ended.
#[derive(Debug)]
enum Exit {
    /// Disconnect asked for, or every handle dropped: stop for good.
    Closed,
    /// The connection broke.
    Lost(Error),
}

#[derive(Debug)]
pub(crate) struct Driver {
    options: ConnectOptions,
    protocol: Protocol,
    conn: Connection,
    read_buf: BytesMut,
    out: BytesMut,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    inflight: HashMap<u16, InFlight>,
    /// Publishes accepted but not yet in the window, in order.
    waiting: VecDeque<(Publish, Reply<PubAck>)>,
    requests: HashMap<u16, Request>,
    inbound_qos2: HashSet<u16>,
    aliases: HashMap<u16, TopicName>,
    subscriptions: Vec<(TopicFilter, SubscriptionOptions)>,
    next_id: u16,
    seq: u64,
    window: usize,
    server_max_packet: usize,
    keep_alive: Duration,
    last_sent: Instant,
    ping_sent: Option<Instant>,
}

impl Driver {
    /// Makes the first connection; the returned driver is ready to `run`.
    pub(crate) async fn start(
        options: ConnectOptions,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
    ) -> Result<(ConnAckInfo, Driver), Error> {
        let (conn, ack, read_buf) = handshake(&options).await?;
        let mut driver = Driver {
            protocol: options.protocol,
            conn,
            read_buf,
            out: BytesMut::with_capacity(4096),
            commands,
            events,
            inflight: HashMap::new(),
            waiting: VecDeque::new(),
            requests: HashMap::new(),
            inbound_qos2: HashSet::new(),
            aliases: HashMap::new(),
            subscriptions: Vec::new(),
            next_id: 0,
            seq: 0,
            window: usize::from(options.max_inflight.max(1)),
            server_max_packet: usize::MAX,
            keep_alive: Duration::ZERO,
            last_sent: Instant::now(),
            ping_sent: None,
            options,
        };
        let info = driver.accept_connack(&ack);
        Ok((info, driver))
    }

    /// Applies what the server's CONNACK tells us.
    fn accept_connack(&mut self, ack: &ConnAck) -> ConnAckInfo {
        let p = &ack.properties;
        self.window = usize::from(self.options.max_inflight.max(1));
        if let Some(max) = p.receive_maximum() {
            self.window = self.window.min(usize::from(max.max(1)));
        }
        self.server_max_packet = p.maximum_packet_size().map_or(usize::MAX, |m| m as usize);
        let keep_alive = p.server_keep_alive().unwrap_or(self.options.keep_alive);
        self.keep_alive = Duration::from_secs(u64::from(keep_alive));
        self.last_sent = Instant::now();
        self.ping_sent = None;
        self.aliases.clear();
        let client_id = p
            .assigned_client_identifier()
            .map(|s| s.to_string())
            .unwrap_or_else(|| self.options.client_id.clone());
        ConnAckInfo {
            session_present: ack.session_present,
            properties: ack.properties.clone(),
            client_id,
        }
    }

    pub(crate) async fn run(mut self) {
        loop {
            let error = match self.connected().await {
                Exit::Closed => break,
                Exit::Lost(e) => e,
            };
            debug!("connection lost: {error}");
            self.fail_requests();
            let Some(policy) = self.options.reconnect else {
                self.fail_all();
                let _ = self.events.send(Event::Disconnected(error)).await;
                return;
            };
            let _ = self.events.send(Event::Disconnected(error)).await;
            let mut delay = policy.initial_delay;
            loop {
                let wake = Instant::now() + delay;
                if !self.wait_offline(wake).await {
                    self.fail_all();
                    return;
                }
                match handshake(&self.options).await {
                    Ok((conn, ack, read_buf)) => {
                        self.conn = conn;
                        self.read_buf = read_buf;
                        let info = self.accept_connack(&ack);
                        self.resume(info.session_present);
                        let _ = self
                            .events
                            .send(Event::Reconnected {
                                session_present: info.session_present,
                            })
                            .await;
                        break;
                    }
                    Err(e) => {
                        debug!("reconnect failed: {e}");
                        delay = (delay * 2).min(policy.max_delay);
                    }
                }
            }
        }
        self.fail_all();
    }

    /// Waits until `wake` while offline, taking commands: publishes queue
    /// (up to the window), requests fail at once. False if told to close.
    async fn wait_offline(&mut self, wake: Instant) -> bool {
        loop {
            let room = self.waiting.len() < self.window;
            tokio::select! {
                _ = sleep_until(wake) => return true,
                command = self.commands.recv(), if room => match command {
                    None => return false,
                    Some(Command::Disconnect { reply, .. }) => {
                        let _ = reply.send(());
                        return false;
                    }
                    Some(Command::Publish { publish, reply }) => {
                        self.waiting.push_back((publish, reply));
                    }
                    Some(Command::Subscribe { reply, .. } | Command::Unsubscribe { reply, .. }) => {
                        let _ = reply.send(Err(Error::ConnectionLost));
                    }
                },
            }
        }
    }

    /// After reconnecting: resend what the server has not acknowledged
    /// ([MQTT-4.4.0-1]), and restore subscriptions if the session is new.
    fn resume(&mut self, session_present: bool) {
        if !session_present {
            self.inbound_qos2.clear();
            if !self.subscriptions.is_empty() {
                if let Some(id) = self.next_packet_id() {
                    self.requests.insert(id.get(), Request::Internal);
                    let subscribe = Subscribe {
                        packet_id: id,
                        properties: Properties::new(),
                        filters: self.subscriptions.clone(),
                    };
                    self.push(&Packet::Subscribe(subscribe));
                }
            }
        }
        let mut ids: Vec<(u64, u16)> = self.inflight.iter().map(|(id, f)| (f.seq, *id)).collect();
        ids.sort_unstable();
        for (_, id) in ids {
            let Some(flight) = self.inflight.get_mut(&id) else {
                continue;
            };
            match flight.stage {
                Stage::PubAck | Stage::PubRec => {
                    flight.publish.dup = true;
                    let packet = Packet::Publish(flight.publish.clone());
                    self.push(&packet);
                }
                Stage::PubComp if session_present => {
                    let packet = Packet::PubRel(PubResponse::new(flight.publish_id()));
                    self.push(&packet);
                }
                Stage::PubComp => {
                    // The new session has no record of it; it was delivered.
                    if let Some(mut flight) = self.inflight.remove(&id) {
                        flight.complete();
                    }
                }
            }
        }
        self.admit_waiting();
    }

    /// The connected loop: flush, then wait for the server, a command or
    /// the keep-alive deadline.
    async fn connected(&mut self) -> Exit {
        // The server may have sent more right behind its CONNACK.
        if let Err(e) = self.handle_input().await {
            return Exit::Lost(e);
        }
        self.admit_waiting();
        loop {
            if !self.out.is_empty() {
                if let Err(e) = self.conn.write_all(&self.out).await {
                    return Exit::Lost(e);
                }
                self.out.clear();
                self.last_sent = Instant::now();
            }
            let deadline = match self.ping_sent {
                Some(sent) => sent + self.keep_alive,
                None => self.last_sent + self.keep_alive,
            };
            let room = self.waiting.len() < self.window;
            tokio::select! {
                read = self.conn.read(&mut self.read_buf) => match read {
                    Ok(0) => return Exit::Lost(Error::ConnectionClosed),
                    Ok(_) => {
                        if let Err(e) = self.handle_input().await {
                            return Exit::Lost(e);
                        }
                    }
                    Err(e) => return Exit::Lost(e),
                },
                command = self.commands.recv(), if room => match command {
                    None => {
                        self.close(ReasonCode::NORMAL_DISCONNECTION, Properties::new()).await;
                        return Exit::Closed;
                    }
                    Some(Command::Disconnect { reason, properties, reply }) => {
                        self.close(reason, properties).await;
                        let _ = reply.send(());
                        return Exit::Closed;
                    }
                    Some(command) => self.command(command),
                },
                _ = sleep_until(deadline), if !self.keep_alive.is_zero() => {
                    if self.ping_sent.is_some() {
                        return Exit::Lost(Error::Timeout("waiting for PINGRESP"));
                    }
                    self.push(&Packet::PingReq);
                    self.ping_sent = Some(Instant::now());
                }
            }
        }
    }

    async fn close(&mut self, reason: ReasonCode, properties: Properties) {
        self.push(&Packet::Disconnect(Disconnect { reason, properties }));
        let _ = timeout(self.options.connect_timeout, async {
            let _ = self.conn.write_all(&self.out).await;
            self.conn.shutdown().await;
        })
        .await;
        self.out.clear();
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Publish { publish, reply } => {
                self.waiting.push_back((publish, reply));
                self.admit_waiting();
            }
            Command::Subscribe {
                filters,
                properties,
                reply,
            } => {
                let Some(id) = self.next_packet_id() else {
                    let _ = reply.send(Err(Error::InvalidArgument("no free packet id".into())));
                    return;
                };
                for (filter, options) in &filters {
                    self.subscriptions.retain(|(f, _)| f != filter);
                    self.subscriptions.push((filter.clone(), *options));
                }
                self.requests.insert(id.get(), Request::Subscribe(reply));
                self.push(&Packet::Subscribe(Subscribe {
                    packet_id: id,
                    properties,
                    filters,
                }));
            }
            Command::Unsubscribe { filters, reply } => {
                let Some(id) = self.next_packet_id() else {
                    let _ = reply.send(Err(Error::InvalidArgument("no free packet id".into())));
                    return;
                };
                self.subscriptions.retain(|(f, _)| !filters.contains(f));
                self.requests.insert(id.get(), Request::Unsubscribe(reply));
                self.push(&Packet::Unsubscribe(Unsubscribe {
                    packet_id: id,
                    properties: Properties::new(),
                    filters,
                }));
            }
            Command::Disconnect { .. } => {}
        }
    }

    /// Moves waiting publishes into the window while there is room.
    fn admit_waiting(&mut self) {
        while let Some((publish, _)) = self.waiting.front() {
            if publish.qos != QoS::AtMostOnce && self.inflight.len() >= self.window {
                return;
            }
            let Some((mut publish, reply)) = self.waiting.pop_front() else {
                return;
            };
            if publish.qos == QoS::AtMostOnce {
                let result = self.check_size(&publish).map(|()| {
                    self.push(&Packet::Publish(publish));
                    PubAck {
                        reason: ReasonCode::Success,
                        properties: Properties::new(),
                    }
                });
                let _ = reply.send(result);
                continue;
            }
            let Some(id) = self.next_packet_id() else {
                let _ = reply.send(Err(Error::InvalidArgument("no free packet id".into())));
                continue;
            };
            publish.packet_id = Some(id);
            if let Err(e) = self.check_size(&publish) {
                let _ = reply.send(Err(e));
                continue;
            }
            self.push(&Packet::Publish(publish.clone()));
            self.seq += 1;
            let stage = if publish.qos == QoS::AtLeastOnce {
                Stage::PubAck
            } else {
                Stage::PubRec
            };
            self.inflight.insert(
                id.get(),
                InFlight {
                    seq: self.seq,
                    publish,
                    stage,
                    rec: None,
                    reply: Some(reply),
                },
            );
        }
    }

    /// Refuses a PUBLISH larger than the server's Maximum Packet Size.
    fn check_size(&self, publish: &Publish) -> Result<(), Error> {
        let len = encoded_len(&Packet::Publish(publish.clone()), self.protocol)
            .map_err(|e| Error::InvalidArgument(format!("PUBLISH: {e}")))?;
        if len > self.server_max_packet {
            return Err(Error::InvalidArgument(format!(
                "PUBLISH of {len} bytes exceeds the server's maximum packet size of {}",
                self.server_max_packet
            )));
        }
        Ok(())
    }

    fn next_packet_id(&mut self) -> Option<PacketId> {
        for _ in 0..=u16::MAX {
            self.next_id = self.next_id.wrapping_add(1);
            let Some(id) = PacketId::new(self.next_id) else {
                continue;
            };
            if !self.inflight.contains_key(&id.get()) && !self.requests.contains_key(&id.get()) {
                return Some(id);
            }
        }
        None
    }

    fn push(&mut self, packet: &Packet) {
        trace!("sending {}", packet.packet_type());
        if let Err(e) = encode(packet, self.protocol, &mut self.out) {
            debug!("could not encode {}: {e}", packet.packet_type());
        }
    }

    /// Decodes and handles every complete packet in the read buffer.
    async fn handle_input(&mut self) -> Result<(), Error> {
        while let Some(packet) = decode(
            &mut self.read_buf,
            self.protocol,
            self.options.max_packet_size,
        )? {
            trace!("received {}", packet.packet_type());
            self.handle(packet).await?;
        }
        Ok(())
    }

    async fn handle(&mut self, packet: Packet) -> Result<(), Error> {
        match packet {
            Packet::Publish(publish) => self.incoming_publish(publish).await?,
            Packet::PubAck(ack) => {
                if let Some(mut flight) = self.take_stage(ack.packet_id, Stage::PubAck) {
                    flight.finish(ack);
                }
            }
            Packet::PubRec(rec) => {
                let id = rec.packet_id;
                match self.inflight.get_mut(&id.get()) {
                    Some(flight) if flight.stage == Stage::PubRec => {
                        if rec.reason.is_error() {
                            if let Some(mut flight) = self.inflight.remove(&id.get()) {
                                flight.finish(rec);
                            }
                        } else {
                            flight.stage = Stage::PubComp;
                            flight.rec = Some(PubAck {
                                reason: rec.reason,
                                properties: rec.properties,
                            });
                            self.push(&Packet::PubRel(PubResponse::new(id)));
                        }
                    }
                    Some(flight) if flight.stage == Stage::PubComp => {
                        self.push(&Packet::PubRel(PubResponse::new(id)));
                    }
                    _ => {
                        let mut rel = PubResponse::new(id);
                        if self.protocol.is_v5() {
                            rel.reason = ReasonCode::PacketIdentifierNotFound;
                        }
                        self.push(&Packet::PubRel(rel));
                    }
                }
            }
            Packet::PubComp(comp) => {
                if let Some(mut flight) = self.take_stage(comp.packet_id, Stage::PubComp) {
                    flight.complete();
                }
            }
            Packet::PubRel(rel) => {
                let known = self.inbound_qos2.remove(&rel.packet_id.get());
                let mut comp = PubResponse::new(rel.packet_id);
                if !known && self.protocol.is_v5() {
                    comp.reason = ReasonCode::PacketIdentifierNotFound;
                }
                self.push(&Packet::PubComp(comp));
            }
            Packet::SubAck(ack) => match self.requests.remove(&ack.packet_id.get()) {
                Some(Request::Subscribe(reply)) => {
                    let _ = reply.send(Ok(ack.reasons));
                }
                Some(Request::Internal) | None => {}
                Some(Request::Unsubscribe(reply)) => {
                    let _ = reply.send(Err(Error::Protocol("SUBACK for an UNSUBSCRIBE".into())));
                }
            },
            Packet::UnsubAck(ack) => match self.requests.remove(&ack.packet_id.get()) {
                Some(Request::Unsubscribe(reply)) => {
                    let _ = reply.send(Ok(ack.reasons));
                }
                Some(Request::Internal) | None => {}
                Some(Request::Subscribe(reply)) => {
                    let _ = reply.send(Err(Error::Protocol("UNSUBACK for a SUBSCRIBE".into())));
                }
            },
            Packet::PingResp => self.ping_sent = None,
            Packet::Disconnect(d) => {
                return Err(Error::ServerDisconnect {
                    reason: d.reason,
                    reason_string: d.properties.reason_string().map(|s| s.to_string()),
                })
            }
            other => {
                return Err(Error::Protocol(format!(
                    "unexpected {} from the server",
                    other.packet_type()
                )))
            }
        }
        self.admit_waiting();
        Ok(())
    }

    fn take_stage(&mut self, id: PacketId, stage: Stage) -> Option<InFlight> {
        match self.inflight.get(&id.get()) {
            Some(flight) if flight.stage == stage => self.inflight.remove(&id.get()),
            _ => None,
        }
    }

    async fn incoming_publish(&mut self, mut publish: Publish) -> Result<(), Error> {
        if let Some(alias) = publish.properties.topic_alias() {
            if publish.topic.is_empty() {
                publish.topic = self
                    .aliases
                    .get(&alias)
                    .cloned()
                    .ok_or_else(|| Error::Protocol(format!("unknown topic alias {alias}")))?;
            } else {
                self.aliases.insert(alias, publish.topic.clone());
            }
        }
        let deliver = match (publish.qos, publish.packet_id) {
            (QoS::AtMostOnce, _) => true,
            (QoS::AtLeastOnce, Some(id)) => {
                self.push(&Packet::PubAck(PubResponse::new(id)));
                true
            }
            (QoS::ExactlyOnce, Some(id)) => {
                self.push(&Packet::PubRec(PubResponse::new(id)));
                self.inbound_qos2.insert(id.get())
            }
            _ => {
                return Err(Error::Protocol(
                    "QoS 1/2 PUBLISH without a packet id".into(),
                ))
            }
        };
        if deliver {
            let message = Message {
                topic: publish.topic,
                payload: publish.payload,
                qos: publish.qos,
                retain: publish.retain,
                dup: publish.dup,
                packet_id: publish.packet_id,
                properties: publish.properties,
            };
            // A closed receiver means the application wants no messages.
            let _ = self.events.send(Event::Message(message)).await;
        }
        Ok(())
    }

    /// Fails the subscribe/unsubscribe requests of a lost connection.
    fn fail_requests(&mut self) {
        for (_, request) in self.requests.drain() {
            match request {
                Request::Subscribe(reply) | Request::Unsubscribe(reply) => {
                    let _ = reply.send(Err(Error::ConnectionLost));
                }
                Request::Internal => {}
            }
        }
    }

    /// The client is closing for good: everyone waiting hears so.
    fn fail_all(&mut self) {
        self.fail_requests();
        for (_, mut flight) in self.inflight.drain() {
            if let Some(reply) = flight.reply.take() {
                let _ = reply.send(Err(Error::ConnectionLost));
            }
        }
        for (_, reply) in self.waiting.drain(..) {
            let _ = reply.send(Err(Error::ConnectionLost));
        }
    }
}

impl InFlight {
    fn publish_id(&self) -> PacketId {
        self.publish.packet_id.unwrap_or(PacketId::MIN)
    }

    /// Answers the publisher with the PUBACK (or failed PUBREC).
    fn finish(&mut self, ack: PubResponse) {
        if let Some(reply) = self.reply.take() {
            let result = if ack.reason.is_error() {
                Err(Error::PublishRefused(ack.reason))
            } else {
                Ok(PubAck {
                    reason: ack.reason,
                    properties: ack.properties,
                })
            };
            let _ = reply.send(result);
        }
    }

    /// QoS 2 done: answers with what the PUBREC said.
    fn complete(&mut self) {
        if let Some(reply) = self.reply.take() {
            let ack = self.rec.take().unwrap_or(PubAck {
                reason: ReasonCode::Success,
                properties: Properties::new(),
            });
            let _ = reply.send(Ok(ack));
        }
    }
}

/// Opens the transport, sends CONNECT and waits for CONNACK, all within
/// the connect timeout. Returns what was read past the CONNACK too.
async fn handshake(options: &ConnectOptions) -> Result<(Connection, ConnAck, BytesMut), Error> {
    timeout(options.connect_timeout, async {
        let mut conn = transport::open(options).await?;
        let mut out = BytesMut::new();
        encode(
            &Packet::Connect(Box::new(connect_packet(options)?)),
            options.protocol,
            &mut out,
        )
        .map_err(|e| Error::InvalidArgument(format!("CONNECT: {e}")))?;
        conn.write_all(&out).await?;
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            if let Some(packet) = decode(&mut buf, options.protocol, options.max_packet_size)? {
                return match packet {
                    Packet::ConnAck(ack) if ack.reason.is_error() => Err(Error::Refused {
                        reason: ack.reason,
                        reason_string: ack.properties.reason_string().map(|s| s.to_string()),
                    }),
                    Packet::ConnAck(ack) => Ok((conn, ack, buf)),
                    Packet::Disconnect(d) => Err(Error::ServerDisconnect {
                        reason: d.reason,
                        reason_string: d.properties.reason_string().map(|s| s.to_string()),
                    }),
                    other => Err(Error::Protocol(format!(
                        "expected CONNACK, got {}",
                        other.packet_type()
                    ))),
                };
            }
            if conn.read(&mut buf).await? == 0 {
                return Err(Error::ConnectionClosed);
            }
        }
    })
    .await
    .unwrap_or(Err(Error::Timeout("connecting")))
}

fn mqtt_string(what: &str, s: &str) -> Result<MqttString, Error> {
    MqttString::try_from(s).map_err(|e| Error::InvalidArgument(format!("{what}: {e}")))
}

fn connect_packet(options: &ConnectOptions) -> Result<Connect, Error> {
    let v5 = options.protocol.is_v5();
    let will = match &options.will {
        Some(w) => Some(Will {
            qos: w.qos,
            retain: w.retain,
            properties: if v5 {
                w.properties.clone()
            } else {
                Properties::new()
            },
            topic: TopicName::new(w.topic.as_str())
                .map_err(|e| Error::InvalidArgument(format!("will topic: {e}")))?,
            payload: w.payload.clone(),
        }),
        None => None,
    };
    let mut properties = if v5 {
        options.properties.clone()
    } else {
        Properties::new()
    };
    if v5 && properties.maximum_packet_size().is_none() && options.max_packet_size < 268_435_460 {
        properties.push(Property::MaximumPacketSize(
            u32::try_from(options.max_packet_size).unwrap_or(u32::MAX),
        ));
    }
    Ok(Connect {
        protocol: options.protocol,
        clean_start: options.clean_start,
        keep_alive: options.keep_alive,
        properties,
        client_id: mqtt_string("client id", &options.client_id)?,
        will,
        username: match &options.username {
            Some(u) => Some(mqtt_string("user name", u)?),
            None => None,
        },
        password: options.password.clone(),
    })
}
