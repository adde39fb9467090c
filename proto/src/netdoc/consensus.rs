//! v3 network-status documents (dir-spec §3.4–§3.10): authorities' votes, the consensus
//! computed from them (ns and microdesc flavors), and detached signatures.
//!
//! The computation follows C tor's `networkstatus_compute_consensus` for consensus
//! method 35 (notes in INTEROP §E and the C rules it cites):
//! - a relay is listed when more than half of the *configured* authorities list it, and
//!   only if the chosen flags include Running and Valid;
//! - each flag is set when more than half of the votes that know the flag set it;
//! - the descriptor is the one most votes name (ties: newer published, then smaller
//!   digest); medians are lower medians; "most frequent" ties go to the larger value;
//! - `w Bandwidth=` is the lower median of the votes' values, marked `Unmeasured=1` when
//!   fewer than three votes carry `Measured=`.
//!
//! Invariants: [`Consensus::compute`] is a pure function of the votes and the number of
//! configured authorities, so every authority holding the same votes writes the same
//! bytes and their signatures combine; entries are sorted by RSA identity; `known-flags`
//! and `params` are strictly ascending (INTEROP traps 19, 20).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::authcert::AuthCert;
use super::bwweights::{self, Totals};
use super::protover::Protocols;
use super::tokenize::{Item, Items, tokenize};
use super::{b64_decode, b64_unpadded, format_time, parse_time, pem_object};
use crate::keys::RsaKeypair;
use crate::{Ed25519Identity, Error, Result, RsaIdentity};

/// The consensus method we compute (C tor 0.4.9 authorities support 32–35).
pub const CONSENSUS_METHOD: u32 = 35;
/// The methods our votes offer.
pub const CONSENSUS_METHODS: &[u32] = &[32, 33, 34, 35];
/// The `published` time md-flavor `r` lines carry from method 33 on.
pub const MD_PUBLISHED: &str = "2038-01-01 00:00:00";
/// Largest vote or consensus we parse.
pub const MAX_DOCUMENT_LEN: usize = 8 << 20;

/// The consensus flavors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Flavor {
    /// The full ("ns") flavor, signed with SHA-1.
    Ns,
    /// The microdescriptor flavor, signed with SHA-256.
    Microdesc,
}

impl Flavor {
    /// The name used in URLs and `additional-digest` lines.
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Ns => "ns",
            Flavor::Microdesc => "microdesc",
        }
    }

    /// Digest of the signed part (`text` through `directory-signature `).
    pub fn digest(self, signed_part: &[u8]) -> Vec<u8> {
        match self {
            Flavor::Ns => Sha1::digest(signed_part).to_vec(),
            Flavor::Microdesc => Sha256::digest(signed_part).to_vec(),
        }
    }
}

/// The four protocol lines of votes and consensuses (tor-spec §9).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolLines {
    /// `recommended-client-protocols`.
    pub recommended_client: String,
    /// `recommended-relay-protocols`.
    pub recommended_relay: String,
    /// `required-client-protocols`.
    pub required_client: String,
    /// `required-relay-protocols`.
    pub required_relay: String,
}

impl Default for ProtocolLines {
    /// C tor 0.4.9's values, except `required-relay-protocols`, which only lists what
    /// every relay here supports (a relay lacking a required protocol is told to exit).
    fn default() -> Self {
        ProtocolLines {
            recommended_client: "Cons=2 Desc=2 DirCache=2 FlowCtrl=1-2 HSDir=2 HSIntro=4 HSRend=2 Link=4-5 Microdesc=2 Relay=2-4".into(),
            recommended_relay: "Cons=2 Desc=2 DirCache=2 FlowCtrl=1-2 HSDir=2 HSIntro=4-5 HSRend=2 Link=4-5 LinkAuth=3 Microdesc=2 Relay=2-4".into(),
            required_client: "Cons=2 Desc=2 FlowCtrl=1 Link=4 Microdesc=2 Relay=2".into(),
            required_relay: "Cons=2 Desc=2 Link=4-5 LinkAuth=3 Microdesc=2 Relay=2".into(),
        }
    }
}

/// One relay in a vote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoteEntry {
    /// Nickname.
    pub nickname: String,
    /// RSA identity.
    pub rsa_id: RsaIdentity,
    /// SHA-1 descriptor digest.
    pub desc_digest: [u8; 20],
    /// Descriptor `published`, seconds.
    pub published: u64,
    /// IPv4 address.
    pub address: Ipv4Addr,
    /// ORPort.
    pub or_port: u16,
    /// DirPort.
    pub dir_port: u16,
    /// Flags, each in the vote's known-flags.
    pub flags: BTreeSet<String>,
    /// `v` line (e.g. `Tor 0.4.9.11`), if any.
    pub version: Option<String>,
    /// `pr` line.
    pub protocols: String,
    /// Advertised bandwidth, kB/s.
    pub bandwidth_kb: u64,
    /// Measured bandwidth, kB/s, if a bandwidth authority measured it.
    pub measured_kb: Option<u64>,
    /// Exit policy summary (`accept …` / `reject …`).
    pub policy_summary: String,
    /// Ed25519 identity (`id ed25519`), if known.
    pub ed_id: Option<Ed25519Identity>,
    /// SHA-256 microdescriptor digest for methods 32–35.
    pub md_digest: Option<[u8; 32]>,
}

/// An authority's vote.
#[derive(Clone, Debug)]
pub struct Vote {
    /// `published`.
    pub published: u64,
    /// `valid-after`.
    pub valid_after: u64,
    /// `fresh-until`.
    pub fresh_until: u64,
    /// `valid-until`.
    pub valid_until: u64,
    /// `voting-delay`: vote seconds.
    pub vote_delay: u32,
    /// `voting-delay`: distribution seconds.
    pub dist_delay: u32,
    /// `consensus-methods`.
    pub consensus_methods: Vec<u32>,
    /// `client-versions` (comma-separated), if the voter recommends versions.
    pub client_versions: Option<String>,
    /// `server-versions` (comma-separated), if the voter recommends versions.
    pub server_versions: Option<String>,
    /// `known-flags`.
    pub known_flags: BTreeSet<String>,
    /// `params`.
    pub params: BTreeMap<String, i32>,
    /// The four protocol lines.
    pub protocols: ProtocolLines,
    /// `dir-source` nickname.
    pub nickname: String,
    /// `dir-source` hostname field.
    pub hostname: String,
    /// `dir-source` IPv4.
    pub ip: Ipv4Addr,
    /// `dir-source` DirPort.
    pub dir_port: u16,
    /// `dir-source` ORPort.
    pub or_port: u16,
    /// `contact`.
    pub contact: String,
    /// The voter's key certificate (embedded in the vote).
    pub cert: AuthCert,
    /// Relays, sorted by RSA identity.
    pub entries: Vec<VoteEntry>,
}

fn bad(what: &str) -> Error {
    Error::Malformed(format!("network status: {what}"))
}

fn flags_line(flags: &BTreeSet<String>) -> String {
    flags
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `params` entries in C tor's order: strcmp of the whole `k=v` strings (which is key
/// order unless one key is a prefix of another).
fn params_line(params: &BTreeMap<String, i32>) -> String {
    let mut items: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    items.sort();
    items.join(" ")
}

fn flag_ok(f: &str) -> bool {
    !f.is_empty() && f.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn rsa_b64(id: &RsaIdentity) -> String {
    b64_unpadded(&id.0)
}

/// The signed part's end: `text` followed by `directory-signature ` (INTEROP trap 4).
fn signed_part(body: &str) -> String {
    format!("{body}directory-signature ")
}

impl Vote {
    /// The text up to (not including) `directory-signature`.
    fn body(&self) -> String {
        let mut t = String::from("network-status-version 3\nvote-status vote\n");
        let methods: Vec<String> = self.consensus_methods.iter().map(u32::to_string).collect();
        let _ = writeln!(t, "consensus-methods {}", methods.join(" "));
        let _ = writeln!(t, "published {}", format_time(self.published));
        let _ = writeln!(t, "valid-after {}", format_time(self.valid_after));
        let _ = writeln!(t, "fresh-until {}", format_time(self.fresh_until));
        let _ = writeln!(t, "valid-until {}", format_time(self.valid_until));
        let _ = writeln!(t, "voting-delay {} {}", self.vote_delay, self.dist_delay);
        if let Some(v) = &self.client_versions {
            let _ = writeln!(t, "client-versions {v}");
        }
        if let Some(v) = &self.server_versions {
            let _ = writeln!(t, "server-versions {v}");
        }
        let p = &self.protocols;
        let _ = writeln!(t, "recommended-relay-protocols {}", p.recommended_relay);
        let _ = writeln!(t, "recommended-client-protocols {}", p.recommended_client);
        let _ = writeln!(t, "required-relay-protocols {}", p.required_relay);
        let _ = writeln!(t, "required-client-protocols {}", p.required_client);
        let _ = writeln!(t, "known-flags {}", flags_line(&self.known_flags));
        if !self.params.is_empty() {
            let _ = writeln!(t, "params {}", params_line(&self.params));
        }
        let _ = writeln!(
            t,
            "dir-source {} {} {} {} {} {}",
            self.nickname,
            self.cert.v3ident.to_hex(),
            self.hostname,
            self.ip,
            self.dir_port,
            self.or_port
        );
        let _ = writeln!(t, "contact {}", self.contact);
        t.push_str(&self.cert.text);
        for e in &self.entries {
            let _ = writeln!(
                t,
                "r {} {} {} {} {} {} {}",
                e.nickname,
                rsa_b64(&e.rsa_id),
                b64_unpadded(&e.desc_digest),
                format_time(e.published),
                e.address,
                e.or_port,
                e.dir_port
            );
            let _ = writeln!(t, "s {}", flags_line(&e.flags));
            if let Some(v) = &e.version {
                let _ = writeln!(t, "v {v}");
            }
            let _ = writeln!(t, "pr {}", e.protocols);
            match e.measured_kb {
                Some(m) => {
                    let _ = writeln!(t, "w Bandwidth={} Measured={m}", e.bandwidth_kb);
                }
                None => {
                    let _ = writeln!(t, "w Bandwidth={}", e.bandwidth_kb);
                }
            }
            let _ = writeln!(t, "p {}", e.policy_summary);
            match &e.ed_id {
                Some(id) => {
                    let _ = writeln!(t, "id ed25519 {}", b64_unpadded(&id.0));
                }
                None => t.push_str("id ed25519 none\n"),
            }
            if let Some(md) = &e.md_digest {
                let methods: Vec<String> =
                    self.consensus_methods.iter().map(u32::to_string).collect();
                let _ = writeln!(t, "m {} sha256={}", methods.join(","), b64_unpadded(md));
            }
        }
        t.push_str("directory-footer\n");
        t
    }

    /// Writes the vote, signed with the authority signing key (which must be the one the
    /// embedded certificate names).
    ///
    /// # Errors
    /// [`Error::InvalidValue`] when the key does not match the certificate; signing
    /// errors.
    pub fn to_signed_text(&self, signing: &RsaKeypair) -> Result<String> {
        if signing.public().identity() != self.cert.signing_key_digest {
            return Err(Error::InvalidValue(
                "signing key differs from the certificate",
            ));
        }
        let body = self.body();
        let signed = signed_part(&body);
        let sig = signing.sign_raw(&Sha1::digest(signed.as_bytes()))?;
        let mut t = signed;
        let _ = writeln!(
            t,
            "{} {}",
            self.cert.v3ident.to_hex(),
            self.cert.signing_key_digest.to_hex()
        );
        t.push_str(&pem_object("SIGNATURE", &sig));
        Ok(t)
    }

    /// Parses a vote and checks its signature against the certificate it embeds.
    /// Returns the vote and its digest (SHA-1 of the signed part: the consensus's
    /// `vote-digest`).
    ///
    /// # Errors
    /// [`Error::Malformed`], [`Error::BadSignature`] or certificate errors.
    pub fn parse(text: &str) -> Result<(Vote, [u8; 20])> {
        if text.len() > MAX_DOCUMENT_LEN {
            return Err(bad("too large"));
        }
        let sig_at = text
            .find("\ndirectory-signature ")
            .map(|i| i + 1)
            .ok_or_else(|| bad("no directory-signature"))?;
        let signed_end = sig_at + "directory-signature ".len();
        let digest: [u8; 20] = Sha1::digest(&text.as_bytes()[..signed_end]).into();
        // The certificate sits between `contact` and the first `r` line; parse it on its own.
        let cert_start = text
            .find("\ndir-key-certificate-version ")
            .map(|i| i + 1)
            .ok_or_else(|| bad("vote lacks its key certificate"))?;
        let cert_end = text[cert_start..]
            .find("\n-----END SIGNATURE-----\n")
            .map(|i| cert_start + i + "\n-----END SIGNATURE-----\n".len())
            .filter(|&e| e <= sig_at)
            .ok_or_else(|| bad("unterminated key certificate"))?;
        let cert = AuthCert::parse(&text[cert_start..cert_end])?;
        let head_items = tokenize(&text[..cert_start])?;
        let body_items = tokenize(&text[cert_end..])?;
        let look = Items::new(&head_items);
        if head_items.first().map(|i| (i.keyword, i.rest)) != Some(("network-status-version", "3"))
        {
            return Err(bad("not a v3 network status"));
        }
        if look.one("vote-status")?.rest != "vote" {
            return Err(bad("not a vote"));
        }
        let time = |kw: &str| parse_time(look.one(kw)?.rest).ok_or_else(|| bad("bad time"));
        let vd = look.one("voting-delay")?.args();
        let num = |s: &str| s.parse::<u32>().map_err(|_| bad("bad number"));
        let src = look.one("dir-source")?.args();
        if src.len() != 6 {
            return Err(bad("dir-source needs 6 arguments"));
        }
        if !src[1].eq_ignore_ascii_case(&cert.v3ident.to_hex()) {
            return Err(bad("dir-source identity differs from the certificate"));
        }
        let mut params = BTreeMap::new();
        if let Some(p) = look.opt("params")? {
            for kv in p.args() {
                let (k, v) = kv.split_once('=').ok_or_else(|| bad("bad param"))?;
                params.insert(
                    k.to_owned(),
                    v.parse::<i32>().map_err(|_| bad("bad param value"))?,
                );
            }
        }
        let known_flags: BTreeSet<String> = look
            .one("known-flags")?
            .args()
            .into_iter()
            .map(str::to_owned)
            .collect();
        if !known_flags.iter().all(|f| flag_ok(f)) {
            return Err(bad("bad flag name"));
        }
        let proto_line = |kw: &str| -> Result<String> {
            let l = look.one(kw)?.rest;
            Protocols::parse(l)?;
            Ok(l.to_owned())
        };
        let mut vote = Vote {
            published: time("published")?,
            valid_after: time("valid-after")?,
            fresh_until: time("fresh-until")?,
            valid_until: time("valid-until")?,
            vote_delay: num(vd.first().copied().unwrap_or(""))?,
            dist_delay: num(vd.get(1).copied().unwrap_or(""))?,
            consensus_methods: look
                .one("consensus-methods")?
                .args()
                .into_iter()
                .map(num)
                .collect::<Result<_>>()?,
            client_versions: look.opt("client-versions")?.map(|l| l.rest.to_owned()),
            server_versions: look.opt("server-versions")?.map(|l| l.rest.to_owned()),
            known_flags,
            params,
            protocols: ProtocolLines {
                recommended_client: proto_line("recommended-client-protocols")?,
                recommended_relay: proto_line("recommended-relay-protocols")?,
                required_client: proto_line("required-client-protocols")?,
                required_relay: proto_line("required-relay-protocols")?,
            },
            nickname: src[0].to_owned(),
            hostname: src[2].to_owned(),
            ip: src[3].parse().map_err(|_| bad("bad dir-source address"))?,
            dir_port: src[4].parse().map_err(|_| bad("bad dir-source port"))?,
            or_port: src[5].parse().map_err(|_| bad("bad dir-source port"))?,
            contact: look
                .opt("contact")?
                .map(|c| c.rest.to_owned())
                .unwrap_or_default(),
            cert,
            entries: Vec::new(),
        };
        // Router entries and the footer.
        let mut footer_seen = false;
        let mut sig_item: Option<&Item<'_>> = None;
        for item in &body_items {
            match item.keyword {
                "r" => {
                    if footer_seen {
                        return Err(bad("r after the footer"));
                    }
                    vote.entries.push(parse_vote_r(item)?);
                }
                "directory-footer" => footer_seen = true,
                "directory-signature" => {
                    if sig_item.is_some() {
                        return Err(bad("more than one signature on a vote"));
                    }
                    sig_item = Some(item);
                }
                _ if sig_item.is_some() => return Err(bad("items after the signature")),
                kw => {
                    let Some(e) = vote.entries.last_mut() else {
                        return Err(bad("entry item before any r line"));
                    };
                    parse_vote_item(e, kw, item, &vote.known_flags)?;
                }
            }
        }
        let sig_item = sig_item.ok_or_else(|| bad("no directory-signature"))?;
        let sa = sig_item.args();
        let (id, sk) = match sa.as_slice() {
            [id, sk] | ["sha1", id, sk] => (*id, *sk),
            _ => return Err(bad("bad directory-signature line")),
        };
        if !id.eq_ignore_ascii_case(&vote.cert.v3ident.to_hex())
            || !sk.eq_ignore_ascii_case(&vote.cert.signing_key_digest.to_hex())
        {
            return Err(bad("vote signed by a key other than its certificate's"));
        }
        vote.cert
            .signing_key
            .verify_raw(&digest, sig_item.object_data(&["SIGNATURE"])?, "vote")?;
        let mut sorted = vote.entries.clone();
        sorted.sort_by_key(|e| e.rsa_id.0);
        sorted.dedup_by(|a, b| a.rsa_id == b.rsa_id);
        if sorted.len() != vote.entries.len() {
            return Err(bad("vote lists a relay twice"));
        }
        vote.entries = sorted;
        Ok((vote, digest))
    }

    /// The vote's digest as [`Vote::parse`] computes it, for a vote we wrote.
    pub fn digest_of(text: &str) -> Option<[u8; 20]> {
        let at = text.find("\ndirectory-signature ")? + 1 + "directory-signature ".len();
        Some(Sha1::digest(&text.as_bytes()[..at]).into())
    }
}

fn decode_fixed<const N: usize>(s: &str, what: &str) -> Result<[u8; N]> {
    b64_decode(s)
        .and_then(|v| <[u8; N]>::try_from(v).ok())
        .ok_or_else(|| bad(what))
}

fn parse_vote_r(item: &Item<'_>) -> Result<VoteEntry> {
    let a = item.args();
    if a.len() != 8 {
        return Err(bad("vote r line needs 8 arguments"));
    }
    Ok(VoteEntry {
        nickname: a[0].to_owned(),
        rsa_id: RsaIdentity(decode_fixed(a[1], "bad identity in r line")?),
        desc_digest: decode_fixed(a[2], "bad digest in r line")?,
        published: parse_time(&format!("{} {}", a[3], a[4])).ok_or_else(|| bad("bad r time"))?,
        address: a[5].parse().map_err(|_| bad("bad r address"))?,
        or_port: a[6].parse().map_err(|_| bad("bad r port"))?,
        dir_port: a[7].parse().map_err(|_| bad("bad r port"))?,
        flags: BTreeSet::new(),
        version: None,
        protocols: String::new(),
        bandwidth_kb: 0,
        measured_kb: None,
        policy_summary: "reject 1-65535".into(),
        ed_id: None,
        md_digest: None,
    })
}

fn parse_vote_item(
    e: &mut VoteEntry,
    kw: &str,
    item: &Item<'_>,
    known: &BTreeSet<String>,
) -> Result<()> {
    match kw {
        "s" => {
            for f in item.args() {
                if !known.contains(f) {
                    return Err(bad("flag not in known-flags"));
                }
                e.flags.insert(f.to_owned());
            }
        }
        "v" => e.version = Some(item.rest.to_owned()),
        "pr" => {
            Protocols::parse(item.rest)?;
            e.protocols = item.rest.to_owned();
        }
        "w" => {
            for kv in item.args() {
                let (k, v) = kv.split_once('=').ok_or_else(|| bad("bad w item"))?;
                let v: u64 = v.parse().map_err(|_| bad("bad w value"))?;
                match k {
                    "Bandwidth" => e.bandwidth_kb = v,
                    "Measured" => e.measured_kb = Some(v),
                    _ => {}
                }
            }
        }
        "p" => e.policy_summary = item.rest.to_owned(),
        "id" => {
            let a = item.args();
            if a.first() != Some(&"ed25519") {
                return Err(bad("bad id line"));
            }
            e.ed_id = match a.get(1) {
                Some(&"none") => None,
                Some(k) => Some(Ed25519Identity(decode_fixed(k, "bad id ed25519")?)),
                None => return Err(bad("bad id line")),
            };
        }
        "m" => {
            let a = item.args();
            if a.len() < 2 {
                return Err(bad("bad m line"));
            }
            let covers = a[0].split(',').any(|m| m == CONSENSUS_METHOD.to_string());
            for d in &a[1..] {
                if let Some(b) = d.strip_prefix("sha256=")
                    && covers
                {
                    e.md_digest = Some(decode_fixed(b, "bad m digest")?);
                }
            }
        }
        // `a`, `stats` and unknown items are ignored, as C tor does.
        _ => {}
    }
    Ok(())
}

/// What identifies one descriptor variant among the votes: digest, published, nickname,
/// address, ORPort, DirPort (C: `compare_vote_rs`).
type DescKey<'a> = ([u8; 20], u64, &'a str, Ipv4Addr, u16, u16);

/// One `dir-source` block of a consensus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirSource {
    /// Nickname.
    pub nickname: String,
    /// v3 identity.
    pub v3ident: RsaIdentity,
    /// Hostname field.
    pub hostname: String,
    /// IPv4.
    pub ip: Ipv4Addr,
    /// DirPort.
    pub dir_port: u16,
    /// ORPort.
    pub or_port: u16,
    /// Contact line.
    pub contact: String,
    /// Digest of the vote used.
    pub vote_digest: [u8; 20],
}

/// One relay in a consensus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsensusEntry {
    /// Nickname.
    pub nickname: String,
    /// RSA identity.
    pub rsa_id: RsaIdentity,
    /// Descriptor digest.
    pub desc_digest: [u8; 20],
    /// Descriptor `published`.
    pub published: u64,
    /// IPv4.
    pub address: Ipv4Addr,
    /// ORPort.
    pub or_port: u16,
    /// DirPort.
    pub dir_port: u16,
    /// Flags.
    pub flags: BTreeSet<String>,
    /// `v` line.
    pub version: Option<String>,
    /// `pr` line.
    pub protocols: String,
    /// `w Bandwidth=`.
    pub bandwidth_kb: u64,
    /// Whether the bandwidth is unmeasured.
    pub unmeasured: bool,
    /// `p` line (ns flavor).
    pub policy_summary: String,
    /// `m` line (md flavor); relays without one are left out of that flavor.
    pub md_digest: Option<[u8; 32]>,
}

/// A computed (unsigned) consensus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consensus {
    /// Consensus method.
    pub method: u32,
    /// `valid-after`.
    pub valid_after: u64,
    /// `fresh-until`.
    pub fresh_until: u64,
    /// `valid-until`.
    pub valid_until: u64,
    /// `voting-delay` vote seconds.
    pub vote_delay: u32,
    /// `voting-delay` distribution seconds.
    pub dist_delay: u32,
    /// `client-versions`: versions more than half of the versioning voters list.
    pub client_versions: Option<String>,
    /// `server-versions`.
    pub server_versions: Option<String>,
    /// `known-flags`.
    pub known_flags: BTreeSet<String>,
    /// Protocol lines.
    pub protocols: ProtocolLines,
    /// `params`.
    pub params: BTreeMap<String, i32>,
    /// Voters, sorted by v3 identity.
    pub sources: Vec<DirSource>,
    /// Relays, sorted by RSA identity.
    pub routers: Vec<ConsensusEntry>,
    /// `bandwidth-weights` arguments, if computable.
    pub bandwidth_weights: Option<String>,
}

/// Lower median (C's `median_*`: element `(n-1)/2` of the sorted values), the median
/// every authority computation uses.
pub fn lower_median<T: Ord + Copy>(mut v: Vec<T>) -> Option<T> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[(v.len() - 1) / 2])
}

/// Most frequent value; ties go to the largest (C's `smartlist_get_most_frequent`).
fn most_frequent<T: Ord + Clone>(values: impl IntoIterator<Item = T>) -> Option<T> {
    let mut counts: BTreeMap<T, usize> = BTreeMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    let mut best: Option<(T, usize)> = None;
    for (v, c) in counts {
        if best.as_ref().is_none_or(|(_, bc)| c >= *bc) {
            best = Some((v, c));
        }
    }
    best.map(|(v, _)| v)
}

/// Orders "Tor X.Y.Z…" version strings numerically, others after them by text.
fn version_key(v: &str) -> (u8, Vec<u64>, String) {
    let nums = v.strip_prefix("Tor ").and_then(|rest| {
        let ver = rest.split(' ').next()?;
        let parts: Option<Vec<u64>> = ver
            .split(['.', '-'])
            .take(4)
            .map(|p| p.parse().ok())
            .collect();
        parts
    });
    match nums {
        Some(n) => (0, n, v.to_owned()),
        None => (1, Vec::new(), v.to_owned()),
    }
}

/// The protocol set voted by at least `threshold` of `lines` (C: `protover_compute_vote`).
fn vote_protocols(lines: &[&str], threshold: usize) -> String {
    let parsed: Vec<Protocols> = lines
        .iter()
        .filter_map(|l| Protocols::parse(l).ok())
        .collect();
    Protocols::vote(&parsed, threshold).to_string()
}

impl Consensus {
    /// Computes the consensus from `votes` (one per authority, all for the same
    /// valid-after), given the number of configured authorities.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] when there are not more than `n_authorities / 2` votes
    /// or the votes disagree on valid-after.
    pub fn compute(votes: &[(Vote, [u8; 20])], n_authorities: usize) -> Result<Consensus> {
        if votes.len() <= n_authorities / 2 || votes.is_empty() {
            return Err(Error::InvalidValue("not enough votes for a consensus"));
        }
        let mut votes: Vec<&(Vote, [u8; 20])> = votes.iter().collect();
        votes.sort_by_key(|v| v.0.cert.v3ident.0);
        let n_votes = votes.len();
        // Consensus method: the highest one more than 2/3 of the votes offer.
        let method = (1..=CONSENSUS_METHOD)
            .rev()
            .find(|m| {
                votes
                    .iter()
                    .filter(|(v, _)| v.consensus_methods.contains(m))
                    .count()
                    > (2 * n_votes) / 3
            })
            .unwrap_or(CONSENSUS_METHOD);
        let method = if CONSENSUS_METHODS.contains(&method) {
            method
        } else {
            CONSENSUS_METHOD
        };
        let med =
            |f: &dyn Fn(&Vote) -> u64| lower_median(votes.iter().map(|(v, _)| f(v)).collect());
        let valid_after = med(&|v| v.valid_after).unwrap_or(0);
        let fresh_until = med(&|v| v.fresh_until).unwrap_or(0);
        let valid_until = med(&|v| v.valid_until).unwrap_or(0);
        let vote_delay =
            lower_median(votes.iter().map(|(v, _)| v.vote_delay).collect()).unwrap_or(2);
        let dist_delay =
            lower_median(votes.iter().map(|(v, _)| v.dist_delay).collect()).unwrap_or(2);
        let versions = |f: &dyn Fn(&Vote) -> Option<&String>| -> Option<String> {
            let lists: Vec<&String> = votes.iter().filter_map(|(v, _)| f(v)).collect();
            if lists.is_empty() {
                return None;
            }
            let mut counts: BTreeMap<(u8, Vec<u64>, String), usize> = BTreeMap::new();
            for l in &lists {
                let uniq: BTreeSet<&str> = l.split(',').filter(|x| !x.is_empty()).collect();
                for v in uniq {
                    *counts.entry(version_key(&format!("Tor {v}"))).or_default() += 1;
                }
            }
            let keep: Vec<String> = counts
                .into_iter()
                .filter(|(_, c)| *c > lists.len() / 2)
                .map(|((_, _, v), _)| v.trim_start_matches("Tor ").to_owned())
                .collect();
            Some(keep.join(","))
        };
        let client_versions = versions(&|v| v.client_versions.as_ref());
        let server_versions = versions(&|v| v.server_versions.as_ref());
        let mut known_flags: BTreeSet<String> = votes
            .iter()
            .flat_map(|(v, _)| v.known_flags.iter().cloned())
            .collect();
        known_flags.insert("NoEdConsensus".into());

        // params: present in more than half of the configured authorities' votes, or in
        // at least three; the lower median of the values.
        let mut pvals: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (v, _) in &votes {
            for (k, val) in &v.params {
                pvals.entry(k.as_str()).or_default().push(*val);
            }
        }
        let params: BTreeMap<String, i32> = pvals
            .into_iter()
            .filter(|(_, vals)| vals.len() > n_authorities / 2 || vals.len() >= 3)
            .filter_map(|(k, vals)| lower_median(vals).map(|m| (k.to_owned(), m)))
            .collect();

        let proto = |f: &dyn Fn(&ProtocolLines) -> &str, threshold: usize| {
            let lines: Vec<&str> = votes.iter().map(|(v, _)| f(&v.protocols)).collect();
            vote_protocols(&lines, threshold)
        };
        let half_up = n_authorities.div_ceil(2);
        let two_thirds_up = (2 * n_authorities).div_ceil(3);
        let protocols = ProtocolLines {
            recommended_client: proto(&|p| &p.recommended_client, half_up),
            recommended_relay: proto(&|p| &p.recommended_relay, half_up),
            required_client: proto(&|p| &p.required_client, two_thirds_up),
            required_relay: proto(&|p| &p.required_relay, two_thirds_up),
        };

        let sources = votes
            .iter()
            .map(|(v, d)| DirSource {
                nickname: v.nickname.clone(),
                v3ident: v.cert.v3ident,
                hostname: v.hostname.clone(),
                ip: v.ip,
                dir_port: v.dir_port,
                or_port: v.or_port,
                contact: v.contact.clone(),
                vote_digest: *d,
            })
            .collect();

        // Relays by identity.
        let mut by_id: BTreeMap<[u8; 20], Vec<(&Vote, &VoteEntry)>> = BTreeMap::new();
        for (v, _) in &votes {
            for e in &v.entries {
                by_id.entry(e.rsa_id.0).or_default().push((v, e));
            }
        }
        // How many votes know each flag (the denominator of its majority).
        let flag_voters: BTreeMap<&str, usize> = known_flags
            .iter()
            .map(|f| {
                let n = votes
                    .iter()
                    .filter(|(v, _)| v.known_flags.contains(f))
                    .count();
                (f.as_str(), n)
            })
            .collect();
        let mut routers = Vec::new();
        let mut totals = Totals::default();
        for (rsa_id, listings) in &by_id {
            if listings.len() <= n_authorities / 2 {
                continue;
            }
            // The descriptor: most listed; ties to newer published, then smaller digest.
            let mut groups: BTreeMap<DescKey<'_>, usize> = BTreeMap::new();
            for (_, e) in listings {
                *groups
                    .entry((
                        e.desc_digest,
                        e.published,
                        e.nickname.as_str(),
                        e.address,
                        e.or_port,
                        e.dir_port,
                    ))
                    .or_default() += 1;
            }
            let Some((winner, _)) = groups.iter().max_by(|(ka, ca), (kb, cb)| {
                ca.cmp(cb).then(ka.1.cmp(&kb.1)).then(kb.0.cmp(&ka.0))
            }) else {
                continue;
            };
            let (desc_digest, published, nickname, address, or_port, dir_port) = *winner;
            let same: Vec<&VoteEntry> = listings
                .iter()
                .map(|(_, e)| *e)
                .filter(|e| e.desc_digest == desc_digest && e.published == published)
                .collect();
            let mut flags = BTreeSet::new();
            for f in &known_flags {
                if f == "NoEdConsensus" {
                    continue;
                }
                let set = listings.iter().filter(|(_, e)| e.flags.contains(f)).count();
                if set > flag_voters.get(f.as_str()).copied().unwrap_or(0) / 2 {
                    flags.insert(f.clone());
                }
            }
            let ed = most_frequent(listings.iter().map(|(_, e)| e.ed_id.map(|i| i.0)));
            let ed_agree = listings
                .iter()
                .filter(|(_, e)| Some(e.ed_id.map(|i| i.0)) == ed)
                .count();
            if ed_agree <= n_authorities / 2 {
                flags.insert("NoEdConsensus".into());
            }
            if !flags.contains("Running") || !flags.contains("Valid") {
                continue;
            }
            // The most listed version; ties go to the later one in version order.
            let version = most_frequent(
                listings
                    .iter()
                    .filter_map(|(_, e)| e.version.as_deref())
                    .map(version_key),
            )
            .map(|(_, _, v)| v);
            let protocols = most_frequent(listings.iter().map(|(_, e)| e.protocols.clone()))
                .unwrap_or_default();
            let measured: Vec<u64> = listings.iter().filter_map(|(_, e)| e.measured_kb).collect();
            let (bandwidth_kb, unmeasured) = if measured.len() > 2 {
                (lower_median(measured).unwrap_or(0), false)
            } else {
                (
                    lower_median(listings.iter().map(|(_, e)| e.bandwidth_kb).collect())
                        .unwrap_or(0),
                    true,
                )
            };
            let policy_summary = most_frequent(same.iter().map(|e| e.policy_summary.clone()))
                .or_else(|| most_frequent(listings.iter().map(|(_, e)| e.policy_summary.clone())))
                .unwrap_or_else(|| "reject 1-65535".into());
            let md_digest = most_frequent(same.iter().filter_map(|e| e.md_digest));
            let is_exit = flags.contains("Exit") && !flags.contains("BadExit");
            totals.add(bandwidth_kb, flags.contains("Guard"), is_exit);
            routers.push(ConsensusEntry {
                nickname: nickname.to_owned(),
                rsa_id: RsaIdentity(*rsa_id),
                desc_digest,
                published,
                address,
                or_port,
                dir_port,
                flags,
                version,
                protocols,
                bandwidth_kb,
                unmeasured,
                policy_summary,
                md_digest,
            });
        }
        let scale = params.get("bwweightscale").copied().unwrap_or(10000).max(1);
        Ok(Consensus {
            method,
            valid_after,
            fresh_until,
            valid_until,
            vote_delay,
            dist_delay,
            client_versions,
            server_versions,
            known_flags,
            protocols,
            params,
            sources,
            routers,
            bandwidth_weights: bwweights::compute(&totals, i64::from(scale)),
        })
    }

    /// The document up to (not including) the first `directory-signature`.
    pub fn body(&self, flavor: Flavor) -> String {
        let mut t = String::from("network-status-version 3");
        if flavor == Flavor::Microdesc {
            t.push_str(" microdesc");
        }
        t.push_str("\nvote-status consensus\n");
        let _ = writeln!(t, "consensus-method {}", self.method);
        let _ = writeln!(t, "valid-after {}", format_time(self.valid_after));
        let _ = writeln!(t, "fresh-until {}", format_time(self.fresh_until));
        let _ = writeln!(t, "valid-until {}", format_time(self.valid_until));
        let _ = writeln!(t, "voting-delay {} {}", self.vote_delay, self.dist_delay);
        if let Some(v) = &self.client_versions {
            let _ = writeln!(t, "client-versions {v}");
        }
        if let Some(v) = &self.server_versions {
            let _ = writeln!(t, "server-versions {v}");
        }
        let _ = writeln!(t, "known-flags {}", flags_line(&self.known_flags));
        let p = &self.protocols;
        for (kw, v) in [
            ("recommended-client-protocols", &p.recommended_client),
            ("recommended-relay-protocols", &p.recommended_relay),
            ("required-client-protocols", &p.required_client),
            ("required-relay-protocols", &p.required_relay),
        ] {
            if !v.is_empty() {
                let _ = writeln!(t, "{kw} {v}");
            }
        }
        if !self.params.is_empty() {
            let _ = writeln!(t, "params {}", params_line(&self.params));
        }
        for s in &self.sources {
            let _ = writeln!(
                t,
                "dir-source {} {} {} {} {} {}",
                s.nickname,
                s.v3ident.to_hex(),
                s.hostname,
                s.ip,
                s.dir_port,
                s.or_port
            );
            let _ = writeln!(t, "contact {}", s.contact);
            let _ = writeln!(t, "vote-digest {}", hex::encode_upper(s.vote_digest));
        }
        for r in &self.routers {
            match flavor {
                Flavor::Ns => {
                    let _ = writeln!(
                        t,
                        "r {} {} {} {} {} {} {}",
                        r.nickname,
                        rsa_b64(&r.rsa_id),
                        b64_unpadded(&r.desc_digest),
                        format_time(r.published),
                        r.address,
                        r.or_port,
                        r.dir_port
                    );
                }
                Flavor::Microdesc => {
                    let Some(md) = &r.md_digest else { continue };
                    let _ = writeln!(
                        t,
                        "r {} {} {} {} {} {}",
                        r.nickname,
                        rsa_b64(&r.rsa_id),
                        if self.method >= 33 {
                            MD_PUBLISHED.to_owned()
                        } else {
                            format_time(r.published)
                        },
                        r.address,
                        r.or_port,
                        r.dir_port
                    );
                    let _ = writeln!(t, "m {}", b64_unpadded(md));
                }
            }
            let _ = writeln!(t, "s {}", flags_line(&r.flags));
            if let Some(v) = &r.version {
                let _ = writeln!(t, "v {v}");
            }
            let _ = writeln!(t, "pr {}", r.protocols);
            if r.unmeasured {
                let _ = writeln!(t, "w Bandwidth={} Unmeasured=1", r.bandwidth_kb);
            } else {
                let _ = writeln!(t, "w Bandwidth={}", r.bandwidth_kb);
            }
            if flavor == Flavor::Ns {
                let _ = writeln!(t, "p {}", r.policy_summary);
            }
        }
        t.push_str("directory-footer\n");
        if let Some(w) = &self.bandwidth_weights {
            let _ = writeln!(t, "bandwidth-weights {w}");
        }
        t
    }

    /// The digest an authority signs for `flavor`.
    pub fn signed_digest(&self, flavor: Flavor) -> Vec<u8> {
        flavor.digest(signed_part(&self.body(flavor)).as_bytes())
    }
}

/// One authority's signature on one flavor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocSignature {
    /// The flavor signed.
    pub flavor: Flavor,
    /// The signer's v3 identity.
    pub v3ident: RsaIdentity,
    /// SHA-1 of the signing key.
    pub signing_key_digest: RsaIdentity,
    /// The RSA signature (no DigestInfo) over [`Consensus::signed_digest`].
    pub signature: Vec<u8>,
}

impl DocSignature {
    /// Signs `digest` for `flavor`.
    ///
    /// # Errors
    /// Signing errors.
    pub fn sign(flavor: Flavor, digest: &[u8], cert: &AuthCert, key: &RsaKeypair) -> Result<Self> {
        Ok(DocSignature {
            flavor,
            v3ident: cert.v3ident,
            signing_key_digest: cert.signing_key_digest,
            signature: key.sign_raw(digest)?,
        })
    }

    /// Whether it verifies for `digest` under `cert`.
    pub fn verifies(&self, digest: &[u8], cert: &AuthCert) -> bool {
        cert.v3ident == self.v3ident
            && cert.signing_key_digest == self.signing_key_digest
            && cert
                .signing_key
                .verify_raw(digest, &self.signature, "consensus")
                .is_ok()
    }

    /// The `directory-signature` item as it appears in the consensus.
    pub fn to_item(&self) -> String {
        let mut t = String::from("directory-signature ");
        if self.flavor == Flavor::Microdesc {
            t.push_str("sha256 ");
        }
        let _ = writeln!(
            t,
            "{} {}",
            self.v3ident.to_hex(),
            self.signing_key_digest.to_hex()
        );
        t.push_str(&pem_object("SIGNATURE", &self.signature));
        t
    }
}

/// A signed consensus document: the body followed by signatures in v3-identity order.
pub fn assemble(body: &str, sigs: &[DocSignature]) -> String {
    let mut sigs: Vec<&DocSignature> = sigs.iter().collect();
    sigs.sort_by_key(|s| s.v3ident.0);
    let mut t = body.to_owned();
    for s in sigs {
        t.push_str(&s.to_item());
    }
    t
}

/// A detached-signatures document (dir-spec §3.10): the signatures one authority holds
/// on the consensus it computed, exchanged before publication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetachedSignatures {
    /// SHA-1 of the ns consensus's signed part.
    pub consensus_digest: [u8; 20],
    /// `valid-after`.
    pub valid_after: u64,
    /// `fresh-until`.
    pub fresh_until: u64,
    /// `valid-until`.
    pub valid_until: u64,
    /// SHA-256 of the microdesc consensus's signed part.
    pub md_digest: Option<[u8; 32]>,
    /// Signatures (both flavors).
    pub signatures: Vec<DocSignature>,
}

impl DetachedSignatures {
    /// Writes the document.
    pub fn to_text(&self) -> String {
        let mut t = format!(
            "consensus-digest {}\n",
            hex::encode_upper(self.consensus_digest)
        );
        let _ = writeln!(t, "valid-after {}", format_time(self.valid_after));
        let _ = writeln!(t, "fresh-until {}", format_time(self.fresh_until));
        let _ = writeln!(t, "valid-until {}", format_time(self.valid_until));
        if let Some(d) = &self.md_digest {
            let _ = writeln!(
                t,
                "additional-digest microdesc sha256 {}",
                hex::encode_upper(d)
            );
        }
        let mut sigs: Vec<&DocSignature> = self.signatures.iter().collect();
        sigs.sort_by_key(|s| s.v3ident.0);
        for s in sigs.iter().filter(|s| s.flavor == Flavor::Microdesc) {
            let _ = writeln!(
                t,
                "additional-signature microdesc sha256 {} {}",
                s.v3ident.to_hex(),
                s.signing_key_digest.to_hex()
            );
            t.push_str(&pem_object("SIGNATURE", &s.signature));
        }
        for s in sigs.iter().filter(|s| s.flavor == Flavor::Ns) {
            t.push_str(&s.to_item());
        }
        t
    }

    /// Parses a document.
    ///
    /// # Errors
    /// [`Error::Malformed`].
    pub fn parse(text: &str) -> Result<Self> {
        if text.len() > 1 << 20 {
            return Err(bad("signatures document too large"));
        }
        let items = tokenize(text)?;
        let look = Items::new(&items);
        if items.first().map(|i| i.keyword) != Some("consensus-digest") {
            return Err(bad("must start with consensus-digest"));
        }
        let hexarg = |s: &str, n: usize| -> Result<Vec<u8>> {
            hex::decode(s)
                .ok()
                .filter(|v| v.len() == n)
                .ok_or_else(|| bad("bad hex"))
        };
        let id = |s: &str| -> Result<RsaIdentity> {
            RsaIdentity::from_bytes(&hexarg(s, 20)?).ok_or_else(|| bad("bad identity"))
        };
        let consensus_digest: [u8; 20] = hexarg(look.one("consensus-digest")?.rest, 20)?
            .try_into()
            .map_err(|_| bad("bad digest"))?;
        let time = |kw: &str| parse_time(look.one(kw)?.rest).ok_or_else(|| bad("bad time"));
        let mut md_digest = None;
        let mut signatures = Vec::new();
        for item in &items {
            let a = item.args();
            match item.keyword {
                "additional-digest" if a.len() >= 3 && a[0] == "microdesc" && a[1] == "sha256" => {
                    md_digest = Some(
                        hexarg(a[2], 32)?
                            .try_into()
                            .map_err(|_| bad("bad digest"))?,
                    );
                }
                "additional-signature"
                    if a.len() >= 4 && a[0] == "microdesc" && a[1] == "sha256" =>
                {
                    signatures.push(DocSignature {
                        flavor: Flavor::Microdesc,
                        v3ident: id(a[2])?,
                        signing_key_digest: id(a[3])?,
                        signature: item.object_data(&["SIGNATURE"])?.to_vec(),
                    });
                }
                "directory-signature" => {
                    let (i, s) = match a.as_slice() {
                        [i, s] | ["sha1", i, s] => (*i, *s),
                        _ => return Err(bad("bad directory-signature")),
                    };
                    signatures.push(DocSignature {
                        flavor: Flavor::Ns,
                        v3ident: id(i)?,
                        signing_key_digest: id(s)?,
                        signature: item.object_data(&["SIGNATURE"])?.to_vec(),
                    });
                }
                _ => {}
            }
        }
        if !signatures.iter().any(|s| s.flavor == Flavor::Ns) {
            return Err(bad("no directory-signature"));
        }
        Ok(DetachedSignatures {
            consensus_digest,
            valid_after: time("valid-after")?,
            fresh_until: time("fresh-until")?,
            valid_until: time("valid-until")?,
            md_digest,
            signatures,
        })
    }
}

/// What a client needs of a published consensus: its flavor, times and the signatures
/// on it, with the signed digest (used by authorities reloading their own consensus and
/// by tests).
#[derive(Clone, Debug)]
pub struct SignedConsensus {
    /// Flavor.
    pub flavor: Flavor,
    /// `valid-after`.
    pub valid_after: u64,
    /// `fresh-until`.
    pub fresh_until: u64,
    /// `valid-until`.
    pub valid_until: u64,
    /// Digest of the signed part.
    pub digest: Vec<u8>,
    /// Signatures.
    pub signatures: Vec<DocSignature>,
}

impl SignedConsensus {
    /// Reads the header and signatures of a consensus (not the router entries).
    ///
    /// # Errors
    /// [`Error::Malformed`].
    pub fn parse(text: &str) -> Result<Self> {
        if text.len() > MAX_DOCUMENT_LEN {
            return Err(bad("too large"));
        }
        let flavor = if text.starts_with("network-status-version 3 microdesc\n") {
            Flavor::Microdesc
        } else if text.starts_with("network-status-version 3\n") {
            Flavor::Ns
        } else {
            return Err(bad("not a v3 consensus"));
        };
        let sig_at = text
            .find("\ndirectory-signature ")
            .map(|i| i + 1)
            .ok_or_else(|| bad("unsigned"))?;
        let digest = flavor.digest(&text.as_bytes()[..sig_at + "directory-signature ".len()]);
        let head = tokenize(&text[..sig_at])?;
        let look = Items::new(&head);
        let time = |kw: &str| parse_time(look.one(kw)?.rest).ok_or_else(|| bad("bad time"));
        let mut signatures = Vec::new();
        for item in tokenize(&text[sig_at..])? {
            if item.keyword != "directory-signature" {
                return Err(bad("only signatures may follow the first signature"));
            }
            let a = item.args();
            let (i, s) = match (flavor, a.as_slice()) {
                (Flavor::Ns, [i, s] | ["sha1", i, s]) | (Flavor::Microdesc, ["sha256", i, s]) => {
                    (*i, *s)
                }
                _ => return Err(bad("bad directory-signature")),
            };
            let id = |x: &str| {
                hex::decode(x)
                    .ok()
                    .and_then(|b| RsaIdentity::from_bytes(&b))
                    .ok_or_else(|| bad("bad identity"))
            };
            signatures.push(DocSignature {
                flavor,
                v3ident: id(i)?,
                signing_key_digest: id(s)?,
                signature: item.object_data(&["SIGNATURE"])?.to_vec(),
            });
        }
        Ok(SignedConsensus {
            flavor,
            valid_after: time("valid-after")?,
            fresh_until: time("fresh-until")?,
            valid_until: time("valid-until")?,
            digest,
            signatures,
        })
    }
}

#[cfg(test)]
mod tests;
