//! Binding: SQL expressions resolved against a scope into typed [`Expr`]s, with the type
//! checks of operators, comparisons and literals. Function calls and aggregates are bound in
//! `functions`.

use sqlparser::ast as sql;

use super::names::column_type;
use super::scope::Scope;
use crate::error::{Error, Result};
use crate::expr::{BinOp, Expr};
use crate::plan::AggregateCall;
use crate::value::{ColumnType, Value};

/// A bound expression and its type (`None`: the NULL literal, which fits any type).
pub(super) type Typed = (Expr, Option<ColumnType>);

/// The state of binding one SELECT's expressions.
pub(super) struct Binder<'s, 'a> {
    pub(super) scope: &'s Scope<'a>,
    /// Group keys, when binding after aggregation.
    pub(super) group_by: Vec<Expr>,
    /// Aggregate calls found so far, with their result types.
    pub(super) calls: Vec<(AggregateCall, Option<ColumnType>)>,
}

fn numeric_result(a: Option<ColumnType>, b: Option<ColumnType>) -> Option<ColumnType> {
    match (a, b) {
        (Some(ColumnType::Int), Some(ColumnType::Int)) => Some(ColumnType::Int),
        (None, t) | (t, None) => t,
        _ => Some(ColumnType::Double),
    }
}

pub(super) fn type_name(t: Option<ColumnType>) -> &'static str {
    t.map_or("NULL", ColumnType::sql_name)
}

impl<'s, 'a> Binder<'s, 'a> {
    pub(super) fn new(scope: &'s Scope<'a>) -> Self {
        Binder {
            scope,
            group_by: Vec::new(),
            calls: Vec::new(),
        }
    }

    /// Binds `e`; `grouped` when it is evaluated after aggregation (projections, HAVING and
    /// ORDER BY of an aggregate query), where it reads group keys and aggregate results.
    pub(super) fn bind(&mut self, e: &sql::Expr, grouped: bool) -> Result<Typed> {
        if grouped && let Ok((row_expr, ty)) = self.bind(e, false) {
            {
                if let Some(i) = self.group_by.iter().position(|g| *g == row_expr) {
                    return Ok((
                        Expr::Column {
                            index: i,
                            name: row_expr.to_string(),
                        },
                        ty,
                    ));
                }
                let mut cols = Vec::new();
                row_expr.columns(&mut cols);
                if cols.is_empty() {
                    return Ok((row_expr, ty));
                }
                if let sql::Expr::Identifier(_) | sql::Expr::CompoundIdentifier(_) = e {
                    return Err(Error::UnknownColumn {
                        message: format!(
                            "column `{row_expr}` must appear in GROUP BY or inside an aggregate function"
                        ),
                    });
                }
            }
        }
        use sql::Expr as E;
        match e {
            E::Identifier(i) => self.column(std::slice::from_ref(i)),
            E::CompoundIdentifier(parts) => self.column(parts),
            E::Nested(inner) => self.bind(inner, grouped),
            E::Value(v) => literal(&v.value).map(|v| {
                let t = v.column_type();
                (Expr::Literal(v), t)
            }),
            E::TypedString(ts) => {
                let ty = column_type(&ts.data_type)?;
                let v = literal(&ts.value.value)?.coerce_to(ty)?;
                Ok((Expr::Literal(v), Some(ty)))
            }
            E::UnaryOp { op, expr } => {
                if let (sql::UnaryOperator::Minus, E::Value(v)) = (op, expr.as_ref())
                    && let sql::Value::Number(n, _) = &v.value
                {
                    {
                        let v = number(&format!("-{n}"))?;
                        let t = v.column_type();
                        return Ok((Expr::Literal(v), t));
                    }
                }
                let (x, t) = self.bind(expr, grouped)?;
                match op {
                    sql::UnaryOperator::Not => {
                        self.expect_bool(&x, t, "NOT")?;
                        Ok((Expr::Not(Box::new(x)), Some(ColumnType::Bool)))
                    }
                    sql::UnaryOperator::Minus | sql::UnaryOperator::Plus => {
                        if !t.is_none_or(ColumnType::is_numeric) {
                            return Err(Error::TypeMismatch(format!(
                                "`{e}`: the sign applies to numbers, `{x}` is {}",
                                type_name(t)
                            )));
                        }
                        if *op == sql::UnaryOperator::Plus {
                            Ok((x, t))
                        } else {
                            Ok((Expr::Neg(Box::new(x)), t))
                        }
                    }
                    other => Err(Error::unsupported(
                        format!("the operator `{other}`"),
                        "use NOT, - or +",
                    )),
                }
            }
            E::BinaryOp { left, op, right } => {
                let l = self.bind(left, grouped)?;
                let r = self.bind(right, grouped)?;
                self.binary(e, op, l, r)
            }
            E::IsNull(x) | E::IsNotNull(x) => {
                let (x, _) = self.bind(x, grouped)?;
                Ok((
                    Expr::IsNull {
                        expr: Box::new(x),
                        negated: matches!(e, E::IsNotNull(_)),
                    },
                    Some(ColumnType::Bool),
                ))
            }
            E::InList {
                expr,
                list,
                negated,
            } => {
                let (x, t) = self.bind(expr, grouped)?;
                let mut items = Vec::with_capacity(list.len());
                for item in list {
                    let it = self.bind(item, grouped)?;
                    let (it, _) = comparable(e, (x.clone(), t), it)?.1;
                    items.push(it);
                }
                Ok((
                    Expr::InList {
                        expr: Box::new(x),
                        list: items,
                        negated: *negated,
                    },
                    Some(ColumnType::Bool),
                ))
            }
            E::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let x = self.bind(expr, grouped)?;
                let lo = self.bind(low, grouped)?;
                let hi = self.bind(high, grouped)?;
                let (x, lo) = comparable(e, x, lo)?;
                let (x, hi) = comparable(e, x, hi)?;
                Ok((
                    Expr::Between {
                        expr: Box::new(x.0),
                        low: Box::new(lo.0),
                        high: Box::new(hi.0),
                        negated: *negated,
                    },
                    Some(ColumnType::Bool),
                ))
            }
            E::Like {
                negated,
                any: false,
                expr,
                pattern,
                escape_char: None,
            } => {
                let (x, t) = self.bind(expr, grouped)?;
                let (p, pt) = self.bind(pattern, grouped)?;
                for (what, t) in [(&x, t), (&p, pt)] {
                    if !t.is_none_or(|t| t == ColumnType::Text) {
                        return Err(Error::TypeMismatch(format!(
                            "`{e}`: LIKE compares text, `{what}` is {}",
                            type_name(t)
                        )));
                    }
                }
                Ok((
                    Expr::Like {
                        expr: Box::new(x),
                        pattern: Box::new(p),
                        negated: *negated,
                    },
                    Some(ColumnType::Bool),
                ))
            }
            E::ILike { .. } => Err(Error::unsupported(
                "ILIKE",
                "LIKE is case-sensitive; write LOWER(column) LIKE 'pattern'",
            )),
            E::Function(f) => self.function(e, f, grouped),
            other => Err(Error::unsupported(
                format!("the expression `{other}`"),
                "use columns, literals, arithmetic, comparisons, IN, BETWEEN, LIKE, IS NULL, AND/OR/NOT, MATCH and the functions count, sum, avg, min, max, lower, upper, length, abs, coalesce",
            )),
        }
    }

    fn column(&self, parts: &[sql::Ident]) -> Result<Typed> {
        let (e, t) = self.scope.resolve(parts)?;
        Ok((e, Some(t)))
    }

    pub(super) fn expect_bool(&self, x: &Expr, t: Option<ColumnType>, what: &str) -> Result<()> {
        if t.is_none_or(|t| t == ColumnType::Bool) {
            Ok(())
        } else {
            Err(Error::TypeMismatch(format!(
                "{what} needs a boolean, `{x}` is {}; compare it, e.g. `{x} <> 0`",
                type_name(t)
            )))
        }
    }

    fn binary(&self, e: &sql::Expr, op: &sql::BinaryOperator, l: Typed, r: Typed) -> Result<Typed> {
        use sql::BinaryOperator as B;
        let op = match op {
            B::Plus => BinOp::Add,
            B::Minus => BinOp::Sub,
            B::Multiply => BinOp::Mul,
            B::Divide => BinOp::Div,
            B::Modulo => BinOp::Mod,
            B::StringConcat => BinOp::Concat,
            B::Eq => BinOp::Eq,
            B::NotEq => BinOp::NotEq,
            B::Lt => BinOp::Lt,
            B::LtEq => BinOp::LtEq,
            B::Gt => BinOp::Gt,
            B::GtEq => BinOp::GtEq,
            B::And => BinOp::And,
            B::Or => BinOp::Or,
            other => {
                return Err(Error::unsupported(
                    format!("the operator `{other}`"),
                    "use + - * / % ||, comparisons, AND and OR",
                ));
            }
        };
        let ty = match op {
            BinOp::And | BinOp::Or => {
                self.expect_bool(&l.0, l.1, op_name(op))?;
                self.expect_bool(&r.0, r.1, op_name(op))?;
                Some(ColumnType::Bool)
            }
            BinOp::Concat => {
                for (x, t) in [&l, &r] {
                    if !t.is_none_or(|t| t == ColumnType::Text) {
                        return Err(Error::TypeMismatch(format!(
                            "`{e}`: || joins text, `{x}` is {}",
                            type_name(*t)
                        )));
                    }
                }
                Some(ColumnType::Text)
            }
            op if op.is_comparison() => {
                let (l, r) = comparable(e, l, r)?;
                return Ok((Expr::binary(op, l.0, r.0), Some(ColumnType::Bool)));
            }
            _ => {
                for (x, t) in [&l, &r] {
                    if !t.is_none_or(ColumnType::is_numeric) {
                        return Err(Error::TypeMismatch(format!(
                            "`{e}`: arithmetic needs numbers, `{x}` is {}",
                            type_name(*t)
                        )));
                    }
                }
                numeric_result(l.1, r.1)
            }
        };
        Ok((Expr::binary(op, l.0, r.0), ty))
    }
}

fn op_name(op: BinOp) -> &'static str {
    match op {
        BinOp::And => "AND",
        _ => "OR",
    }
}

/// Checks that two operands compare, turning a text literal compared with a timestamp into
/// a timestamp.
fn comparable(e: &sql::Expr, l: Typed, r: Typed) -> Result<(Typed, Typed)> {
    let fix = |x: Typed, other: Option<ColumnType>| -> Result<Typed> {
        match (x, other) {
            ((Expr::Literal(Value::Text(s)), _), Some(ColumnType::Timestamp)) => Ok((
                Expr::Literal(Value::Text(s).coerce_to(ColumnType::Timestamp)?),
                Some(ColumnType::Timestamp),
            )),
            (x, _) => Ok(x),
        }
    };
    let (lt, rt) = (l.1, r.1);
    let l = fix(l, rt)?;
    let r = fix(r, lt)?;
    let ok = match (l.1, r.1) {
        (None, _) | (_, None) => true,
        (Some(a), Some(b)) => a == b || (a.is_numeric() && b.is_numeric()),
    };
    if ok {
        Ok((l, r))
    } else {
        Err(Error::TypeMismatch(format!(
            "`{e}` compares `{}` ({}) with `{}` ({}); compare values of one type",
            l.0,
            type_name(l.1),
            r.0,
            type_name(r.1)
        )))
    }
}

fn number(text: &str) -> Result<Value> {
    if let Ok(i) = text.parse::<i64>() {
        return Ok(Value::Int(i));
    }
    match text.parse::<f64>() {
        Ok(d) if d.is_finite() => Ok(Value::Double(d).canonical()),
        _ => Err(Error::TypeMismatch(format!(
            "`{text}` is not a number wwt can hold"
        ))),
    }
}

fn literal(v: &sql::Value) -> Result<Value> {
    Ok(match v {
        sql::Value::Number(n, _) => number(n)?,
        sql::Value::SingleQuotedString(s) => Value::Text(s.clone()),
        sql::Value::Boolean(b) => Value::Bool(*b),
        sql::Value::Null => Value::Null,
        sql::Value::HexStringLiteral(h) => {
            let bytes: Option<Vec<u8>> = if h.len() % 2 == 0 {
                (0..h.len())
                    .step_by(2)
                    .map(|i| h.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
                    .collect()
            } else {
                None
            };
            Value::Blob(bytes.ok_or_else(|| {
                Error::TypeMismatch(format!("X'{h}' is not an even number of hex digits"))
            })?)
        }
        other => {
            return Err(Error::unsupported(
                format!("the literal {other}"),
                "write numbers, 'text', TRUE/FALSE, NULL, X'hex' or TIMESTAMP '…'",
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::plan::IndexLookup;
    use crate::planner::testing::{lookup, plan_of};

    #[test]
    fn names_and_types_are_checked() {
        let err = |sql: &str| plan_of(sql).unwrap_err().to_string();
        assert!(err("SELECT nope FROM docs").contains("unknown column `nope` (line 1, column 8)"));
        assert!(err("SELECT * FROM nope").contains("unknown table `nope`"));
        assert!(err("SELECT id FROM docs WHERE author = 3").contains("compares"));
        assert!(err("SELECT id FROM docs WHERE year").contains("needs a boolean"));
        assert!(
            err("SELECT name FROM docs JOIN authors ON author = name WHERE id = 'x'")
                .contains("compares")
        );
        assert!(err("SELECT id FROM docs UNION SELECT id FROM docs").contains("UNION"));
        assert!(err("SELECT id FROM docs WHERE note ILIKE 'a'").contains("ILIKE"));
        assert!(err("SELECT id FROM docs LIMIT -1").contains("whole number"));
        // Text literals compare with timestamps.
        assert!(matches!(
            lookup("SELECT id FROM docs WHERE id = 1 AND at > '2020-01-01'"),
            IndexLookup::PrimaryKey { .. }
        ));
    }
}
