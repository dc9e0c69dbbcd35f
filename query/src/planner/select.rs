//! Planning of SELECT: FROM and the join condition, the WHERE conjuncts, projections,
//! GROUP BY and aggregation, HAVING, ORDER BY, LIMIT and OFFSET, then the access path of each
//! table and the limit pushdowns.

use sqlparser::ast as sql;

use super::access::{choose_access, split_filter};
use super::bind::Binder;
use super::functions::has_aggregate;
use super::limit::{push_limit, push_min_max};
use super::names::{ident, object_name};
use super::scope::{Scope, column_at, from_clause};
use crate::error::{Error, Result};
use crate::expr::{BinOp, Expr};
use crate::plan::{Aggregation, JoinPlan, SelectPlan, SortKey, TableAccess};
use crate::schema::Catalog;
use crate::value::{ColumnType, Value};

fn constant_u64(e: &sql::Expr, what: &str) -> Result<u64> {
    let scope = Scope::default();
    let (x, _) = Binder::new(&scope).bind(e, false)?;
    match x.eval(&[])? {
        Value::Int(n) if n >= 0 => Ok(n as u64),
        v => Err(Error::TypeMismatch(format!(
            "{what} must be a whole number of rows, not {}",
            v.to_sql()
        ))),
    }
}

pub(super) fn select(catalog: &Catalog, q: &sql::Query) -> Result<SelectPlan> {
    let s = match q.body.as_ref() {
        sql::SetExpr::Select(s) => s,
        sql::SetExpr::Values(_) => {
            return Err(Error::unsupported("VALUES as a query", "use SELECT"));
        }
        _ => {
            return Err(Error::unsupported(
                "UNION, INTERSECT, EXCEPT and nested queries",
                "run the queries separately",
            ));
        }
    };
    if q.with.is_some() || q.fetch.is_some() || !q.locks.is_empty() {
        return Err(Error::unsupported(
            "WITH, FETCH and FOR UPDATE",
            "write a plain SELECT",
        ));
    }
    if s.top.is_some() || s.into.is_some() || !s.lateral_views.is_empty() || s.qualify.is_some() {
        return Err(Error::unsupported(
            "TOP, INTO, LATERAL VIEW and QUALIFY",
            "write a plain SELECT",
        ));
    }
    let distinct = match &s.distinct {
        None | Some(sql::Distinct::All) => false,
        Some(sql::Distinct::Distinct) => true,
        Some(sql::Distinct::On(_)) => {
            return Err(Error::unsupported("DISTINCT ON", "use GROUP BY"));
        }
    };
    let mut scope = Scope::default();
    let on = from_clause(catalog, &s.from, &mut scope)?;
    let mut binder = Binder::new(&scope);

    // WHERE, and the ON condition: the equality joins, the rest filters.
    let mut conjuncts = Vec::new();
    if let Some(w) = &s.selection {
        let (x, t) = binder.bind(w, false)?;
        binder.expect_bool(&x, t, "WHERE")?;
        conjuncts.extend(x.conjuncts());
    }
    let join = match &on {
        None => None,
        Some(on) => {
            let (x, t) = binder.bind(on, false)?;
            binder.expect_bool(&x, t, "ON")?;
            let mut parts = x.conjuncts();
            let split = scope.tables.get(1).map_or(0, |t| t.2);
            let pos = parts.iter().position(|p| join_columns(p, split).is_some());
            let Some(pos) = pos else {
                return Err(Error::unsupported(
                    format!("the join condition `{on}`"),
                    "join on equal columns, one from each table: ON a.x = b.y",
                ));
            };
            let cond = parts.remove(pos);
            conjuncts.extend(parts);
            let (l, r) = join_columns(&cond, split).unwrap_or((0, split));
            let (lt, rt) = (column_at(&scope, l), column_at(&scope, r));
            if lt.map(|c| c.ty) != rt.map(|c| c.ty) {
                return Err(Error::TypeMismatch(format!(
                    "the join `{cond}` compares columns of different types; join columns of one type"
                )));
            }
            Some(JoinPlan {
                left_column: l,
                right_column: r - split,
                condition: cond.to_string(),
            })
        }
    };

    // Projections (before GROUP BY: GROUP BY may name them by position or alias).
    struct Item<'q> {
        ast: Option<&'q sql::Expr>,
        name: String,
        star: Option<(usize, ColumnType)>,
    }
    let mut items: Vec<Item> = Vec::new();
    for p in &s.projection {
        match p {
            sql::SelectItem::UnnamedExpr(e) => items.push(Item {
                ast: Some(e),
                name: match e {
                    sql::Expr::Identifier(i) => ident(i),
                    sql::Expr::CompoundIdentifier(parts) => {
                        parts.last().map(ident).unwrap_or_default()
                    }
                    e => e.to_string(),
                },
                star: None,
            }),
            sql::SelectItem::ExprWithAlias { expr, alias } => items.push(Item {
                ast: Some(expr),
                name: ident(alias),
                star: None,
            }),
            sql::SelectItem::Wildcard(_) | sql::SelectItem::QualifiedWildcard(_, _) => {
                let only = match p {
                    sql::SelectItem::QualifiedWildcard(
                        sql::SelectItemQualifiedWildcardKind::ObjectName(n),
                        _,
                    ) => Some(object_name(n)?),
                    sql::SelectItem::QualifiedWildcard(..) => {
                        return Err(Error::unsupported("this wildcard", "write * or table.*"));
                    }
                    _ => None,
                };
                if scope.tables.is_empty() {
                    return Err(Error::UnknownColumn {
                        message: "SELECT * needs a table: add FROM".into(),
                    });
                }
                let mut any = false;
                for (alias, schema, offset) in &scope.tables {
                    if only.as_ref().is_some_and(|o| o != alias) {
                        continue;
                    }
                    any = true;
                    for (i, c) in schema.columns.iter().enumerate() {
                        items.push(Item {
                            ast: None,
                            name: c.name.clone(),
                            star: Some((offset + i, c.ty)),
                        });
                    }
                }
                if !any {
                    return Err(Error::UnknownColumn {
                        message: format!("no table `{}` in FROM", only.unwrap_or_default()),
                    });
                }
            }
            other => {
                return Err(Error::unsupported(
                    format!("the select item `{other}`"),
                    "list expressions, optionally with AS alias",
                ));
            }
        }
    }
    let alias_of = |name: &str| -> Option<&sql::Expr> {
        s.projection.iter().find_map(|p| match p {
            sql::SelectItem::ExprWithAlias { expr, alias } if ident(alias) == name => Some(expr),
            _ => None,
        })
    };

    // GROUP BY and aggregation.
    let group_asts: Vec<&sql::Expr> = match &s.group_by {
        sql::GroupByExpr::Expressions(exprs, mods) if mods.is_empty() => exprs.iter().collect(),
        _ => {
            return Err(Error::unsupported(
                "GROUP BY ALL, ROLLUP, CUBE and GROUPING SETS",
                "list the grouping expressions",
            ));
        }
    };
    let order_asts: Vec<&sql::OrderByExpr> = match &q.order_by {
        None => Vec::new(),
        Some(ob) => match &ob.kind {
            sql::OrderByKind::Expressions(v) => v.iter().collect(),
            sql::OrderByKind::All(_) => {
                return Err(Error::unsupported("ORDER BY ALL", "list the sort keys"));
            }
        },
    };
    let aggregated = !group_asts.is_empty()
        || s.having.is_some()
        || items.iter().filter_map(|i| i.ast).any(has_aggregate)
        || order_asts.iter().any(|o| has_aggregate(&o.expr));
    let mut group_by = Vec::new();
    for g in &group_asts {
        let target: &sql::Expr = match g {
            sql::Expr::Value(v) => match &v.value {
                sql::Value::Number(n, _) => {
                    let k: usize = n.parse().unwrap_or(0);
                    items
                        .get(k.wrapping_sub(1))
                        .and_then(|i| i.ast)
                        .ok_or_else(|| Error::UnknownColumn {
                            message: format!("GROUP BY {n}: there is no output column {n}"),
                        })?
                }
                _ => g,
            },
            sql::Expr::Identifier(i) if scope.resolve(std::slice::from_ref(i)).is_err() => {
                alias_of(&ident(i)).unwrap_or(g)
            }
            _ => g,
        };
        group_by.push(binder.bind(target, false)?.0);
    }
    binder.group_by = group_by.clone();
    let grouped = aggregated;

    let mut projections = Vec::with_capacity(items.len());
    let mut columns = Vec::with_capacity(items.len());
    for it in &items {
        let x = match (it.ast, it.star) {
            (Some(ast), _) => binder.bind(ast, grouped)?.0,
            (None, Some((index, _))) if !grouped => Expr::Column {
                index,
                name: it.name.clone(),
            },
            _ => {
                return Err(Error::UnknownColumn {
                    message:
                        "SELECT * cannot be used with GROUP BY or aggregates; list the columns"
                            .into(),
                });
            }
        };
        projections.push(x);
        columns.push(it.name.clone());
    }
    let having = match &s.having {
        Some(h) => {
            let (x, t) = binder.bind(h, true)?;
            binder.expect_bool(&x, t, "HAVING")?;
            Some(x)
        }
        None => None,
    };

    let mut order_by = Vec::with_capacity(order_asts.len());
    for o in &order_asts {
        let expr = match &o.expr {
            sql::Expr::Value(v) if matches!(v.value, sql::Value::Number(..)) => {
                let k = constant_u64(&o.expr, "an ORDER BY position")? as usize;
                projections
                    .get(k.wrapping_sub(1))
                    .cloned()
                    .ok_or_else(|| Error::UnknownColumn {
                        message: format!("ORDER BY {k}: there is no output column {k}"),
                    })?
            }
            sql::Expr::Identifier(i) if alias_of(&ident(i)).is_some() => {
                let n = ident(i);
                let k = items.iter().position(|it| it.name == n).unwrap_or(0);
                projections
                    .get(k)
                    .cloned()
                    .unwrap_or(Expr::Literal(Value::Null))
            }
            e => binder.bind(e, grouped)?.0,
        };
        let descending = match &o.options.sort {
            None | Some(sql::OrderBySort::Asc) => false,
            Some(sql::OrderBySort::Desc) => true,
            Some(sql::OrderBySort::Using(_)) => {
                return Err(Error::unsupported("ORDER BY … USING", "write ASC or DESC"));
            }
        };
        order_by.push(SortKey {
            expr,
            descending,
            nulls_first: o.options.nulls_first.unwrap_or(!descending),
        });
    }

    let (limit, offset) = match &q.limit_clause {
        None => (None, 0),
        Some(sql::LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) if limit_by.is_empty() => (
            limit
                .as_ref()
                .map(|l| constant_u64(l, "LIMIT"))
                .transpose()?,
            offset
                .as_ref()
                .map(|o| constant_u64(&o.value, "OFFSET"))
                .transpose()?
                .unwrap_or(0),
        ),
        Some(sql::LimitClause::OffsetCommaLimit { offset, limit }) => (
            Some(constant_u64(limit, "LIMIT")?),
            constant_u64(offset, "OFFSET")?,
        ),
        Some(_) => return Err(Error::unsupported("LIMIT BY", "use LIMIT n OFFSET m")),
    };

    // Access paths: per table, the best pushable conjunct.
    let mut chosen: Vec<usize> = Vec::new();
    let mut tables = Vec::with_capacity(scope.tables.len());
    for (t, (alias, schema, offset)) in scope.tables.iter().enumerate() {
        let mine: Vec<usize> = (0..conjuncts.len())
            .filter(|&i| {
                let mut cols = Vec::new();
                conjuncts[i].columns(&mut cols);
                !cols.is_empty() && cols.iter().all(|&c| scope.table_of(c) == Some(t))
            })
            .collect();
        let (path, used) = choose_access(schema, *offset, &conjuncts, &mine);
        chosen.extend(used);
        tables.push(TableAccess {
            table: (*schema).clone(),
            alias: alias.clone(),
            path,
        });
    }
    let filter = split_filter(conjuncts, &chosen);

    let aggregation = aggregated.then(|| Aggregation {
        group_by,
        calls: binder.calls.iter().map(|c| c.0.clone()).collect(),
        having,
    });
    let mut plan = SelectPlan {
        tables,
        join,
        filter,
        aggregation,
        projections,
        columns,
        distinct,
        order_by,
        offset,
        limit,
    };
    push_limit(&mut plan);
    push_min_max(&mut plan);
    Ok(plan)
}

/// `l = r` with `l` in the left table (positions below `split`) and `r` in the right one.
fn join_columns(e: &Expr, split: usize) -> Option<(usize, usize)> {
    let Expr::Binary {
        op: BinOp::Eq,
        left,
        right,
    } = e
    else {
        return None;
    };
    match (left.as_ref(), right.as_ref()) {
        (Expr::Column { index: a, .. }, Expr::Column { index: b, .. }) => {
            if *a < split && *b >= split {
                Some((*a, *b))
            } else if *b < split && *a >= split {
                Some((*b, *a))
            } else {
                None
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::plan::{AccessPath, IndexLookup, Plan, Pushdown};
    use crate::planner::testing::{plan_of, select};

    #[test]
    fn joins_push_per_table() {
        let p = select(
            "SELECT d.id, a.country FROM docs d JOIN authors a ON d.author = a.name WHERE a.country = 'fr' AND d.year > 2000 AND d.id + a.born > 0",
        );
        assert_eq!(p.join.as_ref().unwrap().left_column, 1);
        assert_eq!(p.join.as_ref().unwrap().right_column, 0);
        assert!(matches!(
            p.tables[0].path,
            AccessPath::Index(Pushdown::Lookup(IndexLookup::Range { .. }))
        ));
        assert!(matches!(
            p.tables[1].path,
            AccessPath::Index(Pushdown::Lookup(IndexLookup::Equality { .. }))
        ));
        assert_eq!(p.filter.residual.unwrap().to_string(), "d.id + a.born > 0");
        let err = plan_of("SELECT * FROM docs d JOIN authors a ON d.year < a.born").unwrap_err();
        assert!(
            err.to_string().contains("equi-join") || err.to_string().contains("equal columns"),
            "{err}"
        );
        let err =
            plan_of("SELECT name FROM docs JOIN authors ON author = name WHERE id = born").unwrap();
        assert!(matches!(err, Plan::Select(_)));
        let err =
            plan_of("SELECT id FROM docs d LEFT JOIN authors a ON d.author = a.name").unwrap_err();
        assert!(err.to_string().contains("inner equi-join"), "{err}");
    }
}
