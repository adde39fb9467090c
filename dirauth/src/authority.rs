//! The authority's state machine, without I/O: what it knows about relays, the votes of
//! the current round, the consensus it computed and the signatures on it, and what it
//! published. The binary's tasks (DirPort, voting schedule, reachability tests) call into
//! it with the current time and carry out the network side.
//!
//! Invariants:
//! - A descriptor is stored only after [`ServerDescriptor::parse`] checked both signatures
//!   and every certificate, and its times are acceptable; a rejected one leaves no trace.
//! - One round (one valid-after) at a time; a vote for another valid-after is refused.
//! - A consensus is published only with good signatures from more than half of the
//!   configured authorities (C tor clients need the same).
//! - Memory is bounded: relays ([`MAX_RELAYS`]), queued signature documents
//!   ([`MAX_QUEUED_SIGNATURES`]), one previous descriptor per relay.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use proto::netdoc::authcert::AuthCert;
use proto::netdoc::consensus::{
    CONSENSUS_METHODS, Consensus, DetachedSignatures, DocSignature, Flavor, ProtocolLines,
    SignedConsensus, Vote, VoteEntry, assemble, lower_median,
};
use proto::netdoc::microdesc::Microdesc;
use proto::netdoc::policy::{PolicyRule, summarize};
use proto::netdoc::routerdesc::{ServerDescriptor, split_upload};
use proto::{Ed25519Identity, RsaIdentity};

use crate::config::{AuthorityLine, Config, Flags, Reachability};
use crate::keys::AuthorityKeys;

/// Most relays remembered.
pub const MAX_RELAYS: usize = 20_000;
/// Most signature documents queued before our consensus exists.
pub const MAX_QUEUED_SIGNATURES: usize = 64;
/// A descriptor older than this is dropped (C: `ROUTER_MAX_AGE_TO_PUBLISH`).
pub const MAX_DESC_AGE: u64 = 24 * 3600;
/// A descriptor older than this gets StaleDesc.
pub const STALE_DESC_AGE: u64 = 18 * 3600;

const KNOWN_FLAGS: &[&str] = &[
    "Authority",
    "Exit",
    "Fast",
    "Guard",
    "HSDir",
    "Running",
    "Stable",
    "StaleDesc",
    "V2Dir",
    "Valid",
];

/// What the authority was told at start.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Our nickname.
    pub nickname: String,
    /// Our contact line.
    pub contact: String,
    /// Our DirPort address as published.
    pub dir_addr: SocketAddrV4,
    /// Our ORPort as published.
    pub or_port: u16,
    /// Every configured authority but us.
    pub peers: Vec<AuthorityLine>,
    /// Number of configured authorities, us included.
    pub n_authorities: usize,
    /// Relay identities of the configured authorities (the Authority flag).
    pub authority_relays: HashSet<RsaIdentity>,
    /// Voting interval, delays and validity.
    pub interval: u64,
    /// Vote delay.
    pub vote_delay: u64,
    /// Distribution delay.
    pub dist_delay: u64,
    /// Intervals a consensus stays valid.
    pub intervals_valid: u64,
    /// Reachability options.
    pub reach: Reachability,
    /// Flag options.
    pub flags: Flags,
    /// Params we vote.
    pub params: BTreeMap<String, i32>,
    /// Client versions we recommend.
    pub client_versions: String,
    /// Relay versions we recommend.
    pub server_versions: String,
}

impl Settings {
    /// Derives the settings from the configuration and our certificate.
    ///
    /// # Errors
    /// A message when the authority list does not include us.
    pub fn from_config(c: &Config, cert: &AuthCert) -> Result<Self, String> {
        let lines = c.authority_lines().map_err(|e| e.to_string())?;
        let me = lines.iter().find(|l| l.v3ident == cert.v3ident);
        if !lines.is_empty() && me.is_none() {
            return Err(format!(
                "this authority's v3ident {} is not in `authorities`",
                cert.v3ident.to_hex()
            ));
        }
        let or_port = c
            .dirport
            .or_port
            .or(me.map(|m| m.or_port).filter(|&p| p != 0))
            .unwrap_or(9001);
        let params = c
            .consensus
            .params
            .iter()
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect();
        Ok(Settings {
            nickname: c.nickname.clone(),
            contact: c.contact.clone(),
            dir_addr: c.advertised_dir_addr(),
            or_port,
            peers: lines
                .iter()
                .filter(|l| l.v3ident != cert.v3ident)
                .cloned()
                .collect(),
            n_authorities: lines.len().max(1),
            authority_relays: lines.iter().map(|l| l.relay_id).collect(),
            interval: c.voting.interval_secs,
            vote_delay: c.voting.vote_delay_secs,
            dist_delay: c.voting.dist_delay_secs,
            intervals_valid: c.voting.intervals_valid,
            reach: c.reachability.clone(),
            flags: c.flags.clone(),
            params,
            client_versions: c.consensus.client_versions.join(","),
            server_versions: c.consensus.server_versions.join(","),
        })
    }

    /// The next valid-after strictly after `now` (intervals counted from midnight UTC,
    /// as C tor's `voting_sched_get_start_of_interval_after`).
    pub fn next_valid_after(&self, now: u64) -> u64 {
        let iv = self.interval.max(1);
        let midnight = now - now % 86400;
        let mut next = midnight + ((now - midnight) / iv + 1) * iv;
        if next + iv / 2 > midnight + 86400 {
            next = midnight + 86400;
        }
        next
    }

    /// Times of the steps leading to `valid_after`: vote, fetch missing votes, compute,
    /// fetch missing signatures.
    pub fn schedule(&self, valid_after: u64) -> [u64; 4] {
        let (v, d) = (self.vote_delay, self.dist_delay);
        [
            valid_after - d - v,
            valid_after - d - v / 2,
            valid_after - d,
            valid_after - d / 2,
        ]
    }
}

/// One relay we know.
#[derive(Clone, Debug)]
pub struct Relay {
    /// Its current descriptor.
    pub desc: ServerDescriptor,
    /// The exit-policy summary.
    pub summary: String,
    /// Its microdescriptor.
    pub md: Microdesc,
    /// The descriptor and microdescriptor it replaced (a consensus may still name them).
    pub previous: Option<(ServerDescriptor, Microdesc)>,
    /// When we first saw this identity.
    pub first_seen: u64,
    /// When a reachability test last succeeded.
    pub last_reachable: Option<u64>,
    /// When it was last tested (`None`: test as soon as possible).
    pub last_tested: Option<u64>,
    /// Successful and total tests (weighted fractional uptime, simply counted).
    pub tests_ok: u32,
    /// Total tests.
    pub tests: u32,
}

/// The result of a descriptor upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upload {
    /// Stored.
    Accepted,
    /// Nothing new (duplicate or older): `200` with `X-Descriptor-Not-New: Yes`.
    NotNew(String),
    /// Refused: `400` with the reason.
    Rejected(String),
}

/// A reachability test to run.
#[derive(Clone, Debug)]
pub struct ReachTarget {
    /// Identity expected.
    pub rsa_id: RsaIdentity,
    /// Ed25519 identity expected (when the relay does Ed25519 link authentication).
    pub ed_id: Option<Ed25519Identity>,
    /// ORPort.
    pub addr: SocketAddrV4,
}

/// The consensus of the current round, with the signatures collected so far.
#[derive(Clone, Debug)]
pub struct Computed {
    /// The computed document.
    pub consensus: Consensus,
    /// Its bodies and signed digests per flavor.
    pub flavors: BTreeMap<Flavor, (String, Vec<u8>)>,
    /// Good signatures by (flavor, signer).
    pub sigs: BTreeMap<(Flavor, [u8; 20]), DocSignature>,
}

/// One voting round.
#[derive(Clone, Debug, Default)]
pub struct Round {
    /// The valid-after being voted on.
    pub valid_after: u64,
    /// Votes by voter v3ident: the vote, its digest and text.
    pub votes: BTreeMap<[u8; 20], (Vote, [u8; 20], String)>,
    /// The consensus, once computed.
    pub computed: Option<Computed>,
    /// Signature documents that arrived before we computed.
    pub queued: Vec<String>,
}

/// A published consensus.
#[derive(Clone, Debug)]
pub struct Published {
    /// The signed text.
    pub text: String,
    /// `valid-after`.
    pub valid_after: u64,
    /// `fresh-until`.
    pub fresh_until: u64,
    /// `valid-until`.
    pub valid_until: u64,
    /// v3idents that signed it.
    pub signers: Vec<RsaIdentity>,
}

/// Key certificates of the configured authorities: the newest of each, and the ones it
/// replaced until they expire (a consensus of the round in which an authority renewed
/// its signing key is signed with the previous one, and clients fetch that certificate
/// by `fp-sk`).
#[derive(Clone, Debug, Default)]
pub struct CertStore {
    newest: BTreeMap<[u8; 20], AuthCert>,
    older: Vec<AuthCert>,
}

/// Most replaced certificates kept.
const MAX_OLDER_CERTS: usize = 32;

impl CertStore {
    /// Adds a certificate; the one with the later expiry of an authority is its newest.
    pub fn insert(&mut self, cert: AuthCert) {
        let id = cert.v3ident.0;
        match self.newest.get(&id) {
            Some(c) if c.signing_key_digest == cert.signing_key_digest => {}
            Some(c) if c.expires >= cert.expires => {
                if !self
                    .older
                    .iter()
                    .any(|o| o.signing_key_digest == cert.signing_key_digest)
                {
                    self.older.push(cert);
                }
            }
            _ => {
                if let Some(old) = self.newest.insert(id, cert) {
                    self.older.push(old);
                }
            }
        }
        if self.older.len() > MAX_OLDER_CERTS {
            self.older.sort_by_key(|c| std::cmp::Reverse(c.expires));
            self.older.truncate(MAX_OLDER_CERTS);
        }
    }

    /// Drops replaced certificates that have expired.
    pub fn expire(&mut self, now: u64) {
        self.older.retain(|c| c.expires > now);
    }

    /// The newest certificate of `v3ident`.
    pub fn get(&self, v3ident: &[u8; 20]) -> Option<&AuthCert> {
        self.newest.get(v3ident)
    }

    /// The certificate of `v3ident` for signing key `sk`, newest or replaced.
    pub fn find(&self, v3ident: &RsaIdentity, sk: &RsaIdentity) -> Option<&AuthCert> {
        self.all()
            .find(|c| c.v3ident == *v3ident && c.signing_key_digest == *sk)
    }

    /// The newest certificate of each authority.
    pub fn values(&self) -> impl Iterator<Item = &AuthCert> {
        self.newest.values()
    }

    /// Every certificate held.
    pub fn all(&self) -> impl Iterator<Item = &AuthCert> {
        self.newest.values().chain(&self.older)
    }

    /// Authorities with a certificate.
    pub fn len(&self) -> usize {
        self.newest.len()
    }

    /// Whether no certificate is held.
    pub fn is_empty(&self) -> bool {
        self.newest.is_empty()
    }
}

/// The authority.
#[derive(Debug)]
pub struct Authority {
    /// Settings.
    pub settings: Settings,
    /// Our keys.
    pub keys: AuthorityKeys,
    /// Relays by identity.
    pub relays: BTreeMap<RsaIdentity, Relay>,
    /// Key certificates of the configured authorities.
    pub certs: CertStore,
    /// The round in progress.
    pub round: Round,
    /// Published consensuses.
    pub published: BTreeMap<Flavor, Published>,
    /// Microdescriptors named by published consensuses (kept after their relays change).
    pub consensus_mds: BTreeMap<[u8; 32], String>,
    /// Votes of the round behind the published consensus.
    pub previous_votes: Vec<(RsaIdentity, [u8; 20], String)>,
    /// State changed since the last save.
    pub dirty: bool,
}

fn is_private(ip: Ipv4Addr) -> bool {
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.octets()[0] == 0
}

/// C tor's `exit_policy_is_general_exit` helper for one port: an accept for a /8 or
/// larger, not behind rejects, covering a non-internal /8 (internal ones count only with
/// `allow_private`).
fn allows_port_generally(rules: &[PolicyRule], port: u16, allow_private: bool) -> bool {
    let mut rejected = [false; 256];
    for r in rules {
        if port < r.ports.0 || port > r.ports.1 {
            continue;
        }
        let (first, bits) = match r.net {
            None => (0usize, 0u8),
            Some((ip, b)) => (usize::from(ip.octets()[0]), b),
        };
        let count = if bits >= 8 { 1 } else { 1usize << (8 - bits) };
        let end = (first + count).min(256);
        for (i, slot) in rejected.iter_mut().enumerate().take(end).skip(first) {
            if *slot {
                continue;
            }
            if matches!(i, 0 | 10 | 127) && !allow_private {
                continue;
            }
            if r.accept {
                if bits > 8 {
                    continue;
                }
                return true;
            }
            *slot = true;
        }
    }
    false
}

fn routerset_matches(set: &[String], d: &ServerDescriptor) -> bool {
    set.iter().any(|s| {
        let s = s.trim();
        s == "*"
            || s.eq_ignore_ascii_case(&d.nickname)
            || s.trim_start_matches('$')
                .eq_ignore_ascii_case(&d.rsa_identity.to_hex())
            || s == d.address.to_string()
    })
}

/// "Tor 0.4.9.11" from "Tor 0.4.9.11 on Linux"; `None` for other platforms.
fn version_from_platform(p: Option<&str>) -> Option<String> {
    let rest = p?.strip_prefix("Tor ")?;
    Some(format!("Tor {}", rest.split(' ').next()?))
}

impl Authority {
    /// A fresh authority.
    pub fn new(settings: Settings, keys: AuthorityKeys) -> Self {
        let mut certs = CertStore::default();
        certs.insert(keys.cert.clone());
        Authority {
            settings,
            keys,
            relays: BTreeMap::new(),
            certs,
            round: Round::default(),
            published: BTreeMap::new(),
            consensus_mds: BTreeMap::new(),
            previous_votes: Vec::new(),
            dirty: false,
        }
    }

    /// Whether `v3ident` is a configured authority (us included).
    pub fn is_configured(&self, v3ident: &RsaIdentity) -> bool {
        *v3ident == self.keys.cert.v3ident
            || self.settings.peers.iter().any(|p| p.v3ident == *v3ident)
    }

    /// Handles a `POST /tor/` body.
    pub fn upload(&mut self, body: &[u8], now: u64) -> Upload {
        let Ok(text) = std::str::from_utf8(body) else {
            return Upload::Rejected(
                "descriptor(s) or extrainfo(s) not valid UTF-8 or had BOM.".into(),
            );
        };
        let docs = split_upload(text);
        let routers: Vec<&str> = docs
            .iter()
            .copied()
            .filter(|d| d.starts_with("router "))
            .collect();
        if routers.is_empty() {
            return Upload::NotNew("No descriptors found in your POST.".into());
        }
        let mut outcome =
            Upload::NotNew("Not replacing router descriptor; no information has changed.".into());
        for doc in routers {
            match self.add_descriptor(doc, now) {
                Upload::Accepted => {
                    if matches!(outcome, Upload::NotNew(_)) {
                        outcome = Upload::Accepted;
                    }
                }
                r @ Upload::Rejected(_) => return r,
                Upload::NotNew(_) => {}
            }
        }
        outcome
    }

    fn add_descriptor(&mut self, doc: &str, now: u64) -> Upload {
        let desc = match ServerDescriptor::parse(doc) {
            Ok(d) => d,
            Err(e) => return Upload::Rejected(format!("Unable to parse descriptor: {e}")),
        };
        if desc.published > now + 12 * 3600 {
            return Upload::Rejected("Rejected: Your clock is set too far in the future, or your timezone is not correct.".into());
        }
        if desc.published + MAX_DESC_AGE < now || desc.signing_cert_expires < now {
            return Upload::Rejected("Rejected: Server is expired, or your clock is too far in the past, or your timezone is not correct.".into());
        }
        if let Err(e) = desc.check_times(now) {
            return Upload::Rejected(format!("Rejected: {e}"));
        }
        if !self.settings.flags.allow_private_addresses && is_private(desc.address) {
            return Upload::Rejected("Rejected: Address is a private address.".into());
        }
        let summary = summarize(&desc.policy);
        let md = Microdesc::from_descriptor(&desc, &summary);
        match self.relays.get_mut(&desc.rsa_identity) {
            Some(r) => {
                if r.desc.digest == desc.digest {
                    return Upload::NotNew("Not replacing router descriptor; no information has changed since the last one with this identity.".into());
                }
                if r.desc.ed_identity != desc.ed_identity {
                    return Upload::Rejected("Looks like your keypair has changed? This authority previously recorded your key as a different one.".into());
                }
                if desc.published <= r.desc.published {
                    // A replay, or a relay whose clock went back: refused, so it shows.
                    return Upload::Rejected(
                        "Rejected: this descriptor is not newer than the one we have.".into(),
                    );
                }
                let moved = r.desc.address != desc.address || r.desc.or_port != desc.or_port;
                let old_desc = std::mem::replace(&mut r.desc, desc);
                let old_md = std::mem::replace(&mut r.md, md);
                r.previous = Some((old_desc, old_md));
                r.summary = summary;
                if moved {
                    r.last_tested = None;
                    r.last_reachable = None;
                }
            }
            None => {
                if self.relays.len() >= MAX_RELAYS {
                    return Upload::Rejected("Too many relays known to this authority.".into());
                }
                self.relays.insert(
                    desc.rsa_identity,
                    Relay {
                        desc,
                        summary,
                        md,
                        previous: None,
                        first_seen: now,
                        last_reachable: None,
                        last_tested: None,
                        tests_ok: 0,
                        tests: 0,
                    },
                );
            }
        }
        self.dirty = true;
        Upload::Accepted
    }

    /// Drops descriptors too old to vote on.
    pub fn expire(&mut self, now: u64) {
        let before = self.relays.len();
        self.relays
            .retain(|_, r| r.desc.published + MAX_DESC_AGE >= now);
        if self.relays.len() != before {
            self.dirty = true;
        }
    }

    /// Relays due for a reachability test.
    pub fn due_tests(&self, now: u64) -> Vec<ReachTarget> {
        if self.settings.reach.assume_reachable {
            return Vec::new();
        }
        self.relays
            .values()
            .filter(|r| {
                r.last_tested
                    .is_none_or(|t| t + self.settings.reach.test_interval_secs <= now)
            })
            .map(|r| ReachTarget {
                rsa_id: r.desc.rsa_identity,
                ed_id: r
                    .desc
                    .protocols
                    .supports("LinkAuth", 3)
                    .then_some(r.desc.ed_identity),
                addr: SocketAddrV4::new(r.desc.address, r.desc.or_port),
            })
            .collect()
    }

    /// Marks a test as started (so it is not started twice).
    pub fn test_started(&mut self, id: &RsaIdentity, now: u64) {
        if let Some(r) = self.relays.get_mut(id) {
            r.last_tested = Some(now);
        }
    }

    /// Records a test result.
    pub fn test_done(&mut self, id: &RsaIdentity, ok: bool, now: u64) {
        if let Some(r) = self.relays.get_mut(id) {
            r.tests = r.tests.saturating_add(1);
            if ok {
                r.tests_ok = r.tests_ok.saturating_add(1);
                r.last_reachable = Some(now);
            }
            self.dirty = true;
        }
    }

    fn is_running(&self, r: &Relay, now: u64) -> bool {
        if r.desc.hibernating {
            return false;
        }
        self.settings.reach.assume_reachable
            || r.last_reachable
                .is_some_and(|t| t + self.settings.reach.running_window_secs >= now)
    }

    /// Our vote entries (C tor's flag rules; INTEROP §E, notes in the module docs).
    pub fn vote_entries(&self, now: u64) -> Vec<VoteEntry> {
        let f = &self.settings.flags;
        let bw_kb = |d: &ServerDescriptor| d.bandwidth.0.min(d.bandwidth.2).min(10_000_000) / 1000;
        let real_uptime =
            |d: &ServerDescriptor| d.uptime.unwrap_or(0) + now.saturating_sub(d.published);
        let is_exit = |d: &ServerDescriptor| {
            let p = d.exit_policy();
            !p.rejects_all()
                && allows_port_generally(&p.rules, 80, f.allow_private_addresses)
                && allows_port_generally(&p.rules, 443, f.allow_private_addresses)
        };
        let floor_kb = if f.fast_min_bytes == 0 { 0 } else { 4 };
        let live: Vec<&Relay> = self
            .relays
            .values()
            .filter(|r| r.desc.published + MAX_DESC_AGE >= now)
            .collect();
        let active: Vec<&&Relay> = live
            .iter()
            .filter(|r| self.is_running(r, now) && bw_kb(&r.desc) >= floor_kb)
            .collect();
        let stable_uptime =
            lower_median(active.iter().map(|r| real_uptime(&r.desc)).collect()).unwrap_or(0);
        let mut bws: Vec<u64> = active.iter().map(|r| bw_kb(&r.desc)).collect();
        bws.sort_unstable();
        let n = bws.len();
        let mut fast_kb = if n == 0 { 0 } else { bws[n / 8] };
        if fast_kb < 38 && n > 0 {
            fast_kb = bws[n / 4];
        }
        fast_kb = fast_kb.max(f.fast_min_bytes / 1000).min(102);
        let guard_bw_inc = if n == 0 {
            0
        } else {
            bws[(n * 3 / 4).min(n - 1)]
        };
        let mut nonexit: Vec<u64> = active
            .iter()
            .filter(|r| !is_exit(&r.desc))
            .map(|r| bw_kb(&r.desc))
            .collect();
        nonexit.sort_unstable();
        let guard_bw_exc = if nonexit.is_empty() {
            0
        } else {
            nonexit[(nonexit.len() * 3 / 4).min(nonexit.len() - 1)]
        };
        let tk = |r: &Relay| now.saturating_sub(r.first_seen);
        let mut tks: Vec<u64> = active.iter().map(|r| tk(r)).collect();
        tks.sort_unstable();
        let guard_tk = if tks.is_empty() {
            0
        } else {
            tks[tks.len() / 8]
        }
        .min(8 * 86400);
        // WFU as parts per million, so it sorts as an integer.
        let wfu = |r: &Relay| -> u64 {
            if self.settings.reach.assume_reachable {
                1_000_000
            } else if r.tests == 0 {
                0
            } else {
                u64::from(r.tests_ok) * 1_000_000 / u64::from(r.tests)
            }
        };
        let guard_wfu = lower_median(
            active
                .iter()
                .filter(|r| tk(r) >= guard_tk)
                .map(|r| wfu(r))
                .collect(),
        )
        .unwrap_or(0)
        .min(980_000);
        let mut entries = Vec::new();
        for r in live {
            let d = &r.desc;
            let running = self.is_running(r, now);
            let bw = bw_kb(d);
            let stable =
                real_uptime(d) >= stable_uptime || real_uptime(d) >= f.stable_guarantee_uptime_secs;
            let fast = bw >= fast_kb;
            let v2dir = d.tunnelled_dir_server || d.dir_port != 0;
            let mut flags = BTreeSet::new();
            let mut set = |name: &str, on: bool| {
                if on {
                    flags.insert(name.to_owned());
                }
            };
            set("Running", running);
            set("Valid", true);
            set("Fast", fast);
            set("Stable", stable);
            set("V2Dir", v2dir);
            set("Exit", is_exit(d) || routerset_matches(&f.vote_exit, d));
            set(
                "Guard",
                (fast
                    && stable
                    && v2dir
                    && (bw >= 2097 || bw >= guard_bw_inc.min(guard_bw_exc))
                    && wfu(r) >= guard_wfu
                    && tk(r) >= guard_tk)
                    || routerset_matches(&f.vote_guard, d),
            );
            set(
                "HSDir",
                (d.hidden_service_dir
                    && v2dir
                    && stable
                    && fast
                    && running
                    && real_uptime(d) >= f.hsdir_min_uptime_secs)
                    || routerset_matches(&f.vote_hsdir, d),
            );
            set(
                "Authority",
                self.settings.authority_relays.contains(&d.rsa_identity),
            );
            set("StaleDesc", d.published + STALE_DESC_AGE < now);
            entries.push(VoteEntry {
                nickname: d.nickname.clone(),
                rsa_id: d.rsa_identity,
                desc_digest: d.digest,
                published: d.published,
                address: d.address,
                or_port: d.or_port,
                dir_port: d.dir_port,
                flags,
                version: version_from_platform(d.platform.as_deref()),
                protocols: d.protocols.to_string(),
                bandwidth_kb: bw,
                measured_kb: None,
                policy_summary: r.summary.clone(),
                ed_id: Some(d.ed_identity),
                md_digest: Some(r.md.digest),
            });
        }
        entries.sort_by_key(|e| e.rsa_id.0);
        entries
    }

    /// Our vote for `valid_after`.
    pub fn make_vote(&self, now: u64, valid_after: u64) -> Vote {
        let s = &self.settings;
        Vote {
            published: now,
            valid_after,
            fresh_until: valid_after + s.interval,
            valid_until: valid_after + s.interval * s.intervals_valid,
            vote_delay: u32::try_from(s.vote_delay).unwrap_or(u32::MAX),
            dist_delay: u32::try_from(s.dist_delay).unwrap_or(u32::MAX),
            consensus_methods: CONSENSUS_METHODS.to_vec(),
            client_versions: Some(s.client_versions.clone()),
            server_versions: Some(s.server_versions.clone()),
            known_flags: KNOWN_FLAGS.iter().map(|f| (*f).to_owned()).collect(),
            params: s.params.clone(),
            protocols: ProtocolLines::default(),
            nickname: s.nickname.clone(),
            hostname: s.dir_addr.ip().to_string(),
            ip: *s.dir_addr.ip(),
            dir_port: s.dir_addr.port(),
            or_port: s.or_port,
            contact: s.contact.clone(),
            cert: self.keys.cert.clone(),
            entries: self.vote_entries(now),
        }
    }

    fn enter_round(&mut self, valid_after: u64) {
        if self.round.valid_after != valid_after {
            self.round = Round {
                valid_after,
                ..Round::default()
            };
        }
    }

    /// Builds, signs and records our vote for `valid_after`; returns its text.
    ///
    /// # Errors
    /// A signing failure.
    pub fn vote(&mut self, now: u64, valid_after: u64) -> Result<String, String> {
        self.expire(now);
        self.certs.expire(now);
        self.enter_round(valid_after);
        let v = self.make_vote(now, valid_after);
        let text = v
            .to_signed_text(&self.keys.signing)
            .map_err(|e| e.to_string())?;
        let digest = Vote::digest_of(&text).ok_or("our vote has no signature")?;
        self.round
            .votes
            .insert(self.keys.cert.v3ident.0, (v, digest, text.clone()));
        Ok(text)
    }

    /// Adds a vote received from a peer (`posted`: by POST, which is refused once the
    /// fetch step has passed). Returns C tor's answer text.
    ///
    /// # Errors
    /// The reason the vote is refused (answered with 400).
    pub fn add_vote(&mut self, text: &str, now: u64, posted: bool) -> Result<&'static str, String> {
        let (vote, digest) = Vote::parse(text).map_err(|e| format!("Unable to parse vote: {e}"))?;
        let id = vote.cert.v3ident;
        if !self.is_configured(&id) {
            return Err("Vote not from a recognized v3 authority".into());
        }
        if !vote.cert.is_live(now) {
            return Err("Vote certificate is expired".into());
        }
        let current = self.settings.next_valid_after(now);
        if vote.valid_after != current {
            return Err("Bad valid-after time".into());
        }
        self.enter_round(current);
        let [_, fetch, _, _] = self.settings.schedule(current);
        if posted && now > fetch {
            return Err("Posted vote received too late, would be dangerous to count it".into());
        }
        if self.round.computed.is_some() {
            return Err("Consensus already computed for this round".into());
        }
        self.certs.insert(vote.cert.clone());
        match self.round.votes.get(&id.0) {
            Some((_, d, _)) if *d == digest => return Ok("Duplicate discarded"),
            Some((old, _, _)) if old.published >= vote.published => {
                return Err("Already have a newer pending vote".into());
            }
            _ => {}
        }
        self.round
            .votes
            .insert(id.0, (vote, digest, text.to_owned()));
        Ok("Vote stored")
    }

    /// Peers whose vote for the current round we lack.
    pub fn missing_votes(&self) -> Vec<AuthorityLine> {
        self.settings
            .peers
            .iter()
            .filter(|p| !self.round.votes.contains_key(&p.v3ident.0))
            .cloned()
            .collect()
    }

    /// Computes and signs the consensus of the current round; returns our detached
    /// signatures document to send to the peers, or why there is none.
    ///
    /// # Errors
    /// Not enough votes, or signing failed.
    pub fn compute(&mut self) -> Result<String, String> {
        let votes: Vec<(Vote, [u8; 20])> = self
            .round
            .votes
            .values()
            .map(|(v, d, _)| (v.clone(), *d))
            .collect();
        let consensus = Consensus::compute(&votes, self.settings.n_authorities).map_err(|e| {
            format!(
                "{e} ({} of {} authorities voted)",
                votes.len(),
                self.settings.n_authorities
            )
        })?;
        let mut flavors = BTreeMap::new();
        let mut sigs = BTreeMap::new();
        for f in [Flavor::Ns, Flavor::Microdesc] {
            let body = consensus.body(f);
            let digest = consensus.signed_digest(f);
            let sig = DocSignature::sign(f, &digest, &self.keys.cert, &self.keys.signing)
                .map_err(|e| e.to_string())?;
            sigs.insert((f, self.keys.cert.v3ident.0), sig);
            flavors.insert(f, (body, digest));
        }
        self.round.computed = Some(Computed {
            consensus,
            flavors,
            sigs,
        });
        for q in std::mem::take(&mut self.round.queued) {
            let _ = self.add_signatures(&q);
        }
        self.detached().ok_or_else(|| "no consensus".to_owned())
    }

    /// The detached signatures document of the current round.
    pub fn detached(&self) -> Option<String> {
        let c = self.round.computed.as_ref()?;
        let ns = c.flavors.get(&Flavor::Ns)?;
        let md = c.flavors.get(&Flavor::Microdesc)?;
        Some(
            DetachedSignatures {
                consensus_digest: ns.1.clone().try_into().ok()?,
                valid_after: c.consensus.valid_after,
                fresh_until: c.consensus.fresh_until,
                valid_until: c.consensus.valid_until,
                md_digest: md.1.clone().try_into().ok(),
                signatures: c.sigs.values().cloned().collect(),
            }
            .to_text(),
        )
    }

    /// Adds a peer's detached signatures. Returns C tor's answer text.
    ///
    /// # Errors
    /// The reason they are refused (400).
    pub fn add_signatures(&mut self, text: &str) -> Result<&'static str, String> {
        let Some(c) = self.round.computed.as_mut() else {
            if self.round.queued.len() >= MAX_QUEUED_SIGNATURES {
                return Err("Too many signatures queued".into());
            }
            DetachedSignatures::parse(text)
                .map_err(|e| format!("Couldn't parse detached signatures: {e}"))?;
            self.round.queued.push(text.to_owned());
            return Ok("Signature queued");
        };
        let d = DetachedSignatures::parse(text)
            .map_err(|e| format!("Couldn't parse detached signatures: {e}"))?;
        if (d.valid_after, d.fresh_until, d.valid_until)
            != (
                c.consensus.valid_after,
                c.consensus.fresh_until,
                c.consensus.valid_until,
            )
        {
            return Err("Detached signatures times do not match our consensus".into());
        }
        let ns_digest = &c.flavors[&Flavor::Ns].1;
        let md_digest = &c.flavors[&Flavor::Microdesc].1;
        if d.consensus_digest.as_slice() != ns_digest.as_slice()
            || d.md_digest
                .is_some_and(|m| m.as_slice() != md_digest.as_slice())
        {
            return Err("Mismatched digest.".into());
        }
        let voters: HashSet<[u8; 20]> = c.consensus.sources.iter().map(|s| s.v3ident.0).collect();
        let mut added = false;
        for s in d.signatures {
            if !voters.contains(&s.v3ident.0) || c.sigs.contains_key(&(s.flavor, s.v3ident.0)) {
                continue;
            }
            let Some(cert) = self.certs.find(&s.v3ident, &s.signing_key_digest) else {
                continue;
            };
            let digest = &c.flavors[&s.flavor].1;
            if s.verifies(digest, cert) {
                c.sigs.insert((s.flavor, s.v3ident.0), s);
                added = true;
            }
        }
        Ok(if added {
            "Signatures added"
        } else {
            "Signatures ignored"
        })
    }

    /// Whether the computed consensus lacks some authority's signature.
    pub fn needs_signatures(&self) -> bool {
        self.round.computed.as_ref().is_some_and(|c| {
            [Flavor::Ns, Flavor::Microdesc].iter().any(|f| {
                c.sigs.keys().filter(|(fl, _)| fl == f).count() < self.settings.n_authorities
            })
        })
    }

    /// Publishes each flavor of the round's consensus that has enough good signatures.
    /// Returns the flavors published (and how many signatures each had).
    pub fn publish(&mut self) -> Vec<(Flavor, usize)> {
        let mut out = Vec::new();
        let need = self.settings.n_authorities / 2 + 1;
        if let Some(c) = self.round.computed.take() {
            for (f, (body, _)) in &c.flavors {
                let sigs: Vec<DocSignature> = c
                    .sigs
                    .iter()
                    .filter(|((fl, _), _)| fl == f)
                    .map(|(_, s)| s.clone())
                    .collect();
                if sigs.len() < need {
                    continue;
                }
                let text = assemble(body, &sigs);
                if *f == Flavor::Microdesc {
                    self.remember_consensus_mds(&c.consensus);
                }
                self.published.insert(
                    *f,
                    Published {
                        text,
                        valid_after: c.consensus.valid_after,
                        fresh_until: c.consensus.fresh_until,
                        valid_until: c.consensus.valid_until,
                        signers: sigs.iter().map(|s| s.v3ident).collect(),
                    },
                );
                out.push((*f, sigs.len()));
            }
            if !out.is_empty() {
                self.previous_votes = self
                    .round
                    .votes
                    .iter()
                    .map(|(id, (_, d, t))| (RsaIdentity(*id), *d, t.clone()))
                    .collect();
                self.dirty = true;
            }
        }
        out
    }

    fn remember_consensus_mds(&mut self, c: &Consensus) {
        let wanted: HashSet<[u8; 32]> = c.routers.iter().filter_map(|r| r.md_digest).collect();
        let mut mds = BTreeMap::new();
        for r in self.relays.values() {
            for md in std::iter::once(&r.md).chain(r.previous.as_ref().map(|(_, m)| m)) {
                if wanted.contains(&md.digest) {
                    mds.insert(md.digest, md.text.clone());
                }
            }
        }
        for (d, t) in &self.consensus_mds {
            if wanted.contains(d) {
                mds.entry(*d).or_insert_with(|| t.clone());
            }
        }
        self.consensus_mds = mds;
    }

    /// Adopts a consensus fetched from a peer when it is newer than ours and carries good
    /// signatures from more than half of the configured authorities (a restarted
    /// authority catching up).
    ///
    /// # Errors
    /// Why it was not adopted.
    pub fn adopt(&mut self, text: &str, now: u64) -> Result<Flavor, String> {
        let sc = SignedConsensus::parse(text).map_err(|e| e.to_string())?;
        if sc.valid_until < now {
            return Err("consensus expired".into());
        }
        if self
            .published
            .get(&sc.flavor)
            .is_some_and(|p| p.valid_after >= sc.valid_after)
        {
            return Err("not newer than ours".into());
        }
        let good: Vec<RsaIdentity> = sc
            .signatures
            .iter()
            .filter(|s| self.is_configured(&s.v3ident))
            .filter(|s| {
                self.certs
                    .find(&s.v3ident, &s.signing_key_digest)
                    .is_some_and(|c| s.verifies(&sc.digest, c))
            })
            .map(|s| s.v3ident)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if good.len() < self.settings.n_authorities / 2 + 1 {
            return Err(format!("only {} good signatures", good.len()));
        }
        self.published.insert(
            sc.flavor,
            Published {
                text: text.to_owned(),
                valid_after: sc.valid_after,
                fresh_until: sc.fresh_until,
                valid_until: sc.valid_until,
                signers: good,
            },
        );
        if sc.flavor == Flavor::Microdesc {
            let mut mds = std::mem::take(&mut self.consensus_mds);
            for line in text.lines().filter_map(|l| l.strip_prefix("m ")) {
                if let Some(d) =
                    proto::netdoc::b64_decode(line).and_then(|b| <[u8; 32]>::try_from(b).ok())
                {
                    for r in self.relays.values() {
                        if r.md.digest == d {
                            mds.insert(d, r.md.text.clone());
                        }
                    }
                }
            }
            self.consensus_mds = mds;
        }
        self.dirty = true;
        Ok(sc.flavor)
    }

    /// A microdescriptor by digest (current relays first, then those the published
    /// consensus names).
    pub fn microdesc(&self, digest: &[u8; 32]) -> Option<&str> {
        self.consensus_mds
            .get(digest)
            .map(String::as_str)
            .or_else(|| {
                self.relays.values().find_map(|r| {
                    if r.md.digest == *digest {
                        Some(r.md.text.as_str())
                    } else {
                        r.previous
                            .as_ref()
                            .filter(|(_, m)| m.digest == *digest)
                            .map(|(_, m)| m.text.as_str())
                    }
                })
            })
    }

    /// A descriptor by SHA-1 digest.
    pub fn descriptor_by_digest(&self, digest: &[u8; 20]) -> Option<&str> {
        self.relays.values().find_map(|r| {
            if r.desc.digest == *digest {
                Some(r.desc.text.as_str())
            } else {
                r.previous
                    .as_ref()
                    .filter(|(d, _)| d.digest == *digest)
                    .map(|(d, _)| d.text.as_str())
            }
        })
    }

    /// Persistent state: (file name, contents).
    pub fn snapshot(&self) -> Vec<(&'static str, String)> {
        use crate::store::files;
        let mut descs = String::new();
        let mut reach = String::new();
        for r in self.relays.values() {
            if let Some((d, _)) = &r.previous {
                descs.push_str(&d.text);
            }
            descs.push_str(&r.desc.text);
            reach.push_str(&format!(
                "{} {} {} {} {}\n",
                r.desc.rsa_identity.to_hex(),
                r.first_seen,
                r.last_reachable.unwrap_or(0),
                r.tests_ok,
                r.tests
            ));
        }
        let certs: String = self.certs.all().map(|c| c.text.as_str()).collect();
        let mds: String = self.consensus_mds.values().map(String::as_str).collect();
        let votes: String = self
            .previous_votes
            .iter()
            .map(|(_, _, t)| t.as_str())
            .collect();
        let mut out = vec![
            (files::DESCRIPTORS, descs),
            (files::REACHABILITY, reach),
            (files::CERTS, certs),
            (files::MICRODESCS, mds),
            (files::VOTES, votes),
        ];
        for (f, name) in [
            (Flavor::Ns, files::CONSENSUS_NS),
            (Flavor::Microdesc, files::CONSENSUS_MD),
        ] {
            if let Some(p) = self.published.get(&f) {
                out.push((name, p.text.clone()));
            }
        }
        out
    }

    /// Restores state saved by [`Authority::snapshot`] (what still verifies and is not
    /// expired at `now`).
    pub fn restore(&mut self, load: impl Fn(&str) -> Option<String>, now: u64) {
        use crate::store::files;
        if let Some(certs) = load(files::CERTS) {
            for c in AuthCert::parse_many(&certs).unwrap_or_default() {
                if self.is_configured(&c.v3ident) && c.v3ident != self.keys.cert.v3ident {
                    self.certs.insert(c);
                }
            }
        }
        if let Some(descs) = load(files::DESCRIPTORS) {
            for d in split_upload(&descs) {
                let _ = self.add_descriptor(d, now);
            }
        }
        if let Some(reach) = load(files::REACHABILITY) {
            for line in reach.lines() {
                let w: Vec<&str> = line.split(' ').collect();
                let Some(id) = w
                    .first()
                    .and_then(|h| hex::decode(h).ok())
                    .and_then(|b| RsaIdentity::from_bytes(&b))
                else {
                    continue;
                };
                let num = |i: usize| w.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
                if let Some(r) = self.relays.get_mut(&id) {
                    r.first_seen = num(1).min(now);
                    r.last_reachable = Some(num(2)).filter(|&t| t > 0);
                    r.tests_ok = u32::try_from(num(3)).unwrap_or(0);
                    r.tests = u32::try_from(num(4)).unwrap_or(0);
                }
            }
        }
        if let Some(mds) = load(files::MICRODESCS) {
            let mut starts: Vec<usize> = mds
                .match_indices("onion-key\n")
                .map(|(i, _)| i)
                .filter(|&i| i == 0 || mds.as_bytes()[i - 1] == b'\n')
                .collect();
            starts.push(mds.len());
            for w in starts.windows(2) {
                let md = Microdesc::from_text(mds[w[0]..w[1]].to_owned());
                self.consensus_mds.insert(md.digest, md.text);
            }
        }
        for name in [files::CONSENSUS_NS, files::CONSENSUS_MD] {
            if let Some(text) = load(name)
                && let Ok(sc) = SignedConsensus::parse(&text)
                && sc.valid_until >= now
            {
                self.published.insert(
                    sc.flavor,
                    Published {
                        valid_after: sc.valid_after,
                        fresh_until: sc.fresh_until,
                        valid_until: sc.valid_until,
                        signers: sc.signatures.iter().map(|s| s.v3ident).collect(),
                        text,
                    },
                );
            }
        }
        if let Some(votes) = load(files::VOTES) {
            let mut starts: Vec<usize> = votes
                .match_indices("network-status-version 3\n")
                .map(|(i, _)| i)
                .collect();
            starts.push(votes.len());
            for w in starts.windows(2) {
                let t = &votes[w[0]..w[1]];
                if let Ok((v, d)) = Vote::parse(t) {
                    self.previous_votes.push((v.cert.v3ident, d, t.to_owned()));
                }
            }
        }
        self.dirty = false;
    }
}

#[cfg(test)]
mod tests;

/// Networks of in-memory authorities for other modules' tests.
#[cfg(test)]
pub(crate) mod tests_support {
    pub(crate) use super::tests::{T0, network, round as run_round};

    /// A fresh relay's descriptor published shortly before `T0`.
    pub(crate) fn relay_descriptor(seed: u64) -> String {
        super::tests::relay(seed, T0 - 100).1
    }
}
