//! The `ferrymq` binary: one clap front end over the library crates.

mod broker_cmd;
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
    Pub,
    /// Subscribe and print messages (mosquitto_sub).
    Sub,
    /// MQTT 5 request/response (mosquitto_rr).
    Rr,
    /// Manage a password file (mosquitto_passwd).
    Passwd(passwd_cmd::PasswdArgs),
    /// Load generator: connections, publishers, subscribers, latency.
    Bench,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let name = match cli.command {
        Command::Broker(args) => return broker_cmd::run(args),
        Command::Pub => "pub",
        Command::Sub => "sub",
        Command::Rr => "rr",
        Command::Passwd(args) => return passwd_cmd::run(args),
        Command::Bench => "bench",
    };
    eprintln!("ferrymq {name}: not built yet");
    ExitCode::FAILURE
}
