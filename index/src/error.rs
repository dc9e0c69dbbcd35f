//! The one error type of the crate.

use crate::types::{ColumnId, IndexKind, RowId, TableId};

/// What went wrong with an index request, named for what the caller can do about it.
///
/// Every variant except [`IndexError::Storage`], [`IndexError::FullText`] and
/// [`IndexError::Corrupt`] is raised before anything is written: the request changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The table does not exist in the signing owner's namespace (it may belong to someone else).
    #[error(
        "table {table} does not exist for this owner: create it first, or sign with its owner's key"
    )]
    UnknownTable {
        /// The table asked for.
        table: TableId,
    },
    /// The table is in use by another request and cannot be dropped now.
    #[error("table {table} is in use by another request: retry the drop")]
    Busy {
        /// The table asked for.
        table: TableId,
    },
    /// `create_table` named a table that already exists for this owner.
    #[error("table {table} already exists for this owner: pick another table id")]
    TableExists {
        /// The table asked for.
        table: TableId,
    },
    /// The column has no index of the kind the request needs.
    #[error(
        "column {column} has no {kind} index: declare one when creating the table, \
         or evaluate this predicate on the client"
    )]
    MissingIndex {
        /// The column named in the request.
        column: ColumnId,
        /// The index kind the request needs.
        kind: IndexKind,
    },
    /// A token, OPE ciphertext or id had the wrong length or encoding.
    #[error(
        "malformed {what}: expected {expected} bytes, got {got}; re-encode it with this crate's encoders"
    )]
    MalformedToken {
        /// What was being decoded.
        what: &'static str,
        /// The length expected.
        expected: usize,
        /// The length received.
        got: usize,
    },
    /// A write carried a version that is not newer than the stored one (and is not an exact
    /// retry of it).
    #[error(
        "row {row}: version {got} is not newer than the stored version {stored}; re-read the row and write a newer version"
    )]
    StaleVersion {
        /// The row written.
        row: RowId,
        /// The version already stored.
        stored: u64,
        /// The version in the request.
        got: u64,
    },
    /// A catalog write expected another version than the stored one: another client wrote
    /// it first.
    #[error(
        "the catalog is at version {stored}, not {expected}: another client changed it; \
         read it again and redo the change"
    )]
    CatalogConflict {
        /// The version the write expected.
        expected: u64,
        /// The version stored.
        stored: u64,
    },
    /// The request is well-formed bytes but breaks a rule stated in the message.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The order-preserving encryption library refused a limb: a bug in this crate, report it.
    #[error("order-preserving encryption failed: {0}")]
    Ope(String),
    /// The key-value store failed (disk full, I/O error): retry later; a retried batch is idempotent.
    #[error("index storage failed: {0}")]
    Storage(#[from] sled::Error),
    /// A directory of the store could not be created or opened: check the disk and permissions.
    #[error("index directory I/O failed: {0}")]
    Io(std::io::Error),
    /// The full-text engine failed: retry later; a retried batch is idempotent.
    #[error("full-text index failed: {0}")]
    FullText(#[from] tantivy::TantivyError),
    /// Stored bytes could not be decoded: the provider's disk holds damaged data.
    #[error("stored index data is corrupt: {0}")]
    Corrupt(&'static str),
}

/// Result type of this crate.
pub type Result<T, E = IndexError> = std::result::Result<T, E>;
