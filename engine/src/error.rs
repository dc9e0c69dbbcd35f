//! The engine's one error type.

use std::path::PathBuf;

/// What went wrong in the storage engine, named for what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No keystore where one was expected.
    #[error(
        "no keystore at {path}: run `wwt init` first, or point WWT_HOME at the folder that holds one"
    )]
    KeystoreMissing {
        /// Where the keystore was looked for.
        path: PathBuf,
    },
    /// A keystore already exists where a new one would be written.
    #[error(
        "a keystore already exists at {path}: it was left untouched (move it away first to make a new one)"
    )]
    KeystoreExists {
        /// The existing keystore.
        path: PathBuf,
    },
    /// The file is not a wwt keystore at all.
    #[error("{path} is not a wwt keystore (wrong magic bytes): check WWT_HOME")]
    KeystoreForeign {
        /// The file that was read.
        path: PathBuf,
    },
    /// The keystore is shorter than its format requires.
    #[error(
        "the keystore at {path} is truncated ({len} of {expected} bytes): restore it from your backup"
    )]
    KeystoreTruncated {
        /// The file that was read.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The length of a keystore of its version.
        expected: u64,
    },
    /// The keystore's checksum does not match its contents.
    #[error("the keystore at {path} is corrupt (checksum mismatch): restore it from your backup")]
    KeystoreCorrupt {
        /// The file that was read.
        path: PathBuf,
    },
    /// The keystore was written by a newer wwt.
    #[error(
        "the keystore at {path} has format version {version}, which this wwt does not know: upgrade wwt"
    )]
    KeystoreVersion {
        /// The file that was read.
        path: PathBuf,
        /// The version byte found.
        version: u8,
    },
    /// Other users can read the keystore.
    #[error(
        "the keystore at {path} can be read by other users (mode {mode:o}): run `chmod 600 {path}`"
    )]
    KeystoreExposed {
        /// The file that was read.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The operating system refused a keystore read or write.
    #[error("keystore I/O at {path}: {source}")]
    KeystoreIo {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A row ciphertext failed authentication: wrong key, or altered bytes.
    #[error(
        "row {row} version {version} does not decrypt: wrong master key for this table, or the stored bytes were altered"
    )]
    Undecryptable {
        /// The row id, in hex.
        row: String,
        /// The row version.
        version: u64,
    },
    /// Coding parameters out of range.
    #[error(
        "invalid coding parameters {data}+{parity}: need at least 1 data piece and at most 256 pieces in all"
    )]
    InvalidParams {
        /// Data pieces asked for.
        data: usize,
        /// Parity pieces asked for.
        parity: usize,
    },
    /// Fewer than k intact pieces of a segment were available.
    #[error("segment {segment} cannot be decoded: {intact} intact pieces of the {needed} needed")]
    NotEnoughPieces {
        /// The segment id, in hex.
        segment: String,
        /// Pieces that were present and matched their hash.
        intact: usize,
        /// Pieces needed (k).
        needed: usize,
    },
    /// Pieces given to the decoder do not match the manifest's shape.
    #[error("segment {segment}: {what}")]
    ManifestMismatch {
        /// The segment id, in hex.
        segment: String,
        /// What did not match.
        what: String,
    },
    /// A byte range outside the piece or segment was asked for.
    #[error("range {start}+{len} lies outside the {size} bytes available")]
    OutOfRange {
        /// First byte asked for.
        start: u64,
        /// Bytes asked for.
        len: u64,
        /// Bytes that exist.
        size: u64,
    },
    /// A chunk proof did not verify against the piece hash.
    #[error(
        "proof for bytes {start}+{len} does not verify against piece {piece}: the sender's bytes are wrong"
    )]
    BadProof {
        /// The piece hash, in hex.
        piece: String,
        /// First byte of the range.
        start: u64,
        /// Length of the range.
        len: u64,
    },
    /// An encoded structure could not be parsed.
    #[error("malformed {what}: {why}")]
    Malformed {
        /// What was being parsed.
        what: &'static str,
        /// Why it was refused.
        why: String,
    },
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
