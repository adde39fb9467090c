//! The verify step: an unmodified client bootstraps from the network's authorities and
//! fetches a file through it, SHA-256 checked. Debian's C tor when `tor` is on PATH;
//! otherwise arti (the `arti-client` crate) embedded in the launcher, so the first command
//! works on a machine with nothing but Rust.
//!
//! The embedded arti client is configured from exactly the `arti.toml` text the status
//! prints (parsed with arti's own loader, unknown keys refused), so the printed fragment
//! is the tested one.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use sha2::{Digest, Sha256};
use tornet::{TorNet, wait_for};

use crate::status::Network;

/// The arti release embedded here (the lock file pins it).
pub const ARTI_VERSION: &str = "arti-client 0.47";

/// Which client verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Verifier {
    /// C tor when `tor` is on PATH, the embedded arti client otherwise.
    Auto,
    /// Debian's C tor (fails when `tor` is not on PATH).
    Tor,
    /// The embedded arti client.
    Arti,
}

impl Verifier {
    /// `Auto` decided: C tor if present.
    pub fn resolve(self, have_tor: bool) -> Verifier {
        match self {
            Verifier::Auto if have_tor => Verifier::Tor,
            Verifier::Auto => Verifier::Arti,
            v => v,
        }
    }
}

fn check_body(got: &[u8], n: usize) -> Result<()> {
    if Sha256::digest(got) != Sha256::digest(tornet::traffic::body(n)) {
        bail!(
            "verify: the fetched file's SHA-256 does not match ({} bytes of {n})",
            got.len()
        );
    }
    Ok(())
}

/// C tor: starts a client of `net`, waits for 100 % bootstrap, fetches `n` bytes from
/// `http` through it. Returns the client's index in `net.clients` (it keeps running as
/// the network's SOCKS proxy).
///
/// # Errors
/// A bootstrap or fetch timeout, or a wrong digest.
pub fn with_c_tor(net: &mut TorNet, http: SocketAddr, n: usize) -> Result<usize> {
    let client = net.add_client(&[])?;
    wait_for(
        "the C tor client to bootstrap",
        Duration::from_secs(120),
        Duration::from_secs(1),
        || {
            net.clients[client]
                .control()
                .ok()?
                .getinfo("status/bootstrap-phase")
                .ok()
                .filter(|p| p.contains("PROGRESS=100"))
        },
    )
    .map_err(|e| anyhow!("{e}\nlogs:\n{}", net.log_tails(15)))?;
    let addr = net.socks_addr(client).context("client has no SOCKS port")?;
    let got = wait_for(
        "a fetch through the network",
        Duration::from_secs(120),
        Duration::from_secs(2),
        || tornet::traffic::fetch_via_socks(addr, http, n, Duration::from_secs(30)).ok(),
    )?;
    check_body(&got, n)?;
    Ok(client)
}

/// The `arti.toml` for `net` (see [`Network::arti_toml`]).
pub fn arti_toml(net: &Network) -> String {
    let dir = net.dir.join("arti");
    let mut s = format!(
        "# arti client of the private network in {net_dir}\n\
         [storage]\n\
         cache_dir = \"{cache}\"\n\
         state_dir = \"{state}\"\n\
         # The test network's files are not kept private.\n\
         permissions.dangerously_trust_everyone = true\n\n\
         [tor_network]\n\
         fallback_caches = [\n",
        net_dir = net.dir.display(),
        cache = dir.join("cache").display(),
        state = dir.join("state").display(),
    );
    // Our authorities' ORPorts serve the directory over BEGIN_DIR.
    for n in net.nodes.iter().filter(|n| n.role == "authority") {
        let (Some(ed), Some(or)) = (&n.ed25519, n.or_port) else {
            continue;
        };
        let _ = writeln!(
            s,
            "  {{ rsa_identity = \"{}\", ed_identity = \"{ed}\", orports = [\"127.0.0.1:{or}\"] }},",
            n.fingerprint
        );
    }
    s.push_str("]\n\n[tor_network.authorities]\nv3idents = [\n");
    for n in net.nodes.iter().filter(|n| n.role == "authority") {
        if let Some(v3) = &n.v3ident {
            let _ = writeln!(s, "  \"{v3}\",  # {}", n.nickname);
        }
    }
    s.push_str(
        "]\nuploads = []\ndownloads = []\nvotes = []\n\n\
         # Every relay of this network is on 127.0.0.1: no subnet counts as a family,\n\
         # and streams may go to local addresses.\n\
         [path_rules]\n\
         ipv4_subnet_family_prefix = 33\n\
         ipv6_subnet_family_prefix = 129\n\n\
         [address_filter]\n\
         allow_local_addrs = true\n\n\
         # A network of a few relays that votes every few seconds.\n\
         [override_net_params]\n\
         guard-min-filtered-sample-size = 2\n\
         guard-n-primary-guards-to-use = 1\n\n\
         [download_schedule]\n\
         retry_bootstrap = { attempts = 128, initial_delay = \"1 sec\", parallelism = 2 }\n\
         retry_consensus = { attempts = 10, initial_delay = \"1 sec\", parallelism = 2 }\n\
         retry_certs = { attempts = 10, initial_delay = \"1 sec\", parallelism = 2 }\n\
         retry_microdescs = { attempts = 10, initial_delay = \"1 sec\", parallelism = 2 }\n",
    );
    s
}

/// The embedded arti client: configured from `toml` (the printed `arti.toml`),
/// bootstrapped, then fetches `n` bytes from `http`. Its log goes to `log`.
///
/// # Errors
/// A configuration arti does not accept fully, a bootstrap or fetch timeout, a wrong
/// digest.
pub fn with_arti(toml: &str, http: SocketAddr, n: usize, log: &Path) -> Result<()> {
    use arti_client::config::{ConfigurationSource, ConfigurationSources};
    use tor_config::load::{ConfigResolveOptions, resolve_return_results};

    let mut sources = ConfigurationSources::new_empty();
    sources.push_source(
        ConfigurationSource::from_verbatim(toml.to_owned()),
        tor_config::sources::MustRead::MustRead,
    );
    let tree = sources.load().context("arti.toml does not load")?;
    let resolved = resolve_return_results::<arti_client::TorClientConfig>(
        &tree,
        &ConfigResolveOptions::default(),
    )
    .context("arti does not accept arti.toml")?;
    if !resolved.unrecognized.is_empty() || !resolved.deprecated.is_empty() {
        bail!(
            "arti.toml has keys arti ignores: unrecognized {:?}, deprecated {:?}",
            resolved.unrecognized,
            resolved.deprecated
        );
    }
    let config = resolved.value;

    let file = std::fs::File::create(log).with_context(|| format!("{}", log.display()))?;
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .finish();
    let _log = tracing::subscriber::set_default(subscriber);
    // tor-rtcompat's rustls backend leaves the crypto provider to the application.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let got = rt.block_on(async move {
        let client = arti_client::TorClient::builder()
            .config(config)
            .bootstrap_behavior(arti_client::BootstrapBehavior::Manual)
            .create_unbootstrapped()?;
        tokio::time::timeout(Duration::from_secs(120), client.bootstrap())
            .await
            .map_err(|_| anyhow!("arti did not bootstrap in 120 s (log: {})", log.display()))??;
        // The first circuits may race the consensus that lists the exit; retry, bounded.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            match tokio::time::timeout(Duration::from_secs(30), fetch(&client, http, n)).await {
                Ok(Ok(body)) => return Ok::<_, anyhow::Error>(body),
                Ok(Err(e)) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!("fetch through arti failed, retrying: {e:#}");
                }
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!("fetch through arti timed out, retrying");
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => bail!("fetches through arti kept timing out"),
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })?;
    // Dropping the runtime ends arti's background tasks.
    rt.shutdown_timeout(Duration::from_secs(5));
    check_body(&got, n)
}

async fn fetch<R: tor_rtcompat::Runtime>(
    client: &arti_client::TorClient<R>,
    http: SocketAddr,
    n: usize,
) -> Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = client
        .connect((http.ip().to_string(), http.port()))
        .await
        .context("arti: connect")?;
    stream
        .write_all(format!("GET /bytes/{n} HTTP/1.0\r\nHost: {http}\r\n\r\n").as_bytes())
        .await?;
    stream.flush().await?;
    let mut buf = Vec::with_capacity(n + 256);
    stream.read_to_end(&mut buf).await?;
    let at = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no HTTP header in the reply")?;
    if !buf.starts_with(b"HTTP/1.0 200") {
        bail!("HTTP reply {:?}", String::from_utf8_lossy(&buf[..at]));
    }
    Ok(buf.split_off(at + 4))
}
