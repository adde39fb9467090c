//! The edge↔worker link on a Unix socket (`grpc.unix_listen`): an edge of the worker's own
//! user gets a working link without TLS, while a process of another user gets no link even
//! when the socket's mode would let it connect, and the worker's TCP port still demands
//! mutual TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::{Edge, TestWorker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_links_over_the_socket_and_nobody_else_does() {
    let worker = TestWorker::start(2).await;
    let mode = std::fs::metadata(&worker.unix)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the socket is private to its owner");

    let mut edge = Edge::try_connect_unix(&worker.unix, "local-edge")
        .await
        .unwrap();
    assert!(
        edge.create_fast(1, 0x8000_0001).await,
        "CREATE_FAST over the socket is answered"
    );
    assert_eq!(
        worker
            .counter("worker_link_handshakes_total{result=\"accepted\"}")
            .await,
        1
    );

    // Another uid, with the mode opened up so that only the peer check stands in its way:
    // the worker closes the connection before a byte of HTTP/2 (the SETTINGS frame every
    // server sends first) reaches it.
    let dir = worker.unix.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&worker.unix, std::fs::Permissions::from_mode(0o666)).unwrap();
    let script = "import socket,sys\n\
        s=socket.socket(socket.AF_UNIX)\n\
        s.settimeout(10)\n\
        s.connect(sys.argv[1])\n\
        try:\n \
          s.sendall(b'PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n\\0\\0\\0\\x04\\0\\0\\0\\0\\0')\n \
          print(len(s.recv(64)))\n\
        except (ConnectionResetError, BrokenPipeError):\n \
          print(0)\n";
    let sock = worker.unix.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "/usr/bin/python3",
                "-c",
            ])
            .arg(script)
            .arg(&sock)
            .output()
            .expect("setpriv (util-linux) and Debian's /usr/bin/python3 run; this test needs root")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "the other user's client ran: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "another uid got bytes from the worker"
    );
    assert!(
        wait_for_counter(
            &worker,
            "worker_link_handshakes_total{result=\"refused\"}",
            1
        )
        .await,
        "the refusal is counted"
    );

    // The owner's link kept working, and TCP still wants a cluster certificate.
    assert!(edge.create_fast(1, 0x8000_0002).await);
    assert!(
        Edge::try_connect(worker.addr, "plain", None).await.is_err(),
        "plaintext on the TCP port gets no link"
    );
    worker.stop().await;
}

/// Waits (at most 10 s) until `series` reaches `want`.
async fn wait_for_counter(worker: &TestWorker, series: &str, want: u64) -> bool {
    for _ in 0..100 {
        if worker.counter(series).await >= want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
