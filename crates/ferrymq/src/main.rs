//! The `ferrymq` binary: one clap front end over the library crates.

mod broker_cmd;
mod cli;
mod passwd_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    Bench,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let name = match cli.command {
        Command::Broker(args) => return broker_cmd::run(args),
        Command::Pub(args) => return cli::run("pub", cli::pub_cmd::run(args)),
        Command::Sub(args) => return cli::run("sub", cli::sub_cmd::run(args)),
        Command::Rr(args) => return cli::run("rr", cli::rr_cmd::run(args)),
        Command::Passwd(args) => return passwd_cmd::run(args),
        Command::Bench => "bench",
    };
    eprintln!("ferrymq {name}: not built yet");
    ExitCode::FAILURE
}
