//! Reading and writing a key directory (the layout is documented in [`proto::keys`]).
//!
//! Invariants:
//! - Secret files are created 0600 (inside a 0700 directory) by writing a temporary file
//!   with that mode and renaming it, so no reader ever sees a partial or wider-mode secret.
//! - A secret file that the group or others can read (mode & 0o077 ≠ 0) is refused, as
//!   OpenSSH refuses such keys: it may have leaked, and the operator must fix it.
//! - Existing files are never overwritten unless the caller says so.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use zeroize::Zeroizing;

use super::{Error, Result};
use proto::keys::{self, EdgeKeys, KeyFile, RelayKeys, WorkerKeys};

fn keys_err(e: proto::Error) -> Error {
    Error::Keys(e.to_string())
}

/// Reads one file of `dir`; `Ok(None)` when it does not exist. Secret files must not be
/// readable by group or others.
///
/// # Errors
/// [`Error::Keys`] for an unsafe mode, [`Error::Io`] when reading fails.
pub fn read_key_file(dir: &Path, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
    read_file(&dir.join(name), keys::is_secret_file(name))
}

/// Reads `path`; `Ok(None)` when it does not exist. A `secret` file must not be readable by
/// group or others.
///
/// # Errors
/// [`Error::Keys`] for an unsafe mode, [`Error::Io`] when reading fails.
pub fn read_file(path: &Path, secret: bool) -> Result<Option<Zeroizing<Vec<u8>>>> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if secret && meta.permissions().mode() & 0o077 != 0 {
        return Err(Error::Keys(format!(
            "{} holds a secret key but is readable by group or others (mode {:o}); run chmod 600 on it",
            path.display(),
            meta.permissions().mode() & 0o777
        )));
    }
    Ok(Some(Zeroizing::new(fs::read(path)?)))
}

/// Writes `files` into `dir` (created 0700 if missing). Refuses to replace an existing
/// file unless `overwrite`.
///
/// # Errors
/// [`Error::Keys`] when a file exists and `overwrite` is false; [`Error::Io`] otherwise.
pub fn write_key_files(dir: &Path, files: &[KeyFile], overwrite: bool) -> Result<()> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    if let Some(f) = files
        .iter()
        .find(|f| !overwrite && dir.join(f.name).exists())
    {
        return Err(Error::Keys(format!(
            "{} already exists; refusing to overwrite keys",
            dir.join(f.name).display()
        )));
    }
    for f in files {
        let mode = if f.secret { 0o600 } else { 0o644 };
        let tmp = dir.join(format!(".{}.tmp", f.name));
        let _ = fs::remove_file(&tmp);
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        out.write_all(&f.contents)?;
        out.sync_all()?;
        drop(out);
        // The umask may have narrowed the mode; set it exactly.
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
        fs::rename(&tmp, dir.join(f.name))?;
    }
    Ok(())
}

/// Loads the whole bundle (for keygen's renew/rotate operations).
///
/// # Errors
/// [`Error::Keys`] or [`Error::Io`].
pub fn load_relay_keys(dir: &Path) -> Result<RelayKeys> {
    let mut io_err = None;
    let r = RelayKeys::load(|name| read_or_stash(dir, name, &mut io_err));
    finish(r, io_err)
}

/// Loads an edge's keys.
///
/// # Errors
/// [`Error::Keys`] or [`Error::Io`].
pub fn load_edge_keys(dir: &Path) -> Result<EdgeKeys> {
    let mut io_err = None;
    let r = EdgeKeys::load(|name| {
        read_or_stash(dir, name, &mut io_err)?.ok_or_else(|| {
            proto::Error::Key(format!("missing key file {}", dir.join(name).display()))
        })
    });
    finish(r, io_err)
}

/// Loads a circuit worker's keys.
///
/// # Errors
/// [`Error::Keys`] or [`Error::Io`].
pub fn load_worker_keys(dir: &Path) -> Result<WorkerKeys> {
    let mut io_err = None;
    let r = WorkerKeys::load(|name| read_or_stash(dir, name, &mut io_err));
    finish(r, io_err)
}

/// Adapts [`read_key_file`] to the sans-io loaders, which speak `proto::Error`: the
/// runtime error is kept aside and returned in place of the loader's.
fn read_or_stash(
    dir: &Path,
    name: &str,
    stash: &mut Option<Error>,
) -> proto::Result<Option<Zeroizing<Vec<u8>>>> {
    read_key_file(dir, name).map_err(|e| {
        let msg = e.to_string();
        *stash = Some(e);
        proto::Error::Key(msg)
    })
}

fn finish<T>(r: proto::Result<T>, stash: Option<Error>) -> Result<T> {
    match (r, stash) {
        (Ok(v), _) => Ok(v),
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(keys_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::keys::{DEFAULT_SIGNING_KEY_LIFETIME_SECS, files};
    use rand::SeedableRng;

    const NOW: u64 = 1_790_000_000;

    fn bundle() -> RelayKeys {
        let mut r = rand::rngs::StdRng::seed_from_u64(11);
        RelayKeys::generate(&mut r, NOW, DEFAULT_SIGNING_KEY_LIFETIME_SECS).unwrap()
    }

    #[test]
    fn write_then_load_each_role() {
        let dir = tempfile::tempdir().unwrap();
        let keys = bundle();
        write_key_files(dir.path(), &keys.to_files().unwrap(), false).unwrap();
        for f in keys.to_files().unwrap() {
            let mode = fs::metadata(dir.path().join(f.name))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, if f.secret { 0o600 } else { 0o644 }, "{}", f.name);
        }
        let edge = load_edge_keys(dir.path()).unwrap();
        assert_eq!(edge.rsa_identity(), keys.rsa_identity());
        assert_eq!(edge.ed_identity, keys.master.identity());
        assert_eq!(edge.ntor_public, keys.ntor.public_bytes());
        let worker = load_worker_keys(dir.path()).unwrap();
        assert_eq!(worker.rsa_identity, keys.rsa_identity());
        assert_eq!(worker.ntor.public_bytes(), keys.ntor.public_bytes());
        assert!(worker.ntor_previous.is_none());
        // The edge needs no ntor secret and no master secret; the worker no identity secret.
        fs::remove_file(dir.path().join(files::NTOR)).unwrap();
        fs::remove_file(dir.path().join(files::ED_MASTER_SECRET)).unwrap();
        load_edge_keys(dir.path()).unwrap();
        let dir2 = tempfile::tempdir().unwrap();
        write_key_files(dir2.path(), &keys.to_files().unwrap(), false).unwrap();
        for f in [
            files::SECRET_ID_KEY,
            files::SECRET_ONION_KEY,
            files::ED_SIGNING_SECRET,
            files::ED_MASTER_SECRET,
        ] {
            fs::remove_file(dir2.path().join(f)).unwrap();
        }
        load_worker_keys(dir2.path()).unwrap();
    }

    #[test]
    fn refuses_readable_secrets_and_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let keys = bundle();
        write_key_files(dir.path(), &keys.to_files().unwrap(), false).unwrap();
        let err = write_key_files(dir.path(), &keys.to_files().unwrap(), false).unwrap_err();
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        let p = dir.path().join(files::NTOR);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let err = load_worker_keys(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("readable by group or others"),
            "{err}"
        );
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        load_worker_keys(dir.path()).unwrap();
        fs::set_permissions(
            dir.path().join(files::SECRET_ID_KEY),
            fs::Permissions::from_mode(0o604),
        )
        .unwrap();
        assert!(load_edge_keys(dir.path()).is_err());
    }

    #[test]
    fn rotate_and_renew_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut keys = bundle();
        write_key_files(dir.path(), &keys.to_files().unwrap(), false).unwrap();
        let mut loaded = load_relay_keys(dir.path()).unwrap();
        let old = loaded.ntor.public_bytes();
        let mut r = rand::rngs::StdRng::seed_from_u64(12);
        loaded.rotate_ntor(&mut r);
        loaded
            .renew_signing_key(&mut r, NOW + 86400, DEFAULT_SIGNING_KEY_LIFETIME_SECS)
            .unwrap();
        write_key_files(dir.path(), &loaded.to_files().unwrap(), true).unwrap();
        let worker = load_worker_keys(dir.path()).unwrap();
        assert_eq!(worker.ntor_previous.unwrap().public_bytes(), old);
        assert_ne!(worker.ntor.public_bytes(), old);
        let edge = load_edge_keys(dir.path()).unwrap();
        assert_eq!(edge.ntor_public, worker.ntor.public_bytes());
        assert_ne!(edge.signing.public(), keys.signing.public());
        keys.rotate_ntor(&mut r);
    }

    #[test]
    fn mismatched_files_are_refused() {
        let a = tempfile::tempdir().unwrap();
        let ka = bundle();
        write_key_files(a.path(), &ka.to_files().unwrap(), false).unwrap();
        let mut r = rand::rngs::StdRng::seed_from_u64(13);
        let kb = RelayKeys::generate(&mut r, NOW, DEFAULT_SIGNING_KEY_LIFETIME_SECS).unwrap();
        let b_files = kb.to_files().unwrap();
        // Swap in another relay's signing cert: the edge must notice.
        let cert = b_files
            .iter()
            .find(|f| f.name == files::ED_SIGNING_CERT)
            .unwrap();
        fs::write(a.path().join(files::ED_SIGNING_CERT), &cert.contents[..]).unwrap();
        let err = load_edge_keys(a.path()).unwrap_err();
        assert!(err.to_string().contains("signing"), "{err}");
    }
}
