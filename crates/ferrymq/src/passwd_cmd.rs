//! `ferrymq passwd`: manage a Mosquitto password file, with the flags of
//! `mosquitto_passwd`.
//!
//! ```text
//! ferrymq passwd [-H sha512-pbkdf2|argon2id|sha512] [-I iterations] [-c | -D] passwordfile username
//! ferrymq passwd [-H ...] [-I ...] [-c] -b passwordfile username password
//! ferrymq passwd [-H ...] [-I ...] -U passwordfile
//! ```
//!
//! Without `-b` the password is prompted for twice on a terminal, or read
//! from standard input otherwise (a second line, if present, must match).
//! The file is replaced atomically: a new file is written beside it,
//! synced, renamed over it, and the directory synced. Lines of other users
//! and comments are kept as they are.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use ferrymq_auth::hash::DEFAULT_ITERATIONS;
use ferrymq_auth::password::{check_username, split_line};
use ferrymq_auth::{Algorithm, PasswordHash};

#[derive(Debug, Args)]
pub struct PasswdArgs {
    /// Hash algorithm. sha512-pbkdf2 ($7$) is what Mosquitto 2 reads and
    /// writes by default; sha512 ($6$) is for Mosquitto 1.6 and earlier.
    #[arg(short = 'H', value_enum, default_value_t = HashArg::Sha512Pbkdf2, value_name = "HASH")]
    hash: HashArg,
    /// PBKDF2 iterations (sha512-pbkdf2 only).
    #[arg(short = 'I', value_name = "ITERATIONS", value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    iterations: Option<u32>,
    /// Create a new password file, overwriting an existing one.
    #[arg(short = 'c', conflicts_with_all = ["delete", "update"])]
    create: bool,
    /// Delete the user rather than setting its password.
    #[arg(short = 'D', conflicts_with_all = ["batch", "update"])]
    delete: bool,
    /// Batch mode: the password is given on the command line.
    #[arg(short = 'b')]
    batch: bool,
    /// Hash every password of a plain-text `username:password` file.
    #[arg(short = 'U', conflicts_with = "batch")]
    update: bool,
    /// The password file.
    passwordfile: PathBuf,
    /// The user to add, update or delete.
    username: Option<String>,
    /// The password (with -b).
    password: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum HashArg {
    #[value(name = "sha512-pbkdf2")]
    Sha512Pbkdf2,
    #[value(name = "argon2id")]
    Argon2id,
    #[value(name = "sha512")]
    Sha512,
}

pub fn run(args: PasswdArgs) -> ExitCode {
    match execute(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferrymq passwd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn algorithm(args: &PasswdArgs) -> Result<Algorithm> {
    Ok(match (args.hash, args.iterations) {
        (HashArg::Sha512Pbkdf2, iterations) => Algorithm::Sha512Pbkdf2 {
            iterations: iterations.unwrap_or(DEFAULT_ITERATIONS),
        },
        (_, Some(_)) => bail!("-I applies to -H sha512-pbkdf2 only"),
        (HashArg::Argon2id, None) => Algorithm::Argon2id,
        (HashArg::Sha512, None) => Algorithm::Sha512,
    })
}

fn execute(args: PasswdArgs) -> Result<()> {
    let alg = algorithm(&args)?;
    let path = resolve(&args.passwordfile);
    if args.update {
        if args.username.is_some() {
            bail!("-U takes only the password file");
        }
        return update_file(&path, alg);
    }
    let Some(username) = args.username.as_deref() else {
        bail!("missing username (see --help)");
    };
    check_username(username).map_err(anyhow::Error::msg)?;
    match (args.batch, &args.password) {
        (true, None) => bail!("-b needs the password after the username"),
        (false, Some(_)) => bail!("a password on the command line needs -b"),
        _ => {}
    }
    if args.delete {
        return delete_user(&path, username);
    }
    let old = if args.create {
        String::new()
    } else {
        read(&path)?
    };
    let password = match args.password {
        Some(p) => p,
        None => read_password()?,
    };
    let line = new_line(username, password.as_bytes(), alg)?;
    let mut out = String::with_capacity(old.len() + line.len());
    let mut found = false;
    for raw in old.lines() {
        if matches!(split_line(raw), Some(Ok((user, _))) if user == username) {
            if !found {
                out.push_str(&line);
            }
            found = true;
        } else {
            out.push_str(raw);
            out.push('\n');
        }
    }
    if !found {
        out.push_str(&line);
    }
    write_atomic(&path, out.as_bytes())
}

fn new_line(username: &str, password: &[u8], alg: Algorithm) -> Result<String> {
    let hash = PasswordHash::create(password, alg)?;
    Ok(format!("{username}:{hash}\n"))
}

fn delete_user(path: &Path, username: &str) -> Result<()> {
    let old = read(path)?;
    let mut out = String::with_capacity(old.len());
    let mut found = false;
    for raw in old.lines() {
        if matches!(split_line(raw), Some(Ok((user, _))) if user == username) {
            found = true;
        } else {
            out.push_str(raw);
            out.push('\n');
        }
    }
    if !found {
        bail!("user {username:?} not found in {}", path.display());
    }
    write_atomic(path, out.as_bytes())
}

/// `-U`: hash the password of every `username:password` line. Lines that
/// already hold a hash are kept (hashing a hash would lock the user out).
fn update_file(path: &Path, alg: Algorithm) -> Result<()> {
    let old = read(path)?;
    let mut out = String::with_capacity(old.len() * 2);
    for (index, raw) in old.lines().enumerate() {
        match split_line(raw) {
            None => {
                out.push_str(raw);
                out.push('\n');
            }
            Some(Err(message)) => bail!("{}:{}: {message}", path.display(), index + 1),
            Some(Ok((user, secret))) => {
                if PasswordHash::parse(secret).is_ok() {
                    eprintln!(
                        "ferrymq passwd: {}:{}: user {user:?} already has a hash; kept",
                        path.display(),
                        index + 1
                    );
                    out.push_str(raw);
                    out.push('\n');
                } else {
                    check_username(user)
                        .map_err(|m| anyhow::anyhow!("{}:{}: {m}", path.display(), index + 1))?;
                    out.push_str(&new_line(user, secret.as_bytes(), alg)?);
                }
            }
        }
    }
    write_atomic(path, out.as_bytes())
}

/// Follows a symlink to the file it names, so the rename replaces the
/// file and keeps the link (as `mosquitto_passwd` does with `realpath`).
fn resolve(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn read_password() -> Result<String> {
    let stdin = io::stdin();
    if stdin.is_terminal() {
        let first = rpassword::prompt_password("Password: ").context("cannot read password")?;
        let second =
            rpassword::prompt_password("Reenter password: ").context("cannot read password")?;
        if first != second {
            bail!("passwords do not match");
        }
        if first.is_empty() {
            bail!("empty password");
        }
        return Ok(first);
    }
    let mut lines = stdin.lock().lines();
    let first = match lines.next() {
        Some(line) => line.context("cannot read password from standard input")?,
        None => bail!("no password on standard input"),
    };
    let first = first.trim_end_matches('\r').to_owned();
    if let Some(second) = lines.next() {
        let second = second.context("cannot read password from standard input")?;
        if second.trim_end_matches('\r') != first {
            bail!("passwords do not match");
        }
    }
    if first.is_empty() {
        bail!("empty password");
    }
    Ok(first)
}

/// Crash-safe replace: write a new file beside `path`, fsync it, rename it
/// over `path`, fsync the directory. Keeps the old file's permissions; a
/// new file is readable by its owner only.
fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.ferrymq-{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> io::Result<()> {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        if let Ok(meta) = fs::metadata(path) {
            file.set_permissions(meta.permissions())?;
        }
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}
