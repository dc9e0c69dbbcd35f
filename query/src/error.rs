//! The crate's one error type.

/// What went wrong with a statement, named for what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SQL text does not parse; fix the text at the position given.
    #[error("syntax error at line {line}, column {column}: {message}")]
    Syntax {
        /// Line of the offending token, from 1 (0 when the parser gave no position).
        line: u64,
        /// Column of the offending token, from 1 (0 when the parser gave no position).
        column: u64,
        /// What the parser expected or found.
        message: String,
    },
    /// The statement names a table the catalog does not hold.
    #[error("unknown table `{table}`: {hint}")]
    UnknownTable {
        /// The name as written.
        table: String,
        /// The tables that do exist, or how to create one.
        hint: String,
    },
    /// The statement names a column no table in scope has (or that several have).
    #[error("{message}")]
    UnknownColumn {
        /// What was not found, where, and what exists.
        message: String,
    },
    /// A value or an expression has the wrong type for where it is used.
    #[error("type mismatch: {0}")]
    TypeMismatch(String),
    /// The statement is valid SQL but wwt cannot run it safely; nothing was changed.
    #[error("not supported: {what}; {hint}")]
    Unsupported {
        /// The construct that is refused.
        what: String,
        /// What to write instead.
        hint: String,
    },
    /// The statement would break a constraint (NOT NULL, primary key, an existing name).
    #[error("constraint violated: {0}")]
    Constraint(String),
    /// Evaluating an expression failed (integer overflow, an invalid timestamp, …).
    #[error("cannot evaluate: {0}")]
    Eval(String),
    /// Stored row bytes do not decode under the table's schema.
    #[error("corrupt row: {0}")]
    CorruptRow(String),
    /// The row source (index provider, storage network, memory) failed.
    #[error("row source failed: {0}")]
    Source(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Unsupported`] from its two parts.
    pub(crate) fn unsupported(what: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::Unsupported {
            what: what.into(),
            hint: hint.into(),
        }
    }
}
