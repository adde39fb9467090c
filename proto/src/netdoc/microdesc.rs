//! Microdescriptors (dir-spec §3.3), as a directory authority derives them from a server
//! descriptor for consensus methods 32–35 (C: `dirvote_create_microdescriptor`; INTEROP
//! D.3):
//!
//! ```text
//! onion-key
//! [-----BEGIN RSA PUBLIC KEY----- … -----END RSA PUBLIC KEY-----]
//! ntor-onion-key <base64, unpadded>
//! [family …]
//! [p accept|reject PORTS]      (omitted for "reject 1-65535")
//! id ed25519 <base64, unpadded>
//! ```
//!
//! Invariants: the text starts with `onion-key` (trap 26: clients refuse anything else);
//! the digest is SHA-256 of the whole text, written unpadded base64 in `m` lines.

use sha2::{Digest, Sha256};

use super::b64_unpadded;
use super::routerdesc::ServerDescriptor;

/// A microdescriptor: its text and digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Microdesc {
    /// The text, starting with `onion-key`.
    pub text: String,
    /// SHA-256 of `text`.
    pub digest: [u8; 32],
}

impl Microdesc {
    /// Derives the microdescriptor of `desc`, whose exit-policy summary is `summary`
    /// (e.g. `reject 1-65535`, see [`super::policy::summarize`]).
    pub fn from_descriptor(desc: &ServerDescriptor, summary: &str) -> Microdesc {
        let mut t = String::from("onion-key\n");
        if let Some(tap) = &desc.tap_key {
            t.push_str(&tap.to_pem());
        }
        t.push_str("ntor-onion-key ");
        t.push_str(&b64_unpadded(&desc.ntor_key));
        t.push('\n');
        if let Some(f) = &desc.family
            && !f.is_empty()
        {
            t.push_str("family ");
            t.push_str(f);
            t.push('\n');
        }
        if summary != "reject 1-65535" {
            t.push_str("p ");
            t.push_str(summary);
            t.push('\n');
        }
        t.push_str("id ed25519 ");
        t.push_str(&b64_unpadded(&desc.ed_identity.0));
        t.push('\n');
        Microdesc::from_text(t)
    }

    /// Wraps an existing text.
    pub fn from_text(text: String) -> Microdesc {
        let digest = Sha256::digest(text.as_bytes()).into();
        Microdesc { text, digest }
    }

    /// The digest as written in `m` lines and `/tor/micro/d/` URLs.
    pub fn digest_b64(&self) -> String {
        b64_unpadded(&self.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::super::policy::summarize;
    use super::super::routerdesc::split_upload;
    use super::*;

    /// The microdescriptors C tor's authorities made from these descriptors, byte for
    /// byte, with the digests their consensus lists.
    #[test]
    fn matches_c_tor_authorities() {
        let descs = split_upload(include_str!("../../tests/data/ctor/server.all"));
        let consensus = include_str!("../../tests/data/ctor/consensus.md");
        let served = include_str!("../../tests/data/ctor/micro.all");
        let mut matched = 0;
        for d in descs {
            let d = ServerDescriptor::parse(d).unwrap();
            let md = Microdesc::from_descriptor(&d, &summarize(&d.policy));
            assert!(
                md.text
                    .starts_with("onion-key\n-----BEGIN RSA PUBLIC KEY-----\n")
            );
            if consensus.contains(&format!("\nm {}\n", md.digest_b64())) {
                assert!(served.contains(&md.text), "{}", md.text);
                matched += 1;
            }
        }
        // The consensus lists each relay's newest descriptor; server.all may hold older ones.
        assert!(
            matched >= 4,
            "only {matched} microdescriptors matched C tor's"
        );
    }
}
