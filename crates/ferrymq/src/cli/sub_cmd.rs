//! `ferrymq sub`: mosquitto_sub's flags and output, plus `--json`.

use std::io::Write;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use ferrymq_client::{connect, Event, Message, Outgoing, QoS, SubscriptionOptions};
use tokio::time::Instant;

use super::connect_args::{parse_qos, ConnectArgs, Connection};
use super::{format, suback_failure, Failure, EXIT_ERROR, EXIT_TIMEOUT};

#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct SubArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Topic filter to subscribe to (repeatable).
    #[arg(short = 't', long = "topic")]
    pub topics: Vec<String>,
    /// Do not print messages whose topic matches this filter (repeatable).
    #[arg(short = 'T', long = "filter-out")]
    pub filter_out: Vec<String>,
    /// Print the topic before the payload.
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
    /// Output format (mosquitto_sub's % codes, @ time codes, \ escapes).
    #[arg(short = 'F', long = "format")]
    pub format: Option<String>,
    /// One JSON object a line: topic, payload (text or base64), qos,
    /// retain, properties.
    #[arg(long = "json")]
    pub json: bool,
    /// Exit after this many messages.
    #[arg(short = 'C', long = "count")]
    pub count: Option<u64>,
    /// Exit after this many seconds (exit code 27).
    #[arg(short = 'W', long = "timeout")]
    pub timeout: Option<u64>,
    /// Do not print retained (stale) messages.
    #[arg(short = 'R', long = "no-retained")]
    pub no_retained: bool,
    /// Exit once subscribed.
    #[arg(short = 'E', long = "exit-after-subscribe")]
    pub exit_after_subscribe: bool,
    /// No newline after each message.
    #[arg(short = 'N', long = "no-eol")]
    pub no_eol: bool,
    /// Quality of service of the subscriptions.
    #[arg(short = 'q', long = "qos", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Print only retained messages; exit at the first live one.
    #[arg(long = "retained-only")]
    pub retained_only: bool,
    /// Clear each retained message received.
    #[arg(long = "remove-retained")]
    pub remove_retained: bool,
    /// Print nothing on errors.
    #[arg(long = "quiet")]
    pub quiet: bool,
}

#[derive(Debug)]
enum Output {
    Plain { verbose: bool },
    Format(String),
    Json,
}

#[derive(Debug)]
struct Settings {
    connection: Connection,
    topics: Vec<String>,
    filter_out: Vec<String>,
    qos: QoS,
    output: Output,
    eol: bool,
    count: Option<u64>,
    timeout: Option<Duration>,
    no_retained: bool,
    exit_after_subscribe: bool,
    retained_only: bool,
    remove_retained: bool,
}

fn resolve(args: &SubArgs) -> anyhow::Result<Settings> {
    let connection = args.connect.resolve("sub")?;
    let mut topics = args.topics.clone();
    if let Some(t) = &connection.url_topic {
        topics.push(t.clone());
    }
    if topics.is_empty() {
        bail!("a topic filter is needed (-t or -L .../topic)");
    }
    let output = match (&args.format, args.json) {
        (Some(_), true) => bail!("-F and --json exclude each other"),
        (Some(f), false) => Output::Format(f.clone()),
        (None, true) => Output::Json,
        (None, false) => Output::Plain {
            verbose: args.verbose,
        },
    };
    Ok(Settings {
        connection,
        topics,
        filter_out: args.filter_out.clone(),
        qos: parse_qos(args.qos),
        output,
        eol: !args.no_eol,
        count: args.count.filter(|c| *c > 0),
        timeout: args.timeout.map(Duration::from_secs),
        no_retained: args.no_retained,
        exit_after_subscribe: args.exit_after_subscribe,
        retained_only: args.retained_only,
        remove_retained: args.remove_retained,
    })
}

pub async fn run(args: SubArgs) -> Result<(), Failure> {
    let quiet = args.quiet;
    let result = async {
        let settings = resolve(&args).map_err(Failure::from)?;
        subscribe(settings).await
    }
    .await;
    match result {
        Err(f) if quiet => Err(Failure::new(f.code, "")),
        other => other,
    }
}

async fn subscribe(s: Settings) -> Result<(), Failure> {
    let c = &s.connection;
    let deadline = s.timeout.map(|t| Instant::now() + t);
    c.debug("sending CONNECT");
    let (client, mut incoming) = connect(c.options.clone()).await?;
    c.debug("received CONNACK (0)");
    let filters = s
        .topics
        .iter()
        .map(|t| (t.clone(), SubscriptionOptions::qos(s.qos)))
        .collect();
    c.debug(format_args!("sending SUBSCRIBE ({})", s.topics.join(", ")));
    let codes = client
        .subscribe_many(filters, c.properties_for("subscribe"))
        .await?;
    c.debug("received SUBACK");
    for (topic, code) in s.topics.iter().zip(&codes) {
        if code.is_error() {
            return Err(suback_failure(topic, *code));
        }
    }
    if c.debug {
        let granted: Vec<String> = codes.iter().map(|r| (*r as u8).to_string()).collect();
        eprintln!("Subscribed: {}", granted.join(", "));
    }
    if s.exit_after_subscribe {
        client.disconnect().await?;
        return Ok(());
    }

    let mut printed = 0u64;
    let mut removals = Vec::new();
    let stdout = std::io::stdout();
    let mut buf = Vec::with_capacity(4096);
    loop {
        let event = match deadline {
            Some(d) => match tokio::time::timeout_at(d, incoming.recv()).await {
                Ok(e) => e,
                Err(_) => {
                    let _ = client.disconnect().await;
                    return Err(Failure::new(EXIT_TIMEOUT, "Timed out"));
                }
            },
            None => incoming.recv().await,
        };
        let m: Message = match event {
            Some(Event::Message(m)) => m,
            Some(Event::Disconnected(e)) => return Err(e.into()),
            Some(_) => continue,
            None => return Err(Failure::new(EXIT_ERROR, "connection closed")),
        };
        if s.retained_only && !m.retain {
            break;
        }
        if m.retain && s.no_retained {
            continue;
        }
        if s.filter_out
            .iter()
            .any(|f| ferrymq_codec::filter_matches(f, &m.topic))
        {
            continue;
        }
        if s.remove_retained && m.retain {
            let clear = Outgoing::new(m.topic.as_str(), Vec::new(), QoS::AtLeastOnce).retain(true);
            removals.push(client.start_publish(clear).await?);
        }
        buf.clear();
        match &s.output {
            Output::Plain { verbose } => format::plain(&m, *verbose, s.eol, &mut buf),
            Output::Format(f) => format::formatted(f, &m, s.eol, &mut buf),
            Output::Json => format::json_line(&m, &mut buf),
        }
        let mut out = stdout.lock();
        if out.write_all(&buf).and_then(|()| out.flush()).is_err() {
            // Stdout closed (a pipe reader left): nothing more to do.
            break;
        }
        drop(out);
        printed += 1;
        if s.count.is_some_and(|count| printed >= count) {
            break;
        }
    }
    for token in removals {
        token.wait().await?;
    }
    client
        .disconnect_with(Default::default(), c.properties_for("disconnect"))
        .await?;
    Ok(())
}
