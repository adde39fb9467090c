//! `dirauth`: a Tor v3 directory authority (DESIGN.md "Directory authority"; dir-spec).
//! It accepts descriptor uploads, tests relays' reachability, votes with the other
//! authorities, computes and signs the consensus in both flavors, and serves the
//! directory protocol over HTTP on its DirPort.
//!
//! Modules: [`config`], [`keys`] (the v3 identity, signing key and certificate),
//! [`authority`] (the state machine, no I/O), [`serve`] (the URL space), [`http`]
//! (HTTP/1.0 server and client), [`reach`] (reachability tests), [`voting`] (the
//! schedule), [`store`] (persistence).
//!
//! Invariant: the process never logs client addresses; the only addresses logged are the
//! ones it binds and its peers'.

pub mod authority;
pub mod config;
pub mod http;
pub mod keys;
pub mod reach;
pub mod serve;
pub mod store;
pub mod voting;

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand};
use proto_io::{self, Error, ShutdownSignals};
use tokio::net::TcpListener;

pub use config::Config;

/// Prefix of this component's metric names (`dirauth_build_info`, …).
pub const COMPONENT: &str = "dirauth";
/// Version reported in `dirauth_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub use proto_io::unix_now;

/// Command line of the `dirauth` binary.
#[derive(Debug, Parser)]
#[command(name = "dirauth", version, about = "Tor v3 directory authority")]
pub struct Cli {
    /// TOML configuration file; every option has a default (see
    /// deploy/config/dirauth.toml). Environment variables `DIRAUTH__<SECTION>__<KEY>`
    /// override it, e.g. `DIRAUTH__DIRPORT__LISTEN=0.0.0.0:7001`.
    #[arg(long, global = true, env = "DIRAUTH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands of `dirauth`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the authority until Ctrl-C or SIGTERM (the default).
    Run(RunArgs),
    /// Print the effective configuration (defaults, then file, then environment) as TOML.
    CheckConfig,
    /// Create the authority keys in `<data_dir>/keys` (identity, signing key,
    /// certificate), or renew the signing key and certificate. Prints the v3ident.
    Keygen(KeygenArgs),
}

/// Options of `dirauth keygen`.
#[derive(Debug, Default, Args)]
pub struct KeygenArgs {
    /// Data directory, overriding `data_dir` from the configuration.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Lifetime of the signing key's certificate, in days (tor-gencert's default is 12
    /// months).
    #[arg(long, default_value_t = 365, value_name = "DAYS")]
    pub lifetime_days: u64,
    /// Only renew the signing key and certificate; refuse to make a new identity.
    #[arg(long)]
    pub renew_signing_key: bool,
}

/// Options of `dirauth run`.
#[derive(Debug, Default, Args)]
pub struct RunArgs {
    /// Listen address for /metrics, overriding `metrics.listen`; port 0 picks a free port,
    /// reported in the "metrics listening on ADDR" log line.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Listen address for the DirPort, overriding `dirport.listen`.
    #[arg(long, value_name = "ADDR")]
    pub dirport_listen: Option<SocketAddr>,
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
            let dir = args.data_dir.clone().unwrap_or(config.data_dir.clone());
            let r = keys::keygen(
                &dir,
                Some(config.advertised_dir_addr()),
                unix_now(),
                args.lifetime_days.max(1) * 86400,
                args.renew_signing_key,
            )?;
            writeln!(out, "v3ident {}", r.v3ident)?;
            writeln!(
                out,
                "certificate expires {}",
                proto::netdoc::format_time(r.expires)
            )?;
            if r.new_identity {
                writeln!(
                    out,
                    "new identity key in {}; keep a copy offline, the running authority does not need it",
                    keys::keys_dir(&dir).join(keys::IDENTITY_KEY).display()
                )?;
            }
            out.flush()?;
            Ok(())
        }
        Command::Run(args) => {
            proto_io::init_tracing(&config.log.filter)?;
            let metrics_addr = args.metrics_listen.unwrap_or(config.metrics.listen);
            let dirport_addr = args.dirport_listen.unwrap_or(config.dirport.listen);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(async {
                    // Before anything is announced, so an early SIGTERM is a clean exit.
                    let signals = ShutdownSignals::register()?;
                    let metrics = proto_io::bind(metrics_addr, "metrics.listen").await?;
                    let dirport = proto_io::bind(dirport_addr, "dirport.listen").await?;
                    run(&config, Listeners { metrics, dirport }, signals.recv()).await
                })
        }
    }
}

/// The sockets `run` serves.
#[derive(Debug)]
pub struct Listeners {
    /// Prometheus `/metrics`.
    pub metrics: TcpListener,
    /// The DirPort.
    pub dirport: TcpListener,
}

fn lock(a: &Mutex<authority::Authority>) -> std::sync::MutexGuard<'_, authority::Authority> {
    a.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serves one DirPort connection.
async fn serve_conn(
    mut s: tokio::net::TcpStream,
    auth: Arc<Mutex<authority::Authority>>,
    limit: Duration,
) {
    let req = match http::read_request(&mut s, limit).await {
        Ok(r) => r,
        Err(http::HttpError::Io(_)) => return,
        Err(e) => {
            tracing::debug!("bad DirPort request: {e}");
            let status = if matches!(e, http::HttpError::TooLarge) {
                (413, "Request too large")
            } else {
                (400, "Bad request")
            };
            let _ = http::write_response(
                &mut s,
                &http::Response::short(status.0, status.1),
                false,
                unix_now(),
            )
            .await;
            return;
        }
    };
    let kind = serve::kind(&req.path);
    let (resp, deflate) = serve::handle(&mut lock(&auth), &req, unix_now());
    metrics::counter!("dirauth_http_requests_total", "kind" => kind, "status" => resp.status.to_string())
        .increment(1);
    let _ = http::write_response(&mut s, &resp, deflate, unix_now()).await;
}

/// Runs the authority until `shutdown` completes: loads its keys and saved state, serves
/// the DirPort, tests reachability, votes on schedule and serves `/metrics`.
///
/// # Errors
/// [`Error::Keys`] when the keys are missing or unsafe, [`Error::Config`] when the
/// authority list is inconsistent, [`Error::Metrics`] if another metrics recorder owns
/// the process, [`Error::Io`] on listener or storage errors.
pub async fn run(
    config: &Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let handle = proto_io::install_metrics_recorder()?;
    proto_io::register_process_metrics(COMPONENT, VERSION, SystemTime::now());
    let keys = keys::load(&config.data_dir)?;
    let settings =
        authority::Settings::from_config(config, &keys.cert).map_err(config::config_error)?;
    let v3ident = keys.cert.v3ident.to_hex();
    metrics::gauge!("dirauth_signing_cert_expiry_timestamp_seconds").set(keys.cert.expires as f64);
    if keys.cert.expires < unix_now() + 7 * 86400 {
        tracing::warn!(
            "the authority certificate expires at {}: run `dirauth keygen --renew-signing-key`",
            proto::netdoc::format_time(keys.cert.expires)
        );
    }
    let store = store::Store::open(&config.data_dir)?;
    let mut a = authority::Authority::new(settings, keys);
    a.restore(|n| store.load(n), unix_now());
    let n_relays = a.relays.len();
    let auth = Arc::new(Mutex::new(a));
    let ctx =
        reach::link_context(config.relay_keys_dir.as_deref(), unix_now()).map_err(Error::Keys)?;
    let metrics_addr = listeners.metrics.local_addr()?;
    let dir_addr = listeners.dirport.local_addr()?;
    tracing::info!("metrics listening on {metrics_addr}");
    tracing::info!("DirPort listening on {dir_addr}");
    tracing::info!(v3ident = %v3ident, relays = n_relays, authorities = lock(&auth).settings.n_authorities, "ready");
    let limit = Duration::from_secs(config.dirport.request_timeout_secs.max(1));
    let slots = Arc::new(tokio::sync::Semaphore::new(
        config.dirport.max_connections.max(1),
    ));
    let dirport = {
        let auth = auth.clone();
        async move {
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let Ok((s, _)) = listeners.dirport.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let auth = auth.clone();
                tokio::spawn(async move {
                    serve_conn(s, auth, limit).await;
                    drop(permit);
                });
            }
        }
    };
    let reach = reach::run(
        auth.clone(),
        ctx,
        config.reachability.parallel_tests,
        Duration::from_secs(config.reachability.timeout_secs.max(1)),
    );
    let voting = voting::run(auth.clone(), store.clone());
    let key_watch = {
        let (auth, data_dir, opts) = (auth.clone(), config.data_dir.clone(), config.keys.clone());
        async move {
            let mut warned = 0u64;
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                let current = lock(&auth).keys.clone();
                let (dd, now) = (data_dir.clone(), unix_now());
                let r = tokio::task::spawn_blocking(move || {
                    keys::refresh(
                        &dd,
                        &current,
                        now,
                        opts.renew_before_days * 86400,
                        opts.lifetime_days.max(1) * 86400,
                    )
                })
                .await;
                match r {
                    Ok(Ok((k, keys::Refresh::Reloaded | keys::Refresh::Renewed))) => {
                        tracing::info!(
                            expires = %proto::netdoc::format_time(k.cert.expires),
                            "now signing with a new signing key"
                        );
                        metrics::gauge!("dirauth_signing_cert_expiry_timestamp_seconds")
                            .set(k.cert.expires as f64);
                        let mut a = lock(&auth);
                        a.certs.insert(k.cert.clone());
                        a.keys = k;
                    }
                    Ok(Ok((k, keys::Refresh::NeedsRenewal))) if now >= warned + 3600 => {
                        warned = now;
                        tracing::warn!(
                            "the authority certificate expires at {} and the identity key is offline: run `dirauth keygen --renew-signing-key`",
                            proto::netdoc::format_time(k.cert.expires)
                        );
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!("cannot check the authority keys: {e}"),
                    Err(e) => tracing::warn!("cannot check the authority keys: {e}"),
                }
            }
        }
    };
    let saver = {
        let (auth, store) = (auth.clone(), store.clone());
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                {
                    let a = lock(&auth);
                    metrics::gauge!("dirauth_relays_known").set(a.relays.len() as f64);
                }
                voting::persist(&auth, &store).await;
            }
        }
    };
    tokio::select! {
        never = proto_io::serve_metrics(listeners.metrics, handle) => match never {},
        () = dirport => {}
        () = reach => {}
        () = voting => {}
        () = saver => {}
        () = key_watch => {}
        () = shutdown => {}
    }
    voting::persist(&auth, &store).await;
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
        let cli = Cli::parse_from(["dirauth", "check-config"]);
        let env = HashMap::from([("DIRAUTH__DATA_DIR".to_owned(), "/srv/da".to_owned())]);
        let mut out = Vec::new();
        execute(cli, &env, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("data_dir = \"/srv/da\""), "{text}");
        assert!(
            text.contains("[dirport]\nlisten = \"127.0.0.1:7001\""),
            "{text}"
        );
    }

    #[tokio::test]
    async fn run_serves_build_info_until_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dirport = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dir = tempfile::tempdir().unwrap();
        keys::keygen(dir.path(), None, unix_now(), 86400, false).unwrap();
        let data_dir = dir.path().to_owned();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let config = Config {
                data_dir,
                ..Config::default()
            };
            run(
                &config,
                Listeners {
                    metrics: listener,
                    dirport,
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
            body.contains(&format!("dirauth_build_info{{version=\"{VERSION}\"}} 1")),
            "{body}"
        );
        assert!(body.contains("dirauth_start_time_seconds "), "{body}");
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
