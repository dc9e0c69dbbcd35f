//! Tables, columns, indexes and the catalog that holds them.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::{Error, Result};
use crate::value::ColumnType;

/// One column of a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// The column's name (lowercase unless it was quoted).
    pub name: String,
    /// The column's type.
    pub ty: ColumnType,
    /// Whether NULL is refused (always true for the primary key).
    pub not_null: bool,
}

/// The kinds of index an index provider hosts (DESIGN §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IndexKind {
    /// `USING fulltext`: PRF tokens of words, for `MATCH(col, '…')`.
    FullText,
    /// `USING hash`: PRF of the value, for `=` and `IN`.
    Hash,
    /// `USING btree`: order-preserving encryption, for ranges and `ORDER BY … LIMIT`.
    BTree,
}

impl IndexKind {
    /// The keyword after `USING`.
    pub fn sql_name(self) -> &'static str {
        match self {
            IndexKind::FullText => "fulltext",
            IndexKind::Hash => "hash",
            IndexKind::BTree => "btree",
        }
    }

    /// The index provider's kind of index that answers this one.
    pub fn store_kind(self) -> wwt_index::IndexKind {
        match self {
            IndexKind::FullText => wwt_index::IndexKind::FullText,
            IndexKind::Hash => wwt_index::IndexKind::Equality,
            IndexKind::BTree => wwt_index::IndexKind::Range,
        }
    }
}

impl fmt::Display for IndexKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sql_name())
    }
}

/// An index on one column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexDef {
    /// The index's name (given, or `<table>_<column>_<kind>`).
    pub name: String,
    /// The indexed column's name.
    pub column: String,
    /// The index kind.
    pub kind: IndexKind,
}

/// A table: its columns, its primary key and its indexes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSchema {
    /// The table's name.
    pub name: String,
    /// The columns, in declaration (and row) order.
    pub columns: Vec<Column>,
    /// Position of the primary-key column in `columns`.
    pub primary_key: usize,
    /// The table's indexes.
    pub indexes: Vec<IndexDef>,
}

impl TableSchema {
    /// Position of the column named `name`.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// Position of the column named `name`, or an error listing the columns that exist.
    pub fn position(&self, name: &str) -> Result<usize> {
        self.column_index(name).ok_or_else(|| Error::UnknownColumn {
            message: format!(
                "table `{}` has no column `{name}` (its columns: {})",
                self.name,
                self.column_names().join(", ")
            ),
        })
    }

    /// The column named `name`, or an error listing the columns that exist.
    pub fn column(&self, name: &str) -> Result<&Column> {
        Ok(&self.columns[self.position(name)?])
    }

    /// The column names, in order.
    pub fn column_names(&self) -> Vec<String> {
        self.columns.iter().map(|c| c.name.clone()).collect()
    }

    /// The primary-key column.
    pub fn primary_key_column(&self) -> &Column {
        // `primary_key` is checked when the schema is built.
        &self.columns[self.primary_key]
    }

    /// Whether `column` has an index of `kind`.
    pub fn has_index(&self, column: &str, kind: IndexKind) -> bool {
        self.indexes
            .iter()
            .any(|i| i.column == column && i.kind == kind)
    }

    /// The statements that recreate the table and its indexes. The client stores these,
    /// encrypted, as the table's catalog entry; planning them again gives back this schema.
    pub fn to_sql(&self) -> Vec<String> {
        let cols: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut s = format!("{} {}", quote_ident(&c.name), c.ty);
                if i == self.primary_key {
                    s.push_str(" PRIMARY KEY");
                } else if c.not_null {
                    s.push_str(" NOT NULL");
                }
                s
            })
            .collect();
        let mut out = vec![format!(
            "CREATE TABLE {} ({})",
            quote_ident(&self.name),
            cols.join(", ")
        )];
        out.extend(self.indexes.iter().map(|i| {
            format!(
                "CREATE INDEX {} ON {} USING {} ({})",
                quote_ident(&i.name),
                quote_ident(&self.name),
                i.kind,
                quote_ident(&i.column)
            )
        }));
        out
    }
}

/// Quotes an identifier when it would not read back as itself unquoted.
pub fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// The tables a client knows, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    tables: BTreeMap<String, TableSchema>,
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// The table named `name`, or an error that lists the known tables.
    pub fn table(&self, name: &str) -> Result<&TableSchema> {
        self.tables.get(name).ok_or_else(|| Error::UnknownTable {
            table: name.to_string(),
            hint: if self.tables.is_empty() {
                "there are no tables yet; create one with CREATE TABLE".into()
            } else {
                format!(
                    "the known tables are {}",
                    self.tables.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            },
        })
    }

    /// All tables, by name.
    pub fn tables(&self) -> impl Iterator<Item = &TableSchema> {
        self.tables.values()
    }

    /// Adds a table; fails if one of that name exists.
    pub fn add_table(&mut self, table: TableSchema) -> Result<()> {
        if self.tables.contains_key(&table.name) {
            return Err(Error::Constraint(format!(
                "table `{}` already exists; pick another name",
                table.name
            )));
        }
        self.tables.insert(table.name.clone(), table);
        Ok(())
    }

    /// Removes the table named `name` (with its indexes); fails if there is none.
    pub fn remove_table(&mut self, name: &str) -> Result<TableSchema> {
        match self.tables.remove(name) {
            Some(t) => Ok(t),
            // The unknown-table error, listing the tables there are.
            None => self.table(name).cloned(),
        }
    }

    /// Adds an index to `table`; fails if the column is unknown, or if the name or the
    /// (column, kind) pair is taken.
    pub fn add_index(&mut self, table: &str, index: IndexDef) -> Result<()> {
        let in_use = self
            .tables
            .values()
            .flat_map(|t| &t.indexes)
            .any(|i| i.name == index.name);
        let schema = self.table(table)?;
        schema.column(&index.column)?;
        if in_use {
            return Err(Error::Constraint(format!(
                "an index named `{}` already exists; pick another name",
                index.name
            )));
        }
        if schema.has_index(&index.column, index.kind) {
            return Err(Error::Constraint(format!(
                "column `{}` of `{table}` already has a {} index",
                index.column, index.kind
            )));
        }
        if let Some(t) = self.tables.get_mut(table) {
            t.indexes.push(index);
        }
        Ok(())
    }
}
