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

use super::{b64_unpadded, format_time, pem_object};
use crate::cert::onion_crosscert;
use crate::keys::{Ed25519Signer, EdgeKeys};
use crate::{Error, Result};

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
        EdgeKeys::load(|n| {
            files
                .iter()
                .find(|f| f.name == n)
                .map(|f| f.contents.clone())
                .ok_or(Error::Key(n.into()))
        })
        .unwrap()
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
}
