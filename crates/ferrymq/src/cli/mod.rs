//! `ferrymq pub`, `sub` and `rr`: Mosquitto's client tools on
//! ferrymq-client. Each command is two steps: clap arguments resolved into
//! settings, then the command run on those settings.
//!
//! Exit codes (README): 0 success, 1 other errors, 2 usage, 3 connection
//! refused, 4 bad user name or password, 5 not authorized, 6 network or
//! TLS failure, 27 timed out (as mosquitto_sub -W).

pub mod connect_args;
pub mod format;
pub mod pub_cmd;
pub mod rr_cmd;
pub mod sub_cmd;

use std::future::Future;
use std::process::ExitCode;

use ferrymq_client::{Error, ReasonCode};

pub const EXIT_ERROR: u8 = 1;
pub const EXIT_REFUSED: u8 = 3;
pub const EXIT_BAD_CREDENTIALS: u8 = 4;
pub const EXIT_NOT_AUTHORIZED: u8 = 5;
pub const EXIT_NETWORK: u8 = 6;
pub const EXIT_TIMEOUT: u8 = 27;

/// A failure with the exit code and message a shell user sees.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        match e.downcast_ref::<Error>() {
            Some(client) => {
                let mut f = Failure::from_client(client);
                f.message = format!("{e:#}");
                f
            }
            None => Failure::new(EXIT_ERROR, format!("{e:#}")),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::from_client(&e)
    }
}

impl Failure {
    fn from_client(e: &Error) -> Failure {
        let code = match e {
            Error::Refused { reason, .. } => match reason {
                ReasonCode::BadUserNameOrPassword => EXIT_BAD_CREDENTIALS,
                ReasonCode::NotAuthorized => EXIT_NOT_AUTHORIZED,
                _ => EXIT_REFUSED,
            },
            Error::PublishRefused(ReasonCode::NotAuthorized) => EXIT_NOT_AUTHORIZED,
            Error::Timeout(_) => EXIT_TIMEOUT,
            Error::Io { .. } | Error::Tls(_) | Error::WebSocket(_) => EXIT_NETWORK,
            _ => EXIT_ERROR,
        };
        let hint = match code {
            EXIT_BAD_CREDENTIALS => " (check -u/-P)",
            EXIT_NOT_AUTHORIZED => " (the server's ACL does not allow this client)",
            _ => "",
        };
        Failure::new(code, format!("{e}{hint}"))
    }
}

/// Runs a command's future on a small runtime and turns its result into
/// an exit code, printing the failure as `ferrymq TOOL: message`.
pub fn run<F>(tool: &str, command: F) -> ExitCode
where
    F: Future<Output = Result<(), Failure>>,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ferrymq {tool}: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("ferrymq {tool}: {}", f.message);
            }
            ExitCode::from(f.code)
        }
    }
}

/// Describes a failed SUBACK code for the user.
pub fn suback_failure(filter: &str, code: ReasonCode) -> Failure {
    let exit = if code == ReasonCode::NotAuthorized {
        EXIT_NOT_AUTHORIZED
    } else {
        EXIT_ERROR
    };
    Failure::new(
        exit,
        format!("subscription to '{filter}' refused: {}", code.description()),
    )
}
