//! The tracker's error type.

use wwt_net::NetError;

/// What can stop the tracker, named for what the operator or caller can do.
#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    /// The configuration is unusable: fix it and start again.
    #[error("bad tracker configuration: {0}")]
    BadConfig(String),
    /// The piece map database failed: check the data directory; it may need restoring.
    #[error("piece map database error: {0}")]
    Database(#[from] sled::Error),
    /// A network-level failure (serving, identity, listener).
    #[error(transparent)]
    Net(#[from] NetError),
}

impl From<TrackerError> for NetError {
    fn from(err: TrackerError) -> NetError {
        match err {
            TrackerError::Net(e) => e,
            other => NetError::Internal(other.to_string()),
        }
    }
}

/// The error of a lock a panicking thread left poisoned; `what` names the state it guards.
pub(crate) fn poisoned(what: &str) -> NetError {
    NetError::Internal(format!("{what} poisoned"))
}
