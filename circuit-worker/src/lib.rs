//! `circuit-worker`: owns circuits (DESIGN.md "Data path"). It serves the edges' gRPC
//! links ([`service`], mutual TLS under the cluster CA) and runs one actix shard actor per
//! core ([`shard`]), each doing the circuit handshakes (tor-spec §5.1), relay crypto (§5.2,
//! §6) and exit streams for its circuits; [`write_queue`] bounds what waits for a
//! destination. Configuration: [`config`].
//!
//! Invariant: the process never logs client addresses; the only addresses logged are the
//! ones it binds.

pub mod config;
pub mod service;
pub mod shard;
pub mod write_queue;

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::SystemTime;

use clap::{Args, Parser, Subcommand};
use proto_io::{self, Error, ShutdownSignals};
use tokio::net::TcpListener;

pub use config::Config;

/// Prefix of this component's metric names (`worker_build_info`, …), shortened as in
/// DESIGN.md's examples (`worker_circuit_create_seconds`).
pub const COMPONENT: &str = "worker";
/// Version reported in `worker_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Command line of the `circuit-worker` binary.
#[derive(Debug, Parser)]
#[command(
    name = "circuit-worker",
    version,
    about = "Tor relay circuit worker: circuit handshakes and relay crypto for a relay cluster"
)]
pub struct Cli {
    /// TOML configuration file; every option has a default (see
    /// deploy/config/circuit-worker.toml). Environment variables
    /// `CIRCUIT_WORKER__<SECTION>__<KEY>` override it, e.g.
    /// `CIRCUIT_WORKER__GRPC__LISTEN=0.0.0.0:9201`.
    #[arg(
        long,
        global = true,
        env = "CIRCUIT_WORKER_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands of `circuit-worker`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker until Ctrl-C or SIGTERM (the default).
    Run(RunArgs),
    /// Print the effective configuration (defaults, then file, then environment) as TOML.
    CheckConfig,
}

/// Options of `circuit-worker run`.
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
        Command::Run(args) => {
            proto_io::init_tracing(&config.log.filter)?;
            let metrics_addr = args.metrics_listen.unwrap_or(config.metrics.listen);
            let rt = proto_io::runtime(config.io_threads)?;
            let serve = async {
                // Before anything is announced, so an early SIGTERM is a clean exit.
                let signals = ShutdownSignals::register()?;
                let metrics = proto_io::bind(metrics_addr, "metrics.listen").await?;
                let grpc = proto_io::bind(config.grpc.listen, "grpc.listen").await?;
                let unix = match &config.grpc.unix_listen {
                    Some(p) => Some(proto_io::unix_link::bind(p, "grpc.unix_listen")?),
                    None => None,
                };
                let listeners = Listeners {
                    metrics,
                    grpc,
                    unix,
                };
                run(&config, listeners, signals.recv()).await
            };
            if config.io_threads == 1 {
                // One thread for everything: the runtime becomes the actix system, and
                // `run` starts the shards on it (see `start_shards`).
                actix_rt::System::with_tokio_rt(move || rt).block_on(serve)
            } else {
                rt.block_on(serve)
            }
        }
    }
}

/// The sockets `run` serves, bound by the caller (tests bind `127.0.0.1:0`).
#[derive(Debug)]
pub struct Listeners {
    /// Prometheus `/metrics`.
    pub metrics: TcpListener,
    /// The gRPC service for edges.
    pub grpc: TcpListener,
    /// The same service for edges on this host (`grpc.unix_listen`), if configured.
    pub unix: Option<proto_io::unix_link::Listener>,
}

/// Starts `n` shard actors and returns their addresses, plus the actix system to stop if
/// this call made one.
///
/// Called on an actix arbiter (the one-thread worker, `io_threads = 1`), the shards run
/// on that arbiter, beside the edge links' I/O: a batch from a link reader reaches its
/// shard, and the shard's cells reach the link writer, without waking another thread.
/// Otherwise each shard gets an arbiter (thread) of its own inside an actix system on a
/// dedicated thread.
fn start_shards(
    n: usize,
    cfg: std::sync::Arc<shard::ShardConfig>,
) -> Result<(Vec<actix::Addr<shard::Shard>>, Option<actix_rt::System>), Error> {
    if actix_rt::Arbiter::try_current().is_some() {
        let addrs = (0..n)
            .map(|i| actix::Actor::start(shard::Shard::new(i as u64, cfg.clone())))
            .collect();
        return Ok((addrs, None));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("actix-system".into())
        .spawn(move || {
            let runner = actix_rt::System::new();
            let system = actix_rt::System::current();
            let addrs: Vec<_> = (0..n)
                .map(|i| {
                    let arbiter = actix_rt::Arbiter::new();
                    let cfg = cfg.clone();
                    <shard::Shard as actix::Actor>::start_in_arbiter(&arbiter.handle(), move |_| {
                        shard::Shard::new(i as u64, cfg)
                    })
                })
                .collect();
            let _ = tx.send((addrs, Some(system)));
            let _ = runner.run();
        })?;
    rx.recv()
        .map_err(|_| Error::Io(std::io::Error::other("actix system failed to start")))
}

/// Runs the worker until `shutdown` completes: loads the ntor keys, starts the shards,
/// serves the gRPC link for edges and `/metrics`.
///
/// # Errors
/// [`Error::Keys`] for a missing or unsafe key bundle, [`Error::Config`]-like errors for a
/// bad exit policy, [`Error::Metrics`] if another recorder owns the process.
pub async fn run(
    config: &Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let handle = proto_io::install_metrics_recorder()?;
    proto_io::register_process_metrics(COMPONENT, VERSION, SystemTime::now());
    let keys = proto_io::keydir::load_worker_keys(&config.keys_dir)?;
    let tls = config.cluster_tls.load()?;
    let policy = proto::netdoc::policy::ExitPolicy::parse(
        &config.exit_policy,
        config.exit_policy_reject_private,
    )
    .map_err(|e| Error::Keys(format!("exit_policy: {e}")))?;
    let budget = proto_io::budget::MemBudget::new(proto_io::budget::max_mem_in_queues(
        config.limits.max_mem_in_queues,
    ));
    tracing::info!(max_mem_in_queues = budget.limit(), "queue ceiling");
    let n = config.effective_shards();
    let (shards, system) = start_shards(
        n,
        std::sync::Arc::new(shard::ShardConfig {
            keys,
            policy,
            connect_timeout: std::time::Duration::from_secs(config.connect_timeout_secs.max(1)),
            stream_write_timeout: std::time::Duration::from_secs(
                config.stream_write_timeout_secs.max(1),
            ),
            dir_backend: config.dir_backend.clone(),
            budget: budget.clone(),
        }),
    )?;
    tokio::spawn(shard::oom_loop(budget.clone(), shards.clone()));
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            every.tick().await;
            metrics::gauge!("worker_queued_bytes").set(budget.used() as f64);
        }
    });
    let metrics_addr = listeners.metrics.local_addr()?;
    let grpc_addr = listeners.grpc.local_addr()?;
    tracing::info!("metrics listening on {metrics_addr}");
    tracing::info!("gRPC listening on {grpc_addr}");
    tracing::info!(shards = n, "ready");
    let svc = proto_io::rpc::circuit_worker_server::CircuitWorkerServer::new(
        service::WorkerService::new(shards),
    )
    .max_decoding_message_size(64 << 20);
    let builder = || {
        tonic::transport::Server::builder()
            // As the edges' side (edge::router::LINK_WINDOW): a few milliseconds in flight.
            .initial_stream_window_size(Some(512 << 10))
            .initial_connection_window_size(Some(512 << 10))
            .tcp_nodelay(true)
    };
    let unix_server = builder().add_service(svc.clone());
    let unix_server = async move {
        match listeners.unix {
            Some(l) => {
                tracing::info!("gRPC listening on unix:{}", l.path().display());
                unix_server
                    .serve_with_incoming(proto_io::unix_link::incoming(l))
                    .await
            }
            None => std::future::pending().await,
        }
    };
    let server = builder().add_service(svc);
    let server: std::pin::Pin<Box<dyn Future<Output = _> + Send>> = match tls {
        Some(tls) => Box::pin(server.serve_with_incoming(proto_io::cluster_tls::incoming(
            listeners.grpc,
            tls.server_config()?,
            config.cluster_tls.handshake_timeout(),
        ))),
        None => {
            // Sockets from our own listener: tonic's `tcp_nodelay` only covers ones it
            // accepts, so set it here (with Nagle on, replies of a few cells wait for
            // delayed ACKs).
            let incoming = tokio_stream::StreamExt::map(
                tokio_stream::wrappers::TcpListenerStream::new(listeners.grpc),
                |s| {
                    if let Ok(s) = &s {
                        let _ = s.set_nodelay(true);
                    }
                    s
                },
            );
            Box::pin(server.serve_with_incoming(incoming))
        }
    };
    tokio::select! {
        never = proto_io::serve_metrics(listeners.metrics, handle) => match never {},
        r = server => {
            if let Err(e) = r {
                tracing::error!("gRPC server failed: {e}");
            }
        }
        r = unix_server => {
            if let Err(e) = r {
                tracing::error!("gRPC unix server failed: {e}");
            }
        }
        () = shutdown => {}
    }
    if let Some(system) = system {
        system.stop();
    }
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
        let cli = Cli::parse_from(["circuit-worker", "check-config"]);
        let env = HashMap::from([(
            "CIRCUIT_WORKER__KEYS_DIR".to_owned(),
            "/srv/keys".to_owned(),
        )]);
        let mut out = Vec::new();
        execute(cli, &env, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("keys_dir = \"/srv/keys\""), "{text}");
        assert!(
            text.contains("[grpc]\nlisten = \"127.0.0.1:9201\""),
            "{text}"
        );
    }

    #[tokio::test]
    async fn run_serves_build_info_until_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let bundle =
            proto::keys::RelayKeys::generate(&mut rand::rngs::OsRng, 1_790_000_000, 86400).unwrap();
        proto_io::keydir::write_key_files(keys.path(), &bundle.to_files().unwrap(), false).unwrap();
        let keys_dir = keys.path().to_owned();
        let ca = tempfile::tempdir().unwrap();
        let now = proto_io::unix_now();
        proto_io::cluster_tls::create_ca(ca.path(), now).unwrap();
        let tls_dir = keys.path().join("tls");
        proto_io::cluster_tls::issue(
            ca.path(),
            proto_io::cluster_tls::Role::Worker,
            "w",
            1,
            &tls_dir,
            now,
        )
        .unwrap();
        // Without its TLS material the worker does not start.
        let err = run(
            &Config {
                keys_dir: keys_dir.clone(),
                ..Config::default()
            },
            Listeners {
                metrics: TcpListener::bind("127.0.0.1:0").await.unwrap(),
                grpc: TcpListener::bind("127.0.0.1:0").await.unwrap(),
                unix: None,
            },
            std::future::pending(),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("cluster-tls"), "{err}");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let config = Config {
                keys_dir,
                cluster_tls: proto_io::cluster_tls::Settings {
                    dir: tls_dir,
                    ..Default::default()
                },
                ..Config::default()
            };
            run(
                &config,
                Listeners {
                    metrics: listener,
                    grpc,
                    unix: None,
                },
                async {
                    let _ = stopped.await;
                },
            )
            .await
        });
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await.unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).await.unwrap();
        assert!(
            body.contains(&format!("worker_build_info{{version=\"{VERSION}\"}} 1")),
            "{body}"
        );
        assert!(body.contains("worker_start_time_seconds "), "{body}");
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
