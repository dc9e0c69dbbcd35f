//! Encrypted indexes that commute with encryption: client-side encoders (keyed tokens,
//! order-preserving encryption) and the stores an index provider hosts (tantivy, sled).
//!
//! # Layout
//!
//! - [`token`]: client side. Text normalization (Unicode words, lowercase, optional stemming
//!   per column) and BLAKE3 PRF tokens for full-text terms and equality values.
//! - [`ope`]: client side. Order-preserving encryption of 64-bit values from the `ope`
//!   crate's 16-bit scheme (limbs keyed by their prefix, with caches), and the maps of
//!   signed integers, floats, timestamps and text prefixes onto unsigned order.
//! - [`types`]: the store API's plain types: ids, schemas, batches, queries and answers.
//! - [`store`]: provider side. The [`IndexStore`] trait and [`LocalIndexStore`] (primary
//!   map, equality and range indexes in `sled`; full-text in `tantivy`), multi-tenant by
//!   (owner, table).
//! - [`error`]: [`IndexError`], the crate's one error type.
//!
//! What the provider learns from each index is written down in `docs/index-leakage.md`.
//!
//! # Example
//!
//! ```
//! use std::ops::Bound;
//! use wwt_index::ope::u64_from_i64;
//! use wwt_index::*;
//!
//! # fn main() -> Result<(), IndexError> {
//! // Client side: per-column keys come from the engine's key derivation.
//! let (text_col, age_col) = (ColumnId(1), ColumnId(2));
//! let words = TokenKey::new([1; 32]);
//! let mut ages = OpeEncoder::new(OpeKey::new([2; 32]))?;
//! let opts = TextOptions::default();
//! let row = RowEntries {
//!     row: RowId([7; 16]),
//!     version: 1,
//!     locator: b"segment 9, offset 0, 120 bytes".to_vec(),
//!     equality: vec![],
//!     range: vec![(age_col, ages.encrypt(u64_from_i64(42))?)],
//!     text: vec![(text_col, words.text_tokens("Encrypted tables, searchable", &opts))],
//! };
//!
//! // Provider side: the network layer has checked `owner`'s signature.
//! let dir = tempfile::tempdir().map_err(IndexError::Io)?;
//! let store = LocalIndexStore::open(dir.path())?;
//! let (owner, table) = (OwnerId([3; 32]), TableId([4; 16]));
//! let schema = TableSchema {
//!     indexes: vec![(text_col, IndexKind::FullText), (age_col, IndexKind::Range)],
//! };
//! store.create_table(&owner, &table, &schema)?;
//! store.apply(&owner, &table, &Batch { ops: vec![RowOp::Put(row)] })?;
//!
//! // WHERE text MATCHES 'tables' AND age >= 40
//! let token = words.query_token("TABLES", &opts).ok_or(IndexError::InvalidRequest("no word".into()))?;
//! let text = Query::Text {
//!     column: text_col,
//!     expr: TextExpr::Term(token),
//!     limit: 10,
//!     order: TextOrder::Score,
//! };
//! let range = Query::Range {
//!     column: age_col,
//!     lower: Bound::Included(ages.encrypt(u64_from_i64(40))?),
//!     upper: Bound::Unbounded,
//!     order: Order::Asc,
//!     limit: None,
//! };
//! for query in [text, range] {
//!     let QueryOutput::Rows(hits) = store.query(&owner, &table, &query)? else { unreachable!() };
//!     assert_eq!(hits[0].locator, b"segment 9, offset 0, 120 bytes");
//! }
//! # Ok(())
//! # }
//! ```

pub mod error;
pub mod ope;
pub mod store;
pub mod token;
pub mod types;

pub use error::{IndexError, Result};
pub use ope::{OpeCiphertext, OpeEncoder, OpeKey};
pub use store::{IndexStore, LocalIndexStore, MAX_CATALOG, MAX_LIMIT, MAX_LOCATOR, StoreOptions};
pub use token::{EqToken, TextOptions, Token, TokenKey};
pub use types::{
    ApplyReceipt, Batch, CatalogBlob, ColumnId, IndexKind, Leakage, Order, OwnerId, Query,
    QueryOutput, RowEntries, RowHit, RowId, RowOp, TableId, TableSchema, TextExpr, TextOrder,
    ValueCount,
};
