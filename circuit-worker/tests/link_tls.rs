//! Mutual TLS on the edge↔worker link (issue #10, done-when 4): a connector without a
//! certificate of the cluster's CA gets no link and no cell of its reaches a shard, the
//! port does not speak plaintext HTTP/2 (h2c), silent connectors hold only their own
//! sockets, an edge refuses a worker of another cluster, and the legitimate edges keep
//! working throughout. (A valid edge replaying another link's request ids is link.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Edge, TestWorker, issue};
use proto_io::cluster_tls::{self, Material, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// True when a connector with these credentials got a working link: a CREATE_FAST
/// answered with CREATED_FAST.
async fn gets_a_link(worker: &TestWorker, tls: Option<ClientTlsConfig>) -> bool {
    match Edge::try_connect(worker.addr, "rogue", tls).await {
        Ok(mut e) => e.create_fast(1, 0x8000_0100).await,
        Err(_) => false,
    }
}

/// Client TLS trusting `ca_pem` for the server, presenting `identity` (if any).
fn client(ca_pem: &[u8], identity: Option<&Material>) -> ClientTlsConfig {
    let c = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(cluster_tls::WORKER_NAME)
        .timeout(Duration::from_secs(5));
    match identity {
        Some(m) => c.identity(Identity::from_pem(&m.cert_pem, &*m.key_pem)),
        None => c,
    }
}

/// What the port answers to the HTTP/2 client preface and an empty SETTINGS frame in
/// plaintext (at most 64 bytes, within 5 s).
async fn h2c_probe(addr: std::net::SocketAddr) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut buf = vec![0u8; 64];
    let n = match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
        Ok(Ok(n)) => n,
        Ok(Err(_)) => 0,
        Err(_) => panic!("the port neither answered nor closed within 5 s"),
    };
    buf.truncate(n);
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_edges_of_the_cluster_get_a_link() {
    let worker = TestWorker::start(2).await;
    let ca_pem = std::fs::read(worker.ca_dir().join(cluster_tls::CA_CERT)).unwrap();

    // Connectors that open TCP and never start TLS: each holds only its own socket.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(tokio::net::TcpStream::connect(worker.addr).await.unwrap());
    }
    let mut edge = Edge::connect(worker.addr, "edge-a", worker.edge_tls("edge-a")).await;
    assert!(edge.create_fast(1, 0x8000_0001).await, "the cluster's edge");

    // Plaintext: neither gRPC over h2c nor an HTTP/2 frame of any kind comes back.
    assert!(!gets_a_link(&worker, None).await, "plaintext gRPC");
    let answer = h2c_probe(worker.addr).await;
    assert!(
        answer.is_empty() || answer[0] == 0x15,
        "expected nothing or a TLS alert record, got {answer:02x?}"
    );

    // TLS that trusts our CA but presents no certificate.
    assert!(
        !gets_a_link(&worker, Some(client(&ca_pem, None))).await,
        "no certificate"
    );

    // An edge certificate of another cluster's CA.
    let other = tempfile::tempdir().unwrap();
    let other_ca = other.path().join("ca");
    cluster_tls::create_ca(&other_ca, proto_io::unix_now()).unwrap();
    issue(&other_ca, Role::Edge, "edge-x", &other.path().join("edge"));
    let foreign = Material::load(&other.path().join("edge")).unwrap();
    assert!(
        !gets_a_link(&worker, Some(client(&ca_pem, Some(&foreign)))).await,
        "another cluster's edge"
    );

    // A certificate of this cluster issued for a worker (serverAuth only) used to connect.
    issue(
        &worker.ca_dir(),
        Role::Worker,
        "worker-9",
        &other.path().join("w9"),
    );
    let wrong_role = Material::load(&other.path().join("w9")).unwrap();
    assert!(
        !gets_a_link(&worker, Some(client(&ca_pem, Some(&wrong_role)))).await,
        "a worker certificate as a client"
    );

    // Every one of them was refused in the handshake, before any gRPC message.
    let refused = worker
        .counter("worker_link_handshakes_total{result=\"refused\"}")
        .await;
    assert!(refused >= 5, "refused handshakes counted: {refused}");

    // The silent connectors are cut off by the handshake timeout (2 s here).
    for mut s in silent {
        let mut b = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await;
        assert!(
            matches!(r, Ok(Ok(0) | Err(_))),
            "a silent connector still open"
        );
    }
    assert!(
        worker
            .counter("worker_link_handshakes_total{result=\"timeout\"}")
            .await
            >= 8
    );

    // The cluster's edges were never in the way: the first still works, a second joins.
    assert!(
        edge.create_fast(1, 0x8000_0002).await,
        "the first edge after it all"
    );
    let mut second = Edge::connect(worker.addr, "edge-b", worker.edge_tls("edge-b")).await;
    assert!(second.create_fast(7, 0x8000_0003).await, "a second edge");
    worker.stop().await;
}

/// The edge's side: a worker port that presents a certificate of another CA (or of the
/// right CA but for an edge) gets no link from an edge of this cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_refuse_a_worker_of_another_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = (dir.path().join("ours"), dir.path().join("theirs"));
    let now = proto_io::unix_now();
    cluster_tls::create_ca(&ours, now).unwrap();
    cluster_tls::create_ca(&theirs, now).unwrap();
    issue(&ours, Role::Edge, "edge-a", &dir.path().join("edge"));
    issue(
        &theirs,
        Role::Worker,
        "impostor",
        &dir.path().join("impostor"),
    );
    issue(
        &ours,
        Role::Edge,
        "edge-b",
        &dir.path().join("edge-as-worker"),
    );
    let edge = Material::load(&dir.path().join("edge")).unwrap();

    for server in ["impostor", "edge-as-worker"] {
        let m = Material::load(&dir.path().join(server)).unwrap();
        // A server that asks for no client certificate: only the edge's check can fail.
        let cfg = rustls::ServerConfig::builder_with_provider(proto_io::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                rustls::pki_types::pem::PemObject::pem_slice_iter(&m.cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                rustls::pki_types::pem::PemObject::from_pem_slice(&m.key_pem).unwrap(),
            )
            .unwrap();
        let mut cfg = cfg;
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let rogue = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            acceptor.accept(s).await.is_ok()
        });
        let r = Edge::try_connect(
            addr,
            "edge-a",
            Some(edge.client_config(Duration::from_secs(5))),
        )
        .await;
        assert!(r.is_err(), "{server}: the edge linked to it");
        let handshake_done = tokio::time::timeout(Duration::from_secs(10), rogue)
            .await
            .expect("the rogue's accept ends")
            .unwrap();
        assert!(
            !handshake_done,
            "{server}: the edge finished the TLS handshake"
        );
    }
}
