//! Configuration of the `edge` (DESIGN.md "Observability and config"): a TOML file plus
//! `EDGE__<SECTION>__<KEY>` environment overrides, loaded by [`load`]. Every option has a
//! default, stated on its field; `deploy/config/edge.toml` lists them all (a test keeps
//! that file and these defaults identical).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use proto_io::{self, Error};
use serde::{Deserialize, Serialize};

/// Prefix of environment overrides: `EDGE__ORPORT__LISTEN=0.0.0.0:9001`.
pub const ENV_PREFIX: &str = "EDGE";

/// Everything an edge can be told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC URLs of the circuit workers, e.g. `["https://worker-0:9201"]` (`http://` only
    /// with `cluster_tls.insecure_plaintext`), or `unix:PATH` for a worker on this host
    /// serving `grpc.unix_listen` (no TLS; the socket admits only its owner's uid).
    /// Default: empty (no workers). As an environment override, comma-separated.
    #[serde(deserialize_with = "proto_io::string_or_list")]
    pub workers: Vec<String>,
    /// Directory holding the relay key bundle (certificates and the Ed25519 signing key).
    /// Default: `keys`, relative to the working directory.
    pub keys_dir: PathBuf,
    /// The relay's nickname in its descriptor (1–19 characters `[A-Za-z0-9]`).
    /// Default: `Unnamed`.
    pub nickname: String,
    /// Threads of the runtime that runs the channels and worker links; `1` runs all of
    /// them on one thread (no cross-thread wakes, best when the edge shares a small
    /// machine). Default: `0`, one per available core.
    pub io_threads: u32,
    /// The Tor-facing ORPort.
    pub orport: OrPort,
    /// Descriptor publication.
    pub directory: Directory,
    /// Queue bounds.
    pub limits: Limits,
    /// Mutual TLS on the links to the workers.
    pub cluster_tls: proto_io::cluster_tls::Settings,
    /// The Prometheus endpoint.
    pub metrics: Metrics,
    /// Logging.
    pub log: Log,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: Vec::new(),
            keys_dir: PathBuf::from("keys"),
            nickname: "Unnamed".to_owned(),
            io_threads: 0,
            orport: OrPort::default(),
            directory: Directory::default(),
            limits: Limits::default(),
            cluster_tls: proto_io::cluster_tls::Settings::default(),
            metrics: Metrics::default(),
            log: Log::default(),
        }
    }
}

/// `[orport]`: where Tor clients and relays connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrPort {
    /// Address the ORPort listens on. Default: `127.0.0.1:9001`.
    pub listen: SocketAddr,
    /// Address published in the descriptor and NETINFO cells, when it differs from
    /// `listen` (behind a load balancer or NAT). Default: unset, meaning `listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertised_address: Option<SocketAddr>,
    /// Seconds a peer has to finish TLS and the link handshake. Default: 30.
    pub handshake_timeout_secs: u64,
    /// Seconds a channel to a client (or an unauthenticated peer) stays open once it has
    /// no circuits; each channel waits this plus a random part of up to half again, as C
    /// tor (180–270 s). A channel with circuits is never closed for being quiet.
    /// Default: 180.
    pub idle_timeout_secs: u64,
    /// Seconds a channel to a relay stays open once it has no circuits; each channel
    /// waits 0.75× to 1.25× this, as C tor (`nf_conntimeout_relays`: 45–75 min).
    /// Default: 3600.
    pub relay_idle_timeout_secs: u64,
    /// Seconds without a write after which a channel sends a PADDING cell (C tor's
    /// KeepalivePeriod). Default: 300.
    pub keepalive_secs: u64,
    /// Seconds queued cells may make no write progress before the channel is closed as
    /// stuck (C tor: 10 × KeepalivePeriod). Default: 3000.
    pub write_timeout_secs: u64,
    /// Most connections open at once; more are refused. Default: 4096.
    pub max_channels: usize,
    /// Seconds between rotations of this process's TLS link key and certificate (open
    /// channels keep theirs). Default: 7200, as C tor.
    pub tls_rotation_secs: u64,
}

impl Default for OrPort {
    fn default() -> Self {
        OrPort {
            listen: SocketAddr::from(([127, 0, 0, 1], 9001)),
            advertised_address: None,
            handshake_timeout_secs: 30,
            idle_timeout_secs: 180,
            relay_idle_timeout_secs: 3600,
            keepalive_secs: 300,
            write_timeout_secs: 3000,
            max_channels: 4096,
            tls_rotation_secs: 7200,
        }
    }
}

/// `[directory]`: where and how this relay publishes its server descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Directory {
    /// DirPort addresses (`host:port`) of the directory authorities to upload the
    /// descriptor to with `POST /tor/`. Default: empty (publish nothing). As an environment
    /// override, comma-separated.
    #[serde(deserialize_with = "proto_io::string_or_list")]
    pub authorities: Vec<String>,
    /// Whether this edge publishes the descriptor. In a fleet, one edge publishing is
    /// enough; any edge can. Default: true.
    pub publish: bool,
    /// Seconds between re-uploads of an unchanged descriptor (C tor republishes at least
    /// every 18 hours). Default: 64800.
    pub republish_secs: u64,
    /// Seconds before retrying an authority that did not accept the descriptor. Default: 60.
    pub retry_secs: u64,
    /// Advertised average bandwidth, bytes per second (descriptor `bandwidth` line).
    /// Default: 1048576.
    pub bandwidth_rate: u64,
    /// Advertised burst bandwidth, bytes per second. Default: 2097152.
    pub bandwidth_burst: u64,
    /// Operator contact for the descriptor's `contact` line. Default: empty (omitted).
    pub contact: String,
    /// Include the legacy TAP `onion-key` and its crosscert (C tor 0.4.9 authorities before
    /// 0.4.9.12 require them). Default: true.
    pub publish_tap_key: bool,
    /// Exit policy lines in Tor syntax, first match wins, published in the descriptor; the
    /// circuit workers must enforce the same. Default: `["reject *:*"]` (not an exit).
    #[serde(deserialize_with = "proto_io::string_or_list")]
    pub exit_policy: Vec<String>,
    /// Publish rejections of private ranges before the policy (C tor's
    /// ExitPolicyRejectPrivate). Default: true.
    pub exit_policy_reject_private: bool,
    /// Advertise `tunnelled-dir-server`: our workers relay BEGIN_DIR to a directory backend
    /// (their `dir_backend`). Needed for the V2Dir flag, and so for C tor clients to use
    /// the relay as a guard. Default: false.
    pub tunnelled_dir_server: bool,
    /// File to which the current descriptor is written, exactly as uploaded. Default:
    /// unset (not written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub descriptor_path: Option<PathBuf>,
}

impl Default for Directory {
    fn default() -> Self {
        Directory {
            authorities: Vec::new(),
            publish: true,
            republish_secs: 18 * 3600,
            retry_secs: 60,
            bandwidth_rate: 1 << 20,
            bandwidth_burst: 2 << 20,
            contact: String::new(),
            publish_tap_key: true,
            exit_policy: vec!["reject *:*".to_owned()],
            exit_policy_reject_private: true,
            tunnelled_dir_server: false,
            descriptor_path: None,
        }
    }
}

/// `[limits]`: how much a peer can make this process queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Bytes of queued cells, over all channels, above which the circuits with the oldest
    /// queued cells are destroyed (RESOURCELIMIT) until 90 % remain (C tor's
    /// MaxMemInQueues). 0 means C tor's default for this machine: 75 % of RAM (40 % from
    /// 8 GiB up), between 256 MiB and 8 GiB. C tor raises relay values under 64 MiB to 64 MiB;
    /// we take them (test networks use small ceilings) and log a warning. Default: 0.
    pub max_mem_in_queues: u64,
    /// Cells one circuit may have queued toward one channel; one more destroys the circuit
    /// (RESOURCELIMIT), as C tor's `circ_max_cell_queue_size` (at least 50). Default: 2500.
    pub circ_max_cell_queue_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_mem_in_queues: 0,
            circ_max_cell_queue_size: proto::circuitmux::DEFAULT_MAX_CIRCUIT_QUEUE,
        }
    }
}

/// `[metrics]`: the Prometheus scrape endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Metrics {
    /// Address serving `GET /metrics`. Default: `127.0.0.1:9101`.
    pub listen: SocketAddr,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            listen: SocketAddr::from(([127, 0, 0, 1], 9101)),
        }
    }
}

/// `[log]`: what gets logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// `tracing` filter, e.g. `info,edge=debug`; `RUST_LOG` wins when set. Default: `info`.
    pub filter: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            filter: "info".to_owned(),
        }
    }
}

/// Loads the configuration: defaults, then `file` (TOML, if given), then the `EDGE__…`
/// entries of `env`.
///
/// # Errors
/// [`Error::Config`] for a missing or malformed file, an unknown key or a bad value.
pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Config, Error> {
    proto_io::load_config(file, env, ENV_PREFIX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn example() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/edge.toml")
    }

    #[test]
    fn example_file_states_exactly_the_defaults() {
        let loaded = load(Some(&example()), &HashMap::new()).unwrap();
        assert_eq!(loaded, Config::default());
        // Every default, as check-config prints it, appears verbatim in the example.
        let text = std::fs::read_to_string(example()).unwrap();
        let defaults = proto_io::to_toml(&Config::default()).unwrap();
        for line in defaults.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                text.lines().any(|l| l.trim() == line),
                "example lacks `{line}`"
            );
        }
        // Options without a default value are documented (commented out) too.
        assert!(text.contains("# advertised_address = "));
    }

    #[test]
    fn env_overrides_reach_every_section() {
        let env = HashMap::from(
            [
                ("EDGE__ORPORT__LISTEN", "0.0.0.0:443"),
                ("EDGE__ORPORT__ADVERTISED_ADDRESS", "198.51.100.4:443"),
                ("EDGE__METRICS__LISTEN", "0.0.0.0:9101"),
                ("EDGE__WORKERS", "https://w0:9201,https://w1:9201"),
                ("EDGE__CLUSTER_TLS__INSECURE_PLAINTEXT", "true"),
                ("EDGE__LOG__FILTER", "debug"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        let c = load(Some(&example()), &env).unwrap();
        assert_eq!(c.orport.listen, "0.0.0.0:443".parse().unwrap());
        assert_eq!(
            c.orport.advertised_address,
            Some("198.51.100.4:443".parse().unwrap())
        );
        assert_eq!(c.metrics.listen, "0.0.0.0:9101".parse().unwrap());
        assert_eq!(c.workers, ["https://w0:9201", "https://w1:9201"]);
        assert!(c.cluster_tls.insecure_plaintext);
        assert_eq!(c.log.filter, "debug");
    }
}
