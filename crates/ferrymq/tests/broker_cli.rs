//! `ferrymq broker` as a process: listens where told, logs where, serves
//! MQTT, exits 0 promptly on SIGTERM and SIGINT, refuses bad config files.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn ferrymq() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrymq"));
    cmd.env("RUST_LOG", "info").env("NO_COLOR", "1");
    cmd
}

/// The broker process; killed if a test fails before it exits.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A fresh working directory, so that what one broker writes there (a
/// store, with `persistence true`) is its own.
fn workdir() -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ferrymq-cli-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts the broker and returns it with the first address it logs.
fn start(args: &[&str]) -> (Proc, String, mpsc::Receiver<String>) {
    let mut cmd = ferrymq();
    cmd.args(args);
    start_cmd(cmd)
}

/// [`start`] for a command the caller prepared.
fn start_cmd(cmd: Command) -> (Proc, String, mpsc::Receiver<String>) {
    start_in(cmd, &workdir())
}

/// [`start_cmd`] in the working directory `dir`.
fn start_in(mut cmd: Command, dir: &std::path::Path) -> (Proc, String, mpsc::Receiver<String>) {
    let mut child = Proc(
        cmd.current_dir(dir)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The lines read up to the address stay readable from the receiver.
    let (seen_tx, seen) = mpsc::channel();
    loop {
        let line = rx.recv_timeout(WAIT).expect("broker logs its listener");
        if let Some(i) = line.find("listening for MQTT addr=") {
            let addr = line[i + "listening for MQTT addr=".len()..]
                .trim()
                .to_string();
            std::thread::spawn(move || {
                for line in rx {
                    if seen_tx.send(line).is_err() {
                        break;
                    }
                }
            });
            return (child, addr, seen);
        }
        let _ = seen_tx.send(line);
    }
}

fn wait_exit(child: &mut Proc) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "broker did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.0.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// CONNECT (3.1.1, clean) and read the 4-byte CONNACK.
fn mqtt_connect(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    handshake(&mut s);
    s
}

/// CONNECT (3.1.1, clean, client id "x") and a successful CONNACK.
fn handshake(s: &mut (impl Read + Write)) {
    s.write_all(&[
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'x',
    ])
    .unwrap();
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).unwrap();
    assert_eq!(ack, [0x20, 2, 0, 0]);
}

#[test]
fn serves_on_the_port_given_and_exits_zero_on_sigterm() {
    let (mut child, addr, _log) = start(&["broker", "-p", "0"]);
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let _client = mqtt_connect(&addr);
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child).success());
}

#[test]
fn sigint_exits_zero_too() {
    let (mut child, addr, _log) = start(&["broker", "-p", "0"]);
    let _client = mqtt_connect(&addr);
    signal(&child, "-INT");
    assert!(wait_exit(&mut child).success());
}

#[test]
fn listener_from_config_file() {
    let dir = std::env::temp_dir().join(format!("ferrymq-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("ferrymq.conf");
    std::fs::write(
        &conf,
        "# test\nlistener 0 127.0.0.1\nallow_anonymous true\nmax_queued_messages 50\n",
    )
    .unwrap();
    let (mut child, addr, _log) = start(&["broker", "-c", conf.to_str().unwrap()]);
    let _client = mqtt_connect(&addr);
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child).success());
}

#[test]
fn unknown_config_option_names_file_and_line() {
    let dir = std::env::temp_dir().join(format!("ferrymq-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("bad.conf");
    std::fs::write(&conf, "listener 0 127.0.0.1\nfrobnicate yes\n").unwrap();
    let out = ferrymq()
        .args(["broker", "-c", conf.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.conf:2:"), "{err}");
}

#[test]
fn test_config_validates_without_starting() {
    let dir = workdir();
    let good = dir.join("good.conf");
    std::fs::write(&good, "listener 0 127.0.0.1\nallow_anonymous true\n").unwrap();
    let out = ferrymq()
        .args(["broker", "--test-config", "-c", good.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = dir.join("bad.conf");
    std::fs::write(
        &bad,
        "listener 0 127.0.0.1\npassword_file /nonexistent/passwd\n",
    )
    .unwrap();
    let out = ferrymq()
        .args(["broker", "--test-config", "-c", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/passwd"));
}

#[test]
fn sighup_reloads_the_password_file_without_dropping_clients() {
    let dir = workdir();
    let hash = |pw: &str| {
        let out = ferrymq()
            .args([
                "passwd",
                "-c",
                "-b",
                dir.join("tmp").to_str().unwrap(),
                "u",
                pw,
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        let line = std::fs::read_to_string(dir.join("tmp")).unwrap();
        std::fs::remove_file(dir.join("tmp")).unwrap();
        line
    };
    let passwd = dir.join("passwd");
    std::fs::write(&passwd, hash("old")).unwrap();
    let conf = dir.join("s.conf");
    std::fs::write(
        &conf,
        format!(
            "listener 0 127.0.0.1\nallow_anonymous false\npassword_file {}\npersistence false\n",
            passwd.display()
        ),
    )
    .unwrap();
    let (mut child, addr, log) = start(&["broker", "-c", conf.to_str().unwrap()]);
    let login = |pw: &str| -> u8 {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut body = vec![
            0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 60, 0, 1, b'x', 0, 1, b'u',
        ];
        body.extend_from_slice(&(pw.len() as u16).to_be_bytes());
        body.extend_from_slice(pw.as_bytes());
        let mut packet = vec![0x10, body.len() as u8];
        packet.extend(body);
        s.write_all(&packet).unwrap();
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack).unwrap();
        ack[3]
    };
    assert_eq!(login("old"), 0);
    let mut kept = mqtt_login_keep(&addr);
    std::fs::write(&passwd, hash("new")).unwrap();
    signal(&child, "-HUP");
    loop {
        let line = log.recv_timeout(WAIT).expect("reload logged");
        if line.contains("reloaded") {
            break;
        }
    }
    assert_eq!(login("new"), 0);
    assert_eq!(login("old"), 5, "the old password is refused after reload");
    // The client connected before the reload is still served.
    kept.write_all(&[0xC0, 0]).unwrap();
    let mut pong = [0u8; 2];
    kept.read_exact(&mut pong).unwrap();
    assert_eq!(pong, [0xD0, 0]);
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child).success());
}

/// A connection logged in as `u` with the password `old`, kept open.
fn mqtt_login_keep(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let body = [
        0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 60, 0, 1, b'k', 0, 1, b'u', 0, 3, b'o', b'l',
        b'd',
    ];
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    s.write_all(&packet).unwrap();
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).unwrap();
    assert_eq!(ack, [0x20, 2, 0, 0]);
    s
}

/// Mosquitto's systemd unit and scripts start `mosquitto -c FILE`: through
/// a link of that name ferrymq runs as `ferrymq broker`, writes its
/// `pid_file` and removes it on SIGTERM.
#[test]
fn started_as_mosquitto_with_a_pid_file() {
    let dir = workdir();
    let link = dir.join("mosquitto");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_ferrymq"), &link).unwrap();
    let pid_file = dir.join("mosquitto.pid");
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "pid_file {}\nlistener 0 127.0.0.1\nallow_anonymous true\nlog_dest stderr\nlog_timestamp false\npersistence false\n",
            pid_file.display()
        ),
    )
    .unwrap();
    let mut child = Proc(
        Command::new(&link)
            .args(["-c", conf.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .current_dir(&dir)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
    let mut warned = false;
    let addr = loop {
        let line = lines.next().expect("broker logs its listener");
        warned |= line.contains("log_timestamp is accepted and ignored");
        if let Some(i) = line.find("listening for MQTT addr=") {
            break line[i + "listening for MQTT addr=".len()..]
                .trim()
                .to_string();
        }
    };
    assert!(warned, "the ignored option is named in a warning");
    let _client = mqtt_connect(&addr);
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, child.0.id());
    std::thread::spawn(move || lines.for_each(drop));
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child).success());
    assert!(!pid_file.exists(), "pid file removed at exit");
}

/// `-d` returns at once and leaves the broker running detached: it
/// serves clients, writes its pid file and stops at SIGTERM.
#[test]
fn daemon_flag_runs_the_broker_in_the_background() {
    let dir = workdir();
    let log = dir.join("daemon.log");
    let pid_file = dir.join("daemon.pid");
    let conf = dir.join("daemon.conf");
    std::fs::write(
        &conf,
        format!(
            "listener 0 127.0.0.1\nallow_anonymous true\npersistence false\n\
             log_dest file {}\npid_file {}\n",
            log.display(),
            pid_file.display()
        ),
    )
    .unwrap();
    let mut cmd = ferrymq();
    cmd.env_remove("RUST_LOG")
        .args(["broker", "-d", "-c", conf.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut parent = Proc(cmd.spawn().unwrap());
    assert!(wait_exit(&mut parent).success(), "-d returns 0");
    // The detached broker says where it listens in its log file.
    use std::time::Instant;
    let deadline = Instant::now() + WAIT;
    let addr = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(i) = text.find("listening for MQTT addr=") {
            let rest = &text[i + "listening for MQTT addr=".len()..];
            break rest.split_whitespace().next().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no listener in {text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let _client = mqtt_connect(&addr);
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();
    // Whatever fails below, the detached broker does not outlive the test.
    struct KillOnDrop(String);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = Command::new("kill").args(["-KILL", &self.0]).status();
        }
    }
    let _guard = KillOnDrop(pid.clone());
    assert_ne!(
        pid,
        parent.0.id().to_string(),
        "the broker is another process"
    );
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    let deadline = Instant::now() + WAIT;
    // Gone, or a zombie nobody reaps (its parent, the -d process, is gone).
    while proc_dir.exists()
        && !std::fs::read_to_string(proc_dir.join("stat")).is_ok_and(|s| s.contains(") Z "))
    {
        assert!(
            Instant::now() < deadline,
            "the daemon did not stop at SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let deadline = Instant::now() + WAIT;
    while pid_file.exists() {
        assert!(Instant::now() < deadline, "pid file removed at exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `log_dest file PATH` (next to `log_dest stderr`): the file gets the
/// broker's lines, "client connected" among them, and the start-up line
/// that says which mapping of log_dest/log_type is in effect.
#[test]
fn log_dest_file_receives_the_log() {
    let dir = workdir();
    let log = dir.join("broker.log");
    let conf = dir.join("log.conf");
    std::fs::write(
        &conf,
        format!(
            "listener 0 127.0.0.1\nallow_anonymous true\nlog_dest stderr\nlog_dest file {}\n\
             log_type error\nlog_type warning\nlog_type information\n",
            log.display()
        ),
    )
    .unwrap();
    let mut cmd = ferrymq();
    // The file's log_type decides, not the tests' RUST_LOG.
    cmd.env_remove("RUST_LOG")
        .args(["broker", "-c", conf.to_str().unwrap()]);
    let (mut child, addr, _log) = start_cmd(cmd);
    let _client = mqtt_connect(&addr);
    let deadline = std::time::Instant::now() + WAIT;
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("client connected") {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "log file: {text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        text.contains(&format!("log_dest stderr, file {}", log.display())),
        "{text}"
    );
    assert!(text.contains("tracing filter \"info\""), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "no colour codes in a file: {text}"
    );
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child).success());
}

/// Publishes a retained QoS 1 message and waits for its PUBACK.
fn publish_retained(addr: &str, topic: &str, payload: &[u8]) {
    let mut s = mqtt_connect(addr);
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&[0, 1]);
    body.extend_from_slice(payload);
    let mut packet = vec![0x33, body.len() as u8];
    packet.extend(body);
    s.write_all(&packet).unwrap();
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).unwrap();
    assert_eq!(ack, [0x40, 2, 0, 1]);
}

/// Subscribes to `topic` and returns the retained payload that comes, if
/// one comes within a short wait.
fn retained(addr: &str, topic: &str) -> Option<Vec<u8>> {
    let mut s = mqtt_connect(addr);
    let mut body = vec![0, 1];
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.push(0);
    let mut packet = vec![0x82, body.len() as u8];
    packet.extend(body);
    s.write_all(&packet).unwrap();
    let mut suback = [0u8; 5];
    s.read_exact(&mut suback).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut head = [0u8; 2];
    s.read_exact(&mut head).ok()?;
    let mut rest = vec![0u8; usize::from(head[1])];
    s.read_exact(&mut rest).unwrap();
    Some(rest[2 + topic.len()..].to_vec())
}

/// `ferrymq broker -c conf`, started in `dir`.
fn broker_in(dir: &std::path::Path, conf: &str) -> (Proc, String, mpsc::Receiver<String>) {
    let mut c = ferrymq();
    c.args(["broker", "-c", conf]);
    start_in(c, dir)
}

fn conf_in(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// Issue 15: without `persistence true`, as in Mosquitto, nothing survives
/// a restart (the store used to be on by default).
#[test]
fn without_persistence_a_restart_keeps_nothing() {
    let dir = workdir();
    let conf = conf_in(
        &dir,
        "m.conf",
        "listener 0 127.0.0.1\nallow_anonymous true\n",
    );
    let (mut child, addr, _log) = broker_in(&dir, &conf);
    publish_retained(&addr, "kept?", b"1");
    assert_eq!(retained(&addr, "kept?").as_deref(), Some(&b"1"[..]));
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child).success());
    let (mut child, addr, _log) = broker_in(&dir, &conf);
    assert_eq!(retained(&addr, "kept?"), None);
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child).success());
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        entries,
        vec![std::ffi::OsString::from("m.conf")],
        "no store written"
    );
}

/// Issue 15: the store is named after `persistence_file`, so two brokers
/// started from one directory with different values keep apart.
#[test]
fn brokers_with_different_persistence_files_do_not_share_a_store() {
    let dir = workdir();
    let base = "listener 0 127.0.0.1\nallow_anonymous true\npersistence true\n";
    let a = conf_in(&dir, "a.conf", &format!("{base}persistence_file a.db\n"));
    let b = conf_in(&dir, "b.conf", &format!("{base}persistence_file b.db\n"));
    let run = |conf: &str| broker_in(&dir, conf);
    let (mut broker_a, addr, _log) = run(&a);
    publish_retained(&addr, "who", b"a");
    signal(&broker_a, "-TERM");
    assert!(wait_exit(&mut broker_a).success());
    let (mut broker_b, addr, _log) = run(&b);
    assert_eq!(retained(&addr, "who"), None, "b does not see a's state");
    publish_retained(&addr, "who", b"b");
    signal(&broker_b, "-TERM");
    assert!(wait_exit(&mut broker_b).success());
    let (mut broker_a, addr, _log) = run(&a);
    assert_eq!(retained(&addr, "who").as_deref(), Some(&b"a"[..]));
    signal(&broker_a, "-TERM");
    assert!(wait_exit(&mut broker_a).success());
    assert!(dir.join("a.db.ferrymq").is_dir() && dir.join("b.db.ferrymq").is_dir());
}

/// Mosquitto 2.1's flags: `-p` repeated (loopback listeners, ignored with
/// a warning when the file has listeners), `--tls-keylog FILE` (warned
/// about), `-q` (nothing logged, whatever the file says).
#[test]
fn mosquitto_command_line_flags() {
    let dir = workdir();
    let keylog = dir.join("keys.log");
    let (mut child, addr, log) = start(&[
        "broker",
        "-p",
        "0",
        "-p",
        "0",
        "--tls-keylog",
        keylog.to_str().unwrap(),
    ]);
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let mut lines = Vec::new();
    let _client = mqtt_connect(&addr);
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child).success());
    lines.extend(log.try_iter());
    let text = lines.join("\n");
    assert!(text.contains("DO NOT USE IN PRODUCTION"), "{text}");
    assert_eq!(
        text.matches("listening for MQTT addr=127.0.0.1:").count(),
        1,
        "the second -p 0 (the first was read by start): {text}"
    );

    // -p next to a file with listeners: ignored, and said so.
    let conf = dir.join("with-listener.conf");
    std::fs::write(&conf, "listener 0 127.0.0.1\nallow_anonymous true\n").unwrap();
    let (mut child, addr, log) = start(&["broker", "-c", conf.to_str().unwrap(), "-p", "1"]);
    let _client = mqtt_connect(&addr);
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child).success());
    let text: Vec<String> = log.try_iter().collect();
    assert!(text.iter().any(|l| l.contains("-p is ignored")), "{text:?}");

    // -q: a file log stays empty while a client comes and goes (on a Unix
    // socket: no log line is needed to find the broker).
    let sock = dir.join("mqtt.sock");
    let file = dir.join("quiet.log");
    let conf = dir.join("quiet.conf");
    std::fs::write(
        &conf,
        format!(
            "listener 0 {}\nallow_anonymous true\nlog_dest file {}\nlog_type all\n",
            sock.display(),
            file.display()
        ),
    )
    .unwrap();
    let mut child = Proc(
        ferrymq()
            .env_remove("RUST_LOG")
            .args(["broker", "-v", "-q", "-c", conf.to_str().unwrap()])
            .current_dir(&dir)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + WAIT;
    let mut unix = loop {
        match std::os::unix::net::UnixStream::connect(&sock) {
            Ok(s) => break s,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("{e}"),
        }
    };
    unix.set_read_timeout(Some(WAIT)).unwrap();
    handshake(&mut unix);
    drop(unix);
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child).success());
    assert_eq!(
        std::fs::read_to_string(&file).unwrap_or_default(),
        "",
        "-q wins over -v and the file"
    );

    let version = ferrymq().args(["broker", "--version"]).output().unwrap();
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("ferrymq version "));
}
