//! `tornet`: private Tor networks on 127.0.0.1 of unmodified C tor processes (authorities,
//! relays, clients) and ours (edge, circuit-worker, dirauth), with the helpers that drive
//! them. The launcher (`deploy/testnet`) starts its networks with it; the integration tests
//! (`tests/`) build theirs with it.
//!
//! Invariants:
//! - Everything binds 127.0.0.1; ports are picked free by the harness and never reused
//!   within one test process.
//! - Every process started here is killed (by PID) and reaped when its owner drops,
//!   including on panic; on panic the tail of every log is printed to stderr first.
//! - Every wait is bounded; a timeout is an error that names what was awaited.
//! - `tor` missing is a test failure (a panic naming the package), never a skip.
//!
//! ```no_run
//! use tornet::{NetConfig, TorNet};
//! let net = TorNet::start(&NetConfig { relays: 2, ..NetConfig::default() }).unwrap();
//! let consensus = net.wait_for_consensus(std::time::Duration::from_secs(120), |c| {
//!     c.routers.len() == 5
//! }).unwrap();
//! ```

pub mod control;
pub mod http;
pub mod link;
pub mod ours;
pub mod process;
pub mod procstat;
pub mod traffic;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;

pub use process::Process;

/// Path of the `tor` binary. Panics (failing the test) when it is not installed.
pub fn tor_binary() -> PathBuf {
    which("tor").unwrap_or_else(|| {
        panic!(
            "`tor` is not on PATH: run the README's test command, `cargo xtask test`, which \
             installs Debian's tor package (or `apt-get install -y tor`)"
        )
    })
}

/// A Python interpreter with `stem` and `cryptography`: `TESTS_PYTHON` (set by
/// `cargo xtask test`), else the project-local `.venv/` that command creates. Panics
/// (failing the test) when neither has stem, naming the command that installs it.
pub fn stem_python() -> PathBuf {
    let venv = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../.venv/bin/python3"
    ));
    let python = std::env::var_os("TESTS_PYTHON").map_or_else(|| venv.to_owned(), PathBuf::from);
    let ok = Command::new(&python)
        .args(["-c", "import stem, cryptography"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} has no stem: run the README's test command, `cargo xtask test`, which installs it \
         (or set TESTS_PYTHON to a Python with stem 1.8.2 and cryptography)",
        python.display()
    );
    python
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// A free TCP port on 127.0.0.1, never handed out twice in this process.
///
/// Picked below the kernel's ephemeral range (`ip_local_port_range`), from a random
/// starting point: a port from that range could be taken, between being picked here and
/// bound by its owner, as the source port of one of the many loopback connections the
/// network's processes make; below it, only another listener can take it, and the bind
/// check here excludes the ones already listening.
pub fn free_port() -> u16 {
    static USED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let hi = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768)
        .max(12_000);
    let lo = 10_000u16;
    let span = hi - lo;
    let start = rand::random::<u16>() % span;
    let mut used = USED.lock().unwrap_or_else(PoisonError::into_inner);
    let used = used.get_or_insert_with(HashSet::new);
    for k in 0..span {
        let port = lo + (start + k) % span;
        if !used.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            used.insert(port);
            return port;
        }
    }
    panic!("no free port below {hi}")
}

/// Polls `f` every `every` until it returns `Some`, for at most `limit`.
///
/// # Errors
/// A timeout error naming `what`.
pub fn wait_for<T>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(every);
    }
}

/// Shape of a private network.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// C tor directory authorities.
    pub authorities: usize,
    /// C tor relays (non-exit).
    pub relays: usize,
    /// C tor exit relays.
    pub exits: usize,
    /// C tor clients (each with a SocksPort).
    pub clients: usize,
    /// `AssumeReachable 0` on authorities: they test every relay's ORPort.
    pub reachability_testing: bool,
    /// Consensus period, seconds (`V3AuthVotingInterval`).
    pub voting_interval_secs: u32,
    /// Extra torrc lines for every authority.
    pub authority_extra: Vec<String>,
    /// Extra torrc lines for every relay.
    pub relay_extra: Vec<String>,
    /// Extra torrc lines for every client.
    pub client_extra: Vec<String>,
    /// Our directory authorities (dirauth + its ORPort cluster each) instead of C tor
    /// ones: when non-zero, `authorities` is ignored.
    pub our_authorities: usize,
    /// Extra `DIRAUTH__…` environment for our authorities.
    pub our_authority_env: Vec<(String, String)>,
    /// Directory for the network's files, kept afterwards; `None`: a temporary directory
    /// removed when the network is dropped.
    pub root: Option<PathBuf>,
    /// Put before every nickname: `{ours}auth0` for our authorities, `{c}relay0`,
    /// `{c}exit1`, `{c}client0`, `{c}auth0` for C tor's (the launcher sets "ours"/"c" so no
    /// two nodes share a name; tests keep them short).
    pub nickname_prefixes: (String, String),
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            authorities: 3,
            relays: 0,
            exits: 0,
            clients: 0,
            reachability_testing: true,
            voting_interval_secs: 10,
            authority_extra: Vec::new(),
            relay_extra: Vec::new(),
            client_extra: Vec::new(),
            our_authorities: 0,
            our_authority_env: Vec::new(),
            root: None,
            nickname_prefixes: (String::new(), String::new()),
        }
    }
}

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Directory authority.
    Authority,
    /// Non-exit relay.
    Relay,
    /// Exit relay.
    Exit,
    /// Client.
    Client,
}

/// One C tor process of the network.
#[derive(Debug)]
pub struct TorNode {
    /// Nickname.
    pub nickname: String,
    /// Role.
    pub role: Role,
    /// Data directory.
    pub data_dir: PathBuf,
    /// ORPort (0 for clients).
    pub or_port: u16,
    /// DirPort (authorities only).
    pub dir_port: Option<u16>,
    /// ControlPort (no authentication).
    pub control_port: u16,
    /// SocksPort (clients only).
    pub socks_port: Option<u16>,
    /// RSA fingerprint, 40 upper-case hex digits (empty for clients).
    pub fingerprint: String,
    /// v3 identity of an authority's key certificate.
    pub v3ident: Option<String>,
    /// The running process.
    pub process: Process,
}

impl TorNode {
    /// The DirPort address.
    pub fn dir_addr(&self) -> Option<SocketAddr> {
        self.dir_port.map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
    }
    /// The Ed25519 identity (unpadded base64) that tor wrote to `fingerprint-ed25519`;
    /// `None` for clients, or before tor has written it.
    pub fn ed25519(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.data_dir.join("fingerprint-ed25519")).ok()?;
        text.split_whitespace().nth(1).map(str::to_owned)
    }
    /// The ORPort address.
    pub fn or_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.or_port))
    }
    /// A ControlPort connection, authenticated.
    ///
    /// # Errors
    /// Connection or authentication failure.
    pub fn control(&self) -> Result<control::Control> {
        control::Control::connect(SocketAddr::from(([127, 0, 0, 1], self.control_port)))
    }
}

/// A running private network. Dropping it kills every process.
#[derive(Debug)]
pub struct TorNet {
    /// Authorities, in `DirAuthority` order.
    pub authorities: Vec<TorNode>,
    /// Relays and exits.
    pub relays: Vec<TorNode>,
    /// Clients.
    pub clients: Vec<TorNode>,
    /// Our authorities (when [`NetConfig::our_authorities`] is set).
    pub ours: Vec<ours::OurAuthority>,
    dir_authority_lines: Vec<String>,
    config: NetConfig,
    // Declared last: dropped after the processes that use it.
    root: Root,
}

/// Where a network's files live.
#[derive(Debug)]
enum Root {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl Root {
    fn path(&self) -> &Path {
        match self {
            Root::Temp(t) => t.path(),
            Root::Kept(p) => p,
        }
    }
}

fn common_torrc(nickname: &str, data_dir: &Path, control_port: u16) -> String {
    format!(
        "TestingTorNetwork 1\n\
         DataDirectory {dir}\n\
         Nickname {nickname}\n\
         Log notice file {dir}/notice.log\n\
         Log info file {dir}/info.log\n\
         ControlPort 127.0.0.1:{control_port}\n\
         CookieAuthentication 0\n\
         SafeLogging 0\n\
         ClientUseIPv6 0\n\
         ConnLimit 60\n\
         RunAsDaemon 0\n",
        dir = data_dir.display()
    )
}

impl TorNet {
    /// Generates keys, writes torrcs and starts every process; returns once all are
    /// running (not once a consensus exists: see [`TorNet::wait_for_consensus`]).
    ///
    /// # Errors
    /// A key-generation or start-up failure.
    pub fn start(config: &NetConfig) -> Result<TorNet> {
        let needs_tor =
            config.our_authorities == 0 || config.relays + config.exits + config.clients > 0;
        let tor = if needs_tor {
            tor_binary()
        } else {
            PathBuf::from("tor")
        };
        let root = match &config.root {
            Some(p) => {
                std::fs::create_dir_all(p)?;
                Root::Kept(p.clone())
            }
            // TORNET_KEEP=1 keeps the files of every test network for a post-mortem.
            None if std::env::var_os("TORNET_KEEP").is_some() => {
                Root::Kept(tempfile::Builder::new().prefix("tornet-").tempdir()?.keep())
            }
            None => Root::Temp(tempfile::Builder::new().prefix("tornet-").tempdir()?),
        };
        // 1. Authority keys and identities.
        struct AuthPlan {
            nickname: String,
            dir: PathBuf,
            or_port: u16,
            dir_port: u16,
            fingerprint: String,
            v3ident: String,
        }
        let mut plans = Vec::new();
        let n_c_authorities = if config.our_authorities > 0 {
            0
        } else {
            config.authorities
        };
        let mut our_auths = if config.our_authorities > 0 {
            let vi = config.voting_interval_secs.max(10);
            ours::plan_authorities(
                root.path(),
                config.our_authorities,
                &ours::AuthorityOptions {
                    interval_secs: vi,
                    delay_secs: ((vi / 2 - 1) / 2).clamp(2, 20),
                    reachability_testing: config.reachability_testing,
                    versions: ours::local_tor_version(),
                    extra_env: config.our_authority_env.clone(),
                    nickname_prefix: config.nickname_prefixes.0.clone(),
                },
            )?
        } else {
            Vec::new()
        };
        for i in 0..n_c_authorities {
            let nickname = format!("{}auth{i}", config.nickname_prefixes.1);
            let dir = root.path().join(&nickname);
            let keys = dir.join("keys");
            std::fs::create_dir_all(&keys)?;
            let (or_port, dir_port) = (free_port(), free_port());
            let out = Command::new(which("tor-gencert").context("tor-gencert not on PATH")?)
                .current_dir(&keys)
                .args([
                    "--create-identity-key",
                    "--passphrase-fd",
                    "0",
                    "-m",
                    "12",
                    "-a",
                    &format!("127.0.0.1:{dir_port}"),
                ])
                .stdin(Stdio::null())
                .output()?;
            if !out.status.success() {
                bail!(
                    "tor-gencert failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let cert = std::fs::read_to_string(keys.join("authority_certificate"))?;
            let v3ident = cert
                .lines()
                .find_map(|l| l.strip_prefix("fingerprint "))
                .context("authority certificate without fingerprint")?
                .trim()
                .to_owned();
            let fingerprint = list_fingerprint(&tor, &dir)?;
            plans.push(AuthPlan {
                nickname,
                dir,
                or_port,
                dir_port,
                fingerprint,
                v3ident,
            });
        }
        let mut dir_authority_lines: Vec<String> = plans
            .iter()
            .map(|p| {
                format!(
                    "DirAuthority {} orport={} no-v2 v3ident={} 127.0.0.1:{} {}",
                    p.nickname, p.or_port, p.v3ident, p.dir_port, p.fingerprint
                )
            })
            .collect();
        dir_authority_lines.extend(our_auths.iter().map(ours::OurAuthority::dir_authority_line));
        if !our_auths.is_empty() {
            ours::start_authorities(root.path(), &mut our_auths)?;
        }
        let dirauth_block: String = dir_authority_lines
            .iter()
            .map(|l| format!("{l}\n"))
            .collect();
        let vi = config.voting_interval_secs.max(5);
        let delay = (vi / 5).max(2);
        let timing = format!(
            "V3AuthVotingInterval {vi}\nTestingV3AuthInitialVotingInterval {vi}\n\
             V3AuthVoteDelay {delay}\nTestingV3AuthInitialVoteDelay {delay}\n\
             V3AuthDistDelay {delay}\nTestingV3AuthInitialDistDelay {delay}\n\
             V3AuthNIntervalsValid 2\n"
        );

        let mut net = TorNet {
            authorities: Vec::new(),
            relays: Vec::new(),
            clients: Vec::new(),
            ours: our_auths,
            dir_authority_lines,
            config: config.clone(),
            root,
        };
        // 2. Authorities.
        for p in plans {
            let control_port = free_port();
            let mut torrc = common_torrc(&p.nickname, &p.dir, control_port);
            let _ = write!(
                torrc,
                "Address 127.0.0.1\nORPort 127.0.0.1:{}\nDirPort 127.0.0.1:{}\nSocksPort 0\n\
                 AuthoritativeDirectory 1\nV3AuthoritativeDirectory 1\n\
                 ContactInfo {}@test.invalid\nAssumeReachable {}\n\
                 TestingDirAuthVoteGuard *\n\
                 TestingMinExitFlagThreshold 0\n\
                 AuthDirVoteStableGuaranteeMinUptime 0\n{timing}{dirauth_block}",
                p.or_port,
                p.dir_port,
                p.nickname,
                if config.reachability_testing { 0 } else { 1 },
            );
            for l in &config.authority_extra {
                let _ = writeln!(torrc, "{l}");
            }
            let process = start_tor(&tor, &p.dir, &torrc, &p.nickname)?;
            net.authorities.push(TorNode {
                nickname: p.nickname,
                role: Role::Authority,
                data_dir: p.dir,
                or_port: p.or_port,
                dir_port: Some(p.dir_port),
                control_port,
                socks_port: None,
                fingerprint: p.fingerprint,
                v3ident: Some(p.v3ident),
                process,
            });
        }
        // 3. Relays and exits.
        for i in 0..config.relays + config.exits {
            let exit = i >= config.relays;
            let c = &config.nickname_prefixes.1;
            let nickname = if exit {
                format!("{c}exit{i}")
            } else {
                format!("{c}relay{i}")
            };
            let dir = net.root.path().join(&nickname);
            std::fs::create_dir_all(&dir)?;
            let (or_port, control_port) = (free_port(), free_port());
            let mut torrc = common_torrc(&nickname, &dir, control_port);
            let _ = write!(
                torrc,
                "Address 127.0.0.1\nORPort 127.0.0.1:{or_port}\nSocksPort 0\n\
                 AssumeReachable 1\nContactInfo {nickname}@test.invalid\n{}\n{dirauth_block}",
                if exit {
                    "ExitRelay 1\nExitPolicy accept 127.0.0.0/8:*\nExitPolicyRejectPrivate 0"
                } else {
                    "ExitRelay 0\nExitPolicy reject *:*"
                }
            );
            for l in &config.relay_extra {
                let _ = writeln!(torrc, "{l}");
            }
            let process = start_tor(&tor, &dir, &torrc, &nickname)?;
            let fingerprint = read_fingerprint(&dir)?;
            net.relays.push(TorNode {
                nickname,
                role: if exit { Role::Exit } else { Role::Relay },
                data_dir: dir,
                or_port,
                dir_port: None,
                control_port,
                socks_port: None,
                fingerprint,
                v3ident: None,
                process,
            });
        }
        // 4. Clients.
        for _ in 0..config.clients {
            let extra = config.client_extra.clone();
            net.add_client(&extra)?;
        }
        Ok(net)
    }

    /// Starts one more C tor client with extra torrc lines (e.g. `EntryNodes`), and returns
    /// its index in [`TorNet::clients`].
    ///
    /// # Errors
    /// When it cannot be started.
    pub fn add_client(&mut self, extra: &[String]) -> Result<usize> {
        let tor = tor_binary();
        let i = self.clients.len();
        let nickname = format!("{}client{i}", self.config.nickname_prefixes.1);
        let dir = self.root.path().join(&nickname);
        std::fs::create_dir_all(&dir)?;
        let (socks, control_port) = (free_port(), free_port());
        let mut torrc = common_torrc(&nickname, &dir, control_port);
        let _ = writeln!(torrc, "SocksPort 127.0.0.1:{socks}");
        for l in self.dir_authority_lines.iter().chain(extra) {
            let _ = writeln!(torrc, "{l}");
        }
        let process = start_tor(&tor, &dir, &torrc, &nickname)?;
        self.clients.push(TorNode {
            nickname,
            role: Role::Client,
            data_dir: dir,
            or_port: 0,
            dir_port: None,
            control_port,
            socks_port: Some(socks),
            fingerprint: String::new(),
            v3ident: None,
            process,
        });
        Ok(i)
    }

    /// The SOCKS address of client `i`.
    pub fn socks_addr(&self, i: usize) -> Option<SocketAddr> {
        self.clients
            .get(i)?
            .socks_port
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
    }

    /// The `DirAuthority` torrc lines every node of this network uses.
    pub fn dir_authority_lines(&self) -> &[String] {
        &self.dir_authority_lines
    }

    /// DirPort addresses of the authorities (where relays POST their descriptors).
    pub fn authority_dir_addrs(&self) -> Vec<SocketAddr> {
        self.authorities
            .iter()
            .filter_map(TorNode::dir_addr)
            .chain(self.ours.iter().map(ours::OurAuthority::dir_addr))
            .collect()
    }

    /// The configuration the network was started with.
    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    /// The directory holding the network's files.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// A scratch directory inside the network's temporary root, for our own processes.
    ///
    /// # Errors
    /// When it cannot be created.
    pub fn scratch_dir(&self, name: &str) -> Result<PathBuf> {
        let d = self.root.path().join(name);
        std::fs::create_dir_all(&d)?;
        Ok(d)
    }

    /// Fetches the current consensus from authority `i` (None if it has none yet).
    pub fn consensus(&self, i: usize) -> Option<Consensus> {
        let addr = *self.authority_dir_addrs().get(i)?;
        let (status, body) = http::get(
            addr,
            "/tor/status-vote/current/consensus",
            Duration::from_secs(5),
        )
        .ok()?;
        if status != 200 {
            return None;
        }
        Consensus::parse(&String::from_utf8_lossy(&body))
    }

    /// Waits until some authority serves a consensus satisfying `pred`.
    ///
    /// # Errors
    /// A timeout naming the last consensus seen (its router count).
    pub fn wait_for_consensus(
        &self,
        limit: Duration,
        pred: impl Fn(&Consensus) -> bool,
    ) -> Result<Consensus> {
        let mut last = String::from("none");
        let r = wait_for(
            "a matching consensus",
            limit,
            Duration::from_secs(1),
            || {
                for i in 0..self.authority_dir_addrs().len() {
                    if let Some(c) = self.consensus(i) {
                        if pred(&c) {
                            return Some(c);
                        }
                        last = format!("{} routers: {:?}", c.routers.len(), c.routers);
                    }
                }
                None
            },
        );
        r.map_err(|e| anyhow!("{e}; last consensus: {last}"))
    }

    /// `(name, pid)` of every running process of the network.
    pub fn pids(&self) -> Vec<(String, u32)> {
        let mut out: Vec<(String, u32)> = self
            .authorities
            .iter()
            .chain(&self.relays)
            .chain(&self.clients)
            .filter_map(|n| Some((n.nickname.clone(), n.process.pid()?)))
            .collect();
        for a in &self.ours {
            if let Some(p) = &a.dirauth {
                out.extend(p.pid().map(|pid| (p.name().to_owned(), pid)));
            }
            if let Some(c) = &a.cluster {
                out.extend(
                    c.procs
                        .iter()
                        .filter_map(|p| Some((p.name().to_owned(), p.pid()?))),
                );
            }
        }
        out
    }

    /// Every process's log tail, for failure reports.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for n in self
            .authorities
            .iter()
            .chain(&self.relays)
            .chain(&self.clients)
        {
            let _ = writeln!(out, "===== {} ({:?}) notice.log =====", n.nickname, n.role);
            out.push_str(&tail(&n.data_dir.join("notice.log"), lines));
        }
        for a in &self.ours {
            out.push_str(&a.logs(lines));
        }
        out
    }
}

impl Drop for TorNet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails(30));
        }
        // Processes are killed by their own Drop, before `root` is removed.
        for n in self
            .clients
            .iter_mut()
            .chain(&mut self.relays)
            .chain(&mut self.authorities)
        {
            n.process.kill();
        }
        for a in &mut self.ours {
            a.stop_dirauth();
            a.cluster = None;
        }
    }
}

/// The last `n` lines of a file ("" if unreadable).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].iter().map(|l| format!("{l}\n")).collect()
}

fn start_tor(tor: &Path, dir: &Path, torrc: &str, name: &str) -> Result<Process> {
    let path = dir.join("torrc");
    std::fs::write(&path, torrc)?;
    let mut cmd = Command::new(tor);
    cmd.arg("-f").arg(&path);
    Process::spawn(name, cmd, &dir.join("stdout.log"))
}

/// Generates the relay identity key in `dir` and returns its fingerprint, without
/// starting a relay.
fn list_fingerprint(tor: &Path, dir: &Path) -> Result<String> {
    let out = Command::new(tor)
        .args(["--list-fingerprint", "--quiet", "--DataDirectory"])
        .arg(dir)
        .args([
            "--ORPort",
            "1",
            "--DirAuthority",
            "placeholder 127.0.0.1:1 ffffffffffffffffffffffffffffffffffffffff",
            "--Log",
            "err stderr",
        ])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!(
            "tor --list-fingerprint failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    read_fingerprint(dir)
}

/// Reads `<dir>/fingerprint` (`nickname FP`), waiting briefly for tor to write it.
fn read_fingerprint(dir: &Path) -> Result<String> {
    wait_for(
        "the relay fingerprint file",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let text = std::fs::read_to_string(dir.join("fingerprint")).ok()?;
            let fp = text.split_whitespace().nth(1)?.to_owned();
            (fp.len() == 40).then_some(fp)
        },
    )
}

/// One `r` entry of a consensus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterStatus {
    /// Nickname.
    pub nickname: String,
    /// RSA fingerprint, upper-case hex.
    pub fingerprint: String,
    /// Descriptor digest, upper-case hex.
    pub descriptor_digest: String,
    /// Flags from the `s` line.
    pub flags: Vec<String>,
}

impl RouterStatus {
    /// True if the `s` line carries `flag`.
    pub fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

/// A consensus, as far as tests need it.
#[derive(Clone, Debug)]
pub struct Consensus {
    /// The whole text.
    pub text: String,
    /// Its router entries.
    pub routers: Vec<RouterStatus>,
}

fn b64_to_hex(s: &str) -> Option<String> {
    let b = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()?;
    Some(hex::encode_upper(b))
}

impl Consensus {
    /// Parses the router entries of an ns-flavoured consensus.
    pub fn parse(text: &str) -> Option<Consensus> {
        if !text.starts_with("network-status-version 3") {
            return None;
        }
        let mut routers = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("r ") {
                let f: Vec<&str> = rest.split(' ').collect();
                if f.len() < 3 {
                    return None;
                }
                routers.push(RouterStatus {
                    nickname: f[0].to_owned(),
                    fingerprint: b64_to_hex(f[1])?,
                    descriptor_digest: b64_to_hex(f[2])?,
                    flags: Vec::new(),
                });
            } else if let Some(rest) = line.strip_prefix("s ")
                && let Some(r) = routers.last_mut()
            {
                r.flags = rest.split(' ').map(str::to_owned).collect();
            }
        }
        Some(Consensus {
            text: text.to_owned(),
            routers,
        })
    }

    /// The entry for `fingerprint` (hex), if listed.
    pub fn router(&self, fingerprint: &str) -> Option<&RouterStatus> {
        self.routers
            .iter()
            .find(|r| r.fingerprint.eq_ignore_ascii_case(fingerprint))
    }
}

/// Environment variable naming a directory of prebuilt `edge`, `circuit-worker` and
/// `dirauth` binaries to use instead of this workspace's (nothing is built then): a
/// benchmark compares an older build with the current one this way.
pub const BIN_DIR_ENV: &str = "TORNET_BIN_DIR";

/// Path of one of our workspace binaries (`edge`, `circuit-worker`, `dirauth`), built
/// into the same target directory as this test. Builds it (bounded) if missing, so
/// `cargo test -p tests` works on its own. With [`BIN_DIR_ENV`] set, the binary of that
/// directory, which must exist.
///
/// # Errors
/// When the build fails, or [`BIN_DIR_ENV`] names a directory without the binary.
pub fn our_binary(name: &str) -> Result<PathBuf> {
    static BUILD: Mutex<()> = Mutex::new(());
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        let bin = PathBuf::from(dir).join(name);
        if !bin.is_file() {
            bail!("{BIN_DIR_ENV}: no {}", bin.display());
        }
        return Ok(bin);
    }
    let profile_dir = profile_dir()?;
    let bin = profile_dir.join(name);
    let _guard = BUILD.lock().unwrap_or_else(PoisonError::into_inner);
    if !bin.is_file() {
        build_our_binaries()?;
        if !bin.is_file() {
            bail!("building {name} did not make {}", bin.display());
        }
    }
    Ok(bin)
}

/// `target/<profile>` of the running executable (a test in `deps/` or a binary).
fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("executable has no directory")?;
    let dir = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().context("deps has no parent")?
    } else {
        dir
    };
    Ok(dir.to_owned())
}

/// Builds `edge`, `circuit-worker` and `dirauth` in the running executable's profile.
///
/// It builds every binary of the workspace (`--workspace --bins`), not just those three:
/// that selection includes `workspace-hack` (through the launcher), so every crate gets
/// the feature set the tests and `cargo run -p testnet` gave it, and nothing already
/// built is compiled again (CI checks this with `cargo xtask one-build`).
///
/// Does nothing when [`BIN_DIR_ENV`] is set.
///
/// # Errors
/// When cargo fails.
pub fn build_our_binaries() -> Result<()> {
    if std::env::var_os(BIN_DIR_ENV).is_some() {
        return Ok(());
    }
    let release = profile_dir()?.file_name().is_some_and(|n| n == "release");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // The workspace this crate belongs to, wherever the caller runs from.
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    // Without what `cargo run`/`cargo test` set for the running program, or ring and
    // all above it would be rebuilt here and again in the next plain build.
    xtask::without_run_env(&mut cmd);
    cmd.args(["build", "--workspace", "--bins"]);
    if release {
        cmd.arg("--release");
    }
    if !cmd.status()?.success() {
        bail!("cargo build of our binaries failed");
    }
    Ok(())
}
