//! SQL over the encrypted world table: parsing with `sqlparser`, planning into plain data
//! (what is pushed to the index provider, what runs on the client) and a pure evaluator.
//!
//! The crate does no I/O: the client executes plans against the index providers and the
//! storage network by implementing a row-source trait.
//!
//! Modules:
//! - [`error`]: the one error type.
//! - [`value`]: column types, values, SQL comparison, timestamps.
//! - [`schema`]: tables, columns, indexes, the catalog.
//! - [`codec`]: the canonical byte encodings of rows and primary keys.
//! - [`fulltext`]: the words of a text and the `MATCH` query language.
//! - [`expr`]: bound expressions and their evaluation with SQL NULL semantics.
//! - [`plan`](mod@plan): plans as plain data (index lookups, filters, joins, aggregation)
//!   and EXPLAIN.
//! - [`planner`]: parsing and planning, with the split of WHERE into pushed and residual.
//! - [`exec`]: the pure evaluator over a caller's [`RowSource`] (joins, aggregation, sort).
//! - [`memory`]: [`MemoryDb`], an in-memory reference database over plaintext rows.

pub mod codec;
pub mod error;
pub mod exec;
pub mod expr;
pub mod fulltext;
pub mod memory;
pub mod plan;
pub mod planner;
pub mod schema;
pub mod value;

pub use codec::{decode_row, encode_key, encode_row};
pub use error::{Error, Result};
pub use exec::{
    ResultSet, RowSource, SelectStream, access_keys, execute_delete, execute_select,
    execute_update, pushdown_keys, read_rows, streams,
};
pub use fulltext::{FtQuery, tokenize};
pub use memory::{MemoryDb, Outcome};
pub use plan::{AccessPath, Direction, IndexLookup, Plan, Pushdown, SelectPlan};
pub use planner::{CatalogQuery, Statement, catalog_query, parse, plan};
pub use schema::{Catalog, Column, IndexDef, IndexKind, TableSchema};
pub use value::{ColumnType, Row, Value};
