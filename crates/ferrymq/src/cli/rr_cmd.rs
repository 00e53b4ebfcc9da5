//! `ferrymq rr`: MQTT 5 request/response, as mosquitto_rr. Subscribes to
//! the response topic, publishes the request with Response Topic and
//! Correlation Data, prints the first matching response.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use ferrymq_client::{connect, Event, Outgoing, Property, Protocol};

use super::connect_args::{parse_qos, ConnectArgs};
use super::{format, suback_failure, Failure, EXIT_ERROR, EXIT_TIMEOUT};

#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct RrArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Request topic.
    #[arg(short = 't', long = "topic")]
    pub topic: Option<String>,
    /// Response topic (subscribed before the request is sent).
    #[arg(short = 'e', long = "response-topic")]
    pub response_topic: String,
    /// Request payload.
    #[arg(short = 'm', long = "message")]
    pub message: Option<String>,
    /// Request payload from a file.
    #[arg(short = 'f', long = "file")]
    pub file: Option<std::path::PathBuf>,
    /// Empty request payload.
    #[arg(short = 'n', long = "null-message")]
    pub null: bool,
    /// Quality of service of request and subscription.
    #[arg(short = 'q', long = "qos", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Seconds to wait for the response (exit code 27 when they pass).
    #[arg(short = 'W', long = "timeout")]
    pub timeout: Option<u64>,
    /// Print the response topic before the payload.
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
    /// Output format (as ferrymq sub -F).
    #[arg(short = 'F', long = "format")]
    pub format: Option<String>,
    /// No newline after the response.
    #[arg(short = 'N', long = "no-eol")]
    pub no_eol: bool,
}

pub async fn run(args: RrArgs) -> Result<(), Failure> {
    let mut connection = args.connect.resolve("rr").map_err(Failure::from)?;
    if args.connect.version == "mqttv311" {
        // The default: rr needs MQTT 5, so use it (as mosquitto_rr does).
        connection.options.protocol = Protocol::V5;
    } else if !connection.options.protocol.is_v5() {
        return Err(Failure::new(
            EXIT_ERROR,
            "request/response needs MQTT 5 (-V mqttv5)",
        ));
    }
    let payload = (|| -> anyhow::Result<Bytes> {
        Ok(match (&args.message, &args.file, args.null) {
            (Some(m), None, false) => Bytes::from(m.clone()),
            (None, Some(f), false) => {
                Bytes::from(std::fs::read(f).with_context(|| format!("reading {}", f.display()))?)
            }
            (None, None, true) => Bytes::new(),
            _ => bail!("give exactly one of -m, -f or -n"),
        })
    })()
    .map_err(Failure::from)?;
    let topic = args
        .topic
        .clone()
        .or(connection.url_topic.clone())
        .ok_or_else(|| Failure::new(EXIT_ERROR, "a request topic is needed (-t)"))?;
    let qos = parse_qos(args.qos);
    let deadline = args
        .timeout
        .map(|t| tokio::time::Instant::now() + Duration::from_secs(t));
    let c = &connection;

    let (client, mut incoming) = connect(c.options.clone()).await?;
    let code = client.subscribe(&args.response_topic, qos).await?;
    if code.is_error() {
        return Err(suback_failure(&args.response_topic, code));
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let correlation = Bytes::from(format!("{}-{nanos}", std::process::id()));
    let mut properties = c.properties_for("publish");
    properties.set(Property::ResponseTopic(
        args.response_topic
            .as_str()
            .try_into()
            .map_err(|e| Failure::new(EXIT_ERROR, format!("response topic: {e}")))?,
    ));
    if properties.correlation_data().is_none() {
        properties.set(Property::CorrelationData(correlation.clone()));
    }
    let expected = properties.correlation_data();
    client
        .publish_message(Outgoing::new(topic, payload, qos).properties(properties))
        .await?;

    loop {
        let event = match deadline {
            Some(d) => tokio::time::timeout_at(d, incoming.recv())
                .await
                .map_err(|_| Failure::new(EXIT_TIMEOUT, "Timed out"))?,
            None => incoming.recv().await,
        };
        let m = match event {
            Some(Event::Message(m)) => m,
            Some(Event::Disconnected(e)) => return Err(e.into()),
            Some(_) => continue,
            None => return Err(Failure::new(EXIT_ERROR, "connection closed")),
        };
        // A response naming another request's correlation data is not ours.
        if let (Some(got), Some(want)) = (m.properties.correlation_data(), &expected) {
            if got != *want {
                continue;
            }
        }
        let mut out = Vec::new();
        match &args.format {
            Some(f) => format::formatted(f, &m, !args.no_eol, &mut out),
            None => format::plain(&m, args.verbose, !args.no_eol, &mut out),
        }
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(&out).and_then(|()| stdout.flush());
        break;
    }
    client.disconnect().await?;
    Ok(())
}
