//! The provider's error type.

use wwt_net::NetError;

/// What can stop the provider, named for what the operator or caller can do.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The configuration is unusable: fix it and start again.
    #[error("bad provider configuration: {0}")]
    BadConfig(String),
    /// The disk failed (full, read-only, missing directory): fix the data directory.
    #[error("disk error at {path}: {source}")]
    Disk {
        /// The file or directory involved.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The piece store's files do not agree (its index lost, its journal unreadable): nothing
    /// was changed; restore the data directory from a copy, or move it away to start empty.
    #[error("the piece store is damaged: {0}")]
    Damaged(String),
    /// The metadata database failed: check the data directory; it may need restoring.
    #[error("metadata database error: {0}")]
    Database(#[from] sled::Error),
    /// The index store failed to open or close: check `<data_dir>/index`.
    #[error("index store: {0}")]
    Index(#[from] wwt_index::IndexError),
    /// A network-level failure (serving, identity).
    #[error(transparent)]
    Net(#[from] NetError),
}

impl From<ProviderError> for NetError {
    fn from(err: ProviderError) -> NetError {
        match err {
            ProviderError::Net(e) => e,
            other => NetError::Internal(other.to_string()),
        }
    }
}
