//! Limit pushdown: `ORDER BY col LIMIT n` and `LIMIT n` handed to a btree or full-text
//! lookup, and a lone MIN or MAX read from one end of a btree.

use std::ops::Bound;

use crate::expr::Expr;
use crate::plan::{AccessPath, AggFunc, Direction, IndexLookup, Pushdown, SelectPlan};
use crate::schema::IndexKind;

/// Pushes `ORDER BY col LIMIT n` into a btree lookup, and `LIMIT n` (at most
/// [`wwt_index::MAX_LIMIT`]) into a full-text lookup, where the index's answer is then exactly
/// the rows the query returns.
pub(super) fn push_limit(plan: &mut SelectPlan) {
    let Some(limit) = plan.limit else { return };
    let n = limit.saturating_add(plan.offset);
    if plan.tables.len() != 1
        || plan.aggregation.is_some()
        || plan.distinct
        || plan.filter.residual.is_some()
    {
        return;
    }
    let Some(access) = plan.tables.first_mut() else {
        return;
    };
    let schema = &access.table;
    // The first sort key, when it decides the order alone (the only key, or unique), on a
    // type the btree orders fully (the client reads a text range and limits it itself).
    let sort_column = plan.order_by.first().and_then(|k| match &k.expr {
        Expr::Column { index, .. } if plan.order_by.len() == 1 || *index == schema.primary_key => {
            schema
                .columns
                .get(*index)
                .filter(|c| !c.ty.btree_orders_by_prefix())
                .map(|c| (c, k.descending))
        }
        _ => None,
    });
    match (&mut access.path, sort_column) {
        (AccessPath::FullScan, Some((col, desc)))
            if plan.filter.recheck.is_none()
                && col.not_null
                && schema.has_index(&col.name, IndexKind::BTree) =>
        {
            access.path = AccessPath::Index(Pushdown::Lookup(IndexLookup::Range {
                column: col.name.clone(),
                low: Bound::Unbounded,
                high: Bound::Unbounded,
                order: Some(direction(desc)),
                limit: Some(n),
            }));
        }
        (
            AccessPath::Index(Pushdown::Lookup(IndexLookup::Range {
                column,
                order,
                limit,
                ..
            })),
            Some((col, desc)),
        ) if *column == col.name => {
            *order = Some(direction(desc));
            *limit = Some(n);
        }
        // The index ranks at most `MAX_LIMIT` rows at once; beyond, every match is read.
        (AccessPath::Index(Pushdown::Lookup(IndexLookup::FullText { limit, .. })), None)
            if plan.order_by.is_empty() && n <= wwt_index::MAX_LIMIT as u64 =>
        {
            *limit = Some(n);
        }
        _ => {}
    }
}

/// Answers a lone `MIN(col)` or `MAX(col)` over a btree-indexed column with the first key of
/// an ordered range lookup (the index holds no NULLs, which MIN and MAX skip anyway).
pub(super) fn push_min_max(plan: &mut SelectPlan) {
    let Some(a) = &plan.aggregation else { return };
    if !a.group_by.is_empty() || plan.filter.residual.is_some() {
        return;
    }
    let [call] = a.calls.as_slice() else { return };
    let descending = match call.func {
        AggFunc::Min => false,
        AggFunc::Max => true,
        _ => return,
    };
    let Some(Expr::Column { index, .. }) = &call.arg else {
        return;
    };
    let [access] = plan.tables.as_mut_slice() else {
        return;
    };
    let Some(col) = access.table.columns.get(*index) else {
        return;
    };
    if !access.table.has_index(&col.name, IndexKind::BTree) || col.ty.btree_orders_by_prefix() {
        return;
    }
    match &mut access.path {
        AccessPath::FullScan if plan.filter.recheck.is_none() => {
            access.path = AccessPath::Index(Pushdown::Lookup(IndexLookup::Range {
                column: col.name.clone(),
                low: Bound::Unbounded,
                high: Bound::Unbounded,
                order: Some(direction(descending)),
                limit: Some(1),
            }));
        }
        AccessPath::Index(Pushdown::Lookup(IndexLookup::Range {
            column,
            order,
            limit,
            ..
        })) if *column == col.name => {
            *order = Some(direction(descending));
            *limit = Some(1);
        }
        _ => {}
    }
}

fn direction(descending: bool) -> Direction {
    if descending {
        Direction::Descending
    } else {
        Direction::Ascending
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::fulltext::FtQuery;
    use crate::plan::{AccessPath, Direction, IndexLookup, Plan, Pushdown};
    use crate::planner::testing::{catalog, lookup, path, plan_of};
    use crate::planner::{parse, plan};
    use crate::value::Value;
    use std::ops::Bound;

    #[test]
    fn ranges_merge_and_order_by_limit_is_pushed() {
        assert_eq!(
            lookup(
                "SELECT id FROM docs WHERE year >= 2000 AND year < 2010 ORDER BY year DESC LIMIT 5 OFFSET 2"
            ),
            IndexLookup::Range {
                column: "year".into(),
                low: Bound::Included(Value::Int(2000)),
                high: Bound::Excluded(Value::Int(2010)),
                order: Some(Direction::Descending),
                limit: Some(7),
            }
        );
        // A NOT NULL btree column orders the whole table.
        assert_eq!(
            lookup("SELECT id FROM docs ORDER BY score LIMIT 3"),
            IndexLookup::Range {
                column: "score".into(),
                low: Bound::Unbounded,
                high: Bound::Unbounded,
                order: Some(Direction::Ascending),
                limit: Some(3),
            }
        );
        // A btree on text orders only by the first 8 bytes: ranges are pushed, limits not.
        let mut c = catalog();
        for text in [
            "CREATE TABLE tags (id BIGINT PRIMARY KEY, name TEXT NOT NULL)",
            "CREATE INDEX ON tags USING btree (name)",
        ] {
            match plan(&c, &parse(text).unwrap().remove(0)).unwrap() {
                Plan::CreateTable(t) => c.add_table(t).unwrap(),
                Plan::CreateIndex { table, index } => c.add_index(&table, index).unwrap(),
                other => panic!("{other:?}"),
            }
        }
        let tags = |sql: &str| match plan(&c, &parse(sql).unwrap().remove(0)).unwrap() {
            Plan::Select(s) => s.tables[0].path.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            tags("SELECT id FROM tags ORDER BY name LIMIT 3"),
            AccessPath::FullScan
        );
        assert_eq!(tags("SELECT max(name) FROM tags"), AccessPath::FullScan);
        assert_eq!(
            tags("SELECT id FROM tags WHERE name >= 'k' ORDER BY name LIMIT 3"),
            AccessPath::Index(Pushdown::Lookup(IndexLookup::Range {
                column: "name".into(),
                low: Bound::Included(Value::Text("k".into())),
                high: Bound::Unbounded,
                order: None,
                limit: None,
            }))
        );
        // A nullable one cannot: NULLs sort first and the index does not hold them.
        assert_eq!(
            path("SELECT id FROM docs ORDER BY year LIMIT 3"),
            AccessPath::FullScan
        );
        // With a residual, the limit stays on the client.
        let l =
            lookup("SELECT id FROM docs WHERE year > 1 AND note LIKE 'a%' ORDER BY year LIMIT 3");
        assert!(matches!(
            l,
            IndexLookup::Range {
                limit: None,
                order: None,
                ..
            }
        ));
        // BETWEEN, a flipped comparison, an equality on a btree-only column.
        assert!(matches!(
            lookup("SELECT * FROM docs WHERE 3 < score"),
            IndexLookup::Range {
                low: Bound::Excluded(Value::Double(_)),
                high: Bound::Unbounded,
                ..
            }
        ));
        assert!(matches!(
            lookup("SELECT * FROM docs WHERE year = 2001"),
            IndexLookup::Range {
                low: Bound::Included(_),
                high: Bound::Included(_),
                ..
            }
        ));
    }

    #[test]
    fn min_and_max_read_one_end_of_a_btree() {
        assert_eq!(
            lookup("SELECT max(year) FROM docs WHERE year < 2000"),
            IndexLookup::Range {
                column: "year".into(),
                low: Bound::Unbounded,
                high: Bound::Excluded(Value::Int(2000)),
                order: Some(Direction::Descending),
                limit: Some(1),
            }
        );
        assert!(matches!(
            lookup("SELECT min(year) FROM docs"),
            IndexLookup::Range {
                order: Some(Direction::Ascending),
                limit: Some(1),
                ..
            }
        ));
        assert_eq!(
            path("SELECT min(year), max(year) FROM docs"),
            AccessPath::FullScan
        );
        assert_eq!(
            path("SELECT max(year) FROM docs GROUP BY author"),
            AccessPath::FullScan
        );
    }

    #[test]
    fn full_text_match_is_pushed_with_its_limit() {
        let l = lookup("SELECT id FROM docs WHERE MATCH(body, 'rust -java') LIMIT 10");
        assert_eq!(
            l,
            IndexLookup::FullText {
                column: "body".into(),
                query: FtQuery::parse("rust NOT java").unwrap(),
                limit: Some(10),
            }
        );
        // Past what one ranked answer holds, or beside a residual, every match is read in pages.
        for sql in [
            "SELECT id FROM docs WHERE MATCH(body, 'rust') LIMIT 10001",
            "SELECT id FROM docs WHERE MATCH(body, 'rust') AND year < 2000 LIMIT 10",
        ] {
            let l = lookup(sql);
            assert!(
                matches!(l, IndexLookup::FullText { limit: None, .. }),
                "{sql}: {l:?}"
            );
            let explain = plan_of(sql).unwrap().explain();
            assert!(
                explain.contains("every match, in pages by row id"),
                "{explain}"
            );
        }
        // MATCH on a column without a fulltext index runs on the client.
        assert_eq!(
            path("SELECT id FROM docs WHERE MATCH(note, 'x')"),
            AccessPath::FullScan
        );
        let err = plan_of("SELECT id FROM docs WHERE MATCH(year, 'x')").unwrap_err();
        assert!(err.to_string().contains("TEXT column"), "{err}");
        let err = plan_of("SELECT id FROM docs WHERE MATCH(body, 'NOT x')").unwrap_err();
        assert!(err.to_string().contains("at least one word"), "{err}");
    }
}
