//! The pure evaluator: runs a plan against a [`RowSource`] that the caller implements
//! (the client over the network, [`crate::memory::MemoryDb`] over plaintext rows).

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use crate::error::{Error, Result};
use crate::expr::{BinOp, as_double, binary};
use crate::plan::{
    AccessPath, AggFunc, AggregateCall, DeletePlan, IndexLookup, Pushdown, SelectPlan, SortKey,
    TableAccess, UpdatePlan,
};
use crate::schema::TableSchema;
use crate::value::{Row, Value};

/// Where rows come from. Keys name rows (the client uses row ids; the memory source,
/// encoded primary keys); rows are decrypted and decoded, in the table's column order.
pub trait RowSource {
    /// What names a row.
    type Key: Clone + Eq + Hash;

    /// The keys of the rows the index provider returns for `lookup`, in its order (which
    /// matters only for ordered, limited range lookups). Fails if the index does not exist.
    fn lookup(&self, table: &TableSchema, lookup: &IndexLookup) -> Result<Vec<Self::Key>>;

    /// The keys of every row of the table (a full scan of the primary map).
    fn scan(&self, table: &TableSchema) -> Result<Vec<Self::Key>>;

    /// The rows named by `keys`, decrypted (any order; a key with no row is an error).
    fn fetch(&self, table: &TableSchema, keys: &[Self::Key]) -> Result<Vec<Row>>;
}

/// The rows of a SELECT.
#[derive(Clone, Debug, PartialEq)]
pub struct ResultSet {
    /// The column names.
    pub columns: Vec<String>,
    /// The rows, in result order.
    pub rows: Vec<Row>,
}

/// The keys a pushdown selects.
pub fn pushdown_keys<S: RowSource>(
    source: &S,
    table: &TableSchema,
    p: &Pushdown,
) -> Result<Vec<S::Key>> {
    match p {
        Pushdown::Lookup(l) => source.lookup(table, l),
        Pushdown::And(parts) => {
            let mut out: Option<Vec<S::Key>> = None;
            for part in parts {
                let keys = pushdown_keys(source, table, part)?;
                out = Some(match out {
                    None => keys,
                    Some(prev) => {
                        let set: HashSet<S::Key> = keys.into_iter().collect();
                        prev.into_iter().filter(|k| set.contains(k)).collect()
                    }
                });
            }
            Ok(out.unwrap_or_default())
        }
        Pushdown::Or(parts) => {
            let mut seen = HashSet::new();
            let mut out = Vec::new();
            for part in parts {
                for k in pushdown_keys(source, table, part)? {
                    if seen.insert(k.clone()) {
                        out.push(k);
                    }
                }
            }
            Ok(out)
        }
    }
}

/// The keys of the rows an access path selects (before any client-side filter).
pub fn access_keys<S: RowSource>(source: &S, access: &TableAccess) -> Result<Vec<S::Key>> {
    match &access.path {
        AccessPath::FullScan => source.scan(&access.table),
        AccessPath::Index(p) => pushdown_keys(source, &access.table, p),
    }
}

/// The decrypted rows an access path selects (before any client-side filter).
pub fn read_rows<S: RowSource>(source: &S, access: &TableAccess) -> Result<Vec<Row>> {
    let keys = access_keys(source, access)?;
    checked(&access.table, source.fetch(&access.table, &keys)?)
}

/// `rows`, if each has one value per column of `table`.
fn checked(table: &TableSchema, rows: Vec<Row>) -> Result<Vec<Row>> {
    if let Some(bad) = rows.iter().find(|r| r.len() != table.columns.len()) {
        return Err(Error::CorruptRow(format!(
            "a row of `{}` has {} values for {} columns",
            table.name,
            bad.len(),
            table.columns.len()
        )));
    }
    Ok(rows)
}

/// Whether a SELECT streams: one table, no aggregation and no ORDER BY, so that each result
/// row depends only on its own input row and rows can be read a batch at a time
/// ([`SelectStream`]).
pub fn streams(plan: &SelectPlan) -> bool {
    plan.tables.len() == 1
        && plan.join.is_none()
        && plan.aggregation.is_none()
        && plan.order_by.is_empty()
}

/// A streaming SELECT ([`streams`]) fed its table's rows a batch at a time: applies the
/// filter, the projection, DISTINCT, OFFSET and LIMIT, and says when no more rows are wanted.
#[derive(Clone, Debug)]
pub struct SelectStream {
    plan: SelectPlan,
    skip: u64,
    left: Option<u64>,
    seen: HashSet<Vec<u8>>,
}

impl SelectStream {
    /// Fails if `plan` does not stream.
    pub fn new(plan: SelectPlan) -> Result<Self> {
        if !streams(&plan) {
            return Err(Error::unsupported(
                "streaming a SELECT with a join, an aggregate or ORDER BY",
                "run it with execute_select (it needs every row first)",
            ));
        }
        Ok(SelectStream {
            skip: plan.offset,
            left: plan.limit,
            seen: HashSet::new(),
            plan,
        })
    }

    /// The table read and how.
    pub fn access(&self) -> &TableAccess {
        &self.plan.tables[0]
    }

    /// True once LIMIT rows were returned: reading more is wasted.
    pub fn finished(&self) -> bool {
        self.left == Some(0)
    }

    /// The result rows that `rows` (the next input rows, decrypted) yield.
    pub fn push(&mut self, rows: Vec<Row>) -> Result<Vec<Row>> {
        let rows = checked(&self.access().table, rows)?;
        let mut out = Vec::new();
        for row in rows {
            if self.finished() {
                break;
            }
            if !self.plan.filter.accepts(&row)? {
                continue;
            }
            let result = project(&self.plan, &row)?;
            if self.plan.distinct && !self.seen.insert(key_of(&result)) {
                continue;
            }
            if self.skip > 0 {
                self.skip -= 1;
                continue;
            }
            if let Some(left) = &mut self.left {
                *left -= 1;
            }
            out.push(result);
        }
        Ok(out)
    }
}

/// The output values of one input row.
fn project(plan: &SelectPlan, row: &[Value]) -> Result<Row> {
    plan.projections.iter().map(|e| e.eval(row)).collect()
}

/// The grouping key of `values` (equal values, equal keys).
pub(crate) fn key_of(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        v.group_key(&mut out);
    }
    out
}

/// Runs a SELECT.
pub fn execute_select<S: RowSource>(plan: &SelectPlan, source: &S) -> Result<ResultSet> {
    if streams(plan) {
        let mut stream = SelectStream::new(plan.clone())?;
        let rows = stream.push(read_rows(source, stream.access())?)?;
        return Ok(ResultSet {
            columns: plan.columns.clone(),
            rows,
        });
    }
    // Input rows: nothing (one empty row), one table, or the join of two.
    let mut input: Vec<Row> = match (plan.tables.as_slice(), &plan.join) {
        ([], _) => vec![Vec::new()],
        ([t], None) => read_rows(source, t)?,
        ([l, r], Some(j)) => {
            let right = read_rows(source, r)?;
            let mut by_key: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
            for (i, row) in right.iter().enumerate() {
                match row.get(j.right_column) {
                    Some(v) if !v.is_null() => by_key
                        .entry(key_of(std::slice::from_ref(v)))
                        .or_default()
                        .push(i),
                    _ => {}
                }
            }
            let mut out = Vec::new();
            for lrow in read_rows(source, l)? {
                let Some(v) = lrow.get(j.left_column).filter(|v| !v.is_null()) else {
                    continue;
                };
                for &i in by_key
                    .get(&key_of(std::slice::from_ref(v)))
                    .into_iter()
                    .flatten()
                {
                    let mut row = lrow.clone();
                    row.extend(right[i].iter().cloned());
                    out.push(row);
                }
            }
            out
        }
        _ => {
            return Err(Error::unsupported(
                "this plan's tables",
                "plan SELECTs with this crate's planner",
            ));
        }
    };
    let mut kept = Vec::with_capacity(input.len());
    for row in input.drain(..) {
        if plan.filter.accepts(&row)? {
            kept.push(row);
        }
    }
    let rows = match &plan.aggregation {
        None => kept,
        Some(a) => {
            let mut groups: Vec<(Row, Vec<Accumulator>)> = Vec::new();
            let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
            for row in &kept {
                let keys: Row = a
                    .group_by
                    .iter()
                    .map(|g| g.eval(row))
                    .collect::<Result<_>>()?;
                let slot = *index.entry(key_of(&keys)).or_insert_with(|| {
                    groups.push((keys, a.calls.iter().map(Accumulator::new).collect()));
                    groups.len() - 1
                });
                if let Some((_, accs)) = groups.get_mut(slot) {
                    for (acc, call) in accs.iter_mut().zip(&a.calls) {
                        acc.add(call, row)?;
                    }
                }
            }
            if groups.is_empty() && a.group_by.is_empty() {
                groups.push((Vec::new(), a.calls.iter().map(Accumulator::new).collect()));
            }
            let mut out = Vec::with_capacity(groups.len());
            for (mut keys, accs) in groups {
                for acc in accs {
                    keys.push(acc.finish());
                }
                if match &a.having {
                    Some(h) => h.is_true(&keys)?,
                    None => true,
                } {
                    out.push(keys);
                }
            }
            out
        }
    };
    let mut results: Vec<(Row, Row)> = Vec::with_capacity(rows.len());
    let mut seen = HashSet::new();
    for row in &rows {
        let out = project(plan, row)?;
        if plan.distinct && !seen.insert(key_of(&out)) {
            continue;
        }
        let sort: Row = plan
            .order_by
            .iter()
            .map(|k| k.expr.eval(row))
            .collect::<Result<_>>()?;
        results.push((out, sort));
    }
    if !plan.order_by.is_empty() {
        results.sort_by(|a, b| compare_sort_keys(&plan.order_by, &a.1, &b.1));
    }
    let offset = usize::try_from(plan.offset).unwrap_or(usize::MAX);
    let limit = plan
        .limit
        .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    Ok(ResultSet {
        columns: plan.columns.clone(),
        rows: results
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|r| r.0)
            .collect(),
    })
}

fn compare_sort_keys(keys: &[SortKey], a: &[Value], b: &[Value]) -> Ordering {
    for ((k, x), y) in keys.iter().zip(a).zip(b) {
        let o = match (x.is_null(), y.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) if k.nulls_first => Ordering::Less,
            (true, false) => Ordering::Greater,
            (false, true) if k.nulls_first => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => {
                let o = x.sort_cmp(y);
                if k.descending { o.reverse() } else { o }
            }
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// The running state of one aggregate call over a group.
struct Accumulator {
    count: i64,
    value: Value,
    /// AVG's sum of doubles.
    sum: f64,
    /// AVG's sum of integers, exact (as SQLite's): summed as doubles, `avg` of i64::MIN and
    /// i64::MAX would be 0, not -0.5.
    int_sum: i128,
    distinct: Option<HashSet<Vec<u8>>>,
    func: AggFunc,
}

impl Accumulator {
    fn new(call: &AggregateCall) -> Self {
        Accumulator {
            count: 0,
            value: Value::Null,
            sum: 0.0,
            int_sum: 0,
            distinct: call.distinct.then(HashSet::new),
            func: call.func,
        }
    }

    fn add(&mut self, call: &AggregateCall, row: &[Value]) -> Result<()> {
        let v = match &call.arg {
            None => {
                self.count += 1;
                return Ok(());
            }
            Some(e) => e.eval(row)?,
        };
        if v.is_null() {
            return Ok(());
        }
        if let Some(seen) = &mut self.distinct
            && !seen.insert(key_of(std::slice::from_ref(&v)))
        {
            return Ok(());
        }
        self.count += 1;
        match self.func {
            AggFunc::Count => {}
            AggFunc::Sum => {
                self.value = if self.value.is_null() {
                    v
                } else {
                    binary(BinOp::Add, &self.value, &v)?
                }
            }
            AggFunc::Avg => match v {
                Value::Int(i) => self.int_sum += i128::from(i),
                v => self.sum += as_double(&v),
            },
            AggFunc::Min | AggFunc::Max => {
                let better = match self.value.sql_cmp(&v) {
                    None => true,
                    Some(Ordering::Greater) => self.func == AggFunc::Min,
                    Some(Ordering::Less) => self.func == AggFunc::Max,
                    Some(Ordering::Equal) => false,
                };
                if better {
                    self.value = v;
                }
            }
        }
        Ok(())
    }

    fn finish(self) -> Value {
        match self.func {
            AggFunc::Count => Value::Int(self.count),
            AggFunc::Avg if self.count == 0 => Value::Null,
            AggFunc::Avg => Value::Double((self.int_sum as f64 + self.sum) / self.count as f64),
            _ => self.value,
        }
    }
}

/// The rows an UPDATE changes, as `(old, new)` pairs. The caller writes the new versions
/// (and moves their index entries); nothing is written here.
pub fn execute_update<S: RowSource>(plan: &UpdatePlan, source: &S) -> Result<Vec<(Row, Row)>> {
    let schema = &plan.access.table;
    let mut out = Vec::new();
    for old in read_rows(source, &plan.access)? {
        if !plan.filter.accepts(&old)? {
            continue;
        }
        let mut new = old.clone();
        for (i, e) in &plan.assignments {
            let Some(col) = schema.columns.get(*i) else {
                continue;
            };
            let v = e.eval(&old)?.coerce_to(col.ty)?;
            if v.is_null() && col.not_null {
                return Err(Error::Constraint(format!(
                    "column `{}` is NOT NULL; the UPDATE would set it to NULL",
                    col.name
                )));
            }
            new[*i] = v;
        }
        out.push((old, new));
    }
    Ok(out)
}

/// The rows a DELETE removes. The caller writes their tombstones.
pub fn execute_delete<S: RowSource>(plan: &DeletePlan, source: &S) -> Result<Vec<Row>> {
    let mut out = Vec::new();
    for row in read_rows(source, &plan.access)? {
        if plan.filter.accepts(&row)? {
            out.push(row);
        }
    }
    Ok(out)
}
