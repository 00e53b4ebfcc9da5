//! `ferrymq pub`: mosquitto_pub's flags and behaviour.

use std::io::{BufRead, Read};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use ferrymq_client::{connect, Outgoing, Properties, QoS};

use super::connect_args::{parse_qos, ConnectArgs, Connection};
use super::{Failure, EXIT_ERROR};

#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct PubArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Topic to publish to.
    #[arg(short = 't', long = "topic")]
    pub topic: Option<String>,
    /// Message payload.
    #[arg(short = 'm', long = "message")]
    pub message: Option<String>,
    /// Send the contents of a file as the message.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Read the whole of stdin as one message.
    #[arg(short = 's', long = "stdin-file")]
    pub stdin_file: bool,
    /// Send each line of stdin as a message.
    #[arg(short = 'l', long = "stdin-line")]
    pub stdin_line: bool,
    /// Send a zero-length message.
    #[arg(short = 'n', long = "null-message")]
    pub null: bool,
    /// Quality of service.
    #[arg(short = 'q', long = "qos", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Retain the message.
    #[arg(short = 'r', long = "retain")]
    pub retain: bool,
    /// Publish the message this many times.
    #[arg(long = "repeat", default_value_t = 1)]
    pub repeat: u32,
    /// Seconds between repeats.
    #[arg(long = "repeat-delay", default_value_t = 0.0)]
    pub repeat_delay: f64,
    /// Print nothing on errors.
    #[arg(long = "quiet")]
    pub quiet: bool,
}

#[derive(Debug)]
enum Source {
    Message(Bytes),
    Lines,
}

#[derive(Debug)]
struct Settings {
    connection: Connection,
    topic: String,
    qos: QoS,
    retain: bool,
    source: Source,
    repeat: u32,
    repeat_delay: Duration,
    properties: Properties,
}

fn resolve(args: &PubArgs) -> anyhow::Result<Settings> {
    let connection = args.connect.resolve("pub")?;
    let topic = match (&args.topic, &connection.url_topic) {
        (Some(t), _) | (None, Some(t)) => t.clone(),
        (None, None) => bail!("a topic is needed (-t or -L .../topic)"),
    };
    let sources = [
        args.message.is_some(),
        args.file.is_some(),
        args.stdin_file,
        args.stdin_line,
        args.null,
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if sources != 1 {
        bail!("give exactly one of -m, -f, -s, -l or -n");
    }
    let source = if let Some(m) = &args.message {
        Source::Message(Bytes::from(m.clone()))
    } else if let Some(f) = &args.file {
        Source::Message(Bytes::from(
            std::fs::read(f).with_context(|| format!("reading {}", f.display()))?,
        ))
    } else if args.stdin_file {
        let mut data = Vec::new();
        std::io::stdin()
            .read_to_end(&mut data)
            .context("reading stdin")?;
        Source::Message(Bytes::from(data))
    } else if args.stdin_line {
        Source::Lines
    } else {
        Source::Message(Bytes::new())
    };
    if !args.repeat_delay.is_finite() || args.repeat_delay < 0.0 {
        bail!("--repeat-delay must be a number of seconds");
    }
    let properties = connection.properties_for("publish");
    Ok(Settings {
        topic,
        qos: parse_qos(args.qos),
        retain: args.retain,
        source,
        repeat: args.repeat.max(1),
        repeat_delay: Duration::from_secs_f64(args.repeat_delay),
        properties,
        connection,
    })
}

pub async fn run(args: PubArgs) -> Result<(), Failure> {
    let quiet = args.quiet;
    let result = async {
        let settings = resolve(&args).map_err(Failure::from)?;
        publish(settings).await
    }
    .await;
    match result {
        Err(f) if quiet => Err(Failure::new(f.code, "")),
        other => other,
    }
}

async fn publish(s: Settings) -> Result<(), Failure> {
    let c = &s.connection;
    c.debug("sending CONNECT");
    let (client, _incoming) = connect(c.options.clone()).await?;
    c.debug("received CONNACK (0)");
    let message = |payload: Bytes| {
        Outgoing::new(s.topic.clone(), payload, s.qos)
            .retain(s.retain)
            .properties(s.properties.clone())
    };
    let mut tokens = Vec::new();
    match &s.source {
        Source::Message(payload) => {
            for i in 0..s.repeat {
                if i > 0 && !s.repeat_delay.is_zero() {
                    tokio::time::sleep(s.repeat_delay).await;
                }
                c.debug(format_args!(
                    "sending PUBLISH (q{}, r{}, '{}', ... ({} bytes))",
                    s.qos as u8,
                    u8::from(s.retain),
                    s.topic,
                    payload.len()
                ));
                tokens.push(client.start_publish(message(payload.clone())).await?);
            }
        }
        Source::Lines => {
            // Lines are read on a blocking thread and sent as they come.
            let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(64);
            std::thread::spawn(move || {
                let stdin = std::io::stdin();
                let mut lock = stdin.lock();
                loop {
                    let mut line = Vec::new();
                    match lock.read_until(b'\n', &mut line) {
                        Ok(0) => return,
                        Ok(_) => {
                            if line.last() == Some(&b'\n') {
                                line.pop();
                                if line.last() == Some(&b'\r') {
                                    line.pop();
                                }
                            }
                            if tx.blocking_send(Ok(line)).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = tx.blocking_send(Err(e));
                            return;
                        }
                    }
                }
            });
            while let Some(line) = rx.recv().await {
                let line =
                    line.map_err(|e| Failure::new(EXIT_ERROR, format!("reading stdin: {e}")))?;
                tokens.push(client.start_publish(message(Bytes::from(line))).await?);
                // Keep the list of pending acknowledgements short.
                if tokens.len() >= 1024 {
                    for token in tokens.drain(..) {
                        token.wait().await?;
                    }
                }
            }
        }
    }
    for token in tokens {
        token.wait().await?;
    }
    c.debug("sending DISCONNECT");
    client
        .disconnect_with(Default::default(), c.properties_for("disconnect"))
        .await?;
    Ok(())
}
