//! Directory authority key certificates (dir-spec §3.1): the long-term v3 identity key
//! certifies a medium-term signing key, which signs votes and consensuses.
//!
//! Layout, in C tor's order (INTEROP E.4):
//! `dir-key-certificate-version 3`, `[dir-address IP:PORT]`, `fingerprint HEX40`,
//! `dir-key-published`, `dir-key-expires`, `dir-identity-key` (object), `dir-signing-key`
//! (object), `dir-key-crosscert` (`ID SIGNATURE` object: the signing key signs
//! SHA1(DER(identity key))), `dir-key-certification` (the identity key signs SHA1 of
//! the text from the start through `dir-key-certification\n`).
//!
//! Invariant: an [`AuthCert`] returned by [`AuthCert::parse`] has both signatures
//! checked; its `text` is the exact certificate, ready to serve or embed in a vote.

use std::fmt::Write as _;
use std::net::SocketAddrV4;

use sha1::{Digest, Sha1};

use super::tokenize::{Items, tokenize};
use super::{format_time, parse_time, pem_object};
use crate::keys::{RsaKeypair, RsaPublic};
use crate::{Error, Result, RsaIdentity};

/// Largest certificate accepted (a 4096-bit identity key makes one of about 3.5 kB).
pub const MAX_CERT_LEN: usize = 8192;

/// A checked authority key certificate.
#[derive(Clone, Debug)]
pub struct AuthCert {
    /// SHA-1 of the identity key's DER: the authority's `v3ident`.
    pub v3ident: RsaIdentity,
    /// The identity key.
    pub identity_key: RsaPublic,
    /// The signing key.
    pub signing_key: RsaPublic,
    /// SHA-1 of the signing key's DER (named in `directory-signature` lines).
    pub signing_key_digest: RsaIdentity,
    /// `dir-address`, if present.
    pub address: Option<SocketAddrV4>,
    /// `dir-key-published`, seconds since the epoch.
    pub published: u64,
    /// `dir-key-expires`, seconds since the epoch.
    pub expires: u64,
    /// The certificate's text.
    pub text: String,
}

fn bad(what: &str) -> Error {
    Error::Malformed(format!("key certificate: {what}"))
}

/// Writes and signs a certificate.
///
/// # Errors
/// Signing errors.
pub fn build(
    identity: &RsaKeypair,
    signing: &RsaKeypair,
    address: Option<SocketAddrV4>,
    published: u64,
    expires: u64,
) -> Result<String> {
    let mut t = String::from("dir-key-certificate-version 3\n");
    if let Some(a) = address {
        let _ = writeln!(t, "dir-address {a}");
    }
    let _ = writeln!(t, "fingerprint {}", identity.public().identity().to_hex());
    let _ = writeln!(t, "dir-key-published {}", format_time(published));
    let _ = writeln!(t, "dir-key-expires {}", format_time(expires));
    t.push_str("dir-identity-key\n");
    t.push_str(&identity.public().to_pem());
    t.push_str("dir-signing-key\n");
    t.push_str(&signing.public().to_pem());
    let cross = signing.sign_raw(&Sha1::digest(identity.public().to_der()))?;
    t.push_str("dir-key-crosscert\n");
    t.push_str(&pem_object("ID SIGNATURE", &cross));
    t.push_str("dir-key-certification\n");
    let sig = identity.sign_raw(&Sha1::digest(t.as_bytes()))?;
    t.push_str(&pem_object("SIGNATURE", &sig));
    Ok(t)
}

impl AuthCert {
    /// Parses one certificate and checks both signatures (not its dates: see
    /// [`AuthCert::is_live`]).
    ///
    /// # Errors
    /// [`Error::Malformed`], [`Error::Key`] or [`Error::BadSignature`].
    pub fn parse(text: &str) -> Result<Self> {
        if text.len() > MAX_CERT_LEN {
            return Err(bad("too large"));
        }
        let items = tokenize(text)?;
        let look = Items::new(&items);
        let first = items.first().ok_or_else(|| bad("empty"))?;
        if first.keyword != "dir-key-certificate-version" || first.rest != "3" {
            return Err(bad("must start with dir-key-certificate-version 3"));
        }
        let last = items.last().ok_or_else(|| bad("empty"))?;
        if last.keyword != "dir-key-certification" || last.end != text.len() {
            return Err(bad("must end with dir-key-certification"));
        }
        let identity_key = RsaPublic::from_der(
            look.one("dir-identity-key")?
                .object_data(&["RSA PUBLIC KEY"])?,
        )?;
        let signing_key = RsaPublic::from_der(
            look.one("dir-signing-key")?
                .object_data(&["RSA PUBLIC KEY"])?,
        )?;
        if !(1024..=4096).contains(&identity_key.bits())
            || !(1024..=4096).contains(&signing_key.bits())
        {
            return Err(Error::Key("authority keys must be 1024-4096 bits".into()));
        }
        let v3ident = identity_key.identity();
        let fp = look.one("fingerprint")?.rest;
        if !fp.eq_ignore_ascii_case(&v3ident.to_hex()) {
            return Err(bad("fingerprint does not match dir-identity-key"));
        }
        let cross = look
            .one("dir-key-crosscert")?
            .object_data(&["ID SIGNATURE", "SIGNATURE"])?;
        signing_key.verify_raw(
            &Sha1::digest(identity_key.to_der()),
            cross,
            "dir-key-crosscert",
        )?;
        let signed_end = last.start + "dir-key-certification\n".len();
        if !last.rest.is_empty() {
            return Err(bad("dir-key-certification takes no arguments"));
        }
        identity_key.verify_raw(
            &Sha1::digest(&text.as_bytes()[..signed_end]),
            last.object_data(&["SIGNATURE"])?,
            "dir-key-certification",
        )?;
        let time = |kw: &str| -> Result<u64> {
            parse_time(look.one(kw)?.rest).ok_or_else(|| bad("bad time"))
        };
        let address = look
            .opt("dir-address")?
            .map(|a| {
                a.rest
                    .parse::<SocketAddrV4>()
                    .map_err(|_| bad("bad dir-address"))
            })
            .transpose()?;
        Ok(AuthCert {
            v3ident,
            signing_key_digest: signing_key.identity(),
            identity_key,
            signing_key,
            address,
            published: time("dir-key-published")?,
            expires: time("dir-key-expires")?,
            text: text.to_owned(),
        })
    }

    /// Parses a concatenation of certificates (as `/tor/keys/all` serves them).
    ///
    /// # Errors
    /// The first certificate that does not parse.
    pub fn parse_many(text: &str) -> Result<Vec<Self>> {
        let mut out = Vec::new();
        let mut starts: Vec<usize> = text
            .match_indices("dir-key-certificate-version ")
            .map(|(i, _)| i)
            .filter(|&i| i == 0 || text.as_bytes()[i - 1] == b'\n')
            .collect();
        if starts.first() != Some(&0) {
            return Err(bad("does not start with a certificate"));
        }
        starts.push(text.len());
        for w in starts.windows(2) {
            out.push(AuthCert::parse(&text[w[0]..w[1]])?);
        }
        Ok(out)
    }

    /// Whether `now` lies between publication and expiry.
    pub fn is_live(&self, now: u64) -> bool {
        self.published <= now + 24 * 3600 && now < self.expires
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn built_certificate_parses_and_tampering_fails() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let id = RsaKeypair::generate(&mut rng, 2048).unwrap();
        let sk = RsaKeypair::generate(&mut rng, 1024).unwrap();
        let addr: SocketAddrV4 = "127.0.0.1:7000".parse().unwrap();
        let t = build(&id, &sk, Some(addr), 1_790_000_000, 1_800_000_000).unwrap();
        let c = AuthCert::parse(&t).unwrap();
        assert_eq!(c.v3ident, id.public().identity());
        assert_eq!(c.signing_key_digest, sk.public().identity());
        assert_eq!(c.address, Some(addr));
        assert!(c.is_live(1_795_000_000) && !c.is_live(1_800_000_001));
        assert_eq!(c.text, t);
        let tampered = t.replace("dir-address 127.0.0.1:7000", "dir-address 127.0.0.1:7001");
        assert!(AuthCert::parse(&tampered).is_err());
        // A signing key crosscertified by a different identity.
        let other = RsaKeypair::generate(&mut rng, 2048).unwrap();
        let t2 = build(&other, &sk, None, 1_790_000_000, 1_800_000_000).unwrap();
        let cross_at = |t: &str| t.find("dir-key-crosscert\n").unwrap();
        let cert_at = |t: &str| t.find("dir-key-certification\n").unwrap();
        let spliced = format!(
            "{}{}{}",
            &t[..cross_at(&t)],
            &t2[cross_at(&t2)..cert_at(&t2)],
            &t[cert_at(&t)..]
        );
        assert!(AuthCert::parse(&spliced).is_err());
        let two = format!("{t}{t2}");
        assert_eq!(AuthCert::parse_many(&two).unwrap().len(), 2);
    }

    #[test]
    fn tor_gencert_certificates_parse() {
        let all = include_str!("../../tests/data/ctor/keys.all");
        let certs = AuthCert::parse_many(all).unwrap();
        assert_eq!(certs.len(), 3);
        for c in &certs {
            assert_eq!(c.identity_key.bits(), 3072);
            assert_eq!(c.signing_key.bits(), 2048);
            assert!(c.is_live(1_796_114_400));
        }
        assert!(
            certs
                .iter()
                .any(|c| c.v3ident.to_hex() == "8E14B1BEEF844CB9C47E4C237EFF746B1353C398")
        );
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,300}") {
            let _ = AuthCert::parse(&s);
            let _ = AuthCert::parse_many(&s);
        }
    }
}
