//! The one error type of the `proto` layer.
//!
//! Variants say what the peer (or the caller) did wrong. The binaries map them to the
//! protocol's answer (close the channel, DESTROY, END, HTTP 400) in one place each.

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong while parsing, encoding, or checking protocol data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Input ended before a complete object was read.
    #[error("truncated input: {0}")]
    Truncated(&'static str),
    /// Bytes were left over after a complete object, where none are allowed.
    #[error("trailing bytes after {0}")]
    TrailingBytes(&'static str),
    /// A length field disagrees with the data or exceeds a limit.
    #[error("bad length in {0}")]
    BadLength(&'static str),
    /// A field holds a value that the specification forbids.
    #[error("invalid value: {0}")]
    InvalidValue(&'static str),
    /// A cell command that is not allowed (or not known) where it appeared.
    #[error("unexpected cell command {cmd} in {state}")]
    UnexpectedCell {
        /// The command byte.
        cmd: u8,
        /// Where it was seen.
        state: &'static str,
    },
    /// An object is too large to encode (e.g. more than fits a cell).
    #[error("too large to encode: {0}")]
    TooLarge(&'static str),
    /// A signature did not verify.
    #[error("bad signature on {0}")]
    BadSignature(&'static str),
    /// A certificate is malformed or does not certify what it must.
    #[error("bad certificate: {0}")]
    BadCert(&'static str),
    /// A certificate or document is expired (or not yet valid).
    #[error("expired: {0}")]
    Expired(&'static str),
    /// A circuit handshake failed (bad MAC, bad key, wrong identity).
    #[error("handshake failed: {0}")]
    Handshake(&'static str),
    /// A relay cell failed its digest check or could not be decrypted.
    #[error("relay crypto: {0}")]
    RelayCrypto(&'static str),
    /// A directory document (dir-spec) is malformed or breaks a rule; the text says
    /// which item and how.
    #[error("malformed document: {0}")]
    Malformed(String),
    /// Key material is malformed, or a key file is unsafe to load.
    #[error("key error: {0}")]
    Key(String),
}
