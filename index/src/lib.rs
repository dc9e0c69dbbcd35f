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

pub mod error;
pub mod ope;
pub mod store;
pub mod token;
pub mod types;

pub use error::{IndexError, Result};
pub use ope::{OpeCiphertext, OpeEncoder, OpeKey};
pub use store::{IndexStore, LocalIndexStore, MAX_LIMIT, MAX_LOCATOR, StoreOptions};
pub use token::{EqToken, TextOptions, Token, TokenKey};
pub use types::{
    ApplyReceipt, Batch, ColumnId, IndexKind, Leakage, Order, OwnerId, Query, QueryOutput,
    RowEntries, RowHit, RowId, RowOp, TableId, TableSchema, TextExpr, ValueCount,
};
