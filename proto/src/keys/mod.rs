//! Relay keys: the RSA and Ed25519 key types, C tor's tagged key-file format, and the
//! relay identity bundle that `edge keygen` writes and every process loads its part of.
//!
//! # The bundle on disk (a directory, C tor's `keys/` layout plus three public files)
//!
//! | file | contents | mode | loaded by |
//! |---|---|---|---|
//! | `secret_id_key` | RSA-1024 identity, PEM `RSA PRIVATE KEY` | 0600 | edge |
//! | `rsa_identity_public_key` | its public half, PEM `RSA PUBLIC KEY` | 0644 | worker |
//! | `rsa_identity_cert` | `== tor-cert: type2 ==` + self-signed X.509 DER (CERTS type 2) | 0644 | edge |
//! | `rsa_ed25519_crosscert` | `== tor-cert: type7 ==` + RSA→Ed25519 crosscert | 0644 | edge |
//! | `secret_onion_key` | RSA-1024 TAP onion key, PEM | 0600 | edge |
//! | `ed25519_master_id_public_key` | `== ed25519v1-public: type0 ==` + 32 bytes | 0644 | edge, worker |
//! | `ed25519_master_id_secret_key` | `== ed25519v1-secret: type0 ==` + 64-byte expanded key | 0600 | keygen only |
//! | `ed25519_signing_secret_key` | `== ed25519v1-secret: type4 ==` + 64 bytes | 0600 | edge |
//! | `ed25519_signing_cert` | `== ed25519v1-cert: type4 ==` + type-4 cert | 0644 | edge |
//! | `secret_onion_key_ntor` | `== c25519v1: onion ==` + secret[32] + public[32] | 0600 | worker |
//! | `secret_onion_key_ntor.old` | the previous ntor key, same format (optional) | 0600 | worker |
//! | `ntor_onion_key_crosscert` | `== ntor-crosscert: bitN ==` + ntor public key[32] + type-0x0A cert; N = sign bit | 0644 | edge |
//!
//! A tagged file is a 32-byte header, the NUL-padded text `== <type>: <tag> ==`, then the
//! data (C tor's `crypto_write_tagged_contents_to_file`). Every file that C tor also has
//! uses C tor's exact format, so an existing relay's `keys/` directory can be imported.
//! The edge never needs ntor secrets; the worker never needs identity or signing secrets;
//! nothing running needs the master secret.
//!
//! This module is sans-io: it turns keys into [`KeyFile`]s and back through a loader
//! closure. Writing with the right modes and refusing group/world-readable secrets is
//! `proto_io::keydir`'s job.

mod ed25519;
mod rsa;

pub use self::ed25519::{Ed25519Keypair, Ed25519Signer};
pub use self::rsa::{RsaKeypair, RsaPublic, TOR_RSA_BITS, TOR_RSA_EXPONENT};

use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::cert::ed25519::{CertifiedKey, Ed25519Cert, cert_type};
use crate::cert::onion_crosscert;
use crate::cert::rsa_crosscert::RsaCrosscert;
use crate::cert::x509::{self, X509Params};
use crate::handshake::ntor::NtorOnionKey;
use crate::{Ed25519Identity, Error, Result, RsaIdentity};

/// File names in a key directory.
pub mod files {
    /// RSA identity secret key.
    pub const SECRET_ID_KEY: &str = "secret_id_key";
    /// RSA identity public key.
    pub const RSA_ID_PUBLIC: &str = "rsa_identity_public_key";
    /// Type-2 certificate.
    pub const RSA_ID_CERT: &str = "rsa_identity_cert";
    /// Type-7 certificate.
    pub const RSA_ED_CROSSCERT: &str = "rsa_ed25519_crosscert";
    /// TAP onion secret key.
    pub const SECRET_ONION_KEY: &str = "secret_onion_key";
    /// Ed25519 master identity public key.
    pub const ED_MASTER_PUBLIC: &str = "ed25519_master_id_public_key";
    /// Ed25519 master identity secret key.
    pub const ED_MASTER_SECRET: &str = "ed25519_master_id_secret_key";
    /// Ed25519 signing secret key.
    pub const ED_SIGNING_SECRET: &str = "ed25519_signing_secret_key";
    /// Type-4 certificate.
    pub const ED_SIGNING_CERT: &str = "ed25519_signing_cert";
    /// Current ntor onion key.
    pub const NTOR: &str = "secret_onion_key_ntor";
    /// Previous ntor onion key.
    pub const NTOR_OLD: &str = "secret_onion_key_ntor.old";
    /// ntor-onion-key-crosscert for the current ntor key.
    pub const NTOR_CROSSCERT: &str = "ntor_onion_key_crosscert";
}

/// Default lifetime of the Ed25519 signing key's certificate (C tor's
/// `SigningKeyLifetime`, 30 days).
pub const DEFAULT_SIGNING_KEY_LIFETIME_SECS: u64 = 30 * 24 * 3600;
/// Lifetime of the RSA identity X.509 certificate and the type-7 crosscert made by keygen.
pub const IDENTITY_CERT_LIFETIME_SECS: u64 = 365 * 24 * 3600;

const HEADER_LEN: usize = 32;

/// One file of a key directory. `Debug` omits the contents.
pub struct KeyFile {
    /// File name (one of [`files`]).
    pub name: &'static str,
    /// Exact contents.
    pub contents: Zeroizing<Vec<u8>>,
    /// True when the file holds a secret: written 0600, refused when others can read it.
    pub secret: bool,
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "KeyFile({}, {} bytes, secret: {})",
            self.name,
            self.contents.len(),
            self.secret
        )
    }
}

/// True when the named file holds secret key material.
pub fn is_secret_file(name: &str) -> bool {
    matches!(
        name,
        files::SECRET_ID_KEY
            | files::SECRET_ONION_KEY
            | files::ED_MASTER_SECRET
            | files::ED_SIGNING_SECRET
            | files::NTOR
            | files::NTOR_OLD
    )
}

/// Encodes C tor's tagged format: `== <typestring>: <tag> ==` NUL-padded to 32 bytes,
/// then `data`.
///
/// # Errors
/// [`Error::TooLarge`] when the header text does not fit in 31 bytes.
pub fn encode_tagged(typestring: &str, tag: &str, data: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let header = format!("== {typestring}: {tag} ==");
    if header.len() >= HEADER_LEN {
        return Err(Error::TooLarge("key file header"));
    }
    let mut out = Zeroizing::new(Vec::with_capacity(HEADER_LEN + data.len()));
    out.extend_from_slice(header.as_bytes());
    out.resize(HEADER_LEN, 0);
    out.extend_from_slice(data);
    Ok(out)
}

/// Decodes the tagged format, checking `typestring`; returns the tag and the data.
///
/// # Errors
/// [`Error::Key`] when the header is malformed or names another type.
pub fn decode_tagged<'a>(typestring: &str, contents: &'a [u8]) -> Result<(String, &'a [u8])> {
    if contents.len() < HEADER_LEN {
        return Err(Error::Key(format!("{typestring} file is too short")));
    }
    let header = &contents[..HEADER_LEN];
    let text_len = header.iter().position(|&b| b == 0).unwrap_or(HEADER_LEN);
    if header[text_len..].iter().any(|&b| b != 0) {
        return Err(Error::Key("key file header is not NUL-padded".into()));
    }
    let text = std::str::from_utf8(&header[..text_len])
        .map_err(|_| Error::Key("key file header is not text".into()))?;
    let inner = text
        .strip_prefix("== ")
        .and_then(|t| t.strip_suffix(" =="))
        .ok_or_else(|| Error::Key(format!("bad key file header {text:?}")))?;
    let (ty, tag) = inner
        .split_once(": ")
        .ok_or_else(|| Error::Key(format!("bad key file header {text:?}")))?;
    if ty != typestring {
        return Err(Error::Key(format!(
            "expected a {typestring} file, found {ty}"
        )));
    }
    Ok((tag.to_owned(), &contents[HEADER_LEN..]))
}

fn fixed<const N: usize>(data: &[u8], what: &str) -> Result<[u8; N]> {
    data.try_into()
        .map_err(|_| Error::Key(format!("{what}: expected {N} bytes, found {}", data.len())))
}

fn ntor_to_file(k: &NtorOnionKey) -> Result<Zeroizing<Vec<u8>>> {
    let mut data = Zeroizing::new(Vec::with_capacity(64));
    data.extend_from_slice(&k.secret_bytes()[..]);
    data.extend_from_slice(&k.public_bytes());
    encode_tagged("c25519v1", "onion", &data)
}

/// Parses a `c25519v1` ntor key file and checks that the public half matches.
///
/// # Errors
/// [`Error::Key`].
pub fn ntor_from_file(contents: &[u8]) -> Result<NtorOnionKey> {
    let (_, data) = decode_tagged("c25519v1", contents)?;
    let data: [u8; 64] = fixed(data, "ntor key file")?;
    let mut secret = Zeroizing::new([0u8; 32]);
    secret.copy_from_slice(&data[..32]);
    let k = NtorOnionKey::from_secret_bytes(*secret);
    if k.public_bytes()[..] != data[32..] {
        return Err(Error::Key(
            "ntor key file: public key does not match secret".into(),
        ));
    }
    Ok(k)
}

fn ed_secret_from_file(contents: &[u8], tag: &str) -> Result<Ed25519Keypair> {
    let (t, data) = decode_tagged("ed25519v1-secret", contents)?;
    if t != tag {
        return Err(Error::Key(format!(
            "ed25519 secret key file has tag {t}, expected {tag}"
        )));
    }
    let mut bytes = Zeroizing::new([0u8; 64]);
    bytes.copy_from_slice(&fixed::<64>(data, "ed25519 secret key")?);
    Ok(Ed25519Keypair::from_expanded(&bytes))
}

fn ed_public_from_file(contents: &[u8]) -> Result<Ed25519Identity> {
    let (_, data) = decode_tagged("ed25519v1-public", contents)?;
    Ok(Ed25519Identity(fixed(data, "ed25519 public key")?))
}

fn text(contents: &[u8], what: &str) -> Result<String> {
    String::from_utf8(contents.to_vec()).map_err(|_| Error::Key(format!("{what} is not text")))
}

/// The whole identity bundle, as `keygen` makes it.
#[derive(Debug)]
pub struct RelayKeys {
    /// RSA-1024 identity key.
    pub identity: RsaKeypair,
    /// RSA-1024 TAP onion key (descriptor only; nobody does TAP handshakes).
    pub tap: RsaKeypair,
    /// Ed25519 master identity key.
    pub master: Ed25519Keypair,
    /// Ed25519 signing key.
    pub signing: Ed25519Keypair,
    /// Type-4 certificate: master → signing, with the signed-with extension.
    pub signing_cert: Ed25519Cert,
    /// Type-2 certificate DER.
    pub identity_cert: Vec<u8>,
    /// Type-7 certificate.
    pub rsa_crosscert: RsaCrosscert,
    /// Current ntor onion key.
    pub ntor: NtorOnionKey,
    /// Previous ntor onion key, kept for clients with an old descriptor.
    pub ntor_previous: Option<NtorOnionKey>,
}

fn hours(secs: u64) -> u32 {
    u32::try_from(secs / 3600).unwrap_or(u32::MAX)
}

impl RelayKeys {
    /// Generates a fresh bundle valid from `now_secs`.
    ///
    /// # Errors
    /// [`Error::Key`] if key generation or certificate encoding fails.
    pub fn generate(
        rng: &mut impl CryptoRngCore,
        now_secs: u64,
        signing_lifetime_secs: u64,
    ) -> Result<Self> {
        let identity = RsaKeypair::generate(rng, TOR_RSA_BITS)?;
        let tap = RsaKeypair::generate(rng, TOR_RSA_BITS)?;
        let master = Ed25519Keypair::generate(rng);
        let signing = Ed25519Keypair::generate(rng);
        let signing_cert = sign_signing_cert(&master, &signing, now_secs, signing_lifetime_secs)?;
        let params = X509Params::tor_style(rng, now_secs, IDENTITY_CERT_LIFETIME_SECS);
        let identity_cert = x509::create_identity_cert(rng, &identity, &params)?;
        let rsa_crosscert = RsaCrosscert::sign(
            &identity,
            master.identity(),
            hours(now_secs + IDENTITY_CERT_LIFETIME_SECS),
        )?;
        let ntor = NtorOnionKey::generate(&mut RngAdapter(rng));
        Ok(RelayKeys {
            identity,
            tap,
            master,
            signing,
            signing_cert,
            identity_cert,
            rsa_crosscert,
            ntor,
            ntor_previous: None,
        })
    }

    /// Replaces the signing key and its certificate (needs the master secret).
    ///
    /// # Errors
    /// As [`RelayKeys::generate`].
    pub fn renew_signing_key(
        &mut self,
        rng: &mut impl CryptoRngCore,
        now_secs: u64,
        lifetime_secs: u64,
    ) -> Result<()> {
        self.signing = Ed25519Keypair::generate(rng);
        self.signing_cert =
            sign_signing_cert(&self.master, &self.signing, now_secs, lifetime_secs)?;
        Ok(())
    }

    /// Makes a new ntor onion key current and keeps the old one as previous.
    pub fn rotate_ntor(&mut self, rng: &mut impl CryptoRngCore) {
        let new = NtorOnionKey::generate(&mut RngAdapter(rng));
        self.ntor_previous = Some(std::mem::replace(&mut self.ntor, new));
    }

    /// The relay's RSA identity (fingerprint).
    pub fn rsa_identity(&self) -> RsaIdentity {
        self.identity.public().identity()
    }

    /// Every file of the bundle.
    ///
    /// # Errors
    /// [`Error::Key`] if a key fails to encode.
    pub fn to_files(&self) -> Result<Vec<KeyFile>> {
        let ed_id = self.master.identity();
        let (ntor_cc, bit) = onion_crosscert::ntor_crosscert_sign(
            &self.ntor,
            &ed_id,
            self.signing_cert.expiration_hours,
        )?;
        let mut out = vec![
            (
                files::SECRET_ID_KEY,
                Zeroizing::new(self.identity.to_pkcs1_pem()?.as_bytes().to_vec()),
            ),
            (
                files::RSA_ID_PUBLIC,
                Zeroizing::new(self.identity.public().to_pem().into_bytes()),
            ),
            (
                files::RSA_ID_CERT,
                encode_tagged("tor-cert", "type2", &self.identity_cert)?,
            ),
            (
                files::RSA_ED_CROSSCERT,
                encode_tagged("tor-cert", "type7", self.rsa_crosscert.as_bytes())?,
            ),
            (
                files::SECRET_ONION_KEY,
                Zeroizing::new(self.tap.to_pkcs1_pem()?.as_bytes().to_vec()),
            ),
            (
                files::ED_MASTER_PUBLIC,
                encode_tagged("ed25519v1-public", "type0", &ed_id.0)?,
            ),
            (
                files::ED_MASTER_SECRET,
                encode_tagged(
                    "ed25519v1-secret",
                    "type0",
                    &self.master.expanded_bytes()[..],
                )?,
            ),
            (
                files::ED_SIGNING_SECRET,
                encode_tagged(
                    "ed25519v1-secret",
                    "type4",
                    &self.signing.expanded_bytes()[..],
                )?,
            ),
            (
                files::ED_SIGNING_CERT,
                encode_tagged("ed25519v1-cert", "type4", self.signing_cert.as_bytes())?,
            ),
            (files::NTOR, ntor_to_file(&self.ntor)?),
            (
                files::NTOR_CROSSCERT,
                encode_tagged(
                    "ntor-crosscert",
                    &format!("bit{bit}"),
                    &[&self.ntor.public_bytes()[..], ntor_cc.as_bytes()].concat(),
                )?,
            ),
        ];
        if let Some(prev) = &self.ntor_previous {
            out.push((files::NTOR_OLD, ntor_to_file(prev)?));
        }
        Ok(out
            .into_iter()
            .map(|(name, contents)| KeyFile {
                name,
                contents,
                secret: is_secret_file(name),
            })
            .collect())
    }

    /// Loads the whole bundle (master secret included), e.g. to renew or rotate.
    ///
    /// # Errors
    /// [`Error::Key`] when a file is missing, malformed or inconsistent.
    pub fn load(mut read: impl FnMut(&str) -> Result<Option<Zeroizing<Vec<u8>>>>) -> Result<Self> {
        let mut need =
            |name: &str| read(name)?.ok_or_else(|| Error::Key(format!("missing key file {name}")));
        let master = ed_secret_from_file(&need(files::ED_MASTER_SECRET)?, "type0")?;
        let edge = EdgeKeys::load(&mut need)?;
        if edge.ed_identity != master.identity() {
            return Err(Error::Key(
                "master secret key does not match the public key".into(),
            ));
        }
        let ntor = ntor_from_file(&need(files::NTOR)?)?;
        let ntor_previous = match read(files::NTOR_OLD)? {
            Some(c) => Some(ntor_from_file(&c)?),
            None => None,
        };
        Ok(RelayKeys {
            identity: edge.identity,
            tap: edge.tap,
            master,
            signing: edge.signing,
            signing_cert: edge.signing_cert,
            identity_cert: edge.identity_cert,
            rsa_crosscert: edge.rsa_crosscert,
            ntor,
            ntor_previous,
        })
    }
}

/// Bridges rand_core's object-safe RNG to the `RngCore + CryptoRng` bound of the
/// handshake module.
struct RngAdapter<'a, R: CryptoRngCore + ?Sized>(&'a mut R);
impl<R: CryptoRngCore + ?Sized> rand_core::RngCore for RngAdapter<'_, R> {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> std::result::Result<(), rand_core::Error> {
        self.0.try_fill_bytes(dest)
    }
}
impl<R: CryptoRngCore + ?Sized> rand_core::CryptoRng for RngAdapter<'_, R> {}

fn sign_signing_cert(
    master: &Ed25519Keypair,
    signing: &Ed25519Keypair,
    now_secs: u64,
    lifetime_secs: u64,
) -> Result<Ed25519Cert> {
    Ed25519Cert::sign(
        cert_type::IDENTITY_V_SIGNING,
        hours(now_secs + lifetime_secs),
        CertifiedKey::Ed25519(signing.public().to_bytes()),
        true,
        vec![],
        master,
    )
}

/// What an edge loads: identity and signing secrets, public ntor material, no ntor or
/// master secrets.
#[derive(Debug)]
pub struct EdgeKeys {
    /// RSA identity key (signs descriptors and the link certificate).
    pub identity: RsaKeypair,
    /// TAP onion key (descriptor `onion-key` and its crosscert).
    pub tap: RsaKeypair,
    /// Ed25519 master identity.
    pub ed_identity: Ed25519Identity,
    /// Ed25519 signing key (signs type-5/6 certs and descriptors).
    pub signing: Ed25519Keypair,
    /// Type-4 certificate.
    pub signing_cert: Ed25519Cert,
    /// Type-2 certificate DER.
    pub identity_cert: Vec<u8>,
    /// Type-7 certificate.
    pub rsa_crosscert: RsaCrosscert,
    /// Current ntor public key (descriptor `ntor-onion-key`).
    pub ntor_public: [u8; 32],
    /// Its `ntor-onion-key-crosscert` and sign bit.
    pub ntor_crosscert: (Ed25519Cert, u8),
}

impl EdgeKeys {
    /// The edge's view of an in-memory bundle (from [`RelayKeys::to_files`]), for tests
    /// and for processes that make up a throwaway identity.
    ///
    /// # Errors
    /// As [`EdgeKeys::load`].
    pub fn from_files(files: &[KeyFile]) -> Result<Self> {
        EdgeKeys::load(|n| {
            files
                .iter()
                .find(|f| f.name == n)
                .map(|f| f.contents.clone())
                .ok_or_else(|| Error::Key(format!("{n} missing")))
        })
    }

    /// Loads and cross-checks an edge's keys. `read` returns a file's contents, or
    /// `None` when it does not exist.
    ///
    /// # Errors
    /// [`Error::Key`] when a file is missing, malformed, or does not match the others.
    pub fn load(mut need: impl FnMut(&str) -> Result<Zeroizing<Vec<u8>>>) -> Result<Self> {
        let identity =
            RsaKeypair::from_pkcs1_pem(&text(&need(files::SECRET_ID_KEY)?, "secret_id_key")?)?;
        if identity.public().bits() != TOR_RSA_BITS || !identity.public().exponent_is_65537() {
            return Err(Error::Key(
                "identity key is not RSA-1024 with e=65537".into(),
            ));
        }
        let tap = RsaKeypair::from_pkcs1_pem(&text(
            &need(files::SECRET_ONION_KEY)?,
            "secret_onion_key",
        )?)?;
        let ed_identity = ed_public_from_file(&need(files::ED_MASTER_PUBLIC)?)?;
        let signing = ed_secret_from_file(&need(files::ED_SIGNING_SECRET)?, "type4")?;
        let file = need(files::ED_SIGNING_CERT)?;
        let (_, cert) = decode_tagged("ed25519v1-cert", &file)?;
        let signing_cert = Ed25519Cert::parse(cert)?;
        if signing_cert.cert_type != cert_type::IDENTITY_V_SIGNING
            || signing_cert.certified != CertifiedKey::Ed25519(signing.public().to_bytes())
            || signing_cert.signing_key() != Some(ed_identity.0)
        {
            return Err(Error::Key(
                "ed25519_signing_cert does not bind the signing key to the identity".into(),
            ));
        }
        signing_cert
            .check_signature(None)
            .map_err(|e| Error::Key(format!("ed25519_signing_cert: {e}")))?;
        let file = need(files::RSA_ID_CERT)?;
        let (tag, der) = decode_tagged("tor-cert", &file)?;
        let identity_cert = der.to_vec();
        let parsed = x509::X509Cert::parse(&identity_cert)?;
        if tag != "type2" || parsed.rsa_key.as_ref() != Some(identity.public()) {
            return Err(Error::Key(
                "rsa_identity_cert is not for the identity key".into(),
            ));
        }
        let file = need(files::RSA_ED_CROSSCERT)?;
        let (tag, cc) = decode_tagged("tor-cert", &file)?;
        let rsa_crosscert = RsaCrosscert::parse(cc)?;
        if tag != "type7" || rsa_crosscert.ed_identity != ed_identity {
            return Err(Error::Key(
                "rsa_ed25519_crosscert is not for the Ed25519 identity".into(),
            ));
        }
        rsa_crosscert
            .check(identity.public(), 0)
            .map_err(|e| Error::Key(format!("rsa_ed25519_crosscert: {e}")))?;
        let file = need(files::NTOR_CROSSCERT)?;
        let (tag, cc) = decode_tagged("ntor-crosscert", &file)?;
        let sign_bit = match tag.as_str() {
            "bit0" => 0,
            "bit1" => 1,
            _ => return Err(Error::Key(format!("ntor crosscert tag {tag:?}"))),
        };
        if cc.len() < 32 {
            return Err(Error::Key("ntor crosscert file is too short".into()));
        }
        let (ntor_public, cc) = cc.split_at(32);
        let ntor_public: [u8; 32] = fixed(ntor_public, "ntor public key")?;
        let ntor_cc = Ed25519Cert::parse(cc)?;
        onion_crosscert::ntor_crosscert_check(&ntor_cc, &ntor_public, sign_bit, &ed_identity, 0)
            .map_err(|e| Error::Key(format!("ntor_onion_key_crosscert: {e}")))?;
        Ok(EdgeKeys {
            identity,
            tap,
            ed_identity,
            signing,
            signing_cert,
            identity_cert,
            rsa_crosscert,
            ntor_public,
            ntor_crosscert: (ntor_cc, sign_bit),
        })
    }

    /// The relay's RSA identity (fingerprint).
    pub fn rsa_identity(&self) -> RsaIdentity {
        self.identity.public().identity()
    }
}

/// What a circuit worker loads: the ntor keys and the two public identities.
#[derive(Debug)]
pub struct WorkerKeys {
    /// The relay's RSA identity (ntor's `ID`).
    pub rsa_identity: RsaIdentity,
    /// The relay's Ed25519 identity (ntor v3's `ID`).
    pub ed_identity: Ed25519Identity,
    /// Current ntor onion key.
    pub ntor: NtorOnionKey,
    /// Previous ntor onion key, if any.
    pub ntor_previous: Option<NtorOnionKey>,
}

impl WorkerKeys {
    /// Loads a worker's keys.
    ///
    /// # Errors
    /// [`Error::Key`] when a file is missing or malformed.
    pub fn load(mut read: impl FnMut(&str) -> Result<Option<Zeroizing<Vec<u8>>>>) -> Result<Self> {
        let mut need =
            |name: &str| read(name)?.ok_or_else(|| Error::Key(format!("missing key file {name}")));
        let rsa = RsaPublic::from_pem(&text(
            &need(files::RSA_ID_PUBLIC)?,
            "rsa_identity_public_key",
        )?)?;
        let ed_identity = ed_public_from_file(&need(files::ED_MASTER_PUBLIC)?)?;
        let ntor = ntor_from_file(&need(files::NTOR)?)?;
        let ntor_previous = match read(files::NTOR_OLD)? {
            Some(c) => Some(ntor_from_file(&c)?),
            None => None,
        };
        Ok(WorkerKeys {
            rsa_identity: rsa.identity(),
            ed_identity,
            ntor,
            ntor_previous,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tagged_format_matches_c_tor() {
        let f = encode_tagged("ed25519v1-public", "type0", &[7; 32]).unwrap();
        assert_eq!(&f[..29], b"== ed25519v1-public: type0 ==");
        assert!(f[29..32].iter().all(|&b| b == 0));
        let (tag, data) = decode_tagged("ed25519v1-public", &f).unwrap();
        assert_eq!((tag.as_str(), data), ("type0", &[7u8; 32][..]));
        assert!(decode_tagged("ed25519v1-secret", &f).is_err());
        assert!(encode_tagged("a-very-long-type-string", "and-a-long-tag", &[]).is_err());
    }

    proptest! {
        #[test]
        fn key_file_parsers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_tagged("c25519v1", &b);
            let _ = ntor_from_file(&b);
            let _ = ed_public_from_file(&b);
            let _ = ed_secret_from_file(&b, "type0");
        }
    }
}
