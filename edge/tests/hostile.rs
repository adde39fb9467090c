//! Hostile peers against a running edge (issue #3, "done when" 3): garbage before TLS,
//! garbage cells, wrong link versions, bad certificates, truncated cells and slowloris
//! connections all get their connection closed, while a healthy peer beside them completes
//! the link handshake. One edge runs in this process; every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use proto::keys::{EdgeKeys, RelayKeys};
use proto::link::LinkCerts;
use proto_io::channel::{Channel, LinkContext, Peer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Long enough that a bad-input close (bounded by `BAD_INPUT_CLOSE`) can never be the
/// timeout's doing, even on a loaded 2-core machine.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the edge may take to close a connection that sent bad input.
const BAD_INPUT_CLOSE: Duration = Duration::from_secs(10);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn peer_ctx() -> LinkContext {
    let mut rng = rand::rngs::OsRng;
    let bundle = RelayKeys::generate(&mut rng, now(), 86400 * 30).unwrap();
    let files = bundle.to_files().unwrap();
    let keys = EdgeKeys::from_files(&files).unwrap();
    let (certs, _) = LinkCerts::generate(&mut rng, &keys, now(), 86400).unwrap();
    LinkContext {
        certs,
        my_addrs: vec![IpAddr::from([127, 0, 0, 1])],
    }
}

async fn tls(addr: SocketAddr) -> tokio_rustls::client::TlsStream<TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(proto_io::tls::client_config().unwrap());
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector
        .connect(proto_io::tls::random_server_name(), tcp)
        .await
        .unwrap()
}

/// Reads until EOF or error; returns how long that took. Panics if the edge keeps the
/// connection open past `limit`.
async fn closed_within<S: AsyncRead + Unpin>(s: &mut S, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + limit).into(), s.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => {} // the edge's own handshake cells
        }
    }
}

/// Reads `s` until the edge closes it, at the latest by `deadline`; returns when.
async fn closed_by<S: AsyncRead + Unpin>(s: &mut S, deadline: Instant) -> Instant {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline.into(), s.read(&mut buf)).await {
            Err(_) => panic!("connection still open at the deadline"),
            Ok(Ok(0)) | Ok(Err(_)) => return Instant::now(),
            Ok(Ok(_)) => {} // the edge's own handshake cells
        }
    }
}

async fn healthy(addr: SocketAddr, ctx: &LinkContext) -> Peer {
    let ch = Channel::connect(
        tls(addr).await,
        ctx,
        None,
        None,
        true,
        addr.ip(),
        Duration::from_secs(10),
    )
    .await
    .expect("a healthy peer completes the handshake");
    ch.peer.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_are_closed_and_healthy_ones_served() {
    let keys = tempfile::tempdir().unwrap();
    edge::keygen(
        keys.path(),
        &edge::KeygenArgs::default(),
        SystemTime::now(),
        &mut Vec::new(),
    )
    .unwrap();
    let mut config = edge::Config {
        keys_dir: keys.path().to_owned(),
        ..edge::Config::default()
    };
    config.orport.handshake_timeout_secs = HANDSHAKE_TIMEOUT.as_secs();
    let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let orport = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = orport.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        edge::run(&config, edge::Listeners { metrics, orport }, async {
            let _ = stopped.await;
        })
        .await
    });
    let good = Arc::new(peer_ctx());
    // Wait (bounded) for the edge to serve.
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "edge never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 1. Slowloris: TCP open, nothing sent. And one that stops mid-TLS.
    let opened = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut half_tls = TcpStream::connect(addr).await.unwrap();
    half_tls
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    // 2. Truncated VERSIONS after TLS, then silence.
    let mut truncated = tls(addr).await;
    truncated.write_all(&[0, 0, 7, 0, 6, 0, 3]).await.unwrap();
    truncated.flush().await.unwrap();

    // The healthy peer is served while those three hang around.
    assert!(matches!(healthy(addr, &good).await, Peer::Relay(_)));

    // 3. Garbage instead of TLS.
    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    closed_within(&mut garbage, BAD_INPUT_CLOSE).await;
    // 4. Wrong first cell (NETINFO before VERSIONS), and only obsolete versions.
    let mut wrong_first = tls(addr).await;
    let mut c = vec![0u8, 0, 8];
    c.resize(3 + 509, 0);
    wrong_first.write_all(&c).await.unwrap();
    wrong_first.flush().await.unwrap();
    closed_within(&mut wrong_first, BAD_INPUT_CLOSE).await;
    let mut old_versions = tls(addr).await;
    old_versions
        .write_all(&[0, 0, 7, 0, 4, 0, 1, 0, 2])
        .await
        .unwrap();
    old_versions.flush().await.unwrap();
    closed_within(&mut old_versions, BAD_INPUT_CLOSE).await;
    // 5. Odd-length VERSIONS payload.
    let mut odd = tls(addr).await;
    odd.write_all(&[0, 0, 7, 0, 3, 0, 4, 5]).await.unwrap();
    odd.flush().await.unwrap();
    closed_within(&mut odd, BAD_INPUT_CLOSE).await;
    // 6. Bad certificates: a valid VERSIONS, then a CERTS cell of garbage certificates.
    let mut bad_certs = tls(addr).await;
    bad_certs.write_all(&[0, 0, 7, 0, 2, 0, 5]).await.unwrap();
    let certs_payload = [2u8, 2, 0, 3, 1, 2, 3, 4, 0, 1, 9];
    let mut cell = vec![0u8, 0, 0, 0, 129];
    cell.extend_from_slice(&(certs_payload.len() as u16).to_be_bytes());
    cell.extend_from_slice(&certs_payload);
    bad_certs.write_all(&cell).await.unwrap();
    bad_certs.flush().await.unwrap();
    closed_within(&mut bad_certs, BAD_INPUT_CLOSE).await;

    // The slow ones are cut off by the handshake timeout: not before it (so it is the
    // timeout that closes them), and not left open long after it.
    let latest = opened + HANDSHAKE_TIMEOUT + BAD_INPUT_CLOSE;
    for (what, closed) in [
        ("silent", closed_by(&mut silent, latest).await),
        ("half TLS", closed_by(&mut half_tls, latest).await),
        (
            "truncated VERSIONS",
            closed_by(&mut truncated, latest).await,
        ),
    ] {
        let open_for = closed - opened;
        assert!(
            open_for + Duration::from_secs(1) >= HANDSHAKE_TIMEOUT,
            "{what} closed after {open_for:?}, before the {HANDSHAKE_TIMEOUT:?} handshake timeout"
        );
    }

    // And the edge still serves healthy peers afterwards.
    assert!(matches!(healthy(addr, &good).await, Peer::Relay(_)));
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("edge stops")
        .unwrap()
        .unwrap();
}
