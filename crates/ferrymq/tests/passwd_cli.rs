//! `ferrymq passwd` as a process, and its interoperation with Mosquitto:
//! files written by `mosquitto_passwd` verify in ferrymq-auth, and a file
//! written by `ferrymq passwd` admits clients to a real `mosquitto`.
//! The interop tests run only where Mosquitto is installed
//! (`apt-get install mosquitto mosquitto-clients`) and say when skipped.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferrymq_auth::{PasswordFile, PasswordHash};

const WAIT: Duration = Duration::from_secs(10);

fn ferrymq() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferrymq"))
}

/// A fresh directory for one test.
fn dir(name: &str) -> PathBuf {
    // The process id keeps two runs of this suite (say, two checkouts
    // sharing a target directory) out of each other's files.
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("passwd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs a command with standard input `stdin`, killed after `WAIT`.
fn run(cmd: &mut Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not exit within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn passwd(args: &[&str]) -> Output {
    run(ferrymq().arg("passwd").args(args), "")
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "status {:?}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn failed(out: &Output, needle: &str) {
    assert!(!out.status.success(), "unexpected success");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "{needle:?} not in: {err}");
}

fn load(path: &Path) -> PasswordFile {
    PasswordFile::load(path).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn create_add_update_delete() {
    let d = dir("cycle");
    let pw = d.join("pw");
    ok(&passwd(&["-c", "-b", s(&pw), "alice", "one"]));
    let text = std::fs::read_to_string(&pw).unwrap();
    assert!(text.starts_with("alice:$7$101$"), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&pw).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }

    // Comments survive; a new user is appended.
    std::fs::write(&pw, format!("# team\n{text}")).unwrap();
    ok(&passwd(&["-b", s(&pw), "bob", "two"]));
    ok(&passwd(&["-H", "argon2id", "-b", s(&pw), "carol", "three"]));
    ok(&passwd(&["-H", "sha512", "-b", s(&pw), "dave", "four"]));
    ok(&passwd(&["-I", "2000", "-b", s(&pw), "erin", "five"]));
    let f = load(&pw);
    assert_eq!(f.len(), 5);
    for (user, password) in [
        ("alice", "one"),
        ("bob", "two"),
        ("carol", "three"),
        ("dave", "four"),
        ("erin", "five"),
    ] {
        assert!(f.verify(user, password.as_bytes()), "{user}");
    }
    assert!(matches!(f.get("carol"), Some(PasswordHash::Argon2id(_))));
    assert!(matches!(f.get("dave"), Some(PasswordHash::Sha512 { .. })));
    assert!(matches!(
        f.get("erin"),
        Some(PasswordHash::Pbkdf2Sha512 {
            iterations: 2000,
            ..
        })
    ));
    let text = std::fs::read_to_string(&pw).unwrap();
    assert!(text.starts_with("# team\nalice:"), "{text}");

    // Update in place keeps the order.
    ok(&passwd(&["-b", s(&pw), "alice", "uno"]));
    let f = load(&pw);
    assert!(f.verify("alice", b"uno") && !f.verify("alice", b"one"));
    let text = std::fs::read_to_string(&pw).unwrap();
    assert!(text.starts_with("# team\nalice:"), "{text}");

    ok(&passwd(&["-D", s(&pw), "bob"]));
    let f = load(&pw);
    assert!(!f.contains("bob") && f.contains("alice"));
    failed(&passwd(&["-D", s(&pw), "bob"]), "not found");

    // -c overwrites.
    ok(&passwd(&["-c", "-b", s(&pw), "zed", "z"]));
    assert_eq!(load(&pw).len(), 1);
    // No temporary files left behind.
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
}

#[test]
fn password_from_standard_input() {
    let d = dir("stdin");
    let pw = d.join("pw");
    let out = run(
        ferrymq().args(["passwd", "-c", s(&pw), "alice"]),
        "s3cret\ns3cret\n",
    );
    ok(&out);
    assert!(load(&pw).verify("alice", b"s3cret"));
    let out = run(ferrymq().args(["passwd", s(&pw), "bob"]), "only-once\n");
    ok(&out);
    assert!(load(&pw).verify("bob", b"only-once"));
    let out = run(ferrymq().args(["passwd", s(&pw), "carol"]), "a\nb\n");
    failed(&out, "do not match");
    let out = run(ferrymq().args(["passwd", s(&pw), "carol"]), "");
    failed(&out, "no password");
    assert!(!load(&pw).contains("carol"));
}

#[test]
fn upgrade_plain_text_file() {
    let d = dir("upgrade");
    let pw = d.join("pw");
    let hashed = PasswordHash::create(b"kept", Default::default()).unwrap();
    std::fs::write(
        &pw,
        format!("# plain\nalice:hunter2\nbob: with:colon \ncarol:{hashed}\n"),
    )
    .unwrap();
    assert!(PasswordFile::load(&pw).is_err());
    ok(&passwd(&["-U", s(&pw)]));
    let f = load(&pw);
    assert!(f.verify("alice", b"hunter2"));
    assert!(f.verify("bob", b"with:colon"));
    assert!(f.verify("carol", b"kept"), "an existing hash is kept");
}

#[test]
fn usage_errors() {
    let d = dir("errors");
    let pw = d.join("pw");
    let pws = s(&pw);
    failed(&passwd(&["-b", pws, "alice", "x"]), "cannot read");
    failed(&passwd(&["-c", "-D", pws, "alice"]), "cannot be used with");
    failed(&passwd(&["-c", "-b", pws, "al:ice", "x"]), "':'");
    failed(
        &passwd(&["-c", "-b", pws, "alice"]),
        "-b needs the password",
    );
    failed(&passwd(&["-c", pws, "alice", "x"]), "needs -b");
    failed(&passwd(&["-H", "md5", "-c", "-b", pws, "a", "x"]), "md5");
    failed(
        &passwd(&["-H", "argon2id", "-I", "5", "-c", "-b", pws, "a", "x"]),
        "-I",
    );
    failed(&passwd(&["-I", "0", "-c", "-b", pws, "a", "x"]), "0");
    failed(&passwd(&["-U", pws, "alice"]), "only the password file");
    assert!(!pw.exists());
}

// ---- interop with Mosquitto ----------------------------------------------

fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIP: {tool} not on PATH (apt-get install mosquitto mosquitto-clients)");
    }
    found
}

#[test]
fn files_written_by_mosquitto_passwd_verify() {
    if !have("mosquitto_passwd") {
        return;
    }
    let d = dir("from-mosquitto");
    let pw = d.join("pw");
    ok(&run(
        Command::new("mosquitto_passwd").args(["-c", "-b", s(&pw), "alice", "pa ss:1"]),
        "",
    ));
    // $6$, if this mosquitto_passwd still writes it.
    let sha512 = run(
        Command::new("mosquitto_passwd").args(["-H", "sha512", "-b", s(&pw), "bob", "pw2"]),
        "",
    );
    // Non-default iteration count, if supported (-I, Mosquitto 2).
    let iters = run(
        Command::new("mosquitto_passwd").args(["-I", "1234", "-b", s(&pw), "carol", "pw3"]),
        "",
    );
    let text = std::fs::read_to_string(&pw).unwrap();
    eprintln!("mosquitto_passwd wrote:\n{text}");
    let f = load(&pw);
    assert!(text.contains("alice:$7$101$"), "{text}");
    assert!(f.verify("alice", b"pa ss:1"));
    assert!(!f.verify("alice", b"pa ss:2"));
    assert!(f.scram_sha512_keys("alice").is_some());
    if sha512.status.success() {
        assert!(text.contains("bob:$6$"), "{text}");
        assert!(f.verify("bob", b"pw2") && !f.verify("bob", b"pw3"));
    } else {
        eprintln!("note: this mosquitto_passwd cannot write $6$");
    }
    if iters.status.success() {
        assert!(text.contains("carol:$7$1234$"), "{text}");
        assert!(f.verify("carol", b"pw3"));
    }

    // And `ferrymq passwd` edits a Mosquitto-written file without harm.
    ok(&passwd(&["-b", s(&pw), "dave", "pw4"]));
    let f = load(&pw);
    assert!(f.verify("alice", b"pa ss:1") && f.verify("dave", b"pw4"));
}

/// A `mosquitto` process on a free loopback port, killed on drop.
struct Mosquitto {
    child: Child,
    port: u16,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_mosquitto(d: &Path, password_file: &Path) -> Mosquitto {
    // The port is free when chosen; another process could take it before
    // mosquitto binds, so try a few.
    for _ in 0..5 {
        let port = free_port();
        let conf = d.join("mosquitto.conf");
        // `user root` keeps a root-run mosquitto from dropping to a user
        // that cannot read the 0600 file; ignored when not run as root.
        std::fs::write(
            &conf,
            format!(
                "user root\nlistener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
                password_file.display()
            ),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .args(["-c", s(&conf)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut m = Mosquitto { child, port };
        let deadline = Instant::now() + WAIT;
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return m;
            }
            if m.child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(m);
    }
    panic!("mosquitto did not start");
}

fn mosquitto_pub(port: u16, user: &str, password: &str) -> Output {
    run(
        Command::new("mosquitto_pub").args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-u",
            user,
            "-P",
            password,
            "-t",
            "ferrymq/interop",
            "-m",
            "hello",
            "-q",
            "1",
        ]),
        "",
    )
}

#[test]
fn mosquitto_accepts_a_file_written_by_ferrymq_passwd() {
    if !have("mosquitto") || !have("mosquitto_pub") {
        return;
    }
    let d = dir("to-mosquitto");
    let pw = d.join("pw");
    ok(&passwd(&["-c", "-b", s(&pw), "alice", "s3cret"]));
    ok(&passwd(&["-I", "500", "-b", s(&pw), "bob", "hunter2"]));
    ok(&passwd(&[
        "-H",
        "sha512",
        "-b",
        s(&pw),
        "carol",
        "old-style",
    ]));
    let broker = start_mosquitto(&d, &pw);

    for (user, password) in [
        ("alice", "s3cret"),
        ("bob", "hunter2"),
        ("carol", "old-style"),
    ] {
        let out = mosquitto_pub(broker.port, user, password);
        ok(&out);
    }
    for (user, password) in [("alice", "s3cret!"), ("bob", "s3cret"), ("nobody", "x")] {
        let out = mosquitto_pub(broker.port, user, password);
        assert!(!out.status.success(), "{user}/{password} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not authorised"), "{err}");
    }
}
