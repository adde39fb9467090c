//! The authority's v3 keys (dir-spec §3.1), in `<data_dir>/keys/` under tor-gencert's file
//! names:
//! - `authority_identity_key`: the long-term RSA-3072 identity (PKCS#1 PEM, 0600). Only
//!   `keygen` needs it; it can live offline, away from the running authority.
//! - `authority_signing_key`: the medium-term RSA-2048 signing key (PKCS#1 PEM, 0600).
//! - `authority_certificate`: the key certificate binding the two.
//!
//! Invariant: a secret file readable by group or others is refused, and secrets are
//! written 0600 through a temporary file and a rename.

use std::path::{Path, PathBuf};

use proto::keys::{KeyFile, RsaKeypair};
use proto::netdoc::authcert::{self, AuthCert};
use proto_io::{Error, keydir};
use zeroize::Zeroizing;

/// Identity key file name.
pub const IDENTITY_KEY: &str = "authority_identity_key";
/// Signing key file name.
pub const SIGNING_KEY: &str = "authority_signing_key";
/// Certificate file name.
pub const CERTIFICATE: &str = "authority_certificate";
/// Identity key size (as tor-gencert).
pub const IDENTITY_BITS: usize = 3072;
/// Signing key size (as tor-gencert).
pub const SIGNING_BITS: usize = 2048;

/// The keys a running authority holds.
#[derive(Clone, Debug)]
pub struct AuthorityKeys {
    /// The certificate.
    pub cert: AuthCert,
    /// The signing key it certifies.
    pub signing: RsaKeypair,
}

/// Where the keys live.
pub fn keys_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("keys")
}

fn read_secret(dir: &Path, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    match std::fs::metadata(&path) {
        Ok(m) if m.permissions().mode() & 0o077 != 0 => Err(Error::Keys(format!(
            "{} holds a secret key but is readable by group or others; run chmod 600 on it",
            path.display()
        ))),
        Ok(_) => Ok(Some(Zeroizing::new(std::fs::read(&path)?))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn rsa_from(bytes: &[u8], what: &str) -> Result<RsaKeypair, Error> {
    let text = std::str::from_utf8(bytes).map_err(|_| Error::Keys(format!("{what} is not PEM")))?;
    RsaKeypair::from_pkcs1_pem(text).map_err(|e| Error::Keys(format!("{what}: {e}")))
}

/// Loads the signing key and certificate and checks that they belong together.
///
/// # Errors
/// [`Error::Keys`] when a file is missing, unsafe, malformed, or the pair mismatches.
pub fn load(data_dir: &Path) -> Result<AuthorityKeys, Error> {
    let dir = keys_dir(data_dir);
    let missing = |n: &str| {
        Error::Keys(format!(
            "{} missing: run `dirauth keygen` first",
            dir.join(n).display()
        ))
    };
    let signing = rsa_from(
        &read_secret(&dir, SIGNING_KEY)?.ok_or_else(|| missing(SIGNING_KEY))?,
        SIGNING_KEY,
    )?;
    let cert_text =
        std::fs::read_to_string(dir.join(CERTIFICATE)).map_err(|_| missing(CERTIFICATE))?;
    let cert =
        AuthCert::parse(&cert_text).map_err(|e| Error::Keys(format!("{CERTIFICATE}: {e}")))?;
    if cert.signing_key_digest != signing.public().identity() {
        return Err(Error::Keys(format!(
            "{SIGNING_KEY} is not the key {CERTIFICATE} certifies"
        )));
    }
    Ok(AuthorityKeys { cert, signing })
}

/// What `keygen` did.
#[derive(Debug)]
pub struct KeygenResult {
    /// The v3 identity (`v3ident=` of `DirAuthority` lines).
    pub v3ident: String,
    /// Whether a new identity key was made.
    pub new_identity: bool,
    /// When the new certificate expires.
    pub expires: u64,
}

/// Makes (or renews) the authority keys in `<data_dir>/keys`: a new identity key if there
/// is none (unless `require_identity`), then always a new signing key and certificate
/// valid for `lifetime_secs` from `now`, naming `address`.
///
/// # Errors
/// [`Error::Keys`] when the identity key is needed but absent or unreadable; I/O errors.
pub fn keygen(
    data_dir: &Path,
    address: Option<std::net::SocketAddrV4>,
    now: u64,
    lifetime_secs: u64,
    require_identity: bool,
) -> Result<KeygenResult, Error> {
    let dir = keys_dir(data_dir);
    let mut rng = rand::rngs::OsRng;
    let keyerr = |e: proto::Error| Error::Keys(e.to_string());
    let (identity, new_identity) = match read_secret(&dir, IDENTITY_KEY)? {
        Some(b) => (rsa_from(&b, IDENTITY_KEY)?, false),
        None if require_identity => {
            return Err(Error::Keys(format!(
                "{} missing: renewing the signing key needs the identity key",
                dir.join(IDENTITY_KEY).display()
            )));
        }
        None => (
            RsaKeypair::generate(&mut rng, IDENTITY_BITS).map_err(keyerr)?,
            true,
        ),
    };
    let signing = RsaKeypair::generate(&mut rng, SIGNING_BITS).map_err(keyerr)?;
    let cert =
        authcert::build(&identity, &signing, address, now, now + lifetime_secs).map_err(keyerr)?;
    let mut files = vec![
        KeyFile {
            name: SIGNING_KEY,
            contents: Zeroizing::new(signing.to_pkcs1_pem().map_err(keyerr)?.as_bytes().to_vec()),
            secret: true,
        },
        KeyFile {
            name: CERTIFICATE,
            contents: Zeroizing::new(cert.into_bytes()),
            secret: false,
        },
    ];
    if new_identity {
        files.push(KeyFile {
            name: IDENTITY_KEY,
            contents: Zeroizing::new(identity.to_pkcs1_pem().map_err(keyerr)?.as_bytes().to_vec()),
            secret: true,
        });
    }
    // The signing key goes before the certificate naming it, so a reader never sees a
    // certificate whose key is not there yet.
    keydir::write_key_files(&dir, &files, true)?;
    Ok(KeygenResult {
        v3ident: identity.public().identity().to_hex(),
        new_identity,
        expires: now + lifetime_secs,
    })
}

/// What [`refresh`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Refresh {
    /// Nothing to do.
    Unchanged,
    /// The files on disk hold another signing key (renewed by an operator): loaded.
    Reloaded,
    /// The certificate was close to expiry and the identity key was at hand: renewed.
    Renewed,
    /// The certificate is close to expiry and the identity key is offline: an operator
    /// must run `dirauth keygen --renew-signing-key`.
    NeedsRenewal,
}

/// Keeps the signing key current (dir-spec §3.1: rotate the medium-term key before its
/// certificate expires): reloads keys an operator renewed on disk, and renews them itself
/// when the certificate expires within `renew_before_secs` and the identity key is in
/// the keys directory. Returns the keys to use from now on.
///
/// # Errors
/// Unreadable or inconsistent key files.
pub fn refresh(
    data_dir: &Path,
    current: &AuthorityKeys,
    now: u64,
    renew_before_secs: u64,
    lifetime_secs: u64,
) -> Result<(AuthorityKeys, Refresh), Error> {
    let on_disk = load(data_dir)?;
    if on_disk.cert.signing_key_digest != current.cert.signing_key_digest
        && on_disk.cert.expires >= current.cert.expires
    {
        return Ok((on_disk, Refresh::Reloaded));
    }
    if current.cert.expires > now + renew_before_secs {
        return Ok((current.clone(), Refresh::Unchanged));
    }
    if !keys_dir(data_dir).join(IDENTITY_KEY).exists() {
        return Ok((current.clone(), Refresh::NeedsRenewal));
    }
    keygen(data_dir, current.cert.address, now, lifetime_secs, true)?;
    Ok((load(data_dir)?, Refresh::Renewed))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keygen_load_renew_and_offline_identity() {
        let d = tempfile::tempdir().unwrap();
        let r = keygen(d.path(), None, 1_790_000_000, 86400 * 30, false).unwrap();
        assert!(r.new_identity);
        let k = load(d.path()).unwrap();
        assert_eq!(k.cert.v3ident.to_hex(), r.v3ident);
        assert_eq!(k.cert.identity_key.bits(), IDENTITY_BITS);
        let dir = keys_dir(d.path());
        for f in [IDENTITY_KEY, SIGNING_KEY] {
            let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        // Renewal keeps the identity and changes the signing key.
        let r2 = keygen(d.path(), None, 1_790_000_100, 86400 * 30, true).unwrap();
        assert!(!r2.new_identity);
        assert_eq!(r2.v3ident, r.v3ident);
        let k2 = load(d.path()).unwrap();
        assert_ne!(k2.cert.signing_key_digest, k.cert.signing_key_digest);
        // The running authority does not need the identity key.
        std::fs::remove_file(dir.join(IDENTITY_KEY)).unwrap();
        assert!(load(d.path()).is_ok());
        assert!(keygen(d.path(), None, 1_790_000_200, 86400, true).is_err());
        // A world-readable signing key is refused.
        let _ = &r2;
        std::fs::set_permissions(
            dir.join(SIGNING_KEY),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert!(load(d.path()).is_err());
    }

    #[test]
    fn signing_keys_are_renewed_before_expiry() {
        let d = tempfile::tempdir().unwrap();
        let now = 1_790_000_000;
        keygen(d.path(), None, now, 10 * 86400, false).unwrap();
        let k = load(d.path()).unwrap();
        // Far from expiry: nothing happens.
        let (k1, r) = refresh(d.path(), &k, now, 5 * 86400, 30 * 86400).unwrap();
        assert_eq!(r, Refresh::Unchanged);
        assert_eq!(k1.cert.signing_key_digest, k.cert.signing_key_digest);
        // Within the renewal window, with the identity at hand: a new signing key.
        let (k2, r) = refresh(d.path(), &k, now + 6 * 86400, 5 * 86400, 30 * 86400).unwrap();
        assert_eq!(r, Refresh::Renewed);
        assert_ne!(k2.cert.signing_key_digest, k.cert.signing_key_digest);
        assert_eq!(k2.cert.v3ident, k.cert.v3ident);
        assert!(k2.cert.expires > k.cert.expires);
        // An operator renewed on disk while we ran with the old key: reloaded.
        let (k3, r) = refresh(d.path(), &k, now + 6 * 86400, 5 * 86400, 30 * 86400).unwrap();
        assert_eq!(r, Refresh::Reloaded);
        assert_eq!(k3.cert.signing_key_digest, k2.cert.signing_key_digest);
        // Identity offline and the certificate near expiry: the operator is asked.
        std::fs::remove_file(keys_dir(d.path()).join(IDENTITY_KEY)).unwrap();
        let (_, r) = refresh(
            d.path(),
            &k2,
            k2.cert.expires - 86400,
            5 * 86400,
            30 * 86400,
        )
        .unwrap();
        assert_eq!(r, Refresh::NeedsRenewal);
    }
}
