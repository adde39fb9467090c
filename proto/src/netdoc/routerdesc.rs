//! The server descriptor a relay uploads to the authorities (dir-spec §2.1.1), written in
//! the item order C tor uses (`router_dump_router_to_string`; INTEROP D.1).
//!
//! Signatures (INTEROP trap 4):
//! - `router-sig-ed25519`: the Ed25519 **signing** key signs
//!   `SHA256("Tor router descriptor signature v1" | text from "router " through
//!   "router-sig-ed25519 ")`, the trailing space included;
//! - `router-signature`: the RSA identity key signs, without DigestInfo,
//!   `SHA1(text from "router " through "router-signature\n")`. That SHA-1 is also the
//!   descriptor digest of consensus `r` lines and `/tor/server/d/` URLs.
//!
//! Invariant: [`build`] output verifies under both keys and carries every item a C tor
//! 0.4.9 authority requires.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV6};

use sha1::Sha1;
use sha2::{Digest, Sha256};

use ed25519_dalek::VerifyingKey;

use super::policy::{ExitPolicy, PolicyRule};
use super::protover::Protocols;
use super::tokenize::{Items, tokenize};
use super::{b64_unpadded, format_time, pem_object};
use crate::cert::ed25519::{CertifiedKey, Ed25519Cert, cert_type};
use crate::cert::onion_crosscert;
use crate::keys::{Ed25519Signer, EdgeKeys, RsaPublic};
use crate::{Ed25519Identity, Error, Result, RsaIdentity};

/// Protocols our relay supports (INTEROP F, tier 1: ntor, legacy SENDME, no ntor v3 or
/// congestion control yet). Canonical form: names sorted, ranges merged.
pub const OUR_PROTOCOLS: &str =
    "Cons=1-2 Desc=1-2 DirCache=2 FlowCtrl=1 Link=3-5 LinkAuth=3 Microdesc=1-2 Relay=2";

const ED_SIG_PREFIX: &[u8] = b"Tor router descriptor signature v1";

/// What a descriptor says beyond the keys.
#[derive(Clone, Debug)]
pub struct DescriptorParams {
    /// Nickname, 1–19 of `[A-Za-z0-9]`.
    pub nickname: String,
    /// Advertised IPv4 address.
    pub address: Ipv4Addr,
    /// Advertised ORPort.
    pub or_port: u16,
    /// Optional advertised IPv6 ORPort (`or-address`).
    pub ipv6: Option<SocketAddrV6>,
    /// `platform` line. Must not start with "Tor " unless it is a real C tor version
    /// (INTEROP trap 21).
    pub platform: String,
    /// `proto` line.
    pub protocols: String,
    /// `published`, seconds since the epoch.
    pub published: u64,
    /// `uptime`, seconds.
    pub uptime: u64,
    /// `bandwidth` average, burst and observed, bytes per second.
    pub bandwidth: (u64, u64, u64),
    /// Exit policy lines (`accept …` / `reject …`), in order; at least one.
    pub policy: Vec<String>,
    /// `contact`, if any.
    pub contact: Option<String>,
    /// Whether to include the TAP `onion-key` and `onion-key-crosscert`.
    pub include_tap: bool,
    /// `tunnelled-dir-server`: we answer BEGIN_DIR (needed for the V2Dir flag, hence for
    /// being a guard of C tor clients).
    pub tunnelled_dir_server: bool,
}

/// Checks a nickname (dir-spec §2.1.1: 1–19 alphanumerics).
pub fn nickname_ok(n: &str) -> bool {
    (1..=19).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Builds and signs a descriptor. Returns the text and its SHA-1 descriptor digest.
///
/// # Errors
/// [`Error::InvalidValue`] for a bad nickname, platform, or policy, or text with CR/LF
/// where a single line is expected; signing errors otherwise.
pub fn build(params: &DescriptorParams, keys: &EdgeKeys) -> Result<(String, [u8; 20])> {
    if !nickname_ok(&params.nickname) {
        return Err(Error::InvalidValue(
            "nickname must be 1-19 letters or digits",
        ));
    }
    let one_line = |s: &str| !s.contains(['\n', '\r']) && s.trim() == s && !s.is_empty();
    if !one_line(&params.platform) || params.platform.starts_with("Tor ") {
        return Err(Error::InvalidValue("platform"));
    }
    if params.policy.is_empty() || !params.policy.iter().all(|l| one_line(l)) {
        return Err(Error::InvalidValue("exit policy"));
    }
    if params.contact.as_deref().is_some_and(|c| !one_line(c)) {
        return Err(Error::InvalidValue("contact"));
    }
    if params.bandwidth.0 == 0 {
        return Err(Error::InvalidValue("bandwidth average must be at least 1"));
    }
    let rsa_id = keys.rsa_identity();
    let mut d = String::with_capacity(4096);
    let _ = writeln!(
        d,
        "router {} {} {} 0 0",
        params.nickname, params.address, params.or_port
    );
    d.push_str("identity-ed25519\n");
    d.push_str(&pem_object("ED25519 CERT", keys.signing_cert.as_bytes()));
    let _ = writeln!(
        d,
        "master-key-ed25519 {}",
        b64_unpadded(&keys.ed_identity.0)
    );
    if let Some(v6) = params.ipv6 {
        let _ = writeln!(d, "or-address [{}]:{}", v6.ip(), v6.port());
    }
    let _ = writeln!(d, "platform {}", params.platform);
    let _ = writeln!(d, "proto {}", params.protocols);
    let _ = writeln!(d, "published {}", format_time(params.published));
    let hex = rsa_id.to_hex();
    let groups: Vec<&str> = (0..10).map(|i| &hex[i * 4..i * 4 + 4]).collect();
    let _ = writeln!(d, "fingerprint {}", groups.join(" "));
    let _ = writeln!(d, "uptime {}", params.uptime);
    let _ = writeln!(
        d,
        "bandwidth {} {} {}",
        params.bandwidth.0, params.bandwidth.1, params.bandwidth.2
    );
    if params.include_tap {
        d.push_str("onion-key\n");
        d.push_str(&keys.tap.public().to_pem());
    }
    d.push_str("signing-key\n");
    d.push_str(&keys.identity.public().to_pem());
    if params.include_tap {
        let cc = onion_crosscert::tap_crosscert_sign(&keys.tap, &rsa_id, &keys.ed_identity)?;
        d.push_str("onion-key-crosscert\n");
        d.push_str(&pem_object("CROSSCERT", &cc));
    }
    let (ntor_cc, sign_bit) = &keys.ntor_crosscert;
    let _ = writeln!(d, "ntor-onion-key-crosscert {sign_bit}");
    d.push_str(&pem_object("ED25519 CERT", ntor_cc.as_bytes()));
    if let Some(c) = &params.contact {
        let _ = writeln!(d, "contact {c}");
    }
    let _ = writeln!(d, "ntor-onion-key {}", b64_unpadded(&keys.ntor_public));
    for l in &params.policy {
        let _ = writeln!(d, "{l}");
    }
    if params.tunnelled_dir_server {
        d.push_str("tunnelled-dir-server\n");
    }
    d.push_str("router-sig-ed25519 ");
    let mut h = Sha256::new();
    h.update(ED_SIG_PREFIX);
    h.update(d.as_bytes());
    let ed_sig = keys.signing.sign_msg(&h.finalize());
    let _ = writeln!(d, "{}", b64_unpadded(&ed_sig.to_bytes()));
    d.push_str("router-signature\n");
    let digest: [u8; 20] = Sha1::digest(d.as_bytes()).into();
    let sig = keys.identity.sign_raw(&digest)?;
    d.push_str(&pem_object("SIGNATURE", &sig));
    Ok((d, digest))
}

/// Largest descriptor an authority accepts (C tor: `MAX_DESCRIPTOR_UPLOAD_SIZE` is 20 000
/// bytes for the router part).
pub const MAX_DESCRIPTOR_LEN: usize = 20_000;

/// A server descriptor whose signatures and certificates have been checked.
///
/// Everything a directory authority needs to vote on the relay; the original text is kept
/// so it can be served byte-identical.
#[derive(Clone, Debug)]
pub struct ServerDescriptor {
    /// Nickname.
    pub nickname: String,
    /// IPv4 address from the `router` line.
    pub address: Ipv4Addr,
    /// ORPort.
    pub or_port: u16,
    /// DirPort (0 when none).
    pub dir_port: u16,
    /// The first IPv6 `or-address`, if any.
    pub ipv6: Option<SocketAddrV6>,
    /// The RSA-1024 identity key (`signing-key`).
    pub identity_key: RsaPublic,
    /// Its fingerprint.
    pub rsa_identity: RsaIdentity,
    /// The Ed25519 master identity.
    pub ed_identity: Ed25519Identity,
    /// When the Ed25519 signing-key certificate expires, seconds since the epoch.
    pub signing_cert_expires: u64,
    /// `platform`, if present.
    pub platform: Option<String>,
    /// `proto`.
    pub protocols: Protocols,
    /// `published`, seconds since the epoch.
    pub published: u64,
    /// `uptime`, seconds, if present.
    pub uptime: Option<u64>,
    /// `bandwidth`: average, burst, observed (bytes/s).
    pub bandwidth: (u64, u64, u64),
    /// The TAP `onion-key`, if present (its crosscert was checked).
    pub tap_key: Option<RsaPublic>,
    /// `ntor-onion-key`.
    pub ntor_key: [u8; 32],
    /// The IPv4 exit policy (`accept`/`reject` lines, in order).
    pub policy: Vec<PolicyRule>,
    /// `ipv6-policy`, verbatim, if present.
    pub ipv6_policy: Option<String>,
    /// `family`, verbatim, if present.
    pub family: Option<String>,
    /// `hibernating 1`.
    pub hibernating: bool,
    /// `tunnelled-dir-server`.
    pub tunnelled_dir_server: bool,
    /// `hidden-service-dir`.
    pub hidden_service_dir: bool,
    /// `contact`, if present.
    pub contact: Option<String>,
    /// SHA-1 of the signed part: the descriptor digest.
    pub digest: [u8; 20],
    /// The whole text, as uploaded.
    pub text: String,
}

fn bad(what: &str) -> Error {
    Error::Malformed(format!("server descriptor: {what}"))
}

fn parse_u16(s: &str, what: &str) -> Result<u16> {
    s.parse().map_err(|_| bad(what))
}

fn parse_u64(s: &str, what: &str) -> Result<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(what));
    }
    s.parse().map_err(|_| bad(what))
}

fn decode_key32(s: &str, what: &str) -> Result<[u8; 32]> {
    super::b64_decode(s)
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or_else(|| bad(what))
}

impl ServerDescriptor {
    /// Parses one descriptor and checks everything that does not depend on the time: both
    /// signatures, the Ed25519 certificate chain, the onion-key crosscerts, the key sizes,
    /// the fingerprint, and the syntax of every item a C tor authority looks at. Check
    /// the time with [`ServerDescriptor::check_times`].
    ///
    /// # Errors
    /// [`Error::Malformed`], [`Error::BadSignature`], [`Error::BadCert`] or
    /// [`Error::Key`] naming the first problem.
    pub fn parse(text: &str) -> Result<Self> {
        if text.len() > MAX_DESCRIPTOR_LEN {
            return Err(bad("too large"));
        }
        let items = tokenize(text)?;
        let look = Items::new(&items);
        let first = items.first().ok_or_else(|| bad("empty"))?;
        if first.keyword != "router" || first.start != 0 {
            return Err(bad("does not start with router"));
        }
        // identity-ed25519 must be the second item; the last two are the signatures.
        if items.get(1).map(|i| i.keyword) != Some("identity-ed25519") {
            return Err(bad("identity-ed25519 is not the second item"));
        }
        let n = items.len();
        if n < 4
            || items[n - 2].keyword != "router-sig-ed25519"
            || items[n - 1].keyword != "router-signature"
        {
            return Err(bad("must end with router-sig-ed25519 and router-signature"));
        }
        for kw in [
            "router",
            "identity-ed25519",
            "router-sig-ed25519",
            "router-signature",
        ] {
            look.one(kw)?;
        }

        let r = first.args();
        if r.len() != 5 {
            return Err(bad("router line needs 5 arguments"));
        }
        let nickname = r[0].to_owned();
        if !nickname_ok(&nickname) {
            return Err(bad("bad nickname"));
        }
        let address: Ipv4Addr = r[1].parse().map_err(|_| bad("bad address"))?;
        let or_port = parse_u16(r[2], "bad ORPort")?;
        if or_port == 0 {
            return Err(bad("ORPort 0"));
        }
        let _socks = parse_u16(r[3], "bad SOCKSPort")?;
        let dir_port = parse_u16(r[4], "bad DirPort")?;

        // The Ed25519 chain: master identity -> signing key (type 4).
        let cert_bytes = items[1].object_data(&["ED25519 CERT"])?;
        let cert = Ed25519Cert::parse(cert_bytes)?;
        if cert.cert_type != cert_type::IDENTITY_V_SIGNING {
            return Err(Error::BadCert(
                "identity-ed25519 is not a type-4 certificate",
            ));
        }
        let master = cert.signing_key().ok_or(Error::BadCert(
            "identity-ed25519 lacks the signed-with-key extension",
        ))?;
        cert.check_signature(None)?;
        let CertifiedKey::Ed25519(signing) = cert.certified else {
            return Err(Error::BadCert(
                "identity-ed25519 does not certify an Ed25519 key",
            ));
        };
        let signing_key = VerifyingKey::from_bytes(&signing)
            .map_err(|_| Error::BadCert("signing key is not a valid point"))?;
        let ed_identity = Ed25519Identity(master);
        let mk = look.one("master-key-ed25519")?;
        if decode_key32(mk.arg(0)?, "bad master-key-ed25519")? != master {
            return Err(bad("master-key-ed25519 differs from the certificate"));
        }

        // router-sig-ed25519 over SHA256(prefix | text through "router-sig-ed25519 ").
        let edsig_item = &items[n - 2];
        let edsig_end = edsig_item.start + "router-sig-ed25519 ".len();
        let sig = super::b64_decode(edsig_item.arg(0)?)
            .and_then(|b| ed25519_dalek::Signature::from_slice(&b).ok())
            .ok_or_else(|| bad("bad router-sig-ed25519"))?;
        let mut h = Sha256::new();
        h.update(ED_SIG_PREFIX);
        h.update(&text.as_bytes()[..edsig_end]);
        signing_key
            .verify_strict(&h.finalize(), &sig)
            .map_err(|_| Error::BadSignature("router-sig-ed25519"))?;

        // router-signature: RSA identity over SHA1(text through "router-signature\n").
        let identity_key =
            RsaPublic::from_der(look.one("signing-key")?.object_data(&["RSA PUBLIC KEY"])?)?;
        if identity_key.bits() != 1024 || !identity_key.exponent_is_65537() {
            return Err(Error::Key(
                "identity key must be 1024-bit RSA with e=65537".into(),
            ));
        }
        let rsa_identity = identity_key.identity();
        let sig_item = &items[n - 1];
        let signed_end = sig_item.start + "router-signature\n".len();
        if text.as_bytes().get(signed_end - 1) != Some(&b'\n') || !sig_item.rest.is_empty() {
            return Err(bad("bad router-signature line"));
        }
        let digest: [u8; 20] = Sha1::digest(&text.as_bytes()[..signed_end]).into();
        identity_key.verify_raw(
            &digest,
            sig_item.object_data(&["SIGNATURE"])?,
            "router-signature",
        )?;

        if let Some(fp) = look.opt("fingerprint")? {
            let hex: String = fp.args().concat();
            if !hex.eq_ignore_ascii_case(&rsa_identity.to_hex()) {
                return Err(bad("fingerprint does not match the identity key"));
            }
        }

        // Onion keys and their crosscerts.
        let ntor_key = decode_key32(look.one("ntor-onion-key")?.arg(0)?, "bad ntor-onion-key")?;
        let ncc = look.one("ntor-onion-key-crosscert")?;
        let sign_bit: u8 = match ncc.arg(0)? {
            "0" => 0,
            "1" => 1,
            _ => return Err(bad("bad ntor-onion-key-crosscert sign bit")),
        };
        let ncc_cert = Ed25519Cert::parse(ncc.object_data(&["ED25519 CERT"])?)?;
        // Expiry of the crosscert is checked in check_times; its signature here, with a
        // clock of 0 so only the signature and binding are judged.
        onion_crosscert::ntor_crosscert_check(&ncc_cert, &ntor_key, sign_bit, &ed_identity, 0)?;
        let tap_key = match (look.opt("onion-key")?, look.opt("onion-key-crosscert")?) {
            (None, None) => None,
            (Some(k), Some(cc)) => {
                let tap = RsaPublic::from_der(k.object_data(&["RSA PUBLIC KEY"])?)?;
                if tap.bits() != 1024 || !tap.exponent_is_65537() {
                    return Err(Error::Key("TAP onion key must be 1024-bit RSA".into()));
                }
                onion_crosscert::tap_crosscert_check(
                    &tap,
                    cc.object_data(&["CROSSCERT"])?,
                    &rsa_identity,
                    &ed_identity,
                )?;
                Some(tap)
            }
            _ => return Err(bad("onion-key and onion-key-crosscert come together")),
        };

        let protocols = Protocols::parse(look.one("proto")?.rest)?;
        let published = super::parse_time(look.one("published")?.rest)
            .ok_or_else(|| bad("bad published time"))?;
        let bw = look.one("bandwidth")?.args();
        if bw.len() < 3 {
            return Err(bad("bandwidth needs 3 values"));
        }
        let bandwidth = (
            parse_u64(bw[0], "bad bandwidth")?,
            parse_u64(bw[1], "bad bandwidth")?,
            parse_u64(bw[2], "bad bandwidth")?,
        );
        let uptime = look
            .opt("uptime")?
            .map(|u| parse_u64(u.arg(0)?, "bad uptime"))
            .transpose()?;
        let platform = look.opt("platform")?.map(|p| p.rest.to_owned());
        if let Some(p) = &platform {
            check_platform(p)?;
        }
        let ipv6 = look
            .all("or-address")
            .find_map(|i| i.arg(0).ok()?.parse::<SocketAddrV6>().ok());
        let mut policy = Vec::new();
        for i in &items {
            match i.keyword {
                "accept" | "reject" => {
                    let line = format!("{} {}", i.keyword, i.rest);
                    policy.push(PolicyRule::parse(&line).map_err(|_| bad("bad exit policy line"))?);
                }
                "accept6" | "reject6" => return Err(bad("accept6/reject6 lines are not allowed")),
                _ => {}
            }
        }
        if policy.is_empty() {
            return Err(bad("no exit policy"));
        }
        let hibernating = look.opt("hibernating")?.is_some_and(|h| h.rest == "1");
        Ok(ServerDescriptor {
            nickname,
            address,
            or_port,
            dir_port,
            ipv6,
            identity_key,
            rsa_identity,
            ed_identity,
            signing_cert_expires: u64::from(cert.expiration_hours) * 3600,
            platform,
            protocols,
            published,
            uptime,
            bandwidth,
            tap_key,
            ntor_key,
            policy,
            ipv6_policy: look.opt("ipv6-policy")?.map(|p| p.rest.to_owned()),
            family: look.opt("family")?.map(|p| p.rest.to_owned()),
            hibernating,
            tunnelled_dir_server: look.opt("tunnelled-dir-server")?.is_some(),
            hidden_service_dir: look.opt("hidden-service-dir")?.is_some(),
            contact: look.opt("contact")?.map(|p| p.rest.to_owned()),
            digest,
            text: text.to_owned(),
        })
    }

    /// Checks the time-dependent rules a C tor authority applies: `published` no more
    /// than 24 hours old and at most 12 hours ahead, and an unexpired signing-key
    /// certificate.
    ///
    /// # Errors
    /// [`Error::Expired`] naming what is out of range.
    pub fn check_times(&self, now: u64) -> Result<()> {
        if self.published + 24 * 3600 < now {
            return Err(Error::Expired(
                "descriptor published more than 24 hours ago",
            ));
        }
        if self.published > now + 12 * 3600 {
            return Err(Error::Expired(
                "descriptor published more than 12 hours ahead",
            ));
        }
        if self.signing_cert_expires < now {
            return Err(Error::Expired("Ed25519 signing-key certificate"));
        }
        Ok(())
    }

    /// The exit policy as an [`ExitPolicy`].
    pub fn exit_policy(&self) -> ExitPolicy {
        ExitPolicy {
            rules: self.policy.clone(),
        }
    }
}

/// A `platform` starting with "Tor " must name a version of at least 0.4.8 (INTEROP
/// trap 21); anything else is free text.
fn check_platform(p: &str) -> Result<()> {
    let Some(rest) = p.strip_prefix("Tor ") else {
        return Ok(());
    };
    let version = rest.split(' ').next().unwrap_or("");
    let nums: Vec<u32> = version
        .split(['.', '-'])
        .take(3)
        .map(|x| x.parse().unwrap_or(u32::MAX))
        .collect();
    match nums.as_slice() {
        [a, b, c] if *a != u32::MAX && *b != u32::MAX && *c != u32::MAX => {
            if (*a, *b, *c) < (0, 4, 8) {
                Err(bad("platform names a Tor version older than 0.4.8"))
            } else {
                Ok(())
            }
        }
        _ => Err(bad("malformed Tor platform version")),
    }
}

/// Splits an upload body (C tor POSTs a descriptor followed by its extra-info) into the
/// documents it holds: each starts at a line beginning with `router ` or `extra-info `.
/// Blank lines between documents are dropped.
pub fn split_upload(body: &str) -> Vec<&str> {
    let mut starts = Vec::new();
    let mut pos = 0;
    for line in body.split_inclusive('\n') {
        if line.starts_with("router ") || line.starts_with("extra-info ") {
            starts.push(pos);
        }
        pos += line.len();
    }
    let mut docs = Vec::new();
    for (i, &s) in starts.iter().enumerate() {
        let e = starts.get(i + 1).copied().unwrap_or(body.len());
        let doc = body[s..e].trim_end_matches('\n');
        docs.push(&body[s..(s + doc.len() + 1).min(e)]);
    }
    docs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::RelayKeys;
    use ed25519_dalek::Verifier;
    use rand::SeedableRng;

    const NOW: u64 = 1_790_000_000;

    fn keys() -> EdgeKeys {
        let mut r = rand::rngs::StdRng::seed_from_u64(21);
        let files = RelayKeys::generate(&mut r, NOW, 30 * 86400)
            .unwrap()
            .to_files()
            .unwrap();
        EdgeKeys::from_files(&files).unwrap()
    }

    fn params() -> DescriptorParams {
        DescriptorParams {
            nickname: "ourrelay".into(),
            address: Ipv4Addr::new(127, 0, 0, 1),
            or_port: 5000,
            ipv6: None,
            platform: "onion-relay 0.1.0 on Linux".into(),
            protocols: OUR_PROTOCOLS.into(),
            published: NOW,
            uptime: 10,
            bandwidth: (1000, 2000, 1000),
            policy: vec!["reject *:*".into()],
            contact: Some("ops@example.org".into()),
            include_tap: true,
            tunnelled_dir_server: true,
        }
    }

    #[test]
    fn items_in_order_and_signatures_verify() {
        let k = keys();
        let (text, digest) = build(&params(), &k).unwrap();
        // Item keywords, skipping object bodies.
        let mut keywords = Vec::new();
        let mut in_object = false;
        for l in text.lines() {
            if l.starts_with("-----BEGIN ") {
                in_object = true;
            } else if l.starts_with("-----END ") {
                in_object = false;
            } else if !in_object {
                keywords.push(l.split(' ').next().unwrap());
            }
        }
        assert_eq!(keywords.first(), Some(&"router"));
        assert_eq!(keywords.get(1), Some(&"identity-ed25519"));
        assert_eq!(
            &keywords[keywords.len() - 2..],
            ["router-sig-ed25519", "router-signature"]
        );
        for item in [
            "master-key-ed25519",
            "platform",
            "proto",
            "published",
            "fingerprint",
            "bandwidth",
            "onion-key",
            "signing-key",
            "onion-key-crosscert",
            "ntor-onion-key-crosscert",
            "ntor-onion-key",
            "reject",
            "tunnelled-dir-server",
        ] {
            assert!(keywords.contains(&item), "{item} missing:\n{text}");
        }
        assert!(!text.contains('\r') && text.ends_with("-----END SIGNATURE-----\n"));
        assert!(text.lines().all(|l| l.trim_end() == l));
        // router-signature
        let end = text.find("router-signature\n").unwrap() + "router-signature\n".len();
        assert_eq!(
            <[u8; 20]>::from(Sha1::digest(&text.as_bytes()[..end])),
            digest
        );
        let sig_b64: String = text[end..]
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let sig = super::super::b64_decode(&sig_b64).unwrap();
        k.identity
            .public()
            .verify_raw(&digest, &sig, "desc")
            .unwrap();
        // router-sig-ed25519
        let at = text.find("router-sig-ed25519 ").unwrap() + "router-sig-ed25519 ".len();
        let ed_sig = text[at..].lines().next().unwrap();
        assert_eq!(ed_sig.len(), 86);
        let mut h = Sha256::new();
        h.update(ED_SIG_PREFIX);
        h.update(&text.as_bytes()[..at]);
        let sig = ed25519_dalek::Signature::from_slice(&super::super::b64_decode(ed_sig).unwrap())
            .unwrap();
        k.signing.public().verify(&h.finalize(), &sig).unwrap();
        // master key and fingerprint lines
        assert!(text.contains(&format!("master-key-ed25519 {}\n", k.ed_identity)));
        assert!(text.contains("published 2026-09-21 14:13:20\n"));
    }

    #[test]
    fn tap_is_optional_and_bad_params_are_refused() {
        let k = keys();
        let mut p = params();
        p.include_tap = false;
        let (text, _) = build(&p, &k).unwrap();
        assert!(!text.contains("\nonion-key\n") && !text.contains("\nonion-key-crosscert\n"));
        assert!(text.contains("ntor-onion-key "));
        for bad in [
            DescriptorParams {
                nickname: "has space".into(),
                ..params()
            },
            DescriptorParams {
                nickname: "".into(),
                ..params()
            },
            DescriptorParams {
                platform: "Tor 0.4.9.11 on Linux".into(),
                ..params()
            },
            DescriptorParams {
                policy: vec![],
                ..params()
            },
            DescriptorParams {
                contact: Some("a\nrouter-signature".into()),
                ..params()
            },
            DescriptorParams {
                bandwidth: (0, 0, 0),
                ..params()
            },
        ] {
            assert!(build(&bad, &k).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn our_descriptor_parses_and_verifies() {
        let k = keys();
        let (text, digest) = build(&params(), &k).unwrap();
        let d = ServerDescriptor::parse(&text).unwrap();
        assert_eq!(d.digest, digest);
        assert_eq!(d.nickname, "ourrelay");
        assert_eq!(d.rsa_identity, k.rsa_identity());
        assert_eq!(d.ed_identity, k.ed_identity);
        assert_eq!(d.ntor_key, k.ntor_public);
        assert!(d.tap_key.is_some() && d.tunnelled_dir_server);
        assert_eq!(d.protocols.to_string(), OUR_PROTOCOLS);
        assert_eq!(d.bandwidth, (1000, 2000, 1000));
        d.check_times(NOW + 3600).unwrap();
        assert!(d.check_times(NOW + 25 * 3600).is_err());
        assert!(d.check_times(NOW - 13 * 3600).is_err());
        let mut p = params();
        p.include_tap = false;
        let (text, _) = build(&p, &k).unwrap();
        assert!(ServerDescriptor::parse(&text).unwrap().tap_key.is_none());
    }

    #[test]
    fn tampering_is_detected() {
        let k = keys();
        let (text, _) = build(&params(), &k).unwrap();
        for (from, to) in [
            ("bandwidth 1000 2000 1000", "bandwidth 9000 2000 1000"),
            ("router ourrelay", "router evilrelay"),
            ("reject *:*", "accept *:*"),
            ("tunnelled-dir-server\n", ""),
        ] {
            let t = text.replacen(from, to, 1);
            assert_ne!(t, text);
            assert!(ServerDescriptor::parse(&t).is_err(), "{from} -> {to}");
        }
        // Another relay's signature block on our text.
        let mut other = params();
        other.nickname = "other".into();
        let (o, _) = build(&other, &k).unwrap();
        let sig_at = |t: &str| t.find("router-sig-ed25519 ").unwrap();
        let spliced = format!("{}{}", &text[..sig_at(&text)], &o[sig_at(&o)..]);
        assert!(ServerDescriptor::parse(&spliced).is_err());
        assert!(ServerDescriptor::parse(&"x".repeat(MAX_DESCRIPTOR_LEN + 1)).is_err());
        assert!(ServerDescriptor::parse("").is_err());
    }

    #[test]
    fn c_tor_descriptors_parse() {
        let all = include_str!("../../tests/data/ctor/server.all");
        let docs = split_upload(all);
        assert_eq!(docs.len(), 5);
        for doc in docs {
            let d = ServerDescriptor::parse(doc).unwrap();
            assert!(d.tap_key.is_some());
            assert_eq!(d.platform.as_deref(), Some("Tor 0.4.9.11 on Linux"));
            assert!(d.protocols.supports("Relay", 2));
            // 2026-12-01 08:40:00, shortly after they were fetched.
            d.check_times(1_796_114_400).unwrap();
        }
        let with_extra = format!(
            "{}{}",
            split_upload(all)[0],
            include_str!("../../tests/data/ctor/extra.all")
        );
        let parts = split_upload(&with_extra);
        assert!(parts.len() >= 2 && parts[1].starts_with("extra-info "));
    }

    #[test]
    fn platform_rule() {
        assert!(check_platform("Tor 0.4.9.11 on Linux").is_ok());
        assert!(check_platform("Tor 0.4.8.0-alpha-dev").is_ok());
        assert!(check_platform("Tor 0.4.7.16 on Linux").is_err());
        assert!(check_platform("Tor banana").is_err());
        assert!(check_platform("onion-relay 0.1.0").is_ok());
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,400}") {
            let _ = ServerDescriptor::parse(&s);
        }
    }
}
