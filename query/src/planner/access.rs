//! The access path of a table: among the WHERE conjuncts an index answers, the one expected
//! to be most selective (ranges on one column merged), and the split of the conjuncts into
//! the re-check of what was pushed and the residual the client runs.

use std::ops::Bound;

use super::pushdown::pushable;
use crate::expr::Expr;
use crate::plan::{AccessPath, Filter, IndexLookup, Pushdown};
use crate::schema::TableSchema;
use crate::value::Value;

pub(super) fn split_filter(conjuncts: Vec<Expr>, chosen: &[usize]) -> Filter {
    let mut recheck = Vec::new();
    let mut residual = Vec::new();
    for (i, c) in conjuncts.into_iter().enumerate() {
        if chosen.contains(&i) {
            recheck.push(c);
        } else {
            residual.push(c);
        }
    }
    Filter {
        recheck: Expr::and_all(recheck),
        residual: Expr::and_all(residual),
    }
}

/// Picks the access path of one table (at `offset` in the row) from the WHERE conjuncts
/// `mine` that read only that table; returns the conjuncts the path answers.
pub(super) fn choose_access(
    schema: &TableSchema,
    offset: usize,
    conjuncts: &[Expr],
    mine: &[usize],
) -> (AccessPath, Vec<usize>) {
    let mut candidates: Vec<(Pushdown, Vec<usize>)> = Vec::new();
    for &i in mine {
        let Some(p) = pushable(schema, offset, &conjuncts[i]) else {
            continue;
        };
        // Ranges on one column merge into one range.
        if let Pushdown::Lookup(IndexLookup::Range { column, low, high, .. }) = &p
            && let Some((Pushdown::Lookup(IndexLookup::Range { low: l2, high: h2, .. }), used)) =
                candidates.iter_mut().find(|(c, _)| {
                    matches!(c, Pushdown::Lookup(IndexLookup::Range { column: c2, .. }) if c2 == column)
                })
        {
            *l2 = tighter(l2, low, true);
            *h2 = tighter(h2, high, false);
            used.push(i);
            continue;
        }
        candidates.push((p, vec![i]));
    }
    match candidates.into_iter().min_by_key(|(p, _)| rank(p)) {
        Some((p, used)) => (AccessPath::Index(p), used),
        None => (AccessPath::FullScan, Vec::new()),
    }
}

/// The tighter of two bounds (`lower`: of two lower bounds).
fn tighter(a: &Bound<Value>, b: &Bound<Value>, lower: bool) -> Bound<Value> {
    use std::cmp::Ordering;
    let value = |x: &Bound<Value>| match x {
        Bound::Included(v) | Bound::Excluded(v) => Some(v.clone()),
        Bound::Unbounded => None,
    };
    match (value(a), value(b)) {
        (None, _) => b.clone(),
        (_, None) => a.clone(),
        (Some(x), Some(y)) => match x.sort_cmp(&y) {
            Ordering::Equal => {
                if matches!(a, Bound::Excluded(_)) {
                    a.clone()
                } else {
                    b.clone()
                }
            }
            Ordering::Less => {
                if lower {
                    b.clone()
                } else {
                    a.clone()
                }
            }
            Ordering::Greater => {
                if lower {
                    a.clone()
                } else {
                    b.clone()
                }
            }
        },
    }
}

/// How selective (and how little leaking) a pushdown is expected to be: lower is better.
fn rank(p: &Pushdown) -> u8 {
    match p {
        Pushdown::Lookup(IndexLookup::PrimaryKey { .. }) => 0,
        Pushdown::Lookup(IndexLookup::Equality { .. }) => 1,
        Pushdown::Lookup(IndexLookup::FullText { .. }) => 2,
        Pushdown::Lookup(IndexLookup::Range {
            low: Bound::Unbounded,
            ..
        })
        | Pushdown::Lookup(IndexLookup::Range {
            high: Bound::Unbounded,
            ..
        }) => 4,
        Pushdown::Lookup(IndexLookup::Range { .. }) => 3,
        Pushdown::And(ps) => ps.iter().map(rank).min().unwrap_or(5),
        Pushdown::Or(ps) => ps.iter().map(rank).max().unwrap_or(5).saturating_add(1),
    }
}
