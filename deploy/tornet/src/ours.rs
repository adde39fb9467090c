//! Our own processes in a test network: relay clusters (edges + circuit workers behind
//! one identity) and directory authorities (dirauth + its ORPort cluster).
//!
//! Invariants as in the crate root: everything on 127.0.0.1 with harness-picked ports,
//! every process owned by a [`Process`] (killed by PID on drop), every wait bounded.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::{Process, free_port, our_binary, wait_for};

/// Creates a relay identity bundle with `edge keygen`; returns its fingerprint.
///
/// # Errors
/// When keygen fails.
pub fn relay_keygen(dir: &Path) -> Result<String> {
    relay_keygen_ids(dir).map(|ids| ids.fingerprint)
}

/// A relay's two identities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayIds {
    /// RSA fingerprint, 40 upper-case hex digits.
    pub fingerprint: String,
    /// Ed25519 master identity, unpadded base64.
    pub ed25519: String,
}

/// Creates a relay identity bundle with `edge keygen`; returns both its identities.
///
/// # Errors
/// When keygen fails.
pub fn relay_keygen_ids(dir: &Path) -> Result<RelayIds> {
    let out = Command::new(our_binary("edge")?)
        .args(["keygen", "--keys-dir"])
        .arg(dir)
        .output()?;
    if !out.status.success() {
        bail!("edge keygen: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).map(str::to_owned))
            .with_context(|| format!("edge keygen printed no `{name}` line"))
    };
    Ok(RelayIds {
        fingerprint: field("fingerprint ")?,
        ed25519: field("ed25519 ")?,
    })
}

/// Makes sure `ca_dir` holds a cluster CA (`edge cluster-ca`) and `out` a certificate of
/// it for `role` (`edge cluster-cert`); existing ones are kept, so a restarted cluster
/// keeps its certificates. Returns `out`.
///
/// # Errors
/// When either command fails.
pub fn cluster_cert(ca_dir: &Path, role: &str, name: &str, out: &Path) -> Result<PathBuf> {
    let run = |args: &[&std::ffi::OsStr]| -> Result<()> {
        let o = Command::new(our_binary("edge")?).args(args).output()?;
        if !o.status.success() {
            bail!(
                "edge {}: {}",
                args[0].to_string_lossy(),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Ok(())
    };
    if !ca_dir.join("ca.key").exists() {
        run(&["cluster-ca".as_ref(), "--dir".as_ref(), ca_dir.as_os_str()])?;
    }
    if !out.join("tls.crt").exists() {
        run(&[
            "cluster-cert".as_ref(),
            "--ca-dir".as_ref(),
            ca_dir.as_os_str(),
            "--role".as_ref(),
            role.as_ref(),
            "--name".as_ref(),
            name.as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
        ])?;
    }
    Ok(out.to_owned())
}

/// A round-robin TCP balancer on `listen` (an L4 load balancer in front of a fleet of
/// edges): each connection goes to the next backend that accepts it. Returns the count of
/// connections forwarded. It runs on its own thread for the rest of the process.
///
/// # Errors
/// When `listen` cannot be bound.
pub fn start_balancer(listen: SocketAddr, backends: Vec<SocketAddr>) -> Result<Arc<AtomicUsize>> {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let listener = std::net::TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let first = c.fetch_add(1, Ordering::SeqCst);
                let backends = backends.clone();
                tokio::spawn(async move {
                    for k in 0..backends.len() {
                        let b = backends[(first + k) % backends.len()];
                        if let Ok(mut out) = tokio::net::TcpStream::connect(b).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                            return;
                        }
                    }
                });
            }
        });
    });
    Ok(count)
}

/// What a relay cluster is made of.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Nickname (and the prefix of its log directories).
    pub name: String,
    /// Key bundle directory (from [`relay_keygen`]).
    pub keys_dir: PathBuf,
    /// Circuit workers.
    pub workers: usize,
    /// Edge processes (the first one publishes the descriptor). With more than one, a
    /// round-robin balancer owns the advertised ORPort and spreads connections over them.
    pub edges: usize,
    /// Exit policy (Tor syntax lines); private ranges are not rejected first.
    pub exit_policy: Vec<String>,
    /// Where BEGIN_DIR streams go (a DirPort); `None` refuses them.
    pub dir_backend: Option<SocketAddr>,
    /// DirPorts the descriptor is uploaded to.
    pub authorities: Vec<SocketAddr>,
    /// The advertised ORPort (`None`: a free port).
    pub or_port: Option<u16>,
    /// Extra environment for every process (`EDGE__…`, `CIRCUIT_WORKER__…`).
    pub extra_env: Vec<(String, String)>,
    /// Edge↔worker links over Unix sockets (`grpc.unix_listen`) instead of mutual TLS
    /// over loopback TCP.
    pub unix_links: bool,
}

/// Parses one `NAME=VALUE` environment override (for [`ClusterSpec::extra_env`]), as the
/// benchmarks' `--env` takes it.
///
/// # Errors
/// A message naming the argument when it has no `=`.
pub fn parse_env_override(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))
}

impl ClusterSpec {
    /// A cluster of `workers` workers and one edge, publishing to `authorities`.
    pub fn new(name: &str, keys_dir: &Path, authorities: Vec<SocketAddr>) -> Self {
        ClusterSpec {
            name: name.to_owned(),
            keys_dir: keys_dir.to_owned(),
            workers: 2,
            edges: 1,
            exit_policy: vec!["reject *:*".into()],
            dir_backend: None,
            authorities,
            or_port: None,
            extra_env: Vec::new(),
            unix_links: false,
        }
    }
}

/// A running relay cluster.
#[derive(Debug)]
pub struct RelayCluster {
    /// Nickname.
    pub name: String,
    /// The advertised ORPort on 127.0.0.1 (the edge's, or the balancer's in front of
    /// several edges).
    pub or_port: u16,
    /// Per-edge listen ports.
    pub edge_ports: Vec<u16>,
    /// Connections the balancer forwarded (with several edges).
    pub balanced: Option<Arc<AtomicUsize>>,
    /// Metrics ports of the edges, then of the workers.
    pub metrics_ports: Vec<u16>,
    /// Workers, then edges.
    pub procs: Vec<Process>,
}

impl RelayCluster {
    /// Log tails of every process.
    pub fn logs(&self, lines: usize) -> String {
        self.procs
            .iter()
            .map(|p| {
                format!(
                    "===== {} =====\n{}",
                    p.name(),
                    crate::tail(p.log_path(), lines)
                )
            })
            .collect()
    }
}

/// Starts a cluster with its logs under `root`.
///
/// # Errors
/// When a process cannot be started.
pub fn start_cluster(root: &Path, spec: &ClusterSpec) -> Result<RelayCluster> {
    let mut procs = Vec::new();
    let mut urls = Vec::new();
    let mut metrics_ports = Vec::new();
    let policy = spec.exit_policy.join(",");
    // Every edge-worker link is mutual TLS under a CA of this cluster's own.
    let ca_dir = root.join(format!("{}-ca", spec.name));
    for w in 0..spec.workers {
        let name = format!("{}-worker{w}", spec.name);
        let dir = root.join(&name);
        std::fs::create_dir_all(&dir)?;
        let tls = cluster_cert(&ca_dir, "worker", &name, &dir.join("tls"))?;
        let grpc = free_port();
        let metrics = free_port();
        let mut cmd = Command::new(our_binary("circuit-worker")?);
        cmd.env_clear();
        if spec.unix_links {
            let sock = dir.join("grpc.sock");
            urls.push(format!("unix:{}", sock.display()));
            cmd.env("CIRCUIT_WORKER__GRPC__UNIX_LISTEN", sock);
        } else {
            urls.push(format!("https://127.0.0.1:{grpc}"));
        }
        cmd.arg("run")
            .env("CIRCUIT_WORKER__KEYS_DIR", &spec.keys_dir)
            .env("CIRCUIT_WORKER__CLUSTER_TLS__DIR", &tls)
            .env("CIRCUIT_WORKER__SHARDS", "2")
            // Every process of a test network shares a small machine with C tor's: one
            // thread each (shards included), as C tor's main loop.
            .env("CIRCUIT_WORKER__IO_THREADS", "1")
            .env("CIRCUIT_WORKER__GRPC__LISTEN", format!("127.0.0.1:{grpc}"))
            .env(
                "CIRCUIT_WORKER__METRICS__LISTEN",
                format!("127.0.0.1:{metrics}"),
            )
            .env("CIRCUIT_WORKER__EXIT_POLICY", &policy)
            .env("CIRCUIT_WORKER__EXIT_POLICY_REJECT_PRIVATE", "false")
            .env("CIRCUIT_WORKER__LOG__FILTER", "info,circuit_worker=debug");
        if let Some(b) = spec.dir_backend {
            cmd.env("CIRCUIT_WORKER__DIR_BACKEND", b.to_string());
        }
        for (k, v) in spec
            .extra_env
            .iter()
            .filter(|(k, _)| k.starts_with("CIRCUIT_WORKER__"))
        {
            cmd.env(k, v);
        }
        metrics_ports.push(metrics);
        procs.push(Process::spawn(
            &format!("{}-worker{w}", spec.name),
            cmd,
            &dir.join("worker.log"),
        )?);
    }
    let or_port = spec.or_port.unwrap_or_else(free_port);
    let mut edge_ports = Vec::new();
    let authorities: Vec<String> = spec.authorities.iter().map(ToString::to_string).collect();
    for e in 0..spec.edges {
        let name = format!("{}-edge{e}", spec.name);
        let dir = root.join(&name);
        std::fs::create_dir_all(&dir)?;
        let tls = cluster_cert(&ca_dir, "edge", &name, &dir.join("tls"))?;
        let listen = if spec.edges == 1 {
            or_port
        } else {
            free_port()
        };
        edge_ports.push(listen);
        let metrics = free_port();
        let mut cmd = Command::new(our_binary("edge")?);
        cmd.arg("run")
            .env_clear()
            .env("EDGE__KEYS_DIR", &spec.keys_dir)
            .env("EDGE__CLUSTER_TLS__DIR", &tls)
            .env("EDGE__NICKNAME", &spec.name)
            .env("EDGE__IO_THREADS", "1")
            .env("EDGE__WORKERS", urls.join(","))
            .env("EDGE__ORPORT__LISTEN", format!("127.0.0.1:{listen}"))
            .env(
                "EDGE__ORPORT__ADVERTISED_ADDRESS",
                format!("127.0.0.1:{or_port}"),
            )
            .env("EDGE__METRICS__LISTEN", format!("127.0.0.1:{metrics}"))
            .env("EDGE__DIRECTORY__AUTHORITIES", authorities.join(","))
            .env(
                "EDGE__DIRECTORY__PUBLISH",
                if e == 0 { "true" } else { "false" },
            )
            .env("EDGE__DIRECTORY__RETRY_SECS", "2")
            .env("EDGE__DIRECTORY__EXIT_POLICY", &policy)
            .env("EDGE__DIRECTORY__EXIT_POLICY_REJECT_PRIVATE", "false")
            .env(
                "EDGE__DIRECTORY__TUNNELLED_DIR_SERVER",
                if spec.dir_backend.is_some() {
                    "true"
                } else {
                    "false"
                },
            )
            .env(
                "EDGE__LOG__FILTER",
                "info,edge=debug,proto_io::channel=debug",
            );
        for (k, v) in spec
            .extra_env
            .iter()
            .filter(|(k, _)| k.starts_with("EDGE__"))
        {
            cmd.env(k, v);
        }
        metrics_ports.insert(e, metrics);
        procs.push(Process::spawn(
            &format!("{}-edge{e}", spec.name),
            cmd,
            &dir.join("edge.log"),
        )?);
    }
    let balanced = if spec.edges > 1 {
        let backends = edge_ports
            .iter()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
            .collect();
        Some(start_balancer(
            SocketAddr::from(([127, 0, 0, 1], or_port)),
            backends,
        )?)
    } else {
        None
    };
    Ok(RelayCluster {
        name: spec.name.clone(),
        or_port,
        edge_ports,
        balanced,
        metrics_ports,
        procs,
    })
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
///
/// # Errors
/// A timeout.
pub fn wait_listening(port: u16, what: &str, limit: Duration) -> Result<()> {
    wait_for(what, limit, Duration::from_millis(100), || {
        TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_millis(500),
        )
        .ok()
        .map(|_| ())
    })
}

/// One of our directory authorities: a `dirauth` process and the relay cluster that is
/// its ORPort (BEGIN_DIR relayed to the dirauth).
#[derive(Debug)]
pub struct OurAuthority {
    /// Nickname.
    pub nickname: String,
    /// v3 identity, hex.
    pub v3ident: String,
    /// Relay fingerprint of its ORPort, hex.
    pub fingerprint: String,
    /// Ed25519 identity of its ORPort, unpadded base64.
    pub ed25519: String,
    /// DirPort.
    pub dir_port: u16,
    /// ORPort.
    pub or_port: u16,
    /// Data directory of the dirauth.
    pub data_dir: PathBuf,
    /// Metrics port of the dirauth.
    pub metrics_port: u16,
    /// The dirauth process (`None` while stopped).
    pub dirauth: Option<Process>,
    /// Its ORPort cluster.
    pub cluster: Option<RelayCluster>,
    env: Vec<(String, String)>,
}

impl OurAuthority {
    /// The `DirAuthority` line for it.
    pub fn dir_authority_line(&self) -> String {
        format!(
            "DirAuthority {} orport={} no-v2 v3ident={} 127.0.0.1:{} {}",
            self.nickname, self.or_port, self.v3ident, self.dir_port, self.fingerprint
        )
    }

    /// The DirPort address.
    pub fn dir_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.dir_port))
    }

    /// Starts (or restarts) the dirauth process with its saved configuration.
    ///
    /// # Errors
    /// When it cannot be spawned.
    pub fn start_dirauth(&mut self) -> Result<()> {
        let mut cmd = Command::new(our_binary("dirauth")?);
        cmd.arg("run").env_clear();
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let log = self.data_dir.join("dirauth.log");
        self.dirauth = Some(Process::spawn(
            &format!("{}-dirauth", self.nickname),
            cmd,
            &log,
        )?);
        Ok(())
    }

    /// Stops the dirauth (SIGTERM, then SIGKILL), keeping its data directory.
    pub fn stop_dirauth(&mut self) {
        if let Some(mut p) = self.dirauth.take() {
            p.terminate(Duration::from_secs(10));
        }
    }

    /// Log tails of its processes.
    pub fn logs(&self, lines: usize) -> String {
        let mut out = format!(
            "===== {}-dirauth =====\n{}",
            self.nickname,
            crate::tail(&self.data_dir.join("dirauth.log"), lines)
        );
        if let Some(c) = &self.cluster {
            out.push_str(&c.logs(lines));
        }
        out
    }
}

/// Voting options for our authorities.
#[derive(Clone, Debug)]
pub struct AuthorityOptions {
    /// Voting interval, seconds.
    pub interval_secs: u32,
    /// Vote and distribution delay, seconds.
    pub delay_secs: u32,
    /// Test ORPorts (false: assume every relay reachable).
    pub reachability_testing: bool,
    /// Versions to recommend (the local tor's, so it does not warn).
    pub versions: String,
    /// Extra `DIRAUTH__…` environment.
    pub extra_env: Vec<(String, String)>,
    /// Put before `auth{i}` in nicknames (and directory names).
    pub nickname_prefix: String,
}

/// Plans `n` authorities under `root`: keys, ports and `DirAuthority` lines; nothing runs
/// yet.
///
/// # Errors
/// When key generation fails.
pub fn plan_authorities(
    root: &Path,
    n: usize,
    opts: &AuthorityOptions,
) -> Result<Vec<OurAuthority>> {
    let mut auths = Vec::new();
    for i in 0..n {
        let nickname = format!("{}auth{i}", opts.nickname_prefix);
        let data_dir = root.join(&nickname);
        std::fs::create_dir_all(&data_dir)?;
        let (dir_port, or_port, metrics_port) = (free_port(), free_port(), free_port());
        let out = Command::new(our_binary("dirauth")?)
            .args(["keygen", "--data-dir"])
            .arg(&data_dir)
            .env_clear()
            .env("DIRAUTH__DIRPORT__LISTEN", format!("127.0.0.1:{dir_port}"))
            .output()?;
        if !out.status.success() {
            bail!("dirauth keygen: {}", String::from_utf8_lossy(&out.stderr));
        }
        let v3ident = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("v3ident ").map(str::to_owned))
            .context("no v3ident")?;
        let ids = relay_keygen_ids(&data_dir.join("relay-keys"))?;
        auths.push(OurAuthority {
            nickname,
            v3ident,
            fingerprint: ids.fingerprint,
            ed25519: ids.ed25519,
            dir_port,
            or_port,
            data_dir,
            metrics_port,
            dirauth: None,
            cluster: None,
            env: Vec::new(),
        });
    }
    let lines: Vec<String> = auths
        .iter()
        .map(|a| {
            a.dir_authority_line()
                .trim_start_matches("DirAuthority ")
                .to_owned()
        })
        .collect();
    let delay = opts.delay_secs.to_string();
    for a in &mut auths {
        let mut env: Vec<(String, String)> = [
            ("DIRAUTH__DATA_DIR", a.data_dir.display().to_string()),
            ("DIRAUTH__NICKNAME", a.nickname.clone()),
            ("DIRAUTH__CONTACT", format!("{}@test.invalid", a.nickname)),
            ("DIRAUTH__AUTHORITIES", lines.join(",")),
            (
                "DIRAUTH__RELAY_KEYS_DIR",
                a.data_dir.join("relay-keys").display().to_string(),
            ),
            (
                "DIRAUTH__DIRPORT__LISTEN",
                format!("127.0.0.1:{}", a.dir_port),
            ),
            (
                "DIRAUTH__METRICS__LISTEN",
                format!("127.0.0.1:{}", a.metrics_port),
            ),
            (
                "DIRAUTH__VOTING__INTERVAL_SECS",
                opts.interval_secs.to_string(),
            ),
            ("DIRAUTH__VOTING__VOTE_DELAY_SECS", delay.clone()),
            ("DIRAUTH__VOTING__DIST_DELAY_SECS", delay.clone()),
            (
                "DIRAUTH__REACHABILITY__ASSUME_REACHABLE",
                (!opts.reachability_testing).to_string(),
            ),
            ("DIRAUTH__REACHABILITY__TEST_INTERVAL_SECS", "20".into()),
            ("DIRAUTH__REACHABILITY__TIMEOUT_SECS", "10".into()),
            ("DIRAUTH__FLAGS__VOTE_GUARD", "*".into()),
            ("DIRAUTH__FLAGS__FAST_MIN_BYTES", "0".into()),
            ("DIRAUTH__FLAGS__HSDIR_MIN_UPTIME_SECS", "0".into()),
            ("DIRAUTH__FLAGS__STABLE_GUARANTEE_UPTIME_SECS", "0".into()),
            ("DIRAUTH__FLAGS__ALLOW_PRIVATE_ADDRESSES", "true".into()),
            ("DIRAUTH__CONSENSUS__CLIENT_VERSIONS", opts.versions.clone()),
            ("DIRAUTH__CONSENSUS__SERVER_VERSIONS", opts.versions.clone()),
            ("DIRAUTH__LOG__FILTER", "info,dirauth=debug".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        env.extend(opts.extra_env.iter().cloned());
        a.env = env;
    }
    Ok(auths)
}

/// Starts planned authorities: every dirauth, then (once all DirPorts listen) their ORPort
/// clusters, which publish to all of them.
///
/// # Errors
/// Start-up failures or a DirPort that never listens.
pub fn start_authorities(root: &Path, auths: &mut [OurAuthority]) -> Result<()> {
    for a in auths.iter_mut() {
        a.start_dirauth()?;
    }
    for a in auths.iter() {
        wait_listening(
            a.dir_port,
            &format!("{} DirPort", a.nickname),
            Duration::from_secs(60),
        )
        .with_context(|| a.logs(20))?;
    }
    let dirports: Vec<SocketAddr> = auths.iter().map(OurAuthority::dir_addr).collect();
    for a in auths.iter_mut() {
        let mut spec = ClusterSpec::new(
            &a.nickname,
            &a.data_dir.join("relay-keys"),
            dirports.clone(),
        );
        spec.workers = 1;
        spec.dir_backend = Some(a.dir_addr());
        spec.or_port = Some(a.or_port);
        a.cluster = Some(start_cluster(root, &spec)?);
    }
    Ok(())
}

/// The version of the local `tor` (e.g. `0.4.9.11`), or `None` when `tor` is not on PATH.
pub fn tor_version() -> Option<String> {
    let out = Command::new("tor").arg("--version").output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(2)
        .map(|v| v.trim_end_matches('.').to_owned())
}

/// The version of the local `tor` (e.g. `0.4.9.11`), for recommended-version lists; a
/// 0.4.9 default without one.
pub fn local_tor_version() -> String {
    tor_version().unwrap_or_else(|| "0.4.9.11".to_owned())
}
