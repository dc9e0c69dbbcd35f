//! An in-memory database over plaintext rows: the reference executor.
//!
//! [`MemoryDb`] implements [`RowSource`] with a plaintext model of each index (it refuses a
//! lookup on an index that does not exist, as an index provider would) and applies plans
//! the way the client does: rows are stored in their canonical encoding, UPDATE and DELETE
//! go through [`execute_update`] and [`execute_delete`]. Tests compare it with SQLite, and
//! the client's results with it.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

use crate::codec::{decode_row, encode_key, encode_row};
use crate::error::{Error, Result};
use crate::exec::{ResultSet, RowSource, execute_delete, execute_select, execute_update};
use crate::fulltext::tokenize;
use crate::plan::{Direction, IndexLookup, Plan};
use crate::planner::{parse, plan};
use crate::schema::{Catalog, TableSchema};
use crate::value::{Row, Value};

/// What one statement did.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// A table or an index was created.
    Created,
    /// A table was dropped (or, with IF EXISTS, there was none).
    Dropped,
    /// This many rows were inserted.
    Inserted(usize),
    /// This many rows were updated.
    Updated(usize),
    /// This many rows were deleted.
    Deleted(usize),
    /// A SELECT's result.
    Rows(ResultSet),
    /// EXPLAIN's text.
    Explain(String),
}

/// Tables of encoded rows keyed by encoded primary key, and their catalog.
#[derive(Clone, Debug, Default)]
pub struct MemoryDb {
    catalog: Catalog,
    tables: BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryDb {
    /// An empty database.
    pub fn new() -> Self {
        Self::default()
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Plans and applies each statement of `sql` in turn; stops at the first error (the
    /// failed statement changes nothing).
    pub fn execute(&mut self, sql: &str) -> Result<Vec<Outcome>> {
        let mut out = Vec::new();
        for stmt in parse(sql)? {
            let p = plan(&self.catalog, &stmt)?;
            out.push(self.apply(&p)?);
        }
        Ok(out)
    }

    /// Applies one plan.
    pub fn apply(&mut self, plan: &Plan) -> Result<Outcome> {
        match plan {
            Plan::CreateTable(t) => {
                self.catalog.add_table(t.clone())?;
                self.tables.insert(t.name.clone(), BTreeMap::new());
                Ok(Outcome::Created)
            }
            Plan::CreateIndex { table, index } => {
                self.catalog.add_index(table, index.clone())?;
                Ok(Outcome::Created)
            }
            Plan::DropTable { table } => {
                if let Some(name) = table {
                    self.catalog.remove_table(name)?;
                    self.tables.remove(name);
                }
                Ok(Outcome::Dropped)
            }
            Plan::Explain(p) => Ok(Outcome::Explain(p.explain())),
            Plan::Select(p) => execute_select(p, self).map(Outcome::Rows),
            Plan::Insert(p) => {
                let schema = self.catalog.table(&p.table.name)?.clone();
                let mut staged = Vec::with_capacity(p.rows.len());
                let existing = self.rows_of(&schema.name)?;
                for row in &p.rows {
                    let key = encode_key(&row[schema.primary_key])?;
                    if existing.contains_key(&key) {
                        return Err(Error::Constraint(format!(
                            "`{}` already has a row with primary key {}; UPDATE it or DELETE it first",
                            schema.name,
                            row[schema.primary_key].to_sql()
                        )));
                    }
                    staged.push((key, encode_row(&schema, row)?));
                }
                let n = staged.len();
                self.rows_mut(&schema.name)?.extend(staged);
                Ok(Outcome::Inserted(n))
            }
            Plan::Update(p) => {
                let changes = execute_update(p, self)?;
                let schema = &p.access.table;
                let mut staged = Vec::with_capacity(changes.len());
                for (_, new) in &changes {
                    staged.push((
                        encode_key(&new[schema.primary_key])?,
                        encode_row(schema, new)?,
                    ));
                }
                self.rows_mut(&schema.name)?.extend(staged);
                Ok(Outcome::Updated(changes.len()))
            }
            Plan::Delete(p) => {
                let gone = execute_delete(p, self)?;
                let schema = &p.access.table;
                let keys: Vec<Vec<u8>> = gone
                    .iter()
                    .map(|r| encode_key(&r[schema.primary_key]))
                    .collect::<Result<_>>()?;
                let rows = self.rows_mut(&schema.name)?;
                for k in keys {
                    rows.remove(&k);
                }
                Ok(Outcome::Deleted(gone.len()))
            }
        }
    }

    fn rows_of(&self, table: &str) -> Result<&BTreeMap<Vec<u8>, Vec<u8>>> {
        match self.tables.get(table) {
            Some(t) => Ok(t),
            None => self.catalog.table(table).and_then(|_| {
                Err(Error::UnknownTable {
                    table: table.into(),
                    hint: "the table has no storage".into(),
                })
            }),
        }
    }

    fn rows_mut(&mut self, table: &str) -> Result<&mut BTreeMap<Vec<u8>, Vec<u8>>> {
        self.tables
            .get_mut(table)
            .ok_or_else(|| Error::UnknownTable {
                table: table.into(),
                hint: "the table has no storage".into(),
            })
    }

    /// Every `(key, row)` of the table, decoded.
    fn decoded(&self, table: &TableSchema) -> Result<Vec<(Vec<u8>, Row)>> {
        self.rows_of(&table.name)?
            .iter()
            .map(|(k, bytes)| Ok((k.clone(), decode_row(table, bytes)?)))
            .collect()
    }
}

fn in_range(v: &Value, low: &Bound<Value>, high: &Bound<Value>) -> bool {
    use std::cmp::Ordering::*;
    let lo = match low {
        Bound::Included(b) => matches!(v.sql_cmp(b), Some(Greater | Equal)),
        Bound::Excluded(b) => matches!(v.sql_cmp(b), Some(Greater)),
        Bound::Unbounded => !v.is_null(),
    };
    let hi = match high {
        Bound::Included(b) => matches!(v.sql_cmp(b), Some(Less | Equal)),
        Bound::Excluded(b) => matches!(v.sql_cmp(b), Some(Less)),
        Bound::Unbounded => !v.is_null(),
    };
    lo && hi
}

impl RowSource for MemoryDb {
    type Key = Vec<u8>;

    fn lookup(&self, table: &TableSchema, lookup: &IndexLookup) -> Result<Vec<Vec<u8>>> {
        let col = table
            .column_index(lookup.column())
            .ok_or_else(|| Error::UnknownColumn {
                message: format!("no column `{}` in `{}`", lookup.column(), table.name),
            })?;
        if let Some(kind) = lookup.index_kind()
            && !table.has_index(lookup.column(), kind)
        {
            return Err(Error::unsupported(
                format!("a {kind} lookup on `{}.{}`", table.name, lookup.column()),
                format!(
                    "the column has no {kind} index: CREATE INDEX ON {} USING {kind} ({})",
                    table.name,
                    lookup.column()
                ),
            ));
        }
        if let IndexLookup::PrimaryKey { values, .. } = lookup {
            if col != table.primary_key {
                return Err(Error::unsupported(
                    format!("a primary-key lookup on `{}`", lookup.column()),
                    "look up the primary-key column",
                ));
            }
            let rows = self.rows_of(&table.name)?;
            let mut out = Vec::new();
            for v in values {
                let k = encode_key(v)?;
                if rows.contains_key(&k) {
                    out.push(k);
                }
            }
            return Ok(out);
        }
        let rows = self.decoded(table)?;
        let value = |r: &Row| r.get(col).cloned().unwrap_or(Value::Null);
        Ok(match lookup {
            IndexLookup::Equality { values, .. } => rows
                .into_iter()
                .filter(|(_, r)| {
                    let v = value(r);
                    values
                        .iter()
                        .any(|x| v.sql_cmp(x) == Some(std::cmp::Ordering::Equal))
                })
                .map(|(k, _)| k)
                .collect(),
            IndexLookup::Range {
                low,
                high,
                order,
                limit,
                ..
            } => {
                let mut hits: Vec<(Vec<u8>, Value)> = rows
                    .into_iter()
                    .map(|(k, r)| (k, value(&r)))
                    .filter(|(_, v)| in_range(v, low, high))
                    .collect();
                match order {
                    Some(Direction::Ascending) => hits.sort_by(|a, b| a.1.sort_cmp(&b.1)),
                    Some(Direction::Descending) => hits.sort_by(|a, b| b.1.sort_cmp(&a.1)),
                    None => {}
                }
                let n = limit.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
                hits.into_iter().take(n).map(|(k, _)| k).collect()
            }
            IndexLookup::FullText { query, limit, .. } => {
                let n = limit.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
                rows.into_iter()
                    .filter(|(_, r)| match value(r) {
                        Value::Text(s) => {
                            let words: HashSet<String> = tokenize(&s).into_iter().collect();
                            query.matches(&words)
                        }
                        _ => false,
                    })
                    .take(n)
                    .map(|(k, _)| k)
                    .collect()
            }
            IndexLookup::PrimaryKey { .. } => Vec::new(),
        })
    }

    fn scan(&self, table: &TableSchema) -> Result<Vec<Vec<u8>>> {
        Ok(self.rows_of(&table.name)?.keys().cloned().collect())
    }

    fn fetch(&self, table: &TableSchema, keys: &[Vec<u8>]) -> Result<Vec<Row>> {
        let rows = self.rows_of(&table.name)?;
        keys.iter()
            .map(|k| {
                let bytes = rows.get(k).ok_or_else(|| {
                    Error::Source(
                        format!(
                            "no row of `{}` has the key returned by the index",
                            table.name
                        )
                        .into(),
                    )
                })?;
                decode_row(table, bytes)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn db() -> MemoryDb {
        let mut db = MemoryDb::new();
        db.execute(
            "CREATE TABLE events (id TEXT PRIMARY KEY, at TIMESTAMP NOT NULL, kind TEXT, payload BLOB, body TEXT);
             CREATE INDEX ON events USING btree (at);
             CREATE INDEX ON events USING hash (kind);
             CREATE INDEX ON events USING fulltext (body);
             INSERT INTO events VALUES
               ('e1', '2024-01-01 10:00:00', 'login', X'00ff', 'User Ann logged in'),
               ('e2', '2024-01-02', 'logout', NULL, 'Ann logged out'),
               ('e3', TIMESTAMP '2024-01-03 08:30:00.5', 'login', X'', 'Bob logged in');",
        )
        .unwrap();
        db
    }

    fn rows(db: &mut MemoryDb, sql: &str) -> Vec<Row> {
        match db.execute(sql).unwrap().pop() {
            Some(Outcome::Rows(rs)) => rs.rows,
            other => panic!("{other:?}"),
        }
    }

    fn text(v: &str) -> Value {
        Value::Text(v.into())
    }

    #[test]
    fn timestamps_blobs_and_full_text() {
        let mut db = db();
        assert_eq!(
            rows(
                &mut db,
                "SELECT id FROM events WHERE at >= '2024-01-02' ORDER BY at"
            ),
            [[text("e2")], [text("e3")]]
        );
        assert_eq!(
            rows(
                &mut db,
                "SELECT id, length(payload) FROM events WHERE payload IS NOT NULL ORDER BY id"
            ),
            [[text("e1"), Value::Int(2)], [text("e3"), Value::Int(0)]]
        );
        assert_eq!(
            rows(
                &mut db,
                "SELECT id FROM events WHERE MATCH(body, 'ann -out') OR kind = 'logout' ORDER BY id"
            ),
            [[text("e1")], [text("e2")]]
        );
        assert_eq!(
            rows(
                &mut db,
                "SELECT max(at), min(id) FROM events WHERE kind = 'login'"
            ),
            [[
                Value::Timestamp(crate::value::parse_timestamp("2024-01-03 08:30:00.5").unwrap()),
                text("e1")
            ]]
        );
        assert_eq!(
            rows(&mut db, "SELECT 1 + 2, 'a' || 'b'"),
            [[Value::Int(3), text("ab")]]
        );
    }

    #[test]
    fn writes_and_their_errors() {
        let mut db = db();
        let err = db
            .execute("INSERT INTO events (id, at) VALUES ('e1', '2024-02-01')")
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("already has a row with primary key 'e1'"),
            "{err}"
        );
        // A failed statement changes nothing; the statements before it stay.
        let err = db
            .execute("INSERT INTO events (id, at) VALUES ('e4', '2024-02-01'), ('e5', 'soon')")
            .unwrap_err();
        assert!(err.to_string().contains("not a timestamp"), "{err}");
        assert_eq!(
            rows(&mut db, "SELECT count(*) FROM events"),
            [[Value::Int(3)]]
        );
        assert_eq!(
            db.execute("UPDATE events SET kind = 'audit', body = body || '!' WHERE kind = 'login'")
                .unwrap(),
            [Outcome::Updated(2)]
        );
        assert_eq!(
            rows(
                &mut db,
                "SELECT body FROM events WHERE kind = 'audit' ORDER BY id"
            ),
            [[text("User Ann logged in!")], [text("Bob logged in!")]]
        );
        let err = db
            .execute("UPDATE events SET at = NULL WHERE id = 'e1'")
            .unwrap_err();
        assert!(err.to_string().contains("NOT NULL"), "{err}");
        assert_eq!(
            db.execute("DELETE FROM events WHERE at < '2024-01-02'")
                .unwrap(),
            [Outcome::Deleted(1)]
        );
        assert_eq!(
            rows(&mut db, "SELECT id FROM events ORDER BY id"),
            [[text("e2")], [text("e3")]]
        );
    }

    #[test]
    fn lookups_need_their_index() {
        let db = db();
        let schema = db.catalog().table("events").unwrap().clone();
        let err = db
            .lookup(
                &schema,
                &IndexLookup::Equality {
                    column: "body".into(),
                    values: vec![text("x")],
                },
            )
            .unwrap_err();
        assert!(err.to_string().contains("USING hash (body)"), "{err}");
    }

    #[test]
    fn explain_runs_nothing() {
        let mut db = db();
        let out = db
            .execute("EXPLAIN DELETE FROM events WHERE kind = 'login'")
            .unwrap();
        let [Outcome::Explain(text)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert!(text.contains("hash index: kind IN ('login')"), "{text}");
        assert!(
            text.contains("equality pattern of column `events.kind`"),
            "{text}"
        );
        assert_eq!(
            rows(&mut db, "SELECT count(*) FROM events"),
            [[Value::Int(3)]]
        );
    }
}
