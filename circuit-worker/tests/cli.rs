//! End-to-end tests of the `circuit-worker` binary: its command line, configuration layering and
//! the metrics endpoint of `run`, on 127.0.0.1 with bounded waits and the child always
//! killed (by PID, on drop) even when an assertion fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_circuit-worker");
const METRIC_PREFIX: &str = "worker";
const ENV: &str = "CIRCUIT_WORKER";

/// The binary with an empty environment (no stray RUST_LOG or overrides from the runner).
fn bin() -> Command {
    let mut c = Command::new(BIN);
    c.env_clear();
    c
}

/// Runs a command that should finish by itself, within a bound (killed otherwise).
fn output(c: &mut Command) -> Output {
    let mut child = KillOnDrop(
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts"),
    );
    let status = wait_exit(&mut child.0, Duration::from_secs(30)).expect("exits within 30 s");
    // Outputs here are far below a pipe's capacity, so reading after exit cannot block.
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Kills the child (SIGKILL by PID) and reaps it when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn help_lists_the_subcommands() {
    let out = output(bin().arg("--help"));
    assert!(out.status.success());
    let help = text(&out.stdout);
    for word in ["run", "check-config", "--config"] {
        assert!(help.contains(word), "--help lacks {word}:\n{help}");
    }
}

#[test]
fn check_config_shows_defaults_file_and_env_overrides() {
    let out = output(bin().arg("check-config"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("listen = \"127.0.0.1:9201\""));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("circuit-worker.toml");
    std::fs::write(
        &file,
        "keys_dir = \"/from/file\"\nshards = 2\n[grpc]\nlisten = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let out = output(
        bin()
            .arg("check-config")
            .env(format!("{ENV}_CONFIG"), &file)
            .env(format!("{ENV}__GRPC__LISTEN"), "0.0.0.0:9443")
            .env(format!("{ENV}__SHARDS"), "16"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("keys_dir = \"/from/file\""), "{shown}");
    assert!(shown.contains("listen = \"0.0.0.0:9443\""), "{shown}");
    assert!(
        !shown.contains("\"127.0.0.1:1\""),
        "env beats file: {shown}"
    );
    assert!(shown.contains("shards = 16"), "{shown}");

    // The flag works as well as the variable.
    let out = output(bin().arg("--config").arg(&file).arg("check-config"));
    assert!(text(&out.stdout).contains("listen = \"127.0.0.1:1\""));
}

#[test]
fn bad_configuration_fails_and_names_the_key() {
    let out = output(
        bin()
            .arg("check-config")
            .env(format!("{ENV}__METRICS__LISTEN"), "nowhere"),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("metrics.listen"),
        "{}",
        text(&out.stderr)
    );

    let out = output(bin().args([
        "--config",
        "/nonexistent/circuit-worker.toml",
        "check-config",
    ]));
    assert!(!out.status.success());
}

#[test]
fn run_fails_cleanly_when_the_metrics_address_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = output(bin().args(["run", "--metrics-listen", &addr]));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("metrics.listen") && err.contains(&addr),
        "{err}"
    );
}

/// Reads stderr lines until one contains `marker`, within `limit`.
fn wait_for_line(
    lines: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    marker: &str,
    limit: Duration,
) -> Option<String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let line = lines.recv_timeout(left).ok()?;
        seen.push(line.clone());
        if line.contains(marker) {
            return Some(line);
        }
    }
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn run_serves_metrics_and_exits_cleanly_on_sigterm() {
    let keys = tempfile::tempdir().unwrap();
    let bundle =
        proto::keys::RelayKeys::generate(&mut rand::rngs::OsRng, 1_790_000_000, 86400).unwrap();
    proto_io::keydir::write_key_files(keys.path(), &bundle.to_files().unwrap(), false).unwrap();
    let ca = tempfile::tempdir().unwrap();
    let now = proto_io::unix_now();
    proto_io::cluster_tls::create_ca(ca.path(), now).unwrap();
    let tls = keys.path().join("tls");
    proto_io::cluster_tls::issue(
        ca.path(),
        proto_io::cluster_tls::Role::Worker,
        "w",
        1,
        &tls,
        now,
    )
    .unwrap();
    let mut child = KillOnDrop(
        bin()
            .args(["run", "--metrics-listen", "127.0.0.1:0"])
            .env(format!("{ENV}__KEYS_DIR"), keys.path())
            .env(format!("{ENV}__CLUSTER_TLS__DIR"), &tls)
            .env(format!("{ENV}__GRPC__LISTEN"), "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut seen = Vec::new();
    let marker = "metrics listening on ";
    let line = wait_for_line(&lines, &mut seen, marker, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no `{marker}` line; log:\n{}", seen.join("\n")));
    let addr: SocketAddr = line
        .split(marker)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unparseable: {line}"));
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    assert!(
        wait_for_line(&lines, &mut seen, "ready", Duration::from_secs(10)).is_some(),
        "no ready line; log:\n{}",
        seen.join("\n")
    );

    let reply = http_get(addr, "/metrics");
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    let build_info = format!(
        "{METRIC_PREFIX}_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(reply.contains(&build_info), "{reply}");
    assert!(reply.contains(&format!("{METRIC_PREFIX}_start_time_seconds ")));
    assert!(http_get(addr, "/").starts_with("HTTP/1.1 404 "));

    let term = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = wait_exit(&mut child.0, Duration::from_secs(10));
    while let Ok(line) = lines.try_recv() {
        seen.push(line);
    }
    let status =
        status.unwrap_or_else(|| panic!("no exit after SIGTERM; log:\n{}", seen.join("\n")));
    assert!(status.success(), "{status}; log:\n{}", seen.join("\n"));
}
