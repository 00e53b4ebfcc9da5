//! The `ferrymq` binary: one clap front end over the library crates.

mod broker_cmd;
mod cli;
mod passwd_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The system allocator, counted: `memory_limit` and `$SYS/broker/heap/*`
/// read the count.
#[global_allocator]
static HEAP: ferrymq_broker::heap::Counting = ferrymq_broker::heap::Counting;

#[derive(Debug, Parser)]
#[command(name = "ferrymq", version, about = "MQTT broker and MQTT toolkit")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the MQTT broker.
    Broker(broker_cmd::BrokerArgs),
    /// Publish messages (mosquitto_pub).
    Pub(cli::pub_cmd::PubArgs),
    /// Subscribe and print messages (mosquitto_sub).
    Sub(cli::sub_cmd::SubArgs),
    /// MQTT 5 request/response (mosquitto_rr).
    Rr(cli::rr_cmd::RrArgs),
    /// Manage a password file (mosquitto_passwd).
    Passwd(passwd_cmd::PasswdArgs),
    /// Load generator: connections, publishers, subscribers, latency.
    Bench(ferrymq_bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(arguments());
    match cli.command {
        Command::Broker(args) => broker_cmd::run(args),
        Command::Pub(args) => cli::run("pub", cli::pub_cmd::run(args)),
        Command::Sub(args) => cli::run("sub", cli::sub_cmd::run(args)),
        Command::Rr(args) => cli::run("rr", cli::rr_cmd::run(args)),
        Command::Passwd(args) => passwd_cmd::run(args),
        Command::Bench(args) => ferrymq_bench::main(args),
    }
}

/// The command line, with `broker` put in front when the binary was
/// started through a link named `mosquitto`: systemd units and scripts
/// written for Mosquitto then run ferrymq unchanged.
fn arguments() -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked_as_mosquitto = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|name| name == "mosquitto");
    if invoked_as_mosquitto {
        args.insert(1, "broker".into());
    }
    args
}
