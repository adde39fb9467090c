//! The README's first command: `testnet up` brings up a private network of our
//! authorities and relays, verifies it with a C tor client fetch, and tears everything
//! down again, leaving no process behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

#[test]
fn testnet_up_verifies_and_tears_down() {
    let dir = tempfile::tempdir().unwrap();
    let net_dir = dir.path().join("net");
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
    let log = dir.path().join("testnet.log");
    let mut p = tests::Process::spawn("testnet", cmd, &log).unwrap();
    let done = tests::wait_for(
        "testnet up to finish",
        Duration::from_secs(400),
        Duration::from_secs(1),
        || (!p.is_running()).then_some(()),
    );
    let out = std::fs::read_to_string(&log).unwrap();
    done.unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert!(
        out.contains("verified: 1 MB fetched with a matching SHA-256"),
        "{out}"
    );
    assert!(
        out.contains("SOCKS proxy (C tor client): 127.0.0.1:"),
        "{out}"
    );
    assert!(out.contains("stopped; logs stay in"), "{out}");
    // Every process it started is gone, and the pid file with it.
    let status = std::fs::read_to_string(net_dir.join("status")).unwrap();
    assert!(
        status.contains("auth2") && status.contains("relay0"),
        "{status}"
    );
    assert!(!net_dir.join("pids").exists());
    let ran = std::fs::read_to_string(net_dir.join("pids.stopped")).unwrap();
    let pids: Vec<u32> = ran
        .lines()
        .skip(1)
        .filter_map(|l| l.split(' ').nth(1)?.parse().ok())
        .collect();
    // Three authorities of three processes, a relay of two, the client.
    assert!(pids.len() >= 12, "{ran}");
    for pid in pids {
        assert!(
            !tests::process::pid_alive(pid),
            "pid {pid} still runs:\n{ran}"
        );
    }
    // `down` on a stopped network says so.
    let down = Command::new(env!("CARGO_BIN_EXE_testnet"))
        .args(["down", "--dir"])
        .arg(&net_dir)
        .output()
        .unwrap();
    assert!(!down.status.success());
}
