//! `circuit-worker`: owns circuits (DESIGN.md "Data path"). It will serve the edges'
//! gRPC streams and run one actix shard actor per core, each doing the circuit handshakes
//! (tor-spec §5.1) and relay crypto (§5.2, §6) for its circuits.
//!
//! For now this crate is the process shell: the command line, configuration
//! ([`config`]), logging and the Prometheus endpoint. The gRPC server and the shard actors
//! come with issue 4; `run` does not pretend to serve them.
//!
//! Invariant: the process never logs client addresses; the only addresses logged are the
//! ones it binds.

pub mod config;

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::SystemTime;

use clap::{Args, Parser, Subcommand};
use proto::runtime::{self, Error, ShutdownSignals};
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
            out.write_all(runtime::to_toml(&config)?.as_bytes())?;
            out.flush()?;
            Ok(())
        }
        Command::Run(args) => {
            runtime::init_tracing(&config.log.filter)?;
            let metrics_addr = args.metrics_listen.unwrap_or(config.metrics.listen);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(async {
                    // Before anything is announced, so an early SIGTERM is a clean exit.
                    let signals = ShutdownSignals::register()?;
                    let listener = runtime::bind(metrics_addr, "metrics.listen").await?;
                    run(&config, listener, signals.recv()).await
                })
        }
    }
}

/// Runs the worker on an already-bound metrics listener until `shutdown` completes.
///
/// Today that means: install the Prometheus recorder, export `worker_build_info` and
/// `worker_start_time_seconds`, serve `/metrics`, log "ready". The gRPC listener and the
/// actix shards (one per [`Config::effective_shards`]) come with issue 4.
///
/// # Errors
/// [`Error::Metrics`] if another metrics recorder owns the process, [`Error::Io`] if the
/// listener has no local address.
pub async fn run(
    config: &Config,
    metrics_listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let handle = runtime::install_metrics_recorder()?;
    runtime::register_process_metrics(COMPONENT, VERSION, SystemTime::now());
    let metrics_addr = metrics_listener.local_addr()?;
    tracing::info!("metrics listening on {metrics_addr}");
    tracing::info!(
        metrics = %metrics_addr,
        shards = config.effective_shards(),
        "ready (gRPC {} not served yet: the worker service is not implemented)",
        config.grpc.listen
    );
    tokio::select! {
        never = runtime::serve_metrics(metrics_listener, handle) => match never {},
        () = shutdown => {}
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
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let config = Config::default();
            run(&config, listener, async {
                let _ = stopped.await;
            })
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
