//! The plain Rust types of the store API: ids, table schemas, batches, queries and answers.
//!
//! These are the domain types; the network crate converts its wire messages into them (with
//! the `TryFrom<&[u8]>` impls of the fixed-size ids and tokens, which refuse bad lengths).

use std::fmt;
use std::ops::Bound;

use crate::error::IndexError;
use crate::ope::OpeCiphertext;
use crate::token::{EqToken, Token};

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

/// Converts a byte slice into a fixed-size array, or names what was malformed.
pub(crate) fn fixed<const N: usize>(
    what: &'static str,
    bytes: &[u8],
) -> Result<[u8; N], IndexError> {
    bytes.try_into().map_err(|_| IndexError::MalformedToken {
        what,
        expected: N,
        got: bytes.len(),
    })
}

macro_rules! byte_id {
    ($(#[$doc:meta])* $name:ident, $len:expr, $what:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; $len]);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(f, &self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "("))?;
                write_hex(f, &self.0)?;
                write!(f, ")")
            }
        }

        impl TryFrom<&[u8]> for $name {
            type Error = IndexError;
            fn try_from(bytes: &[u8]) -> Result<Self, IndexError> {
                fixed($what, bytes).map(Self)
            }
        }
    };
}

byte_id!(
    /// The owner of a namespace: an ed25519 public key, authenticated by the network layer.
    OwnerId,
    32,
    "owner id"
);
byte_id!(
    /// A table id, opaque to the index provider (the client derives it).
    TableId,
    16,
    "table id"
);
/// Length in bytes of a [`RowId`].
pub const ROW_LEN: usize = 16;

byte_id!(
    /// A row id: the PRF of the row's primary key, computed by the client.
    RowId,
    ROW_LEN,
    "row id"
);

/// A column id, opaque to the index provider (the client maps names onto ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ColumnId(pub u32);

impl fmt::Display for ColumnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// The kinds of secondary index a column can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IndexKind {
    /// `USING hash`: PRF(value) → row ids (`=`, `IN`, counts per value).
    Equality,
    /// `USING btree`: OPE(value) ‖ row id (ranges, `ORDER BY … LIMIT`, `MIN`, `MAX`).
    Range,
    /// `USING fulltext`: PRF tokens in tantivy (AND, OR, NOT, BM25 top-k).
    FullText,
}

impl IndexKind {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            IndexKind::Equality => 1,
            IndexKind::Range => 2,
            IndexKind::FullText => 3,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(IndexKind::Equality),
            2 => Some(IndexKind::Range),
            3 => Some(IndexKind::FullText),
            _ => None,
        }
    }
}

/// What an index provider learns from one index kind, for `EXPLAIN` (the full profile is in
/// `docs/index-leakage.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leakage {
    /// Learned from storing the index.
    pub storing: &'static str,
    /// Learned from each query on it.
    pub querying: &'static str,
}

impl IndexKind {
    /// The leakage profile of this kind of index.
    pub fn leakage(self) -> Leakage {
        match self {
            IndexKind::Equality => Leakage {
                storing: "which rows share a value (value frequencies)",
                querying: "repeated values asked for, the number of IN values, the matching rows",
            },
            IndexKind::Range => Leakage {
                storing: "the order of all values, equal values, shared top limbs (4/19/34/49 \
                          bits), about half the bits of each limb",
                querying: "the bounds' positions in the order, direction, limit, the rows returned",
            },
            IndexKind::FullText => Leakage {
                storing: "per row the word count and each token's count; corpus-wide token \
                          frequencies and co-occurrence",
                querying: "repeated words asked for, the boolean structure, limit, rows and scores",
            },
        }
    }
}

impl fmt::Display for IndexKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IndexKind::Equality => "equality (hash)",
            IndexKind::Range => "range (btree)",
            IndexKind::FullText => "full-text",
        })
    }
}

/// The indexes declared for a table: which columns have which index kinds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableSchema {
    /// Each (column, kind) pair; a column may have several kinds.
    pub indexes: Vec<(ColumnId, IndexKind)>,
}

impl TableSchema {
    /// Whether `column` has an index of `kind`.
    pub fn has(&self, column: ColumnId, kind: IndexKind) -> bool {
        self.indexes.contains(&(column, kind))
    }

    /// Returns `Ok` if `column` has an index of `kind`, else [`IndexError::MissingIndex`].
    pub fn require(&self, column: ColumnId, kind: IndexKind) -> Result<(), IndexError> {
        if self.has(column, kind) {
            Ok(())
        } else {
            Err(IndexError::MissingIndex { column, kind })
        }
    }

    /// The columns with a full-text index, in declaration order.
    pub fn text_columns(&self) -> impl Iterator<Item = ColumnId> + '_ {
        self.indexes
            .iter()
            .filter(|(_, k)| *k == IndexKind::FullText)
            .map(|(c, _)| *c)
    }
}

/// The index entries of one row version: what the client sends when it writes the row.
#[derive(Clone, Debug, PartialEq)]
pub struct RowEntries {
    /// The row.
    pub row: RowId,
    /// Its new version; must be newer than the stored one.
    pub version: u64,
    /// Where the row's ciphertext lives (segment, offset, length…), opaque to the provider.
    pub locator: Vec<u8>,
    /// Equality tokens: at most one per column.
    pub equality: Vec<(ColumnId, EqToken)>,
    /// OPE ciphertexts: at most one per column.
    pub range: Vec<(ColumnId, OpeCiphertext)>,
    /// Full-text tokens per column, a bag of words (repeats kept for BM25, order ignored;
    /// [`crate::TokenKey::text_tokens`] sorts them): at most one list per column.
    pub text: Vec<(ColumnId, Vec<Token>)>,
}

/// One operation of a [`Batch`].
#[derive(Clone, Debug, PartialEq)]
pub enum RowOp {
    /// Insert a row, or update it: its previous entries are replaced by these.
    Put(RowEntries),
    /// Delete a row and all its entries.
    Delete {
        /// The row.
        row: RowId,
        /// The tombstone's version; must be newer than the stored one.
        version: u64,
    },
}

/// The index operations of one statement (an INSERT of many rows, an UPDATE, a DELETE),
/// applied in one call, all or nothing as far as validation goes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// The operations; each row appears at most once.
    pub ops: Vec<RowOp>,
}

/// What [`crate::IndexStore::apply`] reports back once the batch is durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyReceipt {
    /// Rows inserted or updated.
    pub put: usize,
    /// Rows deleted (a delete of an absent row counts as zero).
    pub deleted: usize,
    /// Operations already applied with the same version and entries (a retried batch).
    pub unchanged: usize,
}

/// Direction of an ordered range scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Smallest first (`ORDER BY … ASC`).
    Asc,
    /// Largest first (`ORDER BY … DESC`).
    Desc,
}

/// A boolean full-text expression over PRF tokens.
#[derive(Clone, Debug, PartialEq)]
pub enum TextExpr {
    /// Rows whose column contains this token.
    Term(Token),
    /// Rows matching every sub-expression (`And(vec![])` matches every row with this column).
    And(Vec<TextExpr>),
    /// Rows matching at least one sub-expression (`Or(vec![])` matches nothing).
    Or(Vec<TextExpr>),
    /// Rows with this column that do not match the sub-expression.
    Not(Box<TextExpr>),
}

/// A query against one table.
#[derive(Clone, Debug, PartialEq)]
pub enum Query {
    /// Primary-map lookups: the latest version and locator of each listed row that exists.
    Get {
        /// The rows.
        rows: Vec<RowId>,
    },
    /// `column = v` (one token) or `column IN (…)` (several), on an equality index.
    Equal {
        /// The column.
        column: ColumnId,
        /// The PRF tokens of the values.
        values: Vec<EqToken>,
    },
    /// Counts per value (`GROUP BY column` with `COUNT(*)`), on an equality index: for the
    /// listed values, or for every value present when `values` is `None`.
    CountByValue {
        /// The column.
        column: ColumnId,
        /// The values to count, or all.
        values: Option<Vec<EqToken>>,
    },
    /// A range scan on a range index: bounds, direction and an optional limit.
    /// `MIN` is `Asc` with limit 1, `MAX` is `Desc` with limit 1.
    Range {
        /// The column.
        column: ColumnId,
        /// Lower bound on the OPE ciphertext.
        lower: Bound<OpeCiphertext>,
        /// Upper bound on the OPE ciphertext.
        upper: Bound<OpeCiphertext>,
        /// Scan direction.
        order: Order,
        /// At most this many rows, if set.
        limit: Option<usize>,
    },
    /// Every live row, in row-id order, a page at a time: the rows after `after` (from the
    /// first when `None`), at most `limit` (1..=[`crate::MAX_LIMIT`]). A full table scan.
    Scan {
        /// The last row of the previous page.
        after: Option<RowId>,
        /// Page size.
        limit: usize,
    },
    /// A boolean full-text query: its best `limit` rows by BM25, or a page of every matching
    /// row in row-id order ([`TextOrder`]).
    Text {
        /// The column.
        column: ColumnId,
        /// The expression.
        expr: TextExpr,
        /// How many rows at most (1..=[`crate::MAX_LIMIT`]).
        limit: usize,
        /// Which matching rows, in what order.
        order: TextOrder,
    },
}

/// Which rows of a full-text match a [`Query::Text`] returns, in what order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextOrder {
    /// The best rows by BM25, best first (`MATCH … LIMIT n`).
    Score,
    /// Every matching row in row-id order, a page at a time as [`Query::Scan`] reads the
    /// table: the rows after `after` (from the first when `None`). A page shorter than the
    /// limit is the last.
    Rows {
        /// The last row of the previous page.
        after: Option<RowId>,
    },
}

/// One row in a query answer.
#[derive(Clone, Debug, PartialEq)]
pub struct RowHit {
    /// The row.
    pub row: RowId,
    /// Its latest version.
    pub version: u64,
    /// Its locator.
    pub locator: Vec<u8>,
    /// The BM25 score, for full-text queries.
    pub score: Option<f32>,
}

/// The count of rows holding one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueCount {
    /// The value's token.
    pub value: EqToken,
    /// How many rows hold it.
    pub count: u64,
}

/// The answer to a [`Query`].
#[derive(Clone, Debug, PartialEq)]
pub enum QueryOutput {
    /// Rows, in the query's order (range: by value; text: by score; others: by row id).
    Rows(Vec<RowHit>),
    /// Counts per value, by token.
    Counts(Vec<ValueCount>),
}

/// An owner's catalog as the index provider keeps it: an opaque blob (the client encrypts
/// it) and a version that grows by one with each write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CatalogBlob {
    /// The version; 0 means no catalog was ever written.
    pub version: u64,
    /// The encrypted catalog (empty at version 0).
    pub blob: Vec<u8>,
}
