//! Configuration of the `circuit-worker` (DESIGN.md "Observability and config"): a TOML
//! file plus `CIRCUIT_WORKER__<SECTION>__<KEY>` environment overrides, loaded by [`load`].
//! Every option has a default, stated on its field; `deploy/config/circuit-worker.toml`
//! lists them all (a test keeps that file and these defaults identical).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use proto_io::{self, Error};
use serde::{Deserialize, Serialize};

/// Prefix of environment overrides: `CIRCUIT_WORKER__GRPC__LISTEN=0.0.0.0:9201`.
pub const ENV_PREFIX: &str = "CIRCUIT_WORKER";

/// Everything a circuit worker can be told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Number of shard actors, each owning a share of the circuits. Default: `0`, meaning
    /// one per available core (see [`Config::effective_shards`]).
    pub shards: u32,
    /// Threads of the I/O runtime (the edge links' gRPC and TLS, metrics). With more than
    /// one, the shards and their exit sockets run on threads of their own; with `1`,
    /// everything (I/O, shards, exit sockets) runs on one thread, which saves the
    /// cross-thread wakes when the worker shares a small machine. Default: `0`, one per
    /// available core.
    pub io_threads: u32,
    /// Directory holding the relay key bundle (the ntor onion keys, current and previous).
    /// Default: `keys`, relative to the working directory.
    pub keys_dir: PathBuf,
    /// The gRPC service the edges connect to.
    pub grpc: Grpc,
    /// Exit policy lines in Tor syntax, first match wins; must equal the edges'
    /// `exit_policy`, which they publish. Default: `["reject *:*"]` (not an exit).
    #[serde(deserialize_with = "proto_io::string_or_list")]
    pub exit_policy: Vec<String>,
    /// Reject loopback, RFC 1918, link-local and other private ranges before the policy
    /// (C tor's ExitPolicyRejectPrivate). Default: true.
    pub exit_policy_reject_private: bool,
    /// Seconds to resolve and connect an exit stream. Default: 10.
    pub connect_timeout_secs: u64,
    /// Seconds an exit or directory stream's destination may take none of the data
    /// queued for it before the stream ends (END TIMEOUT). With stream SENDMEs held back
    /// until data is written, at most one stream window (500 cells) waits. Default: 120.
    pub stream_write_timeout_secs: u64,
    /// `host:port` of a directory server's DirPort (an authority or cache) that BEGIN_DIR
    /// streams are relayed to. Default: unset (BEGIN_DIR is refused with NOTDIRECTORY);
    /// set it together with the edges' `tunnelled_dir_server`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir_backend: Option<String>,
    /// Queue bounds.
    pub limits: Limits,
    /// Mutual TLS on the links from the edges.
    pub cluster_tls: proto_io::cluster_tls::Settings,
    /// The Prometheus endpoint.
    pub metrics: Metrics,
    /// Logging.
    pub log: Log,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            shards: 0,
            io_threads: 0,
            keys_dir: PathBuf::from("keys"),
            grpc: Grpc::default(),
            exit_policy: vec!["reject *:*".to_owned()],
            exit_policy_reject_private: true,
            connect_timeout_secs: 10,
            stream_write_timeout_secs: 120,
            dir_backend: None,
            limits: Limits::default(),
            cluster_tls: proto_io::cluster_tls::Settings::default(),
            metrics: Metrics::default(),
            log: Log::default(),
        }
    }
}

impl Config {
    /// The number of shards to run: `shards`, or the available parallelism (at least 1)
    /// when `shards` is 0.
    pub fn effective_shards(&self) -> usize {
        match self.shards {
            0 => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
            n => usize::try_from(n).unwrap_or(usize::MAX),
        }
    }
}

/// `[grpc]`: the edge-facing service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Grpc {
    /// Address the gRPC service listens on. Default: `127.0.0.1:9201`.
    pub listen: SocketAddr,
    /// Also serve edges on the same host (or pod) on this Unix socket, dialled as
    /// `unix:PATH` in the edge's `workers`. No TLS on it: the socket is made `0600`, and a
    /// peer whose uid is not the socket's owner is refused, so only processes of the
    /// worker's own user get in. It saves the loopback TCP and TLS work of every cell.
    /// Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unix_listen: Option<PathBuf>,
}

impl Default for Grpc {
    fn default() -> Self {
        Grpc {
            listen: SocketAddr::from(([127, 0, 0, 1], 9201)),
            unix_listen: None,
        }
    }
}

/// `[limits]`: queue bounds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Ceiling in bytes on the data queued toward exit and directory destinations (C tor's
    /// MaxMemInQueues): past it, the circuits whose queued data is oldest are ended until
    /// 90 % of it remains. Default: 0, meaning C tor's sizing for this machine's RAM (75 %
    /// below 8 GiB, 40 % from 8 GiB up, between 256 MiB and 8 GiB).
    pub max_mem_in_queues: u64,
}

/// `[metrics]`: the Prometheus scrape endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Metrics {
    /// Address serving `GET /metrics`. Default: `127.0.0.1:9102`.
    pub listen: SocketAddr,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            listen: SocketAddr::from(([127, 0, 0, 1], 9102)),
        }
    }
}

/// `[log]`: what gets logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// `tracing` filter, e.g. `info,circuit_worker=debug`; `RUST_LOG` wins when set.
    /// Default: `info`.
    pub filter: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            filter: "info".to_owned(),
        }
    }
}

/// Loads the configuration: defaults, then `file` (TOML, if given), then the
/// `CIRCUIT_WORKER__…` entries of `env`.
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
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/circuit-worker.toml")
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn example_file_states_exactly_the_defaults() {
        let loaded = load(Some(&example()), &HashMap::new()).unwrap();
        assert_eq!(loaded, Config::default());
        let text = std::fs::read_to_string(example()).unwrap();
        let defaults = proto_io::to_toml(&Config::default()).unwrap();
        for line in defaults.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                text.lines().any(|l| l.trim() == line),
                "example lacks `{line}`"
            );
        }
    }

    #[test]
    fn env_overrides_reach_every_section() {
        let c = load(
            Some(&example()),
            &env(&[
                ("CIRCUIT_WORKER__SHARDS", "6"),
                ("CIRCUIT_WORKER__KEYS_DIR", "/run/secrets/relay"),
                ("CIRCUIT_WORKER__GRPC__LISTEN", "0.0.0.0:9201"),
                ("CIRCUIT_WORKER__METRICS__LISTEN", "0.0.0.0:9102"),
                ("CIRCUIT_WORKER__LOG__FILTER", "debug"),
            ]),
        )
        .unwrap();
        assert_eq!(c.shards, 6);
        assert_eq!(c.effective_shards(), 6);
        assert_eq!(c.keys_dir, Path::new("/run/secrets/relay"));
        assert_eq!(c.grpc.listen, "0.0.0.0:9201".parse().unwrap());
        assert_eq!(c.metrics.listen, "0.0.0.0:9102".parse().unwrap());
        assert_eq!(c.log.filter, "debug");
    }

    #[test]
    fn zero_shards_means_one_per_core() {
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        assert_eq!(Config::default().effective_shards(), cores);
        assert!(load(None, &env(&[("CIRCUIT_WORKER__SHARDS", "-2")])).is_err());
    }
}
