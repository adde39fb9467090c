//! Mutual TLS on the edge↔worker gRPC links (DESIGN.md "Data path"; issue #10 item 4).
//!
//! A relay cluster has one certificate authority of its own. Every process holds a
//! certificate issued by it for one [`Role`]: workers serve with a certificate for the name
//! [`WORKER_NAME`] and the serverAuth usage; edges connect with one for [`EDGE_NAME`] and
//! the clientAuth usage. Both sides trust only the cluster CA.
//!
//! Invariants:
//! - A worker completes no TLS handshake, and so reads no gRPC message, from a peer
//!   without a client certificate of its cluster's CA; the usages keep roles apart (a
//!   worker's certificate cannot open an edge link, an edge's cannot serve one).
//! - Handshakes run concurrently, each bounded by a timeout, at most
//!   [`MAX_PENDING_HANDSHAKES`] at once; a slow or silent connector only holds its own
//!   socket.
//! - Secret keys (`ca.key`, `tls.key`) are written 0600 and refused when the group or
//!   others can read them ([`crate::keydir`]).
//!
//! Layout of a process's directory (the shape of a Kubernetes `kubernetes.io/tls` Secret
//! plus its CA): [`CA_CERT`], [`CERT`], [`KEY`]. The CA's own directory holds [`CA_CERT`]
//! and [`CA_KEY`]; it is needed only to issue certificates and belongs on no running host.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use zeroize::Zeroizing;

use crate::{Error, Result, keydir};
use proto::keys::KeyFile;

/// The CA certificate (PEM), in the CA's directory and in every process's.
pub const CA_CERT: &str = "ca.crt";
/// The CA's secret key (PEM, PKCS#8), only in the CA's directory.
pub const CA_KEY: &str = "ca.key";
/// A process's certificate (PEM).
pub const CERT: &str = "tls.crt";
/// A process's secret key (PEM, PKCS#8).
pub const KEY: &str = "tls.key";

/// DNS name in every worker certificate; edges verify it whatever address they dial.
pub const WORKER_NAME: &str = "circuit-worker";
/// DNS name in every edge certificate.
pub const EDGE_NAME: &str = "edge";

/// Handshakes a worker runs at once; connections beyond it are closed unread.
pub const MAX_PENDING_HANDSHAKES: usize = 64;

/// Days a CA certificate is valid.
pub const CA_DAYS: u32 = 3650;

/// `[cluster_tls]`, the same section in the edge's and the worker's configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Directory with this process's [`CA_CERT`], [`CERT`] and [`KEY`] (made by
    /// `edge cluster-cert`). Default: `cluster-tls`, relative to the working directory.
    pub dir: PathBuf,
    /// Seconds a TLS handshake on an edge↔worker link may take. Default: 10.
    pub handshake_timeout_secs: u64,
    /// Run the edge↔worker links without TLS: anyone who reaches a worker's port can then
    /// open circuits and read the cells. Only for a lab on one trusted host; edges then
    /// dial `http://` worker URLs instead of `https://`. Default: false.
    pub insecure_plaintext: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            dir: PathBuf::from("cluster-tls"),
            handshake_timeout_secs: 10,
            insecure_plaintext: false,
        }
    }
}

impl Settings {
    /// The handshake timeout (at least a second).
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs.max(1))
    }

    /// This process's material, or `None` under `insecure_plaintext` (logged as a
    /// warning).
    ///
    /// # Errors
    /// As [`Material::load`].
    pub fn load(&self) -> Result<Option<Material>> {
        if self.insecure_plaintext {
            tracing::warn!(
                "cluster_tls.insecure_plaintext is set: edge-worker links are unauthenticated \
                 and unencrypted"
            );
            return Ok(None);
        }
        Material::load(&self.dir).map(Some)
    }

    /// The scheme worker URLs must have under these settings.
    pub fn scheme(&self) -> &'static str {
        if self.insecure_plaintext {
            "http"
        } else {
            "https"
        }
    }

    /// Checks that `url` is a worker URL these settings can dial: `https://` with TLS,
    /// `http://` without, so a URL never silently picks the other; `unix:PATH` (a worker
    /// on this host, [`crate::unix_link`]) either way.
    ///
    /// # Errors
    /// [`Error::Keys`] naming the URL and the fix.
    pub fn check_url(&self, url: &str) -> Result<()> {
        if crate::unix_link::socket_path(url).is_some() {
            return Ok(());
        }
        let want = self.scheme();
        match url.split_once("://") {
            Some((scheme, _)) if scheme.eq_ignore_ascii_case(want) => Ok(()),
            _ if self.insecure_plaintext => Err(Error::Keys(format!(
                "worker URL {url:?}: with cluster_tls.insecure_plaintext the links are \
                 plaintext, so the URL must start with http://"
            ))),
            _ => Err(Error::Keys(format!(
                "worker URL {url:?}: edge-worker links use mutual TLS, so the URL must start \
                 with https:// (or set cluster_tls.insecure_plaintext for a lab)"
            ))),
        }
    }
}

/// Which side of the link a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Connects to workers (TLS client).
    Edge,
    /// Serves edges (TLS server).
    Worker,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "edge" => Ok(Role::Edge),
            "worker" | "circuit-worker" => Ok(Role::Worker),
            _ => Err(format!("unknown role {s:?} (edge or worker)")),
        }
    }
}

fn tls_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Keys(format!("cluster TLS: {what}: {e}"))
}

fn unix_offset(secs: u64) -> Result<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
        .map_err(|e| tls_err("time", e))
}

fn random_serial() -> SerialNumber {
    let mut b: [u8; 16] = rand::random();
    b[0] &= 0x7f; // positive
    SerialNumber::from_slice(&b)
}

/// The CA's parameters, a function of its key alone, so issuing later needs only
/// [`CA_KEY`]: the subject names the key's SHA-256, which tells two clusters' CAs apart in
/// logs and keeps issuer names unique.
fn ca_params(key: &KeyPair, now: u64) -> Result<CertificateParams> {
    let id = hex16(&Sha256::digest(key.public_key_raw()));
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("relay cluster CA {id}"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = unix_offset(now.saturating_sub(3600))?;
    p.not_after = unix_offset(now + u64::from(CA_DAYS) * 86_400)?;
    p.serial_number = Some(random_serial());
    Ok(p)
}

fn hex16(b: &[u8]) -> String {
    b.iter().take(8).map(|x| format!("{x:02x}")).collect()
}

/// Creates a new cluster CA in `dir` (0700): [`CA_CERT`] and [`CA_KEY`]. `now` is unix
/// seconds.
///
/// # Errors
/// [`Error::Keys`] when `dir` already holds a CA; [`Error::Io`] on file errors.
pub fn create_ca(dir: &Path, now: u64) -> Result<()> {
    let key = KeyPair::generate().map_err(|e| tls_err("key generation", e))?;
    let cert = ca_params(&key, now)?
        .self_signed(&key)
        .map_err(|e| tls_err("CA certificate", e))?;
    keydir::write_key_files(
        dir,
        &[
            KeyFile {
                name: CA_KEY,
                contents: Zeroizing::new(key.serialize_pem().into_bytes()),
                secret: true,
            },
            KeyFile {
                name: CA_CERT,
                contents: Zeroizing::new(cert.pem().into_bytes()),
                secret: false,
            },
        ],
        false,
    )
}

/// Issues a certificate for `role`, named `name` (its common name, for logs), valid
/// `days`, from the CA in `ca_dir`, and writes [`CA_CERT`], [`CERT`] and [`KEY`] into
/// `out_dir`. The result is checked as its peers will check it before anything is written.
///
/// # Errors
/// [`Error::Keys`] for a missing or unsafe CA, a CA certificate that does not match its
/// key, or existing files in `out_dir`; [`Error::Io`] on file errors.
pub fn issue(
    ca_dir: &Path,
    role: Role,
    name: &str,
    days: u32,
    out_dir: &Path,
    now: u64,
) -> Result<()> {
    let missing = |f: &str| Error::Keys(format!("{} is missing", ca_dir.join(f).display()));
    let ca_key = keydir::read_file(&ca_dir.join(CA_KEY), true)?.ok_or_else(|| missing(CA_KEY))?;
    let ca_cert =
        keydir::read_file(&ca_dir.join(CA_CERT), false)?.ok_or_else(|| missing(CA_CERT))?;
    let ca_key =
        KeyPair::from_pem(&String::from_utf8_lossy(&ca_key)).map_err(|e| tls_err("ca.key", e))?;
    let issuer = Issuer::new(ca_params(&ca_key, now)?, ca_key);

    let key = KeyPair::generate().map_err(|e| tls_err("key generation", e))?;
    let san = match role {
        Role::Edge => EDGE_NAME,
        Role::Worker => WORKER_NAME,
    };
    let mut p =
        CertificateParams::new(vec![san.to_owned()]).map_err(|e| tls_err("certificate", e))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![match role {
        Role::Edge => ExtendedKeyUsagePurpose::ClientAuth,
        Role::Worker => ExtendedKeyUsagePurpose::ServerAuth,
    }];
    p.use_authority_key_identifier_extension = true;
    p.not_before = unix_offset(now.saturating_sub(3600))?;
    p.not_after = unix_offset(now + u64::from(days.max(1)) * 86_400)?;
    p.serial_number = Some(random_serial());
    let cert = p
        .signed_by(&key, &issuer)
        .map_err(|e| tls_err("certificate", e))?;

    let material = Material {
        ca_pem: ca_cert.to_vec(),
        cert_pem: cert.pem().into_bytes(),
        key_pem: Zeroizing::new(key.serialize_pem().into_bytes()),
    };
    material
        .verify(role, now)
        .map_err(|e| tls_err("the issued certificate does not verify against ca.crt", e))?;
    keydir::write_key_files(
        out_dir,
        &[
            KeyFile {
                name: KEY,
                contents: material.key_pem.clone(),
                secret: true,
            },
            KeyFile {
                name: CERT,
                contents: Zeroizing::new(material.cert_pem.clone()),
                secret: false,
            },
            KeyFile {
                name: CA_CERT,
                contents: Zeroizing::new(material.ca_pem.clone()),
                secret: false,
            },
        ],
        false,
    )
}

/// One process's TLS material, as loaded from its directory.
#[derive(Clone)]
pub struct Material {
    /// The cluster CA certificate (PEM).
    pub ca_pem: Vec<u8>,
    /// This process's certificate (PEM).
    pub cert_pem: Vec<u8>,
    /// This process's secret key (PEM).
    pub key_pem: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Material { .. }")
    }
}

impl Material {
    /// Loads [`CA_CERT`], [`CERT`] and [`KEY`] from `dir`.
    ///
    /// # Errors
    /// [`Error::Keys`] when a file is missing, unparsable, or the key is readable by others.
    pub fn load(dir: &Path) -> Result<Material> {
        let read = |name: &str, secret: bool| {
            keydir::read_file(&dir.join(name), secret)?.ok_or_else(|| {
                Error::Keys(format!(
                    "{} is missing (create it with `edge cluster-cert`, or set \
                     cluster_tls.insecure_plaintext for a lab without TLS)",
                    dir.join(name).display()
                ))
            })
        };
        let m = Material {
            ca_pem: read(CA_CERT, false)?.to_vec(),
            cert_pem: read(CERT, false)?.to_vec(),
            key_pem: read(KEY, true)?,
        };
        // Parse now, so a bad file fails at start-up and not at the first connection.
        m.roots()?;
        m.chain()?;
        m.key()?;
        Ok(m)
    }

    fn roots(&self) -> Result<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&self.ca_pem) {
            roots
                .add(c.map_err(|e| tls_err(CA_CERT, e))?)
                .map_err(|e| tls_err(CA_CERT, e))?;
        }
        if roots.is_empty() {
            return Err(tls_err(CA_CERT, "no certificate"));
        }
        Ok(roots)
    }

    fn chain(&self) -> Result<Vec<CertificateDer<'static>>> {
        let chain = CertificateDer::pem_slice_iter(&self.cert_pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| tls_err(CERT, e))?;
        if chain.is_empty() {
            return Err(tls_err(CERT, "no certificate"));
        }
        Ok(chain)
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>> {
        PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(|e| tls_err(KEY, e))
    }

    /// Checks this certificate as its peers will: chained to the CA, valid at `now`, for
    /// `role`'s name and usage.
    ///
    /// # Errors
    /// The verifier's complaint.
    pub fn verify(&self, role: Role, now: u64) -> Result<()> {
        let roots = Arc::new(self.roots()?);
        let chain = self.chain()?;
        let (leaf, rest) = chain.split_first().ok_or_else(|| tls_err(CERT, "empty"))?;
        let now = UnixTime::since_unix_epoch(Duration::from_secs(now));
        use rustls::client::danger::ServerCertVerifier;
        match role {
            Role::Edge => {
                WebPkiClientVerifier::builder_with_provider(roots, crate::tls::provider())
                    .build()
                    .map_err(|e| tls_err("verifier", e))?
                    .verify_client_cert(leaf, rest, now)
                    .map_err(|e| tls_err(CERT, e))?;
            }
            Role::Worker => {
                rustls::client::WebPkiServerVerifier::builder_with_provider(
                    roots,
                    crate::tls::provider(),
                )
                .build()
                .map_err(|e| tls_err("verifier", e))?
                .verify_server_cert(leaf, rest, &worker_server_name(), &[], now)
                .map_err(|e| tls_err(CERT, e))?;
            }
        }
        Ok(())
    }

    /// The worker's rustls configuration: this certificate, and a client certificate of
    /// the cluster CA with the clientAuth usage required of every connector.
    ///
    /// # Errors
    /// [`Error::Keys`] for unusable material.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>> {
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(self.roots()?),
            crate::tls::provider(),
        )
        .build()
        .map_err(|e| tls_err("verifier", e))?;
        let mut cfg = ServerConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_err("protocol versions", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain()?, self.key()?)
            .map_err(|e| tls_err("certificate and key", e))?;
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// The edge's tonic TLS configuration: this certificate as the client identity, the
    /// cluster CA as the only root, [`WORKER_NAME`] as the name to verify.
    pub fn client_config(&self, handshake_timeout: Duration) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .identity(tonic::transport::Identity::from_pem(
                &self.cert_pem,
                &*self.key_pem,
            ))
            .domain_name(WORKER_NAME)
            .timeout(handshake_timeout)
    }
}

fn worker_server_name() -> ServerName<'static> {
    ServerName::DnsName(
        rustls::pki_types::DnsName::try_from(WORKER_NAME)
            .unwrap_or_else(|_| unreachable!("WORKER_NAME is a valid DNS name"))
            .to_owned(),
    )
}

/// What became of one incoming connection's handshake (the `result` label of
/// `worker_link_handshakes_total`); the Unix-socket link counts its peer checks here too.
pub(crate) fn count(result: &'static str) {
    metrics::counter!("worker_link_handshakes_total", "result" => result).increment(1);
}

/// The next connection `accept` yields, or `None` once `closed` completes (nobody reads
/// the links any more). A failed accept (out of descriptors and the like) is logged and
/// retried after a pause, so the loop does not spin. Shared by the TCP and Unix-socket
/// link listeners.
pub(crate) async fn next_connection<S, F>(
    mut accept: impl FnMut() -> F,
    closed: impl std::future::Future<Output = ()>,
) -> Option<S>
where
    F: std::future::Future<Output = std::io::Result<S>>,
{
    tokio::pin!(closed);
    loop {
        let r = tokio::select! {
            r = accept() => r,
            () = &mut closed => return None,
        };
        match r {
            Ok(s) => return Some(s),
            Err(e) => {
                tracing::debug!("gRPC accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Accepts TCP connections on `listener` and yields those whose mutual TLS handshake
/// succeeds within `timeout`. Handshakes run concurrently (at most
/// [`MAX_PENDING_HANDSHAKES`]); failures are counted in
/// `worker_link_handshakes_total{result}` and closed. The accept task ends when the stream
/// is dropped.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    timeout: Duration,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(16);
    let acceptor = TlsAcceptor::from(config);
    let pending = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        let listener = &listener;
        loop {
            let accept = move || async move { listener.accept().await.map(|(s, _)| s) };
            let Some(sock) = next_connection(accept, tx.closed()).await else {
                return;
            };
            if pending.load(Ordering::Relaxed) >= MAX_PENDING_HANDSHAKES {
                count("busy");
                continue;
            }
            let _ = sock.set_nodelay(true);
            pending.fetch_add(1, Ordering::Relaxed);
            let (acceptor, tx, pending) = (acceptor.clone(), tx.clone(), pending.clone());
            tokio::spawn(async move {
                let r = tokio::time::timeout(timeout, acceptor.accept(sock)).await;
                pending.fetch_sub(1, Ordering::Relaxed);
                match r {
                    Ok(Ok(tls)) => {
                        count("accepted");
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => {
                        count("refused");
                        tracing::debug!("gRPC link refused: {e}");
                    }
                    Err(_) => count("timeout"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const NOW: u64 = 1_790_000_000;

    fn cluster() -> (tempfile::TempDir, tempfile::TempDir) {
        let ca = tempfile::tempdir().unwrap();
        create_ca(ca.path(), NOW).unwrap();
        let out = tempfile::tempdir().unwrap();
        (ca, out)
    }

    #[test]
    fn issued_certificates_verify_for_their_role_only() {
        let (ca, out) = cluster();
        let edge = out.path().join("edge");
        let worker = out.path().join("worker");
        issue(ca.path(), Role::Edge, "edge-0", 30, &edge, NOW).unwrap();
        issue(ca.path(), Role::Worker, "worker-0", 30, &worker, NOW).unwrap();
        let e = Material::load(&edge).unwrap();
        let w = Material::load(&worker).unwrap();
        e.verify(Role::Edge, NOW).unwrap();
        w.verify(Role::Worker, NOW).unwrap();
        assert!(e.verify(Role::Worker, NOW).is_err(), "edge cert serving");
        assert!(w.verify(Role::Edge, NOW).is_err(), "worker cert connecting");
        // Expired after its days.
        assert!(e.verify(Role::Edge, NOW + 31 * 86_400).is_err());
        e.server_config().unwrap();
        for (f, mode) in [(KEY, 0o600), (CERT, 0o644), (CA_CERT, 0o644)] {
            let m = std::fs::metadata(edge.join(f))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(m, mode, "{f}");
        }
    }

    #[test]
    fn another_clusters_ca_does_not_verify() {
        let (ca, out) = cluster();
        let (other, _) = cluster();
        issue(ca.path(), Role::Edge, "edge-0", 30, out.path(), NOW).unwrap();
        let mut m = Material::load(out.path()).unwrap();
        m.ca_pem = std::fs::read(other.path().join(CA_CERT)).unwrap();
        assert!(m.verify(Role::Edge, NOW).is_err());
        // A CA certificate that is not its key's: issuing refuses rather than writing a
        // certificate nobody accepts.
        std::fs::copy(other.path().join(CA_CERT), ca.path().join(CA_CERT)).unwrap();
        let err = issue(ca.path(), Role::Edge, "e", 30, &out.path().join("x"), NOW).unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");
    }

    #[test]
    fn refuses_readable_keys_and_overwrites() {
        let (ca, out) = cluster();
        assert!(
            create_ca(ca.path(), NOW).is_err(),
            "second CA over the first"
        );
        issue(ca.path(), Role::Worker, "w", 30, out.path(), NOW).unwrap();
        assert!(issue(ca.path(), Role::Worker, "w", 30, out.path(), NOW).is_err());
        std::fs::set_permissions(out.path().join(KEY), std::fs::Permissions::from_mode(0o640))
            .unwrap();
        let err = Material::load(out.path()).unwrap_err();
        assert!(
            err.to_string().contains("readable by group or others"),
            "{err}"
        );
        std::fs::set_permissions(
            ca.path().join(CA_KEY),
            std::fs::Permissions::from_mode(0o604),
        )
        .unwrap();
        let err = issue(ca.path(), Role::Worker, "w", 30, &out.path().join("y"), NOW).unwrap_err();
        assert!(
            err.to_string().contains("readable by group or others"),
            "{err}"
        );
    }

    #[test]
    fn urls_must_match_the_mode() {
        let tls = Settings::default();
        tls.check_url("https://w0:9201").unwrap();
        tls.check_url("unix:/run/relay/w0.sock").unwrap();
        assert!(tls.check_url("unix:").is_err());
        assert!(tls.check_url("http://w0:9201").is_err());
        assert!(tls.check_url("w0:9201").is_err());
        let plain = Settings {
            insecure_plaintext: true,
            ..Settings::default()
        };
        plain.check_url("http://127.0.0.1:1").unwrap();
        assert!(plain.check_url("https://127.0.0.1:1").is_err());
        assert!(plain.load().unwrap().is_none());
    }

    #[test]
    fn missing_material_names_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = Material::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("edge cluster-cert"), "{err}");
    }
}
