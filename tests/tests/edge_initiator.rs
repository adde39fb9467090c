//! Issue #3, "done when" 2: our edge, as initiator, completes the link handshake with
//! AUTHENTICATE to a C tor relay, and the C tor relay sees an authenticated relay.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use proto::keys::{EdgeKeys, RelayKeys};
use proto::link::LinkCerts;
use proto_io::channel::{Channel, LinkContext, Peer};
use tornet::{NetConfig, TorNet};

#[test]
fn edge_authenticates_to_a_c_tor_relay() {
    let net = TorNet::start(&NetConfig {
        authorities: 1,
        relays: 1,
        ..NetConfig::default()
    })
    .unwrap();
    let relay = &net.relays[0];
    let expected =
        proto::RsaIdentity::from_bytes(&hex::decode(&relay.fingerprint).unwrap()).unwrap();
    let addr = relay.or_addr();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (authed_keys, authed_ctx) = identity();
    let (client_keys, client_ctx) = identity();
    let open = |ctx: Arc<LinkContext>, authenticate: bool| {
        rt.block_on(async move {
            // The relay may still be starting: retry the connection, bounded.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            let tcp = loop {
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(t) => break t,
                    Err(e) if tokio::time::Instant::now() >= deadline => {
                        panic!("relay ORPort never opened: {e}")
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            };
            let connector =
                tokio_rustls::TlsConnector::from(proto_io::tls::client_config().unwrap());
            let tls = connector
                .connect(proto_io::tls::random_server_name(), tcp)
                .await
                .unwrap();
            Channel::connect(
                tls,
                &ctx,
                Some(expected),
                None,
                authenticate,
                addr.ip(),
                Duration::from_secs(20),
            )
            .await
            .expect("link handshake with the C tor relay")
        })
    };
    let authed = open(authed_ctx, true);
    let client = open(client_ctx, false);
    for ch in [&authed, &client] {
        let Peer::Relay(p) = &ch.peer else {
            panic!("{:?}", ch.peer)
        };
        assert_eq!(p.rsa, expected, "we checked the C tor relay's certificates");
        assert_eq!(ch.link_version, 5);
    }
    // The C tor relay's view, through its ControlPort: the authenticated link carries our
    // identity; the unauthenticated one does not.
    let mut ctl = relay.control().unwrap();
    let ours = format!("${} CONNECTED", authed_keys.rsa_identity().to_hex());
    let status = tornet::wait_for(
        "our identity in orconn-status",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let s = ctl.getinfo("orconn-status").ok()?;
            s.lines().any(|l| l == ours).then_some(s)
        },
    )
    .unwrap();
    assert!(
        !status.contains(&client_keys.rsa_identity().to_hex()),
        "an unauthenticated link must not carry an identity: {status}"
    );
    drop((authed, client));
}

fn identity() -> (EdgeKeys, Arc<LinkContext>) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut rng = rand::rngs::OsRng;
    let files = RelayKeys::generate(&mut rng, now, 86400)
        .unwrap()
        .to_files()
        .unwrap();
    let keys = EdgeKeys::from_files(&files).unwrap();
    let (certs, _) = LinkCerts::generate(&mut rng, &keys, now, 86400).unwrap();
    let ctx = Arc::new(LinkContext {
        certs,
        my_addrs: vec![[127, 0, 0, 1].into()],
    });
    (keys, ctx)
}
