//! The command line, in the manner of emqtt-bench: `-h -p -V -c -i -t -q
//! -s -I -L -S -u -P`, plus what a comparison needs (`--rate`,
//! `--max-ahead`, `--subscribers`, `--json`, `--broker-pid`).

use std::path::PathBuf;

use anyhow::bail;
use clap::{ArgAction, Args, Subcommand};
use ferrymq_codec::{Protocol, QoS};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Open CLIENTS connections and hold them: connect rate, and the
    /// broker's memory per connection with --broker-pid.
    #[command(disable_help_flag = true)]
    Conn(ConnArgs),
    /// Publish from CLIENTS connections, optionally to in-process
    /// subscribers (--subscribers) for latency, loss and a sustained rate.
    #[command(disable_help_flag = true)]
    Pub(PubArgs),
    /// Subscribe with CLIENTS connections and measure what arrives
    /// (latency from the stamps of a `bench pub` elsewhere).
    #[command(disable_help_flag = true)]
    Sub(SubArgs),
}

/// Flags every bench command shares.
#[derive(Debug, Args, Clone)]
pub struct Common {
    /// Broker host.
    #[arg(short = 'h', long = "host", default_value = "localhost")]
    pub host: String,
    /// Broker port (default 1883, 8883 with -S).
    #[arg(short = 'p', long = "port")]
    pub port: Option<u16>,
    /// MQTT version: 3 (3.1), 4 (3.1.1) or 5; mqttv31/mqttv311/mqttv5 too.
    #[arg(short = 'V', long = "version", default_value = "4")]
    pub version: String,
    /// Number of clients.
    #[arg(short = 'c', long = "count", default_value_t = 1)]
    pub count: usize,
    /// Milliseconds between two connects (0: as fast as the broker answers,
    /// --connect-concurrency at a time).
    #[arg(short = 'i', long = "interval", default_value_t = 0)]
    pub interval_ms: u64,
    /// Handshakes in flight at once when -i is 0.
    #[arg(long = "connect-concurrency", default_value_t = 32)]
    pub connect_concurrency: usize,
    #[arg(short = 'u', long = "username")]
    pub username: Option<String>,
    #[arg(short = 'P', long = "password")]
    pub password: Option<String>,
    /// Keep-alive in seconds.
    #[arg(short = 'k', long = "keepalive", default_value_t = 300)]
    pub keepalive: u16,
    /// TLS. Without --cafile the server's certificate is not verified.
    #[arg(short = 'S', long = "ssl")]
    pub tls: bool,
    /// CA certificates (PEM) to verify the server with (implies -S).
    #[arg(long = "cafile")]
    pub cafile: Option<PathBuf>,
    /// Client id prefix; the role, process id and client number follow.
    #[arg(long = "prefix", default_value = "bench")]
    pub prefix: String,
    /// Seconds to run (default: until the limit, or Ctrl-C).
    #[arg(short = 'd', long = "duration")]
    pub duration: Option<f64>,
    /// Seconds at the start left out of the rates (and of latency).
    #[arg(long = "warmup", default_value_t = 0.0)]
    pub warmup: f64,
    /// Print the summary as one JSON object on stdout.
    #[arg(long = "json")]
    pub json: bool,
    /// No live progress display.
    #[arg(long = "quiet")]
    pub quiet: bool,
    /// Worker threads of the load generator (default: one per core).
    #[arg(long = "threads")]
    pub threads: Option<usize>,
    /// Print help.
    #[arg(long = "help", action = ArgAction::Help)]
    pub help: Option<bool>,
}

#[derive(Debug, Args, Clone)]
pub struct ConnArgs {
    #[command(flatten)]
    pub common: Common,
    /// Process id of the broker, to report its resident memory per
    /// connection (read from /proc).
    #[arg(long = "broker-pid")]
    pub broker_pid: Option<u32>,
    /// Once connected, each client subscribes to this filter (QoS 1; %i is
    /// the client number, from 1); repeat for several. The memory figure
    /// then includes the subscriptions.
    #[arg(long = "subscribe", value_name = "FILTER")]
    pub subscribe: Vec<String>,
}

#[derive(Debug, Args, Clone)]
pub struct PubArgs {
    #[command(flatten)]
    pub common: Common,
    /// Topic; %i is replaced by the client number (from 1).
    #[arg(short = 't', long = "topic")]
    pub topic: String,
    /// QoS of the PUBLISH packets.
    #[arg(short = 'q', long = "qos", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Payload bytes; 16 or more carry the stamp latency and loss need.
    #[arg(short = 's', long = "size", default_value_t = 256)]
    pub size: usize,
    /// Milliseconds between two messages of one publisher.
    #[arg(short = 'I', long = "interval-of-msg", conflicts_with = "rate")]
    pub publish_interval_ms: Option<f64>,
    /// Messages per second, in all, shared among the publishers.
    #[arg(long = "rate")]
    pub rate: Option<f64>,
    /// Messages per publisher, then stop (0: no limit).
    #[arg(short = 'L', long = "limit", default_value_t = 0)]
    pub limit: u64,
    /// QoS 1/2 messages of one publisher unacknowledged at once, lowered
    /// to an MQTT 5 broker's Receive Maximum (default: 256 at QoS 1; 20 at
    /// QoS 2, since Mosquitto and ferrymq close a 3.1.1 client with more
    /// QoS 2 messages awaiting PUBREL than `max_inflight_messages`).
    #[arg(short = 'F', long = "inflight")]
    pub inflight: Option<u16>,
    /// Subscribers in this process, connected and subscribed before the
    /// first message: they measure latency and loss, and bound how far
    /// publishers run ahead.
    #[arg(long = "subscribers", default_value_t = 0)]
    pub subscribers: usize,
    /// The subscribers' filter (default: the topic with %i as `+`). Every
    /// subscriber should receive every message for --max-ahead to hold.
    #[arg(long = "sub-topic")]
    pub sub_topic: Option<String>,
    /// The subscribers' QoS (default: -q).
    #[arg(long = "sub-qos", value_parser = clap::value_parser!(u8).range(0..=2))]
    pub sub_qos: Option<u8>,
    /// Most messages the publishers may be ahead of the slowest subscriber
    /// (0: unbounded, which measures the broker's buffering, not its rate).
    #[arg(long = "max-ahead", default_value_t = 500)]
    pub max_ahead: u64,
}

#[derive(Debug, Args, Clone)]
pub struct SubArgs {
    #[command(flatten)]
    pub common: Common,
    /// Filter; %i is replaced by the client number (from 1).
    #[arg(short = 't', long = "topic")]
    pub topic: String,
    #[arg(short = 'q', long = "qos", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
}

pub fn parse_version(v: &str) -> anyhow::Result<Protocol> {
    Ok(match v {
        "3" | "mqttv31" | "3.1" => Protocol::V3_1,
        "4" | "mqttv311" | "3.1.1" => Protocol::V3_1_1,
        "5" | "mqttv5" | "5.0" => Protocol::V5,
        other => bail!("unknown MQTT version '{other}' (3, 4 or 5)"),
    })
}

pub fn qos(q: u8) -> QoS {
    match q {
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtMostOnce,
    }
}

/// The topic of client `n` (from 1): `%i` is the number, `%%` a percent.
pub fn topic_for(template: &str, n: usize) -> String {
    template
        .replace("%%", "\u{0}")
        .replace("%i", &n.to_string())
        .replace('\u{0}', "%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_templates() {
        assert_eq!(topic_for("bench/%i/x", 12), "bench/12/x");
        assert_eq!(topic_for("a/%%i", 3), "a/%i");
        assert_eq!(topic_for("plain", 3), "plain");
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("5").unwrap(), Protocol::V5);
        assert_eq!(parse_version("mqttv311").unwrap(), Protocol::V3_1_1);
        assert!(parse_version("6").is_err());
    }
}
