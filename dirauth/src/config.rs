//! Configuration of the `dirauth` (DESIGN.md "Observability and config"): a TOML file plus
//! `DIRAUTH__<SECTION>__<KEY>` environment overrides, loaded by [`load`]. Every option has
//! a default, stated on its field; `deploy/config/dirauth.toml` lists them all (a test
//! keeps that file and these defaults identical).
//!
//! The testing options mirror C tor's (`AssumeReachable`, `TestingDirAuthVoteGuard`, …,
//! `V3AuthVotingInterval`), so a private network bootstraps in about a minute.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use proto::RsaIdentity;
use proto_io::{self, Error};
use serde::{Deserialize, Serialize};

/// A configuration error with a message.
pub fn config_error(msg: impl Into<String>) -> Error {
    Error::Config(::config::ConfigError::Message(msg.into()))
}

/// Prefix of environment overrides: `DIRAUTH__DIRPORT__LISTEN=0.0.0.0:7001`.
pub const ENV_PREFIX: &str = "DIRAUTH";

/// Everything a directory authority can be told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory for the authority's keys (`keys/`) and persistent state (`state/`).
    /// Default: `data`, relative to the working directory.
    pub data_dir: PathBuf,
    /// Nickname in `dir-source` lines (1–19 letters or digits). Default: `dirauth`.
    pub nickname: String,
    /// `contact` line of votes and the consensus. Default: `dirauth@example.invalid`.
    pub contact: String,
    /// The directory authorities of the network, this one included, as C tor's
    /// `DirAuthority` lines (the keyword itself optional):
    /// `NICK orport=PORT no-v2 v3ident=HEX40 IP:DIRPORT RELAY-FINGERPRINT`. Default: none
    /// (the authority then runs alone, named by its own key certificate).
    #[serde(deserialize_with = "proto_io::string_or_list")]
    pub authorities: Vec<String>,
    /// Relay key bundle (made by `edge keygen`) of this authority's ORPort; it is the
    /// identity reachability tests authenticate with. Default: unset (tests then use an
    /// identity made up at start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_keys_dir: Option<PathBuf>,
    /// The HTTP directory port.
    pub dirport: DirPort,
    /// The voting schedule.
    pub voting: Voting,
    /// Reachability testing (the Running flag).
    pub reachability: Reachability,
    /// How flags are assigned.
    pub flags: Flags,
    /// What the consensus says besides the relays.
    pub consensus: ConsensusOptions,
    /// Signing-key rotation.
    pub keys: KeyOptions,
    /// The Prometheus endpoint.
    pub metrics: Metrics,
    /// Logging.
    pub log: Log,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("data"),
            nickname: "dirauth".to_owned(),
            contact: "dirauth@example.invalid".to_owned(),
            authorities: Vec::new(),
            relay_keys_dir: None,
            dirport: DirPort::default(),
            voting: Voting::default(),
            reachability: Reachability::default(),
            flags: Flags::default(),
            consensus: ConsensusOptions::default(),
            keys: KeyOptions::default(),
            metrics: Metrics::default(),
            log: Log::default(),
        }
    }
}

/// `[dirport]`: the directory protocol over HTTP (dir-spec §4, §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DirPort {
    /// Address the DirPort listens on. Default: `127.0.0.1:7001`.
    pub listen: SocketAddr,
    /// Address published in `dir-source` lines and the key certificate's `dir-address`;
    /// must equal the `DirAuthority` line's. Default: unset (the listen address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertised: Option<SocketAddrV4>,
    /// ORPort published in `dir-source` lines (the authority's edge). Default: unset (taken
    /// from this authority's `DirAuthority` line, else 9001).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub or_port: Option<u16>,
    /// Most connections served at once; more wait. Default: 256.
    pub max_connections: usize,
    /// Seconds a client has to send its whole request. Default: 30.
    pub request_timeout_secs: u64,
}

impl Default for DirPort {
    fn default() -> Self {
        DirPort {
            listen: SocketAddr::from(([127, 0, 0, 1], 7001)),
            advertised: None,
            or_port: None,
            max_connections: 256,
            request_timeout_secs: 30,
        }
    }
}

/// `[voting]`: the schedule of votes and consensuses (dir-spec §1.4; C tor's
/// `V3AuthVotingInterval`, `V3AuthVoteDelay`, `V3AuthDistDelay`, `V3AuthNIntervalsValid`).
/// All authorities of a network must use the same values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Voting {
    /// Seconds between consensuses; should divide a day. Default: 3600.
    pub interval_secs: u64,
    /// Seconds allowed for votes to spread. Default: 300.
    pub vote_delay_secs: u64,
    /// Seconds allowed for signatures to spread. Default: 300.
    pub dist_delay_secs: u64,
    /// A consensus stays valid for this many intervals. Default: 3.
    pub intervals_valid: u64,
}

impl Default for Voting {
    fn default() -> Self {
        Voting {
            interval_secs: 3600,
            vote_delay_secs: 300,
            dist_delay_secs: 300,
            intervals_valid: 3,
        }
    }
}

/// `[reachability]`: ORPort tests behind the Running flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Reachability {
    /// Vote every relay Running without testing it (C tor's `AssumeReachable`).
    /// Default: false.
    pub assume_reachable: bool,
    /// Seconds between tests of one relay (new descriptors are tested at once).
    /// Default: 1280 (C tor's cycle).
    pub test_interval_secs: u64,
    /// A relay is Running when a test succeeded within this many seconds. Default: 2700.
    pub running_window_secs: u64,
    /// Seconds a test may take (TCP, TLS and link handshake). Default: 20.
    pub timeout_secs: u64,
    /// Tests run at once. Default: 16.
    pub parallel_tests: usize,
}

impl Default for Reachability {
    fn default() -> Self {
        Reachability {
            assume_reachable: false,
            test_interval_secs: 1280,
            running_window_secs: 2700,
            timeout_secs: 20,
            parallel_tests: 16,
        }
    }
}

/// `[flags]`: thresholds and overrides for the flags we vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Flags {
    /// Relays always voted Guard: `*`, nicknames or `$FINGERPRINT`s
    /// (`TestingDirAuthVoteGuard`). Default: none.
    #[serde(deserialize_with = "proto_io::string_or_list")]
    pub vote_guard: Vec<String>,
    /// Relays always voted Exit (`TestingDirAuthVoteExit`). Default: none.
    #[serde(deserialize_with = "proto_io::string_or_list")]
    pub vote_exit: Vec<String>,
    /// Relays always voted HSDir (`TestingDirAuthVoteHSDir`). Default: none.
    #[serde(deserialize_with = "proto_io::string_or_list")]
    pub vote_hsdir: Vec<String>,
    /// Fast needs at least this many bytes/s (C's `FastFlagMinThreshold`; 0 in test
    /// networks). Default: 4.
    pub fast_min_bytes: u64,
    /// Seconds of uptime an HSDir needs (C's `MinUptimeHidServDirectoryV2`). Default: 345600.
    pub hsdir_min_uptime_secs: u64,
    /// A relay up this long is Stable whatever the others' uptimes (C's
    /// `AuthDirVoteStableGuaranteeMinUptime`; 0 makes every relay Stable, which test
    /// networks want: C tor clients only take Stable relays as guards). Default: 2592000.
    pub stable_guarantee_uptime_secs: u64,
    /// Accept descriptors with private addresses and count private networks in exit
    /// policies (C's `DirAllowPrivateAddresses`; needed on 127.0.0.1). Default: false.
    pub allow_private_addresses: bool,
}

impl Default for Flags {
    fn default() -> Self {
        Flags {
            vote_guard: Vec::new(),
            vote_exit: Vec::new(),
            vote_hsdir: Vec::new(),
            fast_min_bytes: 4,
            hsdir_min_uptime_secs: 96 * 3600,
            stable_guarantee_uptime_secs: 30 * 86400,
            allow_private_addresses: false,
        }
    }
}

/// `[consensus]`: parameters and version lists we vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsensusOptions {
    /// `params` entries, `key=value` (int32). Never list two keys where one is a prefix of
    /// the other followed by `-` (C tor and stem disagree on their order). Default: none.
    #[serde(deserialize_with = "proto_io::string_or_list")]
    pub params: Vec<String>,
    /// Recommended client versions (C tor aborts on a consensus without the line, stem
    /// refuses an empty one). Default: `["0.4.9.11"]`.
    #[serde(deserialize_with = "proto_io::string_or_list")]
    pub client_versions: Vec<String>,
    /// Recommended relay versions. Default: `["0.4.9.11"]`.
    #[serde(deserialize_with = "proto_io::string_or_list")]
    pub server_versions: Vec<String>,
}

impl Default for ConsensusOptions {
    fn default() -> Self {
        ConsensusOptions {
            params: Vec::new(),
            client_versions: vec!["0.4.9.11".to_owned()],
            server_versions: vec!["0.4.9.11".to_owned()],
        }
    }
}

/// `[keys]`: rotation of the medium-term signing key (dir-spec §3.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyOptions {
    /// Renew the signing key this many days before its certificate expires (when the
    /// identity key is in `<data_dir>/keys`; otherwise warn). Default: 30.
    pub renew_before_days: u64,
    /// Lifetime of a renewed certificate, days. Default: 365.
    pub lifetime_days: u64,
}

impl Default for KeyOptions {
    fn default() -> Self {
        KeyOptions {
            renew_before_days: 30,
            lifetime_days: 365,
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
    let c: Config = proto_io::load_config(file, env, ENV_PREFIX)?;
    c.check()?;
    Ok(c)
}

/// One configured directory authority (a `DirAuthority` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorityLine {
    /// Nickname.
    pub nickname: String,
    /// v3 identity.
    pub v3ident: RsaIdentity,
    /// DirPort address.
    pub dir_addr: SocketAddrV4,
    /// ORPort.
    pub or_port: u16,
    /// The authority's relay fingerprint.
    pub relay_id: RsaIdentity,
}

impl AuthorityLine {
    /// Parses `[DirAuthority] NICK [flags…] v3ident=HEX IP:PORT FP[ FP…]`.
    ///
    /// # Errors
    /// [`Error::Config`] naming what is wrong.
    pub fn parse(line: &str) -> Result<Self, Error> {
        let bad = |w: &str| config_error(format!("authority line `{line}`: {w}"));
        let mut words = line.split_whitespace().peekable();
        if words.peek() == Some(&"DirAuthority") {
            words.next();
        }
        let nickname = words.next().ok_or_else(|| bad("empty"))?.to_owned();
        let (mut v3, mut addr, mut or_port) = (None, None, 0u16);
        let mut fp = String::new();
        for w in words {
            if let Some(h) = w.strip_prefix("v3ident=") {
                v3 = hex::decode(h)
                    .ok()
                    .and_then(|b| RsaIdentity::from_bytes(&b));
            } else if let Some(p) = w.strip_prefix("orport=") {
                or_port = p.parse().map_err(|_| bad("bad orport"))?;
            } else if w.contains('=') || w == "no-v2" || w == "v3" || w == "bridge" {
            } else if addr.is_none() {
                addr = Some(
                    w.parse::<SocketAddrV4>()
                        .map_err(|_| bad("bad IP:DirPort"))?,
                );
            } else {
                fp.push_str(w);
            }
        }
        let relay_id = hex::decode(&fp)
            .ok()
            .and_then(|b| RsaIdentity::from_bytes(&b))
            .ok_or_else(|| bad("bad relay fingerprint"))?;
        Ok(AuthorityLine {
            nickname,
            v3ident: v3.ok_or_else(|| bad("missing v3ident=HEX40"))?,
            dir_addr: addr.ok_or_else(|| bad("missing IP:DirPort"))?,
            or_port,
            relay_id,
        })
    }
}

impl Config {
    /// The configured authorities.
    ///
    /// # Errors
    /// The first malformed line.
    pub fn authority_lines(&self) -> Result<Vec<AuthorityLine>, Error> {
        self.authorities
            .iter()
            .map(|l| AuthorityLine::parse(l))
            .collect()
    }

    fn check(&self) -> Result<(), Error> {
        let bad = |w: &str| Err(config_error(w));
        if !proto::netdoc::routerdesc::nickname_ok(&self.nickname) {
            return bad("nickname must be 1-19 letters or digits");
        }
        if !self.contact.is_ascii() || self.contact.contains(['\n', '\r']) {
            return bad("contact must be one line of ASCII");
        }
        let v = &self.voting;
        if v.interval_secs < 10 || v.vote_delay_secs < 2 || v.dist_delay_secs < 2 {
            return bad("voting: interval must be at least 10 s and each delay at least 2 s");
        }
        if v.vote_delay_secs + v.dist_delay_secs >= v.interval_secs / 2 {
            return bad(
                "voting: vote_delay_secs + dist_delay_secs must be less than half the interval",
            );
        }
        if v.intervals_valid < 2 {
            return bad("voting: intervals_valid must be at least 2");
        }
        for p in &self.consensus.params {
            let ok = p
                .split_once('=')
                .is_some_and(|(k, v)| !k.is_empty() && v.parse::<i32>().is_ok());
            if !ok {
                return Err(config_error(format!("consensus.params: bad entry `{p}`")));
            }
        }
        for v in self
            .consensus
            .client_versions
            .iter()
            .chain(&self.consensus.server_versions)
        {
            if v.is_empty()
                || v.contains([' ', ','])
                || !v.starts_with(|c: char| c.is_ascii_digit())
            {
                return Err(config_error(format!("consensus: bad version `{v}`")));
            }
        }
        if self.consensus.client_versions.is_empty() || self.consensus.server_versions.is_empty() {
            return bad("consensus: client_versions and server_versions must not be empty");
        }
        self.authority_lines()?;
        Ok(())
    }

    /// The address put in `dir-source` lines and the certificate.
    pub fn advertised_dir_addr(&self) -> SocketAddrV4 {
        self.dirport
            .advertised
            .unwrap_or(match self.dirport.listen {
                SocketAddr::V4(a) => a,
                SocketAddr::V6(a) => SocketAddrV4::new(Ipv4Addr::LOCALHOST, a.port()),
            })
    }
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
        let line = "auth0 orport=5000 no-v2 v3ident=8E14B1BEEF844CB9C47E4C237EFF746B1353C398 127.0.0.1:7001 BA0701D2755DC98CB859B31D806FE356F9994260";
        let env = HashMap::from(
            [
                ("DIRAUTH__DATA_DIR", "/var/lib/dirauth"),
                ("DIRAUTH__NICKNAME", "auth0"),
                ("DIRAUTH__AUTHORITIES", line),
                ("DIRAUTH__DIRPORT__LISTEN", "0.0.0.0:80"),
                ("DIRAUTH__VOTING__INTERVAL_SECS", "20"),
                ("DIRAUTH__VOTING__VOTE_DELAY_SECS", "3"),
                ("DIRAUTH__VOTING__DIST_DELAY_SECS", "3"),
                ("DIRAUTH__REACHABILITY__ASSUME_REACHABLE", "true"),
                ("DIRAUTH__FLAGS__VOTE_GUARD", "*"),
                (
                    "DIRAUTH__CONSENSUS__PARAMS",
                    "circwindow=1000,refuseunknownexits=1",
                ),
                ("DIRAUTH__METRICS__LISTEN", "0.0.0.0:9103"),
                ("DIRAUTH__LOG__FILTER", "debug"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        let c = load(Some(&example()), &env).unwrap();
        assert_eq!(c.data_dir, Path::new("/var/lib/dirauth"));
        assert_eq!(c.dirport.listen, "0.0.0.0:80".parse().unwrap());
        assert_eq!(c.voting.interval_secs, 20);
        assert!(c.reachability.assume_reachable);
        assert_eq!(c.flags.vote_guard, ["*"]);
        assert_eq!(c.consensus.params.len(), 2);
        assert_eq!(c.metrics.listen, "0.0.0.0:9103".parse().unwrap());
        assert_eq!(c.log.filter, "debug");
        let a = &c.authority_lines().unwrap()[0];
        assert_eq!(a.nickname, "auth0");
        assert_eq!(a.or_port, 5000);
        assert_eq!(a.dir_addr, "127.0.0.1:7001".parse().unwrap());
        assert_eq!(
            a.relay_id.to_hex(),
            "BA0701D2755DC98CB859B31D806FE356F9994260"
        );
    }

    #[test]
    fn bad_values_are_refused() {
        for (k, v) in [
            ("DIRAUTH__NICKNAME", "has space"),
            ("DIRAUTH__VOTING__INTERVAL_SECS", "5"),
            ("DIRAUTH__VOTING__VOTE_DELAY_SECS", "2000"),
            ("DIRAUTH__CONSENSUS__PARAMS", "circwindow"),
            ("DIRAUTH__CONSENSUS__CLIENT_VERSIONS", "Tor 0.4.9"),
            ("DIRAUTH__AUTHORITIES", "auth0 127.0.0.1:7001 NOTHEX"),
        ] {
            let env = HashMap::from([(k.to_owned(), v.to_owned())]);
            assert!(load(None, &env).is_err(), "{k}={v}");
        }
    }
}
