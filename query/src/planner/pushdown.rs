//! What an index answers exactly: a bound predicate translated into primary-key, hash,
//! btree-range or full-text lookups, or nothing when it must run on the client.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::ops::Bound;

use crate::exec::key_of;
use crate::expr::{BinOp, Expr};
use crate::plan::{IndexLookup, Pushdown};
use crate::schema::{Column, IndexKind, TableSchema};
use crate::value::Value;

/// The index lookup that answers `e` exactly, if the table's indexes allow one.
pub(super) fn pushable(schema: &TableSchema, offset: usize, e: &Expr) -> Option<Pushdown> {
    let column = |x: &Expr| -> Option<&Column> {
        match x {
            Expr::Column { index, .. } => schema.columns.get(index.checked_sub(offset)?),
            _ => None,
        }
    };
    // Only a literal that converts to the column's type exactly: on a DOUBLE column,
    // `y < 9007199254740993` (2^53 + 1) would otherwise look up `y < 2^53` and miss y = 2^53.
    let lit = |x: &Expr, col: &Column| -> Option<Value> {
        match x {
            Expr::Literal(v) if !v.is_null() => {
                let c = v.clone().coerce_to(col.ty).ok()?;
                (c.sql_cmp(v) == Some(Ordering::Equal)).then_some(c)
            }
            _ => None,
        }
    };
    match e {
        Expr::Binary { op, left, right } if op.is_comparison() && *op != BinOp::NotEq => {
            let (col, v, op) = match (column(left), column(right)) {
                (Some(c), _) => (c, lit(right, c)?, *op),
                (None, Some(c)) => (c, lit(left, c)?, op.flip()),
                _ => return None,
            };
            let (low, high) = match op {
                BinOp::Eq => return points(schema, col, vec![v]),
                BinOp::Lt => (Bound::Unbounded, Bound::Excluded(v)),
                BinOp::LtEq => (Bound::Unbounded, Bound::Included(v)),
                BinOp::Gt => (Bound::Excluded(v), Bound::Unbounded),
                _ => (Bound::Included(v), Bound::Unbounded),
            };
            range(schema, col, low, high)
        }
        Expr::InList {
            expr,
            list,
            negated: false,
        } => {
            let col = column(expr)?;
            let mut values = Vec::new();
            for item in list {
                match item {
                    // NULL or a value of another type never equals the column: drop it.
                    Expr::Literal(v) => values.extend(lit(&Expr::Literal(v.clone()), col)),
                    _ => return None,
                }
            }
            points(schema, col, values)
        }
        Expr::Between {
            expr,
            low,
            high,
            negated: false,
        } => {
            let col = column(expr)?;
            range(
                schema,
                col,
                Bound::Included(lit(low, col)?),
                Bound::Included(lit(high, col)?),
            )
        }
        Expr::Match { expr, query } => {
            let col = column(expr)?;
            schema.has_index(&col.name, IndexKind::FullText).then(|| {
                Pushdown::Lookup(IndexLookup::FullText {
                    column: col.name.clone(),
                    query: query.clone(),
                    limit: None,
                })
            })
        }
        Expr::Binary {
            op: op @ (BinOp::And | BinOp::Or),
            left,
            right,
        } => {
            let mut parts = Vec::new();
            for side in [left, right] {
                match (pushable(schema, offset, side)?, op) {
                    (Pushdown::And(inner), BinOp::And) | (Pushdown::Or(inner), BinOp::Or) => {
                        parts.extend(inner)
                    }
                    (p, _) => parts.push(p),
                }
            }
            Some(if *op == BinOp::And {
                Pushdown::And(parts)
            } else {
                Pushdown::Or(parts)
            })
        }
        _ => None,
    }
}

/// Lookup of rows whose column equals one of `values`.
fn points(schema: &TableSchema, col: &Column, mut values: Vec<Value>) -> Option<Pushdown> {
    // `x IN (1, 2, 1)` looks each value up once, or the row would be returned twice.
    let mut seen = HashSet::new();
    values.retain(|v| seen.insert(key_of(std::slice::from_ref(v))));
    if values.is_empty() {
        return None;
    }
    let column = col.name.clone();
    if schema.primary_key_column().name == col.name {
        Some(Pushdown::Lookup(IndexLookup::PrimaryKey { column, values }))
    } else if schema.has_index(&col.name, IndexKind::Hash) {
        Some(Pushdown::Lookup(IndexLookup::Equality { column, values }))
    } else if schema.has_index(&col.name, IndexKind::BTree) {
        let mut ranges: Vec<Pushdown> = values
            .into_iter()
            .filter_map(|v| range(schema, col, Bound::Included(v.clone()), Bound::Included(v)))
            .collect();
        if ranges.len() == 1 {
            ranges.pop()
        } else {
            Some(Pushdown::Or(ranges))
        }
    } else {
        None
    }
}

fn range(
    schema: &TableSchema,
    col: &Column,
    low: Bound<Value>,
    high: Bound<Value>,
) -> Option<Pushdown> {
    schema.has_index(&col.name, IndexKind::BTree).then(|| {
        Pushdown::Lookup(IndexLookup::Range {
            column: col.name.clone(),
            low,
            high,
            order: None,
            limit: None,
        })
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::plan::{AccessPath, IndexLookup, Pushdown};
    use crate::planner::testing::{lookup, path, select};
    use crate::value::Value;
    use std::ops::Bound;

    #[test]
    fn repeated_in_values_are_looked_up_once() {
        assert_eq!(
            lookup("SELECT * FROM docs WHERE id IN (1, 2, 1, 2)"),
            IndexLookup::PrimaryKey {
                column: "id".into(),
                values: vec![Value::Int(1), Value::Int(2)],
            }
        );
        assert_eq!(
            lookup("SELECT * FROM docs WHERE author IN ('a', 'b', 'a')"),
            IndexLookup::Equality {
                column: "author".into(),
                values: vec![Value::Text("a".into()), Value::Text("b".into())],
            }
        );
    }

    #[test]
    fn equality_goes_to_the_hash_index_and_keys_to_the_primary_map() {
        assert_eq!(
            lookup("SELECT * FROM docs WHERE author = 'ann'"),
            IndexLookup::Equality {
                column: "author".into(),
                values: vec![Value::Text("ann".into())]
            }
        );
        let p = path("SELECT * FROM docs WHERE 7 = id OR id = 8");
        assert!(
            matches!(&p, AccessPath::Index(Pushdown::Or(v)) if v.iter().all(|l| matches!(l, Pushdown::Lookup(IndexLookup::PrimaryKey { .. })))),
            "{p:?}"
        );
        let p = select("SELECT * FROM docs WHERE id IN (1, 2) AND author = 'ann'");
        assert!(matches!(
            p.tables[0].path,
            AccessPath::Index(Pushdown::Lookup(IndexLookup::PrimaryKey { .. }))
        ));
        assert_eq!(p.filter.residual.unwrap().to_string(), "author = 'ann'");
        assert_eq!(p.filter.recheck.unwrap().to_string(), "id IN (1, 2)");
    }

    #[test]
    fn only_literals_exact_in_the_column_type_are_pushed() {
        // 2^53 + 1 is no DOUBLE: rounded to 2^53, `score < 2^53 + 1` would skip score = 2^53.
        for w in [
            "score < 9007199254740993",
            "score >= -9223372036854775807",
            "score IN (9007199254740993)",
            "year = 2.5",
        ] {
            assert_eq!(
                path(&format!("SELECT id FROM docs WHERE {w}")),
                AccessPath::FullScan,
                "{w}"
            );
        }
        assert_eq!(
            lookup("SELECT id FROM docs WHERE score < 9007199254740992"),
            IndexLookup::Range {
                column: "score".into(),
                low: Bound::Unbounded,
                high: Bound::Excluded(Value::Double(9007199254740992.0)),
                order: None,
                limit: None,
            }
        );
        assert!(matches!(
            lookup("SELECT id FROM docs WHERE year = 3.0"),
            IndexLookup::Range {
                low: Bound::Included(Value::Int(3)),
                ..
            }
        ));
    }

    #[test]
    fn or_across_indexed_and_unindexed_columns_stays_on_the_client() {
        let p = select("SELECT id FROM docs WHERE author = 'ann' OR note = 'x'");
        assert_eq!(p.tables[0].path, AccessPath::FullScan);
        assert_eq!(
            p.filter.residual.unwrap().to_string(),
            "author = 'ann' OR note = 'x'"
        );
        // An OR of indexed predicates is a union of lookups.
        let p = path("SELECT id FROM docs WHERE author = 'ann' OR MATCH(body, 'x')");
        assert!(
            matches!(p, AccessPath::Index(Pushdown::Or(ref v)) if v.len() == 2),
            "{p:?}"
        );
        // Predicates that do not commute with encryption are never pushed.
        for w in [
            "author <> 'a'",
            "note LIKE 'a%'",
            "year IS NULL",
            "NOT author = 'a'",
            "year + 1 > 3",
        ] {
            assert_eq!(
                path(&format!("SELECT id FROM docs WHERE {w}")),
                AccessPath::FullScan,
                "{w}"
            );
        }
    }
}
