//! `ferrymq broker`: settings from the command line and config file, then
//! the server until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use ferrymq_broker::{config, Config, Server};
use tracing::{error, info};

#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Configuration file (mosquitto.conf syntax).
    #[arg(short = 'c', long = "config-file")]
    config: Option<PathBuf>,
    /// Listen on this port, on the loopback interface only (up to 10
    /// times). Ignored when the file configures a listener, as in
    /// Mosquitto 2.
    #[arg(short = 'p', long)]
    port: Vec<u16>,
    /// Log every type of message, whatever the file says.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Log nothing, whatever the file and -v say (`log_type none`).
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Print the version and exit.
    #[arg(long)]
    version: bool,
    /// Append every TLS session's secrets to FILE, for Wireshark. Never on
    /// a production server.
    #[arg(long = "tls-keylog", value_name = "FILE")]
    tls_keylog: Option<PathBuf>,
    /// Run in the background, as Mosquitto's -d: the command returns once
    /// the configuration is read; the broker goes on detached.
    #[arg(short = 'd', long)]
    daemon: bool,
    /// Check the configuration (and the password and ACL files it names),
    /// then exit: 0 if it is valid.
    #[arg(long = "test-config")]
    test_config: bool,
}

pub fn run(mut args: BrokerArgs) -> ExitCode {
    if args.version {
        println!(
            "ferrymq version {} (takes Mosquitto 2.1's configuration)",
            env!("CARGO_PKG_VERSION")
        );
        return ExitCode::SUCCESS;
    }
    // -q wins over -v, as in Mosquitto.
    args.verbose &= !args.quiet;
    // The file says where logs go, so it is read before logging starts; a
    // file that cannot be read is reported through the default logger.
    let config = settings(&args);
    let logging = config
        .as_ref()
        .map(|c| c.logging.clone())
        .unwrap_or_default();
    if let Err(e) = init_logging(&logging, args.verbose) {
        init_logging(&Default::default(), args.verbose).ok();
        error!("{e:#}");
        return ExitCode::FAILURE;
    }
    let result = config.and_then(|config| {
        info!("logging: {}", logging.describe(args.verbose));
        serve(args, config)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The `tracing` subscriber for the file's `log_dest` and `log_type`
/// (`-v` forces every type). `RUST_LOG`, when set, replaces the filter.
fn init_logging(logging: &config::logging::Logging, verbose: bool) -> anyhow::Result<()> {
    use config::logging::LogDest;
    use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(logging.filter(verbose)))
        .context("log_type")?;
    let dests = logging.destinations();
    let mut writer: Option<BoxMakeWriter> = None;
    for dest in &dests {
        let next = match dest {
            LogDest::Stderr => BoxMakeWriter::new(std::io::stderr),
            LogDest::Stdout => BoxMakeWriter::new(std::io::stdout),
            LogDest::File(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("log_dest file {}", path.display()))?;
                BoxMakeWriter::new(std::sync::Arc::new(file))
            }
        };
        writer = Some(match writer {
            None => next,
            Some(w) => BoxMakeWriter::new(w.and(next)),
        });
    }
    // Colours only when every line goes to a terminal's stderr.
    let ansi = dests == [LogDest::Stderr] && std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer.unwrap_or_else(|| BoxMakeWriter::new(std::io::sink)))
        .with_ansi(ansi)
        .try_init()
        .map_err(|e| anyhow::anyhow!("starting the logger: {e}"))
}

/// Set in the environment of the detached broker `-d` starts.
const DAEMON_CHILD: &str = "FERRYMQ_DAEMON_CHILD";

/// `-d`: the configuration was read here, so its errors reach the caller;
/// the broker itself is this program again, with the same arguments
/// (argv[0] too, for a link named `mosquitto`), in a process group of its
/// own, away from the terminal's signals, with standard input and output
/// on /dev/null, as a forked Mosquitto has. A `log_dest file` or
/// `pid_file` in the configuration still works; stderr logs go nowhere.
/// Re-executing rather than forking keeps this free of `unsafe`
/// and of a fork after threads exist.
fn detach() -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let mut argv = std::env::args_os();
    let argv0 = argv.next().unwrap_or_else(|| "ferrymq".into());
    let exe = std::env::current_exe().context("-d: finding this program")?;
    let child = Command::new(exe)
        .arg0(argv0)
        .args(argv)
        .env(DAEMON_CHILD, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("-d: starting the broker in the background")?;
    info!(pid = child.id(), "running in the background");
    Ok(())
}

fn settings(args: &BrokerArgs) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if args.port.len() > 10 {
        anyhow::bail!("-p may be given at most 10 times");
    }
    if config.listeners.is_empty() {
        let ports = if args.port.is_empty() {
            vec![1883]
        } else {
            args.port.clone()
        };
        config.listeners = ports
            .into_iter()
            .flat_map(config::default_listeners)
            .collect();
    } else if !args.port.is_empty() {
        config.warnings.push(
            "-p is ignored: the configuration file defines listeners (as in Mosquitto 2)".into(),
        );
    }
    if args.quiet {
        // `log_type none`: nothing passes the filter, wherever it would go.
        config.logging.types = Some(Vec::new());
    }
    config.tls_keylog = args.tls_keylog.clone();
    Ok(config)
}

fn serve(args: BrokerArgs, config: Config) -> anyhow::Result<()> {
    if args.daemon && !args.test_config && std::env::var_os(DAEMON_CHILD).is_none() {
        return detach();
    }
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    if args.test_config {
        ferrymq_broker::security::Security::load(&config)?;
        // TLS listeners' certificate, key and CA files must load too, and
        // each listener's own password and ACL files.
        for listener in &config.listeners {
            ferrymq_broker::net::tls::wrapping(listener, None)
                .map_err(|e| anyhow::anyhow!("listener {}: {e}", listener.describe()))?;
            if config.per_listener_settings && config.listeners_from_file {
                ferrymq_broker::security::Security::load_listener(&listener.security)
                    .map_err(|e| anyhow::anyhow!("listener {}: {e}", listener.describe()))?;
            }
        }
        eprintln!("configuration OK");
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        // Handlers first: a signal that arrives as soon as the listeners
        // are up must shut down cleanly, not kill the process.
        let signals = Signals::install()?;
        // Before the listeners: whoever sees the broker listen finds it.
        let _pid_file = config.pid_file.clone().map(PidFile::write).transpose()?;
        let server = Server::start(config).await.context("starting listeners")?;
        info!("ferrymq {} running", env!("CARGO_PKG_VERSION"));
        let reloads = &server;
        signals
            .wait(|| {
                match reloads.reload_security() {
                    // SIGHUP: new password and ACL files; connected clients stay.
                    Ok(()) => info!("SIGHUP: password and ACL files reloaded"),
                    Err(e) => error!("SIGHUP: reload failed, keeping the previous files: {e}"),
                }
                // And new certificates for new TLS connections.
                match reloads.reload_tls() {
                    Ok(0) => {}
                    Ok(n) => info!("SIGHUP: TLS files of {n} listener(s) reloaded"),
                    Err(e) => error!("SIGHUP: TLS reload failed, keeping the previous files: {e}"),
                }
            })
            .await;
        info!("shutting down");
        server.shutdown().await;
        Ok(())
    })
}

/// SIGTERM, SIGINT and SIGHUP, caught from before the listeners open.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing SIGHUP handler")?,
        })
    }

    /// Returns at SIGTERM or SIGINT; runs `reload` at each SIGHUP.
    async fn wait(mut self, reload: impl Fn()) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = self.hup.recv() => reload(),
            }
        }
    }
}

/// `pid_file`: written at start, removed at exit.
struct PidFile(PathBuf);

impl PidFile {
    fn write(path: PathBuf) -> anyhow::Result<PidFile> {
        std::fs::write(&path, format!("{}\n", std::process::id()))
            .with_context(|| format!("pid_file {}", path.display()))?;
        Ok(PidFile(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
