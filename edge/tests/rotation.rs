//! The edge rotates its TLS link key and certificate on schedule, and peers that connect
//! before and after a rotation both complete the link handshake (each CERTS cell matches
//! the TLS certificate of its own connection).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use proto::keys::{EdgeKeys, RelayKeys};
use proto::link::LinkCerts;
use proto_io::channel::{Channel, LinkContext, Peer};
use tokio::net::{TcpListener, TcpStream};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn peer_ctx() -> LinkContext {
    let mut rng = rand::rngs::OsRng;
    let files = RelayKeys::generate(&mut rng, now(), 86400)
        .unwrap()
        .to_files()
        .unwrap();
    let keys = EdgeKeys::from_files(&files).unwrap();
    let (certs, _) = LinkCerts::generate(&mut rng, &keys, now(), 86400).unwrap();
    LinkContext {
        certs,
        my_addrs: vec![IpAddr::from([127, 0, 0, 1])],
    }
}

/// Connects, completes the handshake, returns the TLS certificate the edge presented.
async fn connect(addr: std::net::SocketAddr, ctx: &LinkContext) -> Vec<u8> {
    let connector = tokio_rustls::TlsConnector::from(proto_io::tls::client_config().unwrap());
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(proto_io::tls::random_server_name(), tcp)
        .await
        .unwrap();
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let ch = Channel::connect(
        tls,
        ctx,
        None,
        None,
        true,
        addr.ip(),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert!(matches!(ch.peer, Peer::Relay(_)));
    cert
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_certificate_rotates_and_both_generations_work() {
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
    config.orport.tls_rotation_secs = 1;
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
    let ctx = peer_ctx();
    let first = connect(addr, &ctx).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let rotated = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let c = connect(addr, &ctx).await;
        if c != first {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "the link certificate never rotated"
        );
    };
    assert_ne!(rotated, first);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
