//! ferrymq-bench: `ferrymq bench conn | pub | sub`, an MQTT load generator
//! in the manner of emqtt-bench.
//!
//! Built to measure a broker, not the generator: publishers batch their
//! packets into few writes, every payload carries a stamp (send time,
//! publisher, sequence number) from which subscribers compute latency and
//! loss, and publishers can be held to a bounded lead over the slowest
//! subscriber so that the rate reported is the rate a broker sustains
//! rather than how much it buffers.
//!
//! Layout:
//! - [`args`]: the command line.
//! - [`payload`]: the stamp, and PUBLISH bytes.
//! - [`stats`]: rates, latency histograms, sequence sets and loss.
//! - [`conn`]: one connection (TCP or TLS through ferrymq-client).
//! - [`load`]: connecting many clients; the publisher, subscriber and idle
//!   loops.
//! - [`run`]: the three commands; [`summary`]: their report.

pub mod args;
pub mod conn;
pub mod load;
pub mod payload;
pub mod run;
pub mod stats;
pub mod summary;

use std::process::ExitCode;

pub use args::{BenchArgs, BenchCommand};
pub use summary::Summary;

/// Runs one bench command on its own runtime and prints its summary.
pub fn main(args: BenchArgs) -> ExitCode {
    let (common, json) = match &args.command {
        BenchCommand::Conn(a) => (&a.common, a.common.json),
        BenchCommand::Pub(a) => (&a.common, a.common.json),
        BenchCommand::Sub(a) => (&a.common, a.common.json),
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = common.threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = match runtime.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferrymq bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match args.command {
            BenchCommand::Conn(a) => run::run_conn(a).await,
            BenchCommand::Pub(a) => run::run_pub(a).await,
            BenchCommand::Sub(a) => run::run_sub(a).await,
        }
    });
    // Idle connections and their tasks go with the runtime, without
    // waiting for anything.
    runtime.shutdown_background();
    match result {
        Ok(summary) => {
            if json {
                println!("{}", summary.to_json());
            } else {
                print!("{}", summary.to_text());
            }
            if summary.lost_acked.is_some_and(|n| n > 0) {
                eprintln!("ferrymq bench: the broker lost acknowledged messages");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ferrymq bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
