//! Issue #3, "done when" 3, with a real peer: hostile connections (silent TCP, garbage
//! instead of TLS, garbage and truncated cells after TLS) are closed by our edge while a
//! C tor 0.4.9 client, using the edge as its bridge, completes the link handshake beside
//! them and keeps its link.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tornet::{NetConfig, Process, TorNet, free_port, our_binary, wait_for};

/// The edge's handshake timeout here: long enough that the slow hostile peers are still
/// open while the C tor client starts and links (bounded by `CLIENT_LINKED`), so the
/// client really completes its handshake beside them.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(45);
/// How long after the hostile peers opened the client must have linked.
const CLIENT_LINKED: Duration = Duration::from_secs(40);

async fn closed_within<S: tokio::io::AsyncRead + Unpin>(s: &mut S, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[test]
fn hostile_peers_beside_a_c_tor_client() {
    let edge_bin = our_binary("edge").unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let keys = scratch.path().join("keys");
    let out = Command::new(&edge_bin)
        .args(["keygen", "--keys-dir"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(out.status.success());
    let fp = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint ").map(str::to_owned))
        .unwrap();
    let orport: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut cmd = Command::new(&edge_bin);
    cmd.arg("run")
        .env_clear()
        .env("EDGE__KEYS_DIR", &keys)
        .env("EDGE__ORPORT__LISTEN", orport.to_string())
        .env(
            "EDGE__ORPORT__HANDSHAKE_TIMEOUT_SECS",
            HANDSHAKE_TIMEOUT.as_secs().to_string(),
        )
        .env(
            "EDGE__METRICS__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        );
    let mut edge = Process::spawn("edge", cmd, &scratch.path().join("edge.log")).unwrap();
    wait_for(
        "the edge ORPort",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || std::net::TcpStream::connect(orport).ok(),
    )
    .unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // Hostile peers, opened before the healthy one and held open while it connects.
    let opened = Instant::now();
    let (mut silent, mut garbage, mut bad_cell) = rt.block_on(async {
        let silent = tokio::net::TcpStream::connect(orport).await.unwrap();
        let mut garbage = tokio::net::TcpStream::connect(orport).await.unwrap();
        garbage.write_all(&[0xff; 300]).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(proto_io::tls::client_config().unwrap());
        let tcp = tokio::net::TcpStream::connect(orport).await.unwrap();
        let mut bad_cell = connector
            .connect(proto_io::tls::random_server_name(), tcp)
            .await
            .unwrap();
        // A truncated VERSIONS cell, then nothing.
        bad_cell.write_all(&[0, 0, 7, 0, 6, 0]).await.unwrap();
        bad_cell.flush().await.unwrap();
        (silent, garbage, bad_cell)
    });

    let net = TorNet::start(&NetConfig {
        authorities: 1,
        clients: 1,
        client_extra: vec!["UseBridges 1".into(), format!("Bridge {orport} {fp}")],
        ..NetConfig::default()
    })
    .unwrap();
    let start = Instant::now();
    let mut ctl = wait_for(
        "client ControlPort",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || net.clients[0].control().ok(),
    )
    .unwrap();
    let status = wait_for(
        "the C tor client's link to our edge",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || {
            let s = ctl.getinfo("orconn-status").ok()?;
            s.lines()
                .any(|l| l.starts_with(&format!("${fp}")) && l.ends_with(" CONNECTED"))
                .then_some(s)
        },
    );
    if status.is_err() {
        eprintln!("{}", tornet::tail(edge.log_path(), 40));
    }
    status.unwrap();
    eprintln!(
        "C tor client linked to our edge after {:?}",
        start.elapsed()
    );

    let linked_after = opened.elapsed();
    assert!(
        linked_after < CLIENT_LINKED,
        "the client took {linked_after:?} to link; the slow peers may have timed out first"
    );
    rt.block_on(async {
        // Garbage is refused at once; the slow peers were still open while the client
        // linked, and the handshake timeout closes them afterwards.
        assert!(
            closed_within(&mut garbage, Duration::from_secs(10)).await,
            "garbage peer kept"
        );
        assert!(
            !closed_within(&mut silent, Duration::from_millis(100)).await,
            "silent peer closed before the handshake timeout"
        );
        assert!(
            !closed_within(&mut bad_cell, Duration::from_millis(100)).await,
            "truncated-cell peer closed before the handshake timeout"
        );
        let by = (HANDSHAKE_TIMEOUT + Duration::from_secs(20)).saturating_sub(opened.elapsed());
        assert!(closed_within(&mut silent, by).await, "silent peer kept");
        assert!(
            closed_within(&mut bad_cell, Duration::from_secs(5)).await,
            "truncated cell kept"
        );
    });
    // The healthy link survived the hostile ones.
    let s = ctl.getinfo("orconn-status").unwrap();
    assert!(
        s.lines()
            .any(|l| l.starts_with(&format!("${fp}")) && l.ends_with(" CONNECTED")),
        "{s}"
    );
    assert!(edge.is_running(), "edge died");
    drop(net);
    assert!(edge.terminate(Duration::from_secs(10)));
}
