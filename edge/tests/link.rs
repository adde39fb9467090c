//! Our link handshake against itself over real TLS on 127.0.0.1: an authenticating
//! initiator is seen by the responder as that relay; a non-authenticating one as a client;
//! an initiator expecting another identity refuses the responder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use proto::keys::{EdgeKeys, RelayKeys};
use proto::link::LinkCerts;
use proto_io::channel::{ChanError, Channel, LinkContext, Peer};
use tokio::net::{TcpListener, TcpStream};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Relay {
    keys: EdgeKeys,
    ctx: Arc<LinkContext>,
    tls_der: Vec<u8>,
}

fn relay() -> Relay {
    let mut rng = rand::rngs::OsRng;
    let bundle = RelayKeys::generate(&mut rng, now(), 86400 * 30).unwrap();
    let files = bundle.to_files().unwrap();
    let keys = EdgeKeys::from_files(&files).unwrap();
    let (certs, tls) = LinkCerts::generate(&mut rng, &keys, now(), 86400).unwrap();
    let tls_der = tls.to_pkcs1_der().unwrap().to_vec();
    let ctx = Arc::new(LinkContext {
        certs,
        my_addrs: vec![IpAddr::from([127, 0, 0, 1])],
    });
    Relay { keys, ctx, tls_der }
}

async fn handshake(
    responder: &Relay,
    initiator: &Relay,
    authenticate: bool,
    expect_rsa: Option<proto::RsaIdentity>,
) -> (Result<Peer, String>, Result<Peer, String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(
        proto_io::tls::server_config(&responder.ctx.certs.link_cert_der, &responder.tls_der)
            .unwrap(),
    );
    let rctx = responder.ctx.clone();
    let server = tokio::spawn(async move {
        let (tcp, peer) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        Channel::accept(tls, &rctx, peer.ip(), Duration::from_secs(10))
            .await
            .map(|c| c.peer.clone())
            .map_err(|e| e.to_string())
    });
    let connector = tokio_rustls::TlsConnector::from(proto_io::tls::client_config().unwrap());
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(proto_io::tls::random_server_name(), tcp)
        .await
        .unwrap();
    let client = Channel::connect(
        tls,
        &initiator.ctx,
        expect_rsa,
        None,
        authenticate,
        addr.ip(),
        Duration::from_secs(10),
    )
    .await
    .map(|c| c.peer.clone())
    .map_err(|e: ChanError| e.to_string());
    let server = tokio::time::timeout(Duration::from_secs(15), server)
        .await
        .expect("responder finishes")
        .unwrap();
    (client, server)
}

#[tokio::test]
async fn authenticated_initiator_is_known_by_its_identities() {
    let (a, b) = (relay(), relay());
    let (client, server) = handshake(&a, &b, true, Some(a.keys.rsa_identity())).await;
    match client.unwrap() {
        Peer::Relay(p) => {
            assert_eq!(p.rsa, a.keys.rsa_identity());
            assert_eq!(p.ed, a.keys.ed_identity);
        }
        other => panic!("{other:?}"),
    }
    match server.unwrap() {
        Peer::Relay(p) => {
            assert_eq!(p.rsa, b.keys.rsa_identity());
            assert_eq!(p.ed, b.keys.ed_identity);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn unauthenticated_initiator_is_a_client() {
    let (a, b) = (relay(), relay());
    let (client, server) = handshake(&a, &b, false, None).await;
    assert!(matches!(client.unwrap(), Peer::Relay(_)));
    assert_eq!(server.unwrap(), Peer::Client);
}

#[tokio::test]
async fn initiator_refuses_the_wrong_identity() {
    let (a, b, c) = (relay(), relay(), relay());
    let (client, _server) = handshake(&a, &b, true, Some(c.keys.rsa_identity())).await;
    assert!(client.unwrap_err().contains("identity"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_manager_reuses_one_link_per_identity() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (resp, me) = (relay(), relay());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(
        proto_io::tls::server_config(&resp.ctx.certs.link_cert_der, &resp.tls_der).unwrap(),
    );
    let accepts = Arc::new(AtomicUsize::new(0));
    let (kill_tx, kill_rx) = tokio::sync::watch::channel(false);
    let (rctx, count) = (resp.ctx.clone(), accepts.clone());
    let kill = kill_rx.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let (acceptor, rctx, kill) = (acceptor.clone(), rctx.clone(), kill.clone());
            tokio::spawn(async move {
                let tls = acceptor.accept(tcp).await.unwrap();
                let ch = Channel::accept(tls, &rctx, peer.ip(), Duration::from_secs(10))
                    .await
                    .unwrap();
                let (_h, task) = ch.spawn(&policy(), Arc::new(IgnoreCells), kill);
                let _ = task.await;
            });
        }
    });

    let state = proto_io::tls::LinkState {
        tls: tokio_rustls::TlsAcceptor::from(
            proto_io::tls::server_config(&me.ctx.certs.link_cert_der, &me.tls_der).unwrap(),
        ),
        ctx: me.ctx.clone(),
    };
    let (_state_tx, state_rx) = tokio::sync::watch::channel(Arc::new(state));
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mgr = Arc::new(
        edge::chanmgr::ChannelManager::new(state_rx, Duration::from_secs(10), policy(), stop_rx)
            .unwrap(),
    );
    let std::net::SocketAddr::V4(v4) = addr else {
        unreachable!()
    };
    let target = proto::linkspec::ExtendTarget {
        ipv4: Some(v4),
        ipv6: None,
        rsa_id: resp.keys.rsa_identity(),
        ed_id: Some(resp.keys.ed_identity),
    };
    let mut joins = Vec::new();
    for _ in 0..5 {
        let (mgr, target) = (mgr.clone(), target.clone());
        joins.push(tokio::spawn(async move {
            mgr.get_or_connect(&target).await.unwrap()
        }));
    }
    let mut ids = Vec::new();
    for j in joins {
        ids.push(j.await.unwrap().id);
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    assert_eq!(
        accepts.load(Ordering::SeqCst),
        1,
        "five concurrent callers, one link"
    );
    assert_eq!(mgr.open_channels(), 1);

    // When the link dies, the next caller opens a fresh one.
    let h = mgr.get_or_connect(&target).await.unwrap();
    kill_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), h.closed())
        .await
        .unwrap();
    let h2 = mgr.get_or_connect(&target).await.unwrap();
    assert_ne!(h2.id, h.id);
    assert_eq!(accepts.load(Ordering::SeqCst), 2);

    // A target whose identity differs from the responder's is refused.
    let wrong = proto::linkspec::ExtendTarget {
        rsa_id: me.keys.rsa_identity(),
        ..target
    };
    assert!(mgr.get_or_connect(&wrong).await.is_err());
}

#[tokio::test]
async fn responder_speaks_tls12_and_tls13() {
    use tokio::io::AsyncReadExt;
    let r = relay();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(
        proto_io::tls::server_config(&r.ctx.certs.link_cert_der, &r.tls_der).unwrap(),
    );
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut b = [0u8; 1];
                    let _ = tls.read(&mut b).await;
                }
            });
        }
    });
    for (version, name) in [
        (&rustls::version::TLS12, "TLSv1_2"),
        (&rustls::version::TLS13, "TLSv1_3"),
    ] {
        // A client that offers only this version, like an old or a new C tor.
        let cfg = rustls::ClientConfig::builder_with_provider(proto_io::tls::provider())
            .with_protocol_versions(&[version])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(proto_io::tls::accept_any_verifier())
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = connector
            .connect(proto_io::tls::random_server_name(), tcp)
            .await
            .unwrap();
        let got = tls.get_ref().1.protocol_version().unwrap();
        assert_eq!(format!("{got:?}"), name);
    }
}

fn policy() -> proto_io::channel::ChannelPolicy {
    proto_io::channel::ChannelPolicy::c_tor_defaults(proto_io::budget::MemBudget::new(64 << 20))
}

/// A channel handler that drops every cell (these tests look at links, not circuits).
struct IgnoreCells;

impl proto_io::channel::CellHandler for IgnoreCells {
    fn on_cells<'a>(
        &'a self,
        _chan: &'a proto_io::channel::ChannelHandle,
        _cells: Vec<proto::cell::ChanCell>,
    ) -> proto_io::channel::CellsFuture<'a> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
}
