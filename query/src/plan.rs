//! Plans: what a statement does, as plain data the client executes.
//!
//! Index lookups name columns and carry plaintext values and ranges; the client turns them
//! into PRF tokens and OPE ciphertexts with its keys. [`Plan::explain`] prints a plan with
//! what is pushed to the index provider, what runs on the client, and what the provider
//! learns.

use std::fmt::Write as _;
use std::ops::Bound;

use crate::expr::Expr;
use crate::fulltext::FtQuery;
use crate::schema::{IndexDef, IndexKind, TableSchema};
use crate::value::{Row, Value};

/// A planned statement.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// `CREATE TABLE`: add the table to the catalog.
    CreateTable(TableSchema),
    /// `CREATE INDEX`: add the index and build it over the table's rows.
    CreateIndex {
        /// The table.
        table: String,
        /// The new index.
        index: IndexDef,
    },
    /// `DROP TABLE`: remove the table, its indexes and its rows from the catalog.
    DropTable {
        /// The table; `None` for `DROP TABLE IF EXISTS` of a table that does not exist.
        table: Option<String>,
    },
    /// `INSERT`: rows checked against the schema and coerced to its types.
    Insert(InsertPlan),
    /// `SELECT`.
    Select(SelectPlan),
    /// `UPDATE`.
    Update(UpdatePlan),
    /// `DELETE`.
    Delete(DeletePlan),
    /// `EXPLAIN <statement>`: print the inner plan, run nothing.
    Explain(Box<Plan>),
}

/// Rows to insert into one table.
#[derive(Clone, Debug, PartialEq)]
pub struct InsertPlan {
    /// The table's schema.
    pub table: TableSchema,
    /// The rows, one value per column of the table, in column order.
    pub rows: Vec<Row>,
}

/// Sort direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Smallest first.
    Ascending,
    /// Largest first.
    Descending,
}

/// A lookup one index provider answers, in plaintext terms: the client encrypts the values
/// (PRF tokens, OPE) before sending. Each returns the keys of the matching rows.
#[derive(Clone, Debug, PartialEq)]
pub enum IndexLookup {
    /// Rows whose primary key is one of `values` (the client derives their row ids and
    /// asks the primary map).
    PrimaryKey {
        /// The primary-key column.
        column: String,
        /// The keys (canonical, not NULL, of the column's type).
        values: Vec<Value>,
    },
    /// Rows whose column equals one of `values`, from the `hash` index.
    Equality {
        /// The indexed column.
        column: String,
        /// The values (canonical, not NULL, of the column's type).
        values: Vec<Value>,
    },
    /// Rows whose column lies in the range, from the `btree` index; NULLs never match.
    Range {
        /// The indexed column.
        column: String,
        /// Lower bound (a value of the column's type).
        low: Bound<Value>,
        /// Upper bound (a value of the column's type).
        high: Bound<Value>,
        /// Return keys in this order of the column's value (`None`: any order).
        order: Option<Direction>,
        /// Return at most this many keys: the first ones in `order`.
        limit: Option<u64>,
    },
    /// Rows whose text satisfies the query, from the `fulltext` index.
    FullText {
        /// The indexed column.
        column: String,
        /// The query over words (tokenized with [`crate::fulltext::tokenize`]).
        query: FtQuery,
        /// Return at most this many keys, best ranked (BM25) first; `None`: every matching
        /// key, which the index provider returns in pages in row-id order.
        limit: Option<u64>,
    },
}

impl IndexLookup {
    /// The column the lookup reads.
    pub fn column(&self) -> &str {
        match self {
            IndexLookup::PrimaryKey { column, .. }
            | IndexLookup::Equality { column, .. }
            | IndexLookup::Range { column, .. }
            | IndexLookup::FullText { column, .. } => column,
        }
    }

    /// The index kind that answers the lookup (`None` for the primary map).
    pub fn index_kind(&self) -> Option<IndexKind> {
        match self {
            IndexLookup::PrimaryKey { .. } => None,
            IndexLookup::Equality { .. } => Some(IndexKind::Hash),
            IndexLookup::Range { .. } => Some(IndexKind::BTree),
            IndexLookup::FullText { .. } => Some(IndexKind::FullText),
        }
    }

    fn describe(&self) -> String {
        let list = |vs: &[Value]| vs.iter().map(Value::to_sql).collect::<Vec<_>>().join(", ");
        match self {
            IndexLookup::PrimaryKey { column, values } => {
                format!("primary map: {column} IN ({})", list(values))
            }
            IndexLookup::Equality { column, values } => {
                format!("hash index: {column} IN ({})", list(values))
            }
            IndexLookup::Range {
                column,
                low,
                high,
                order,
                limit,
            } => {
                let mut s = format!("btree index: {}", range_text(column, low, high));
                if let Some(o) = order {
                    let dir = match o {
                        Direction::Ascending => "ascending",
                        Direction::Descending => "descending",
                    };
                    let _ = write!(s, ", {dir} by {column}");
                }
                if let Some(n) = limit {
                    let _ = write!(s, ", first {n}");
                }
                s
            }
            IndexLookup::FullText {
                column,
                query,
                limit,
            } => {
                let mut s = format!("fulltext index: MATCH({column}, '{query}')");
                match limit {
                    Some(n) => {
                        let _ = write!(s, ", best {n} by BM25");
                    }
                    None => s.push_str(", every match, in pages by row id"),
                }
                s
            }
        }
    }

    fn leakage(&self, table: &str, out: &mut Vec<String>) {
        let c = format!("`{table}.{}`", self.column());
        match self {
            IndexLookup::PrimaryKey { values, .. } => out.push(format!(
                "whether each of {} primary keys exists (row ids are PRFs of the keys; a repeated key is recognised)",
                values.len()
            )),
            IndexLookup::Equality { values, .. } => out.push(format!(
                "equality pattern of column {c}: which rows share each of the {} looked-up values",
                values.len()
            )),
            IndexLookup::Range {
                low, high, limit, ..
            } => {
                let mut s = format!(
                    "order of column {c}: where the range bounds fall among the stored values and which rows lie within"
                );
                if matches!((low, high), (Bound::Unbounded, Bound::Unbounded)) {
                    s = format!("order of column {c} at one end of the column");
                }
                if let Some(n) = limit {
                    let _ = write!(s, ", and the first {n} rows in that order");
                }
                out.push(s);
            }
            IndexLookup::FullText { query, .. } => out.push(format!(
                "which rows contain each of the {} full-text tokens of column {c} asked for, so which tokens co-occur, and the AND/OR/NOT shape of the query",
                query.words().len()
            )),
        }
    }
}

fn range_text(column: &str, low: &Bound<Value>, high: &Bound<Value>) -> String {
    let lo = match low {
        Bound::Included(v) => format!("{} <= ", v.to_sql()),
        Bound::Excluded(v) => format!("{} < ", v.to_sql()),
        Bound::Unbounded => String::new(),
    };
    let hi = match high {
        Bound::Included(v) => format!(" <= {}", v.to_sql()),
        Bound::Excluded(v) => format!(" < {}", v.to_sql()),
        Bound::Unbounded => String::new(),
    };
    if lo.is_empty() && hi.is_empty() {
        format!("{column} IS NOT NULL")
    } else {
        format!("{lo}{column}{hi}")
    }
}

/// A boolean combination of index lookups: intersections and unions of their row keys.
#[derive(Clone, Debug, PartialEq)]
pub enum Pushdown {
    /// One lookup.
    Lookup(IndexLookup),
    /// Rows every part returns.
    And(Vec<Pushdown>),
    /// Rows any part returns.
    Or(Vec<Pushdown>),
}

impl Pushdown {
    /// Every lookup in the tree.
    pub fn lookups(&self) -> Vec<&IndexLookup> {
        match self {
            Pushdown::Lookup(l) => vec![l],
            Pushdown::And(ps) | Pushdown::Or(ps) => ps.iter().flat_map(Pushdown::lookups).collect(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Pushdown::Lookup(l) => l.describe(),
            Pushdown::And(ps) => join_parts(ps, " ∩ "),
            Pushdown::Or(ps) => join_parts(ps, " ∪ "),
        }
    }
}

fn join_parts(ps: &[Pushdown], sep: &str) -> String {
    ps.iter()
        .map(|p| format!("({})", p.describe()))
        .collect::<Vec<_>>()
        .join(sep)
}

/// How the rows of one table are found.
#[derive(Clone, Debug, PartialEq)]
pub enum AccessPath {
    /// Every row, through the primary map: nothing could be pushed to an index.
    FullScan,
    /// The rows the index provider returns for the pushdown.
    Index(Pushdown),
}

/// One table read by a statement.
#[derive(Clone, Debug, PartialEq)]
pub struct TableAccess {
    /// The table's schema.
    pub table: TableSchema,
    /// The name the statement uses for it (its alias, or its name).
    pub alias: String,
    /// How its rows are found.
    pub path: AccessPath,
}

/// The WHERE clause, split: the part the index answered (re-checked on the decrypted rows,
/// so that a lying index provider cannot add rows) and the part only the client can evaluate.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    /// Conjuncts answered by the index provider, evaluated again after decryption.
    pub recheck: Option<Expr>,
    /// Conjuncts evaluated only on the client, after decryption.
    pub residual: Option<Expr>,
}

impl Filter {
    /// Whether `row` passes both parts.
    pub fn accepts(&self, row: &[Value]) -> crate::Result<bool> {
        for e in [&self.recheck, &self.residual].into_iter().flatten() {
            if !e.is_true(row)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// An inner equi-join of the two tables of a [`SelectPlan`], done on the client.
#[derive(Clone, Debug, PartialEq)]
pub struct JoinPlan {
    /// Position of the join column in the left table's rows.
    pub left_column: usize,
    /// Position of the join column in the right table's rows.
    pub right_column: usize,
    /// The ON condition as written, for EXPLAIN.
    pub condition: String,
}

/// An aggregate function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggFunc {
    /// `COUNT`
    Count,
    /// `SUM` (NULL over no values; integer overflow is an error)
    Sum,
    /// `AVG` (a DOUBLE)
    Avg,
    /// `MIN`
    Min,
    /// `MAX`
    Max,
}

/// One aggregate call.
#[derive(Clone, Debug, PartialEq)]
pub struct AggregateCall {
    /// The function.
    pub func: AggFunc,
    /// The argument; `None` for `COUNT(*)`.
    pub arg: Option<Expr>,
    /// `DISTINCT` inside the call.
    pub distinct: bool,
    /// The call as written, for EXPLAIN and column names.
    pub text: String,
}

/// GROUP BY and aggregates: after it, expressions read the group keys followed by the
/// aggregate results.
#[derive(Clone, Debug, PartialEq)]
pub struct Aggregation {
    /// The group keys (empty: one group over all rows).
    pub group_by: Vec<Expr>,
    /// The aggregate calls.
    pub calls: Vec<AggregateCall>,
    /// HAVING, over the grouped row.
    pub having: Option<Expr>,
}

/// One ORDER BY key.
#[derive(Clone, Debug, PartialEq)]
pub struct SortKey {
    /// The key, over the same row as the projections.
    pub expr: Expr,
    /// `DESC`.
    pub descending: bool,
    /// Whether NULLs sort first (by default: first ascending, last descending, as SQLite).
    pub nulls_first: bool,
}

/// A SELECT.
#[derive(Clone, Debug, PartialEq)]
pub struct SelectPlan {
    /// The tables read: none (`SELECT 1`), one, or two joined.
    pub tables: Vec<TableAccess>,
    /// The join of two tables.
    pub join: Option<JoinPlan>,
    /// WHERE, over the table's row (or the left row followed by the right row).
    pub filter: Filter,
    /// GROUP BY, aggregates and HAVING.
    pub aggregation: Option<Aggregation>,
    /// The output expressions.
    pub projections: Vec<Expr>,
    /// The output column names.
    pub columns: Vec<String>,
    /// `SELECT DISTINCT`.
    pub distinct: bool,
    /// ORDER BY.
    pub order_by: Vec<SortKey>,
    /// OFFSET.
    pub offset: u64,
    /// LIMIT.
    pub limit: Option<u64>,
}

/// An UPDATE of one table.
#[derive(Clone, Debug, PartialEq)]
pub struct UpdatePlan {
    /// The table and how its rows are found.
    pub access: TableAccess,
    /// WHERE.
    pub filter: Filter,
    /// `(column position, new value)`; the expression reads the old row.
    pub assignments: Vec<(usize, Expr)>,
}

/// A DELETE from one table.
#[derive(Clone, Debug, PartialEq)]
pub struct DeletePlan {
    /// The table and how its rows are found.
    pub access: TableAccess,
    /// WHERE.
    pub filter: Filter,
}

impl Plan {
    /// The plan as text: per table its access path, what the index provider is asked, what
    /// the client does after decryption, and what the index provider learns.
    pub fn explain(&self) -> String {
        let mut e = Explainer::default();
        e.plan(self);
        e.finish()
    }
}

#[derive(Default)]
struct Explainer {
    out: String,
    pushed: Vec<String>,
    client: Vec<String>,
    learns: Vec<String>,
}

impl Explainer {
    fn line(&mut self, s: impl AsRef<str>) {
        self.out.push_str(s.as_ref());
        self.out.push('\n');
    }

    fn plan(&mut self, plan: &Plan) {
        match plan {
            Plan::Explain(inner) => self.plan(inner),
            Plan::CreateTable(t) => {
                self.line(format!("CREATE TABLE {}", t.name));
                self.client
                    .push("store the schema in the catalog, encrypted under the master key".into());
                self.learns
                    .push("that a table was created, and the catalog's size (ciphertext)".into());
            }
            Plan::DropTable { table } => {
                let name = table.as_deref().unwrap_or("(absent: nothing to do)");
                self.line(format!("DROP TABLE {name}"));
                if table.is_some() {
                    self.client.push(
                        "remove the schema from the catalog, encrypted under the master key".into(),
                    );
                    self.pushed.push("drop the table's index namespace".into());
                    self.learns.push(
                        "that a table was dropped (which index namespace), and the catalog's size"
                            .into(),
                    );
                }
            }
            Plan::CreateIndex { table, index } => {
                self.line(format!(
                    "CREATE INDEX {} ON {table} USING {} ({})",
                    index.name, index.kind, index.column
                ));
                self.client.push(format!(
                    "read every row of `{table}`, encrypt its `{}` entries and send them",
                    index.column
                ));
                self.pushed.push(format!(
                    "build a {} index on `{table}.{}`",
                    index.kind, index.column
                ));
                self.learns
                    .push(stored_leakage(table, &index.column, index.kind));
            }
            Plan::Insert(p) => {
                let t = &p.table;
                self.line(format!("INSERT INTO {} ({} rows)", t.name, p.rows.len()));
                self.client.push(
                    "encode and encrypt each row (AES-SIV), pack into segments, erasure-code to storage providers"
                        .into(),
                );
                self.pushed.push(format!(
                    "primary map entries for {} row ids of `{}`",
                    p.rows.len(),
                    t.name
                ));
                self.learns.push(format!(
                    "the number of rows inserted into `{}` and their ciphertext sizes",
                    t.name
                ));
                for i in &t.indexes {
                    self.pushed.push(format!(
                        "{} index entries for `{}.{}`",
                        i.kind, t.name, i.column
                    ));
                    self.learns.push(stored_leakage(&t.name, &i.column, i.kind));
                }
            }
            Plan::Select(p) => {
                self.line("SELECT");
                for a in &p.tables {
                    self.access(a);
                }
                if let Some(j) = &p.join {
                    self.client
                        .push(format!("inner hash join on {}", j.condition));
                }
                self.filter(&p.filter);
                if let Some(a) = &p.aggregation {
                    let calls: Vec<&str> = a.calls.iter().map(|c| c.text.as_str()).collect();
                    let mut s = String::from("aggregate");
                    if !a.group_by.is_empty() {
                        let keys: Vec<String> = a.group_by.iter().map(|e| e.to_string()).collect();
                        let _ = write!(s, " GROUP BY {}", keys.join(", "));
                    }
                    if !calls.is_empty() {
                        let _ = write!(s, " computing {}", calls.join(", "));
                    }
                    self.client.push(s);
                    if let Some(h) = &a.having {
                        self.client.push(format!("HAVING {h}"));
                    }
                }
                if p.distinct {
                    self.client.push("DISTINCT".into());
                }
                if !p.order_by.is_empty() {
                    let keys: Vec<String> = p
                        .order_by
                        .iter()
                        .map(|k| format!("{}{}", k.expr, if k.descending { " DESC" } else { "" }))
                        .collect();
                    self.client.push(format!("sort by {}", keys.join(", ")));
                }
                if p.offset > 0 || p.limit.is_some() {
                    let lim = p.limit.map_or("all".to_string(), |n| n.to_string());
                    self.client.push(format!("skip {}, keep {lim}", p.offset));
                }
                self.client
                    .push(format!("project {}", p.columns.join(", ")));
            }
            Plan::Update(p) => {
                self.line(format!("UPDATE {}", p.access.table.name));
                self.access(&p.access);
                self.filter(&p.filter);
                let cols: Vec<String> = p
                    .assignments
                    .iter()
                    .filter_map(|(i, e)| {
                        p.access
                            .table
                            .columns
                            .get(*i)
                            .map(|c| format!("{} = {e}", c.name))
                    })
                    .collect();
                self.client.push(format!(
                    "compute {} and write each row's new version (parent: the old version), encrypted",
                    cols.join(", ")
                ));
                self.pushed.push(
                    "move the index entries of the updated rows and point the primary map at the new versions"
                        .into(),
                );
                self.learns.push("which rows were updated".into());
            }
            Plan::Delete(p) => {
                self.line(format!("DELETE FROM {}", p.access.table.name));
                self.access(&p.access);
                self.filter(&p.filter);
                self.client.push("write a tombstone for each row".into());
                self.pushed
                    .push("remove the index entries of the deleted rows".into());
                self.learns.push("which rows were deleted".into());
            }
        }
    }

    fn access(&mut self, a: &TableAccess) {
        let name = if a.alias == a.table.name {
            a.table.name.clone()
        } else {
            format!("{} AS {}", a.table.name, a.alias)
        };
        match &a.path {
            AccessPath::FullScan => {
                self.line(format!(
                    "  table {name}: FULL SCAN through the primary map (no predicate could be pushed to an index)"
                ));
                self.pushed
                    .push(format!("list every row id of `{}`", a.table.name));
                self.learns.push(format!(
                    "that every row of `{}` was read (the table's size); nothing about values",
                    a.table.name
                ));
            }
            AccessPath::Index(p) => {
                self.line(format!("  table {name}: index lookup"));
                self.pushed.push(p.describe());
                for l in p.lookups() {
                    l.leakage(&a.table.name, &mut self.learns);
                }
                self.learns.push(
                    "query pattern: repeating a lookup sends the same tokens, so repeats are linkable; and the number of rows returned"
                        .into(),
                );
            }
        }
        self.client.push(format!(
            "fetch the rows of `{}` and decrypt them (everything below runs on plaintext)",
            a.table.name
        ));
    }

    fn filter(&mut self, f: &Filter) {
        if let Some(r) = &f.recheck {
            self.client.push(format!("re-check pushed predicates: {r}"));
        }
        if let Some(r) = &f.residual {
            self.client.push(format!("filter: {r}"));
        }
    }

    fn finish(mut self) -> String {
        let sections = [
            ("pushed to the index provider:", &self.pushed),
            ("on the client:", &self.client),
            ("the index provider learns:", &self.learns),
        ];
        let mut out = std::mem::take(&mut self.out);
        for (title, items) in sections {
            out.push_str(title);
            out.push('\n');
            if items.is_empty() {
                out.push_str("  - nothing\n");
            }
            let mut seen: Vec<&String> = Vec::new();
            for i in items {
                if !seen.contains(&i) {
                    seen.push(i);
                    let _ = writeln!(out, "  - {i}");
                }
            }
        }
        out
    }
}

/// What an index provider learns from storing an index of `kind` on a column (the index
/// crate's own leakage profile).
fn stored_leakage(table: &str, column: &str, kind: IndexKind) -> String {
    let what = match kind {
        IndexKind::Hash => "equality pattern",
        IndexKind::BTree => "order",
        IndexKind::FullText => "token statistics",
    };
    format!(
        "{what} of column `{table}.{column}`: {}",
        kind.store_kind().leakage().storing
    )
}
