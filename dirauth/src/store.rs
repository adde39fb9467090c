//! Persistent state in `<data_dir>/state/`: descriptors, microdescriptors, known key
//! certificates, reachability history, the last published consensuses and votes.
//!
//! Invariant: every file is replaced atomically (written to a temporary file in the same
//! directory, synced, renamed over the old one, directory synced), so a crash leaves the
//! old or the new version, never a torn one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The state directory.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

/// File names.
pub mod files {
    /// Server descriptors, concatenated.
    pub const DESCRIPTORS: &str = "descriptors";
    /// Microdescriptors, concatenated.
    pub const MICRODESCS: &str = "microdescs";
    /// Authority key certificates, concatenated.
    pub const CERTS: &str = "certificates";
    /// Reachability history, one relay a line.
    pub const REACHABILITY: &str = "reachability";
    /// The last published ns consensus.
    pub const CONSENSUS_NS: &str = "consensus";
    /// The last published microdesc consensus.
    pub const CONSENSUS_MD: &str = "consensus-microdesc";
    /// The votes of the last published round, concatenated.
    pub const VOTES: &str = "votes";
}

/// Replaces `path` with `data` atomically.
///
/// # Errors
/// I/O errors.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

impl Store {
    /// Opens (creating) `<data_dir>/state`.
    ///
    /// # Errors
    /// I/O errors.
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join("state");
        fs::create_dir_all(&dir)?;
        Ok(Store { dir })
    }

    /// Replaces file `name`.
    ///
    /// # Errors
    /// I/O errors.
    pub fn save(&self, name: &str, data: &[u8]) -> std::io::Result<()> {
        write_atomic(&self.dir.join(name), data)
    }

    /// Reads file `name` (`None` if absent or unreadable as text).
    pub fn load(&self, name: &str) -> Option<String> {
        fs::read_to_string(self.dir.join(name)).ok()
    }

    /// Removes file `name` if present.
    pub fn remove(&self, name: &str) {
        let _ = fs::remove_file(self.dir.join(name));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn save_replaces_and_leaves_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        assert_eq!(s.load("x"), None);
        s.save("x", b"one").unwrap();
        s.save("x", b"two").unwrap();
        assert_eq!(s.load("x").as_deref(), Some("two"));
        let names: Vec<_> = fs::read_dir(d.path().join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["x"]);
        s.remove("x");
        assert_eq!(s.load("x"), None);
    }
}
