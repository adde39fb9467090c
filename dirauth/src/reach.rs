//! Reachability tests (dir-spec §3.4.2, C: `dirserv_single_reachability_test`): connect
//! to a relay's ORPort as a link initiator, authenticate with the authority's relay
//! identity as C authorities do, and count the relay reachable when the CERTS it sends
//! prove the RSA (and, for LinkAuth=3 relays, Ed25519) identity of its descriptor.
//!
//! Invariant: at most `parallel_tests` tests run at once, each bounded by `timeout_secs`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use proto::keys::{EdgeKeys, RelayKeys};
use proto_io::channel::{Channel, LinkContext};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::authority::{Authority, ReachTarget};

/// Link certificates for testing, from the authority's relay bundle or a made-up one.
///
/// # Errors
/// Key errors.
pub fn link_context(
    keys_dir: Option<&std::path::Path>,
    now: u64,
) -> Result<Arc<LinkContext>, String> {
    let keys = match keys_dir {
        Some(d) => proto_io::keydir::load_edge_keys(d).map_err(|e| e.to_string())?,
        None => {
            let files = RelayKeys::generate(&mut rand::rngs::OsRng, now, 30 * 86400)
                .and_then(|k| k.to_files())
                .map_err(|e| e.to_string())?;
            EdgeKeys::from_files(&files).map_err(|e| e.to_string())?
        }
    };
    let (certs, _tls) =
        proto::link::LinkCerts::generate(&mut rand::rngs::OsRng, &keys, now, 2 * 86400)
            .map_err(|e| e.to_string())?;
    Ok(Arc::new(LinkContext {
        certs,
        my_addrs: Vec::new(),
    }))
}

/// One test.
///
/// # Errors
/// Why the relay is not reachable.
pub async fn test(
    target: &ReachTarget,
    ctx: &LinkContext,
    connector: &tokio_rustls::TlsConnector,
    limit: Duration,
) -> Result<(), String> {
    let fut = async {
        let tcp = TcpStream::connect(target.addr)
            .await
            .map_err(|e| e.to_string())?;
        let tls = connector
            .connect(proto_io::tls::random_server_name(), tcp)
            .await
            .map_err(|e| e.to_string())?;
        let ch = Channel::connect(
            tls,
            ctx,
            Some(target.rsa_id),
            target.ed_id,
            true,
            std::net::IpAddr::V4(*target.addr.ip()),
            limit,
        )
        .await
        .map_err(|e| e.to_string())?;
        drop(ch);
        Ok(())
    };
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| "timed out".to_owned())?
}

/// Runs tests forever: every second, starts the due ones.
pub async fn run(
    auth: Arc<Mutex<Authority>>,
    ctx: Arc<LinkContext>,
    parallel: usize,
    limit: Duration,
) {
    let connector = match proto_io::tls::client_config() {
        Ok(c) => tokio_rustls::TlsConnector::from(c),
        Err(e) => {
            tracing::error!("no TLS client configuration, so no reachability tests: {e}");
            return std::future::pending().await;
        }
    };
    let slots = Arc::new(Semaphore::new(parallel.max(1)));
    loop {
        let now = crate::unix_now();
        let due = {
            let mut a = auth.lock().unwrap_or_else(PoisonError::into_inner);
            let due = a.due_tests(now);
            let due: Vec<ReachTarget> = due.into_iter().take(slots.available_permits()).collect();
            for t in &due {
                a.test_started(&t.rsa_id, now);
            }
            due
        };
        for t in due {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let (auth, ctx, connector) = (auth.clone(), ctx.clone(), connector.clone());
            tokio::spawn(async move {
                let r = test(&t, &ctx, &connector, limit).await;
                let ok = r.is_ok();
                if let Err(e) = &r {
                    tracing::debug!(relay = %t.rsa_id.to_hex(), "reachability test failed: {e}");
                }
                metrics::counter!("dirauth_reachability_tests_total", "result" => if ok { "reachable" } else { "unreachable" })
                    .increment(1);
                auth.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .test_done(&t.rsa_id, ok, crate::unix_now());
                drop(permit);
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
