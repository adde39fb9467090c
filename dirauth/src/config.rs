//! Configuration of the `dirauth` (DESIGN.md "Observability and config"): a TOML file plus
//! `DIRAUTH__<SECTION>__<KEY>` environment overrides, loaded by [`load`]. Every option has
//! a default, stated on its field; `deploy/config/dirauth.toml` lists them all (a test
//! keeps that file and these defaults identical).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use proto::runtime::{self, Error};
use serde::{Deserialize, Serialize};

/// Prefix of environment overrides: `DIRAUTH__DIRPORT__LISTEN=0.0.0.0:7001`.
pub const ENV_PREFIX: &str = "DIRAUTH";

/// Everything a directory authority can be told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory for the authority's keys and persistent state (descriptors, votes,
    /// consensus history). Default: `data`, relative to the working directory.
    pub data_dir: PathBuf,
    /// The HTTP directory port.
    pub dirport: DirPort,
    /// The Prometheus endpoint.
    pub metrics: Metrics,
    /// Logging.
    pub log: Log,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("data"),
            dirport: DirPort::default(),
            metrics: Metrics::default(),
            log: Log::default(),
        }
    }
}

/// `[dirport]`: the directory protocol over HTTP (dir-spec).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DirPort {
    /// Address the DirPort listens on. Default: `127.0.0.1:7001`.
    pub listen: SocketAddr,
}

impl Default for DirPort {
    fn default() -> Self {
        DirPort {
            listen: SocketAddr::from(([127, 0, 0, 1], 7001)),
        }
    }
}

/// `[metrics]`: the Prometheus scrape endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Metrics {
    /// Address serving `GET /metrics`. Default: `127.0.0.1:9103`.
    pub listen: SocketAddr,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            listen: SocketAddr::from(([127, 0, 0, 1], 9103)),
        }
    }
}

/// `[log]`: what gets logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// `tracing` filter, e.g. `info,dirauth=debug`; `RUST_LOG` wins when set.
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

/// Loads the configuration: defaults, then `file` (TOML, if given), then the `DIRAUTH__…`
/// entries of `env`.
///
/// # Errors
/// [`Error::Config`] for a missing or malformed file, an unknown key or a bad value.
pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Config, Error> {
    runtime::load_config(file, env, ENV_PREFIX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn example() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/dirauth.toml")
    }

    #[test]
    fn example_file_states_exactly_the_defaults() {
        let loaded = load(Some(&example()), &HashMap::new()).unwrap();
        assert_eq!(loaded, Config::default());
        let text = std::fs::read_to_string(example()).unwrap();
        let defaults = runtime::to_toml(&Config::default()).unwrap();
        for line in defaults.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                text.lines().any(|l| l.trim() == line),
                "example lacks `{line}`"
            );
        }
    }

    #[test]
    fn env_overrides_reach_every_section() {
        let env = HashMap::from(
            [
                ("DIRAUTH__DATA_DIR", "/var/lib/dirauth"),
                ("DIRAUTH__DIRPORT__LISTEN", "0.0.0.0:80"),
                ("DIRAUTH__METRICS__LISTEN", "0.0.0.0:9103"),
                ("DIRAUTH__LOG__FILTER", "debug"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        let c = load(Some(&example()), &env).unwrap();
        assert_eq!(c.data_dir, Path::new("/var/lib/dirauth"));
        assert_eq!(c.dirport.listen, "0.0.0.0:80".parse().unwrap());
        assert_eq!(c.metrics.listen, "0.0.0.0:9103".parse().unwrap());
        assert_eq!(c.log.filter, "debug");
    }
}
