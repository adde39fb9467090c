//! `edge`: the relay's public face (DESIGN.md "What it is"). It will terminate TLS on the
//! ORPort, run the link handshake (tor-spec §4) and route each circuit's cells to a
//! circuit-worker shard over gRPC.
//!
//! Modules: [`config`] (TOML + environment), [`tls`] (rustls for Tor links), [`channel`]
//! (the link handshake in both roles and the open channel), [`orport`] (the listener).
//! Circuit workers are not attached yet: every CREATE* is answered with DESTROY.
//!
//! Invariant: the process never logs client addresses; the only addresses logged are the
//! ones it binds.

pub mod chanmgr;
pub mod config;
pub mod descriptor;
pub mod orport;
pub mod publish;
pub mod router;

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::SystemTime;

use clap::{Args, Parser, Subcommand};
use proto_io::tls;
use proto_io::{self, Error, ShutdownSignals};
use tokio::net::TcpListener;

pub use config::Config;

/// Prefix of this component's metric names (`edge_build_info`, …).
pub const COMPONENT: &str = "edge";
/// Version reported in `edge_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Command line of the `edge` binary.
#[derive(Debug, Parser)]
#[command(
    name = "edge",
    version,
    about = "Tor relay edge: ORPort front end of a relay cluster"
)]
pub struct Cli {
    /// TOML configuration file; every option has a default (see deploy/config/edge.toml).
    /// Environment variables `EDGE__<SECTION>__<KEY>` override it, e.g.
    /// `EDGE__ORPORT__LISTEN=0.0.0.0:9001`.
    #[arg(long, global = true, env = "EDGE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands of `edge`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the edge until Ctrl-C or SIGTERM (the default).
    Run(RunArgs),
    /// Print the effective configuration (defaults, then file, then environment) as TOML.
    CheckConfig,
    /// Create the relay identity bundle in `keys_dir`, or rotate/renew keys in it.
    Keygen(KeygenArgs),
    /// Create the cluster CA for mutual TLS on the edge-worker links (`ca.crt`, `ca.key`).
    ClusterCa(ClusterCaArgs),
    /// Issue an edge or worker certificate from the cluster CA (`ca.crt`, `tls.crt`,
    /// `tls.key`), for the process's `cluster_tls.dir`.
    ClusterCert(ClusterCertArgs),
}

/// Options of `edge cluster-ca`.
#[derive(Debug, Args)]
pub struct ClusterCaArgs {
    /// Directory for the CA (created 0700; refused if it holds a CA already). Keep it off
    /// the hosts that run the cluster: it is needed only to issue certificates.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}

/// Options of `edge cluster-cert`.
#[derive(Debug, Args)]
pub struct ClusterCertArgs {
    /// The CA's directory (from `edge cluster-ca`).
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    /// `edge` (connects to workers) or `worker` (serves edges).
    #[arg(long)]
    pub role: proto_io::cluster_tls::Role,
    /// Name of the process, written as the certificate's common name (for logs).
    #[arg(long)]
    pub name: String,
    /// Days the certificate is valid.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Output directory (created 0700; existing files are not replaced).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Options of `edge keygen`.
#[derive(Debug, Default, Args)]
pub struct KeygenArgs {
    /// Key directory, overriding `keys_dir` from the configuration.
    #[arg(long, value_name = "DIR")]
    pub keys_dir: Option<PathBuf>,
    /// Lifetime of the Ed25519 signing key's certificate, in days (C tor's
    /// SigningKeyLifetime).
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    pub signing_key_lifetime_days: u64,
    /// Make a new ntor onion key current and keep the old one as
    /// `secret_onion_key_ntor.old` (needs the existing bundle, master secret included).
    #[arg(long, conflicts_with = "renew_signing_key")]
    pub rotate_onion_keys: bool,
    /// Replace the Ed25519 signing key and its certificate (needs the master secret).
    #[arg(long)]
    pub renew_signing_key: bool,
}

/// Options of `edge run`.
#[derive(Debug, Default, Args)]
pub struct RunArgs {
    /// Listen address for /metrics, overriding `metrics.listen`; port 0 picks a free port,
    /// reported in the "metrics listening on ADDR" log line.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
}

/// Carries out `cli`: `env` is the process environment (passed in so tests can supply
/// their own) and `out` receives command output such as `check-config`'s TOML.
///
/// # Errors
/// Invalid configuration, an unusable log filter, a listener that cannot be bound.
pub fn execute(cli: Cli, env: &HashMap<String, String>, out: &mut impl Write) -> Result<(), Error> {
    let config = config::load(cli.config.as_deref(), env)?;
    match cli.command.unwrap_or(Command::Run(RunArgs::default())) {
        Command::CheckConfig => {
            out.write_all(proto_io::to_toml(&config)?.as_bytes())?;
            out.flush()?;
            Ok(())
        }
        Command::Keygen(args) => {
            let dir = args.keys_dir.clone().unwrap_or(config.keys_dir.clone());
            keygen(&dir, &args, SystemTime::now(), out)
        }
        Command::ClusterCa(args) => {
            proto_io::cluster_tls::create_ca(&args.dir, proto_io::unix_now())?;
            writeln!(out, "cluster CA created in {}", args.dir.display())?;
            Ok(())
        }
        Command::ClusterCert(args) => {
            proto_io::cluster_tls::issue(
                &args.ca_dir,
                args.role,
                &args.name,
                args.days,
                &args.out,
                proto_io::unix_now(),
            )?;
            writeln!(
                out,
                "{:?} certificate {:?} issued in {}",
                args.role,
                args.name,
                args.out.display()
            )?;
            Ok(())
        }
        Command::Run(args) => {
            proto_io::init_tracing(&config.log.filter)?;
            let metrics_addr = args.metrics_listen.unwrap_or(config.metrics.listen);
            proto_io::runtime(config.io_threads)?.block_on(async {
                // Before anything is announced, so an early SIGTERM is a clean exit.
                let signals = ShutdownSignals::register()?;
                let metrics = proto_io::bind(metrics_addr, "metrics.listen").await?;
                let orport = proto_io::bind(config.orport.listen, "orport.listen").await?;
                run(&config, Listeners { metrics, orport }, signals.recv()).await
            })
        }
    }
}

/// `edge keygen`: creates (or rotates/renews) the bundle in `dir` and prints the relay's
/// fingerprints.
///
/// # Errors
/// [`Error::Keys`] when keys exist already (for a fresh bundle), are missing (for
/// rotate/renew) or are unsafe; [`Error::Io`] on file errors.
pub fn keygen(
    dir: &std::path::Path,
    args: &KeygenArgs,
    now: SystemTime,
    out: &mut impl Write,
) -> Result<(), Error> {
    use proto::keys::RelayKeys;
    use proto_io::keydir;
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let lifetime = args.signing_key_lifetime_days.max(1) * 24 * 3600;
    let mut rng = rand::rngs::OsRng;
    let (keys, what) = if args.rotate_onion_keys || args.renew_signing_key {
        let mut keys = keydir::load_relay_keys(dir)?;
        if args.rotate_onion_keys {
            keys.rotate_ntor(&mut rng);
        }
        if args.renew_signing_key {
            keys.renew_signing_key(&mut rng, now, lifetime)
                .map_err(|e| Error::Keys(e.to_string()))?;
        }
        let files = keys.to_files().map_err(|e| Error::Keys(e.to_string()))?;
        keydir::write_key_files(dir, &files, true)?;
        (keys, "updated")
    } else {
        let keys =
            RelayKeys::generate(&mut rng, now, lifetime).map_err(|e| Error::Keys(e.to_string()))?;
        let files = keys.to_files().map_err(|e| Error::Keys(e.to_string()))?;
        keydir::write_key_files(dir, &files, false)?;
        (keys, "created")
    };
    writeln!(out, "keys {what} in {}", dir.display())?;
    writeln!(out, "fingerprint {}", keys.rsa_identity().to_hex())?;
    writeln!(out, "ed25519 {}", keys.master.identity())?;
    writeln!(
        out,
        "signing certificate expires at unix time {}",
        u64::from(keys.signing_cert.expiration_hours) * 3600
    )?;
    out.flush()?;
    Ok(())
}

/// The sockets `run` serves, bound by the caller (tests bind `127.0.0.1:0`).
#[derive(Debug)]
pub struct Listeners {
    /// Prometheus `/metrics`.
    pub metrics: TcpListener,
    /// The ORPort.
    pub orport: TcpListener,
}

/// Lifetime of the per-process TLS link certificate and its type-5/6 certificates.
pub const LINK_CERT_LIFETIME_SECS: u64 = 2 * 24 * 3600;

/// A fresh TLS link key and certificate, with the link certificates (types 5 and 6) that
/// name them.
fn link_state(
    keys: &proto::keys::EdgeKeys,
    my_addrs: &[std::net::IpAddr],
) -> Result<tls::LinkState, Error> {
    let now = proto_io::unix_now();
    let (certs, tls_key) = proto::link::LinkCerts::generate(
        &mut rand::rngs::OsRng,
        keys,
        now,
        LINK_CERT_LIFETIME_SECS,
    )
    .map_err(|e| Error::Keys(e.to_string()))?;
    let tls_der = tls_key
        .to_pkcs1_der()
        .map_err(|e| Error::Keys(e.to_string()))?;
    let server_tls = tls::server_config(&certs.link_cert_der, &tls_der)
        .map_err(|e| Error::Keys(format!("TLS: {e}")))?;
    Ok(tls::LinkState {
        tls: tokio_rustls::TlsAcceptor::from(server_tls),
        ctx: std::sync::Arc::new(proto_io::channel::LinkContext {
            certs,
            my_addrs: my_addrs.to_vec(),
        }),
    })
}

/// Runs the edge until `shutdown` completes: loads the keys from `keys_dir`, makes this
/// process's TLS link certificate, serves the ORPort and `/metrics`.
///
/// # Errors
/// [`Error::Keys`] when the key bundle is missing or unsafe, [`Error::Metrics`] if another
/// metrics recorder owns the process, [`Error::Io`] if a listener has no local address.
pub async fn run(
    config: &Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let handle = proto_io::install_metrics_recorder()?;
    proto_io::register_process_metrics(COMPONENT, VERSION, SystemTime::now());
    let keys = std::sync::Arc::new(proto_io::keydir::load_edge_keys(&config.keys_dir)?);
    for url in &config.workers {
        config.cluster_tls.check_url(url)?;
    }
    // An edge without workers refuses every circuit, and one whose workers are all on
    // Unix sockets dials no TLS: neither needs link material.
    let worker_tls = if config
        .workers
        .iter()
        .all(|u| proto_io::unix_link::socket_path(u).is_some())
    {
        None
    } else {
        config
            .cluster_tls
            .load()?
            .map(|m| m.client_config(config.cluster_tls.handshake_timeout()))
    };
    let orport_addr = listeners.orport.local_addr()?;
    let advertised = config.orport.advertised_address.unwrap_or(orport_addr);
    let my_addrs = vec![advertised.ip()];
    let (state_tx, state_rx) =
        tokio::sync::watch::channel(std::sync::Arc::new(link_state(&keys, &my_addrs)?));
    let metrics_addr = listeners.metrics.local_addr()?;
    tracing::info!("metrics listening on {metrics_addr}");
    tracing::info!("ORPort listening on {orport_addr}");
    tracing::info!(
        fingerprint = %keys.rsa_identity().to_hex(),
        ed25519 = %keys.ed_identity,
        workers = config.workers.len(),
        "ready"
    );
    let budget = proto_io::budget::MemBudget::new(proto_io::budget::max_mem_in_queues(
        config.limits.max_mem_in_queues,
    ));
    let secs = std::time::Duration::from_secs;
    let policy = proto_io::channel::ChannelPolicy {
        keepalive: secs(config.orport.keepalive_secs.max(1)),
        client_idle: secs(config.orport.idle_timeout_secs.max(1)),
        relay_idle: secs(config.orport.relay_idle_timeout_secs.max(1)),
        write_timeout: secs(config.orport.write_timeout_secs.max(1)),
        max_circuit_queue: config.limits.circ_max_cell_queue_size,
        budget: budget.clone(),
    };
    tracing::info!(max_mem_in_queues = budget.limit(), "queue ceiling");
    let limits = orport::OrPortLimits {
        handshake_timeout: secs(config.orport.handshake_timeout_secs),
        channel: policy.clone(),
        max_channels: config.orport.max_channels,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let publisher = descriptor::publish_loop(
        std::sync::Arc::new(config.clone()),
        keys.clone(),
        advertised,
        SystemTime::now(),
    );
    let channels = std::sync::Arc::new(
        chanmgr::ChannelManager::new(
            state_rx.clone(),
            limits.handshake_timeout,
            policy,
            stop_rx.clone(),
        )
        .map_err(|e| Error::Keys(format!("TLS: {e}")))?,
    );
    // With no workers the router refuses every CREATE* with DESTROY (RESOURCELIMIT).
    let router = router::Router::new(
        &config.workers,
        worker_tls,
        channels.clone(),
        budget,
        keys.rsa_identity(),
    );
    router.start();
    channels.set_handler(router);
    let orport = orport::serve(listeners.orport, state_rx, limits, channels, stop_rx);
    tokio::pin!(orport);
    let rotation = std::time::Duration::from_secs(config.orport.tls_rotation_secs.max(1));
    let rotate = async {
        loop {
            tokio::time::sleep(rotation).await;
            // Key generation takes a while; keep it off the async workers.
            let (k, a) = (keys.clone(), my_addrs.clone());
            match tokio::task::spawn_blocking(move || link_state(&k, &a)).await {
                Ok(Ok(s)) => {
                    let _ = state_tx.send(std::sync::Arc::new(s));
                    metrics::counter!("edge_link_cert_rotations_total").increment(1);
                    tracing::info!("rotated the TLS link certificate");
                }
                Ok(Err(e)) => tracing::warn!("link certificate rotation failed: {e}"),
                Err(e) => tracing::warn!("link certificate rotation failed: {e}"),
            }
        }
    };
    tokio::select! {
        never = proto_io::serve_metrics(listeners.metrics, handle) => match never {},
        never = rotate => match never {},
        () = publisher => {}
        () = &mut orport => {}
        () = shutdown => {}
    }
    let _ = stop_tx.send(true);
    // Let connection tasks see the signal and close.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), orport).await;
    tracing::info!("shutting down");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn check_config_prints_effective_toml() {
        let cli = Cli::parse_from(["edge", "check-config"]);
        let env = HashMap::from([("EDGE__KEYS_DIR".to_owned(), "/srv/keys".to_owned())]);
        let mut out = Vec::new();
        execute(cli, &env, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("keys_dir = \"/srv/keys\""), "{text}");
        assert!(
            text.contains("[orport]\nlisten = \"127.0.0.1:9001\""),
            "{text}"
        );
    }

    #[tokio::test]
    async fn run_serves_build_info_until_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let orport = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let keys = tempfile::tempdir().unwrap();
        keygen(
            keys.path(),
            &KeygenArgs::default(),
            SystemTime::now(),
            &mut Vec::new(),
        )
        .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let keys_dir = keys.path().to_owned();
        let server = tokio::spawn(async move {
            let config = Config {
                keys_dir,
                ..Config::default()
            };
            let listeners = Listeners {
                metrics: listener,
                orport,
            };
            run(&config, listeners, async {
                let _ = stopped.await;
            })
            .await
        });
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await.unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).await.unwrap();
        assert!(
            body.contains(&format!("edge_build_info{{version=\"{VERSION}\"}} 1")),
            "{body}"
        );
        assert!(body.contains("edge_start_time_seconds "), "{body}");
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
