//! Binding of function calls: the aggregates (COUNT, SUM, AVG, MIN, MAX) and their slots
//! after grouping, MATCH over a full-text query, and the scalar functions.

use sqlparser::ast as sql;

use super::bind::{Binder, Typed, type_name};
use crate::error::{Error, Result};
use crate::expr::{Expr, Func};
use crate::fulltext::FtQuery;
use crate::plan::{AggFunc, AggregateCall};
use crate::value::ColumnType;

fn is_aggregate_name(name: &str) -> Option<AggFunc> {
    Some(match name {
        "count" => AggFunc::Count,
        "sum" => AggFunc::Sum,
        "avg" => AggFunc::Avg,
        "min" => AggFunc::Min,
        "max" => AggFunc::Max,
        _ => return None,
    })
}

fn function_name(f: &sql::Function) -> String {
    f.name.to_string().to_lowercase()
}

/// Whether the expression calls an aggregate function anywhere.
pub(super) fn has_aggregate(e: &sql::Expr) -> bool {
    use sql::Expr as E;
    match e {
        E::Function(f) => {
            is_aggregate_name(&function_name(f)).is_some()
                || match &f.args {
                    sql::FunctionArguments::List(l) => l.args.iter().any(|a| match a {
                        sql::FunctionArg::Unnamed(sql::FunctionArgExpr::Expr(e)) => {
                            has_aggregate(e)
                        }
                        _ => false,
                    }),
                    _ => false,
                }
        }
        E::BinaryOp { left, right, .. } => has_aggregate(left) || has_aggregate(right),
        E::UnaryOp { expr, .. } | E::Nested(expr) | E::IsNull(expr) | E::IsNotNull(expr) => {
            has_aggregate(expr)
        }
        E::InList { expr, list, .. } => has_aggregate(expr) || list.iter().any(has_aggregate),
        E::Between {
            expr, low, high, ..
        } => has_aggregate(expr) || has_aggregate(low) || has_aggregate(high),
        E::Like { expr, pattern, .. } => has_aggregate(expr) || has_aggregate(pattern),
        _ => false,
    }
}

impl Binder<'_, '_> {
    pub(super) fn function(
        &mut self,
        e: &sql::Expr,
        f: &sql::Function,
        grouped: bool,
    ) -> Result<Typed> {
        let name = function_name(f);
        if f.filter.is_some() || f.over.is_some() || !f.within_group.is_empty() {
            return Err(Error::unsupported(
                format!("FILTER, OVER and WITHIN GROUP in `{e}`"),
                "window functions are not supported",
            ));
        }
        let (args, distinct) = match &f.args {
            sql::FunctionArguments::List(l) => (
                l.args.as_slice(),
                matches!(
                    l.duplicate_treatment,
                    Some(sql::DuplicateTreatment::Distinct)
                ),
            ),
            sql::FunctionArguments::None => (&[][..], false),
            sql::FunctionArguments::Subquery(_) => {
                return Err(Error::unsupported(
                    "subqueries",
                    "run the inner query first",
                ));
            }
        };
        let mut exprs = Vec::with_capacity(args.len());
        let mut star = false;
        for a in args {
            match a {
                sql::FunctionArg::Unnamed(sql::FunctionArgExpr::Expr(x)) => exprs.push(x),
                sql::FunctionArg::Unnamed(sql::FunctionArgExpr::Wildcard) => star = true,
                _ => {
                    return Err(Error::unsupported(
                        format!("the arguments of `{e}`"),
                        "pass plain expressions",
                    ));
                }
            }
        }
        if let Some(func) = is_aggregate_name(&name) {
            if !grouped {
                return Err(Error::unsupported(
                    format!("the aggregate `{e}` here"),
                    "aggregates belong in the SELECT list, HAVING or ORDER BY, not in WHERE, GROUP BY, ON or inside another aggregate",
                ));
            }
            let arg = match (star, exprs.as_slice(), func) {
                (true, [], AggFunc::Count) if !distinct => None,
                (false, [x], _) => Some(self.bind(x, false)?),
                _ => {
                    return Err(Error::TypeMismatch(format!(
                        "`{e}` takes one argument (COUNT also takes *)"
                    )));
                }
            };
            let ty = match (func, &arg) {
                (AggFunc::Count, _) => Some(ColumnType::Int),
                (AggFunc::Avg, Some((x, t))) | (AggFunc::Sum, Some((x, t))) => {
                    if !t.is_none_or(ColumnType::is_numeric) {
                        return Err(Error::TypeMismatch(format!(
                            "`{e}` needs numbers, `{x}` is {}",
                            type_name(*t)
                        )));
                    }
                    if func == AggFunc::Avg {
                        Some(ColumnType::Double)
                    } else {
                        *t
                    }
                }
                (_, Some((_, t))) => *t,
                (_, None) => None,
            };
            let call = AggregateCall {
                func,
                arg: arg.map(|a| a.0),
                distinct,
                text: e.to_string(),
            };
            let slot = match self.calls.iter().position(|(c, _)| {
                c.func == call.func && c.arg == call.arg && c.distinct == call.distinct
            }) {
                Some(i) => i,
                None => {
                    self.calls.push((call.clone(), ty));
                    self.calls.len() - 1
                }
            };
            return Ok((
                Expr::Column {
                    index: self.group_by.len() + slot,
                    name: call.text,
                },
                ty,
            ));
        }
        if star || distinct {
            return Err(Error::TypeMismatch(format!(
                "`{e}`: * and DISTINCT go only in aggregates"
            )));
        }
        if name == "match" {
            let [col, query] = exprs.as_slice() else {
                return Err(Error::TypeMismatch(format!(
                    "`{e}`: write MATCH(column, 'words')"
                )));
            };
            let (x, t) = self.bind(col, grouped)?;
            if t != Some(ColumnType::Text) {
                return Err(Error::TypeMismatch(format!(
                    "`{e}`: MATCH searches a TEXT column, `{x}` is {}",
                    type_name(t)
                )));
            }
            let sql::Expr::Value(sql::ValueWithSpan {
                value: sql::Value::SingleQuotedString(q),
                ..
            }) = query
            else {
                return Err(Error::TypeMismatch(format!(
                    "`{e}`: the full-text query must be a string literal, e.g. MATCH({col}, 'rust AND tokio')"
                )));
            };
            return Ok((
                Expr::Match {
                    expr: Box::new(x),
                    query: FtQuery::parse(q)?,
                },
                Some(ColumnType::Bool),
            ));
        }
        let func = match name.as_str() {
            "lower" => Func::Lower,
            "upper" => Func::Upper,
            "length" => Func::Length,
            "abs" => Func::Abs,
            "coalesce" => Func::Coalesce,
            _ => {
                return Err(Error::unsupported(
                    format!("the function `{name}`"),
                    "the functions are count, sum, avg, min, max, match, lower, upper, length, abs and coalesce",
                ));
            }
        };
        let mut bound = Vec::with_capacity(exprs.len());
        for x in exprs {
            bound.push(self.bind(x, grouped)?);
        }
        let want = |ok: &dyn Fn(ColumnType) -> bool, what: &str| -> Result<()> {
            match bound.as_slice() {
                [(_, t)] if t.is_none_or(ok) => Ok(()),
                _ => Err(Error::TypeMismatch(format!(
                    "`{e}` takes one {what} argument"
                ))),
            }
        };
        let ty = match func {
            Func::Lower | Func::Upper => {
                want(&|t| t == ColumnType::Text, "TEXT")?;
                Some(ColumnType::Text)
            }
            Func::Length => {
                want(
                    &|t| matches!(t, ColumnType::Text | ColumnType::Blob),
                    "TEXT or BLOB",
                )?;
                Some(ColumnType::Int)
            }
            Func::Abs => {
                want(&ColumnType::is_numeric, "numeric")?;
                bound.first().and_then(|b| b.1)
            }
            Func::Coalesce => {
                let mut ty = None;
                for (x, t) in &bound {
                    match (ty, *t) {
                        (None, t) => ty = t,
                        (Some(a), Some(b)) if a != b => {
                            if a.is_numeric() && b.is_numeric() {
                                ty = Some(ColumnType::Double);
                            } else {
                                return Err(Error::TypeMismatch(format!(
                                    "`{e}`: the arguments have different types ({a} and `{x}` {b})"
                                )));
                            }
                        }
                        _ => {}
                    }
                }
                if bound.is_empty() {
                    return Err(Error::TypeMismatch(format!("`{e}` needs arguments")));
                }
                ty
            }
        };
        Ok((
            Expr::Call {
                func,
                args: bound.into_iter().map(|b| b.0).collect(),
            },
            ty,
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::planner::testing::{plan_of, select};

    #[test]
    fn aggregates_bind_to_groups() {
        let p = select(
            "SELECT author, count(*) AS n, avg(score) FROM docs GROUP BY author HAVING count(*) > 1 ORDER BY n DESC, 1",
        );
        let agg = p.aggregation.unwrap();
        assert_eq!(agg.calls.len(), 2);
        assert_eq!(p.columns, ["author", "n", "avg(score)"]);
        assert_eq!(p.order_by[0].expr, p.projections[1]);
        assert!(p.order_by[0].descending && !p.order_by[0].nulls_first);
        let err = plan_of("SELECT author, year FROM docs GROUP BY author").unwrap_err();
        assert!(err.to_string().contains("must appear in GROUP BY"), "{err}");
        let err = plan_of("SELECT id FROM docs WHERE count(*) > 1").unwrap_err();
        assert!(err.to_string().contains("aggregate"), "{err}");
        let err = plan_of("SELECT sum(note) FROM docs").unwrap_err();
        assert!(err.to_string().contains("needs numbers"), "{err}");
    }
}
