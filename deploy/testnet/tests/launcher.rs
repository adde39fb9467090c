//! The README's first command: `testnet up` brings up a private network of our
//! authorities and relays, verifies it with a client fetch — C tor's when `tor` is on
//! PATH, the embedded arti client's when it is not — prints a status naming every node
//! uniquely with its flags, and tears everything down again, leaving no process behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// One network at a time: two would share this 2-core machine's CPU.
static ONE: Mutex<()> = Mutex::new(());

/// Runs `testnet up --exit-after-verify` with `path` as PATH (`None`: ours); returns the
/// network directory and the launcher's output.
fn run_up(dir: &Path, path: Option<&str>) -> (PathBuf, String) {
    let _one = ONE.lock().unwrap_or_else(PoisonError::into_inner);
    let net_dir = dir.join("net");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testnet"));
    cmd.args([
        "up",
        "--exit-after-verify",
        "--relays",
        "1",
        "--workers",
        "1",
        "--dir",
    ])
    .arg(&net_dir);
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    let log = dir.join("testnet.log");
    let mut p = tornet::Process::spawn("testnet", cmd, &log).unwrap();
    let done = tornet::wait_for(
        "testnet up to finish",
        Duration::from_secs(400),
        Duration::from_secs(1),
        || (!p.is_running()).then_some(()),
    );
    let out = std::fs::read_to_string(&log).unwrap();
    done.unwrap_or_else(|e| panic!("{e}\n{out}"));
    (net_dir, out)
}

/// What every run must show: unique names with flags, phases, client configuration,
/// the stop command, and no process left.
fn check_status_and_teardown(net_dir: &Path, out: &str, min_pids: usize) {
    assert!(out.contains("stopped; logs stay in"), "{out}");
    let status = std::fs::read_to_string(net_dir.join("status")).unwrap();
    for name in ["ours-auth0", "ours-auth2", "ours-relay0"] {
        assert!(
            status.contains(&format!("\n  {name} ")),
            "{name}:\n{status}"
        );
    }
    // Every relay is listed Running in the consensus the flags come from.
    let flag_lines: Vec<&str> = status
        .lines()
        .filter(|l| l.trim_start().starts_with("flags: "))
        .collect();
    assert_eq!(flag_lines.len(), 4, "{status}");
    assert!(flag_lines.iter().all(|l| l.contains("Running")), "{status}");
    assert!(status.contains("phases: build "), "{status}");
    // Started through cargo (as `cargo test` runs it), so stopped through cargo.
    let stop = format!(
        "stop: cargo run -p testnet -- down --dir {}",
        net_dir.display()
    );
    assert!(status.contains(&stop), "{status}");
    let torrc = std::fs::read_to_string(net_dir.join("torrc")).unwrap();
    assert_eq!(
        torrc.matches("\nDirAuthority oursauth").count(),
        3,
        "{torrc}"
    );
    let arti = std::fs::read_to_string(net_dir.join("arti.toml")).unwrap();
    assert_eq!(arti.matches("ed_identity = \"").count(), 3, "{arti}");
    // Every process it started is gone, and the pid file with it.
    assert!(!net_dir.join("pids").exists());
    let ran = std::fs::read_to_string(net_dir.join("pids.stopped")).unwrap();
    let pids: Vec<u32> = ran
        .lines()
        .skip(1)
        .filter_map(|l| l.split(' ').nth(1)?.parse().ok())
        .collect();
    assert!(pids.len() >= min_pids, "{ran}");
    for pid in pids {
        assert!(
            !tornet::process::pid_alive(pid),
            "pid {pid} still runs:\n{ran}"
        );
    }
    // `down` on a stopped network says so.
    let down = Command::new(env!("CARGO_BIN_EXE_testnet"))
        .args(["down", "--dir"])
        .arg(net_dir)
        .output()
        .unwrap();
    assert!(!down.status.success());
}

/// The README's way: `up` keeps running; the printed torrc works for a separate C tor;
/// `down` from another process stops it all.
#[test]
fn testnet_up_verifies_with_c_tor_serves_own_clients_and_stops_on_down() {
    let tor = tornet::tor_binary();
    // One network at a time: two would share this 2-core machine's CPU.
    let _one = ONE.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let net_dir = dir.path().join("net");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testnet"));
    cmd.args(["up", "--relays", "1", "--workers", "1", "--dir"])
        .arg(&net_dir);
    let log = dir.path().join("testnet.log");
    let mut launcher = tornet::Process::spawn("testnet", cmd, &log).unwrap();
    let up = tornet::wait_for(
        "the launcher to report the network running",
        Duration::from_secs(400),
        Duration::from_secs(1),
        || {
            let out = std::fs::read_to_string(&log).unwrap_or_default();
            (out.contains("testnet: running;") || !launcher.is_running()).then_some(out)
        },
    );
    let out = up.unwrap_or_else(|e| panic!("{e}\n{}", std::fs::read_to_string(&log).unwrap()));
    assert!(launcher.is_running(), "{out}");
    assert!(
        out.contains("verified: 1 MB fetched with a matching SHA-256 by C tor 0.4.9"),
        "{out}"
    );
    assert!(out.contains("SOCKS proxy (c-client0): 127.0.0.1:"), "{out}");
    assert!(
        out.contains(&format!(
            "running; Ctrl-C or `cargo run -p testnet -- down --dir {}` stops it",
            net_dir.display()
        )),
        "{out}"
    );

    // The printed torrc, as a user would paste it, bootstraps a C tor of their own.
    let torrc = net_dir.join("torrc");
    let own_log = dir.path().join("own-tor.log");
    let mut own_cmd = Command::new(tor);
    own_cmd.arg("-f").arg(&torrc);
    let mut own = tornet::Process::spawn("own-tor", own_cmd, &own_log).unwrap();
    let boot = tornet::wait_for(
        "a C tor configured from the printed torrc to bootstrap",
        Duration::from_secs(120),
        Duration::from_secs(1),
        || {
            std::fs::read_to_string(&own_log)
                .unwrap_or_default()
                .contains("Bootstrapped 100% (done)")
                .then_some(())
        },
    );
    boot.unwrap_or_else(|e| panic!("{e}\n{}", std::fs::read_to_string(&own_log).unwrap()));
    own.kill();

    // `down` from another shell stops the launcher and everything it started.
    let down = Command::new(env!("CARGO_BIN_EXE_testnet"))
        .args(["down", "--dir"])
        .arg(&net_dir)
        .output()
        .unwrap();
    assert!(down.status.success(), "{down:?}");
    tornet::wait_for(
        "the launcher to exit after down",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || (!launcher.is_running()).then_some(()),
    )
    .unwrap();
    let out = std::fs::read_to_string(&log).unwrap();
    // Three authorities of three processes, a relay of two, the client.
    check_status_and_teardown(&net_dir, &out, 12);
}

/// PATH as it is without Debian's tor package: each directory that holds `tor` is
/// replaced by a shadow directory (under `shadow`) of symlinks to everything else in it,
/// so cargo, the linker and the rest stay reachable.
fn path_without_tor(shadow: &Path) -> String {
    let path = std::env::var("PATH").unwrap();
    let mut dirs = Vec::new();
    for (i, d) in path.split(':').enumerate() {
        let d = Path::new(d);
        if !d.join("tor").exists() {
            dirs.push(d.display().to_string());
            continue;
        }
        let s = shadow.join(format!("bin{i}"));
        std::fs::create_dir_all(&s).unwrap();
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let name = e.file_name();
            let n = name.to_string_lossy();
            if n == "tor" || n.starts_with("tor-") {
                continue;
            }
            let _ = std::os::unix::fs::symlink(e.path(), s.join(&name));
        }
        dirs.push(s.display().to_string());
    }
    dirs.join(":")
}

#[test]
fn testnet_up_without_tor_verifies_with_embedded_arti() {
    let dir = tempfile::tempdir().unwrap();
    let path = path_without_tor(&dir.path().join("path"));
    assert!(
        !path.split(':').any(|d| Path::new(d).join("tor").exists()),
        "{path}"
    );
    let (net_dir, out) = run_up(dir.path(), Some(&path));
    assert!(
        out.contains("verified: 1 MB fetched with a matching SHA-256 by embedded arti-client 0.47"),
        "{out}"
    );
    // No C tor anywhere: three authorities of three processes and a relay of two.
    assert!(!out.contains("c-client0"), "{out}");
    check_status_and_teardown(&net_dir, &out, 11);
}
