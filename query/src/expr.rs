//! Bound expressions (columns resolved to positions, types checked) and their evaluation
//! with SQL NULL semantics.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;

use crate::error::{Error, Result};
use crate::fulltext::{FtQuery, tokenize};
use crate::value::Value;

/// A binary operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/` (integer division truncates; division by zero gives NULL, as in SQLite)
    Div,
    /// `%`
    Mod,
    /// `||` (text concatenation)
    Concat,
    /// `=`
    Eq,
    /// `<>` or `!=`
    NotEq,
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `>`
    Gt,
    /// `>=`
    GtEq,
    /// `AND`
    And,
    /// `OR`
    Or,
}

impl BinOp {
    fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Mod => "%",
            BinOp::Concat => "||",
            BinOp::Eq => "=",
            BinOp::NotEq => "<>",
            BinOp::Lt => "<",
            BinOp::LtEq => "<=",
            BinOp::Gt => ">",
            BinOp::GtEq => ">=",
            BinOp::And => "AND",
            BinOp::Or => "OR",
        }
    }

    /// Whether the operator compares its operands.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Eq | BinOp::NotEq | BinOp::Lt | BinOp::LtEq | BinOp::Gt | BinOp::GtEq
        )
    }

    /// The operator with its operands swapped (`a < b` is `b > a`), for comparisons.
    pub fn flip(self) -> BinOp {
        match self {
            BinOp::Lt => BinOp::Gt,
            BinOp::LtEq => BinOp::GtEq,
            BinOp::Gt => BinOp::Lt,
            BinOp::GtEq => BinOp::LtEq,
            op => op,
        }
    }
}

/// A scalar function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    /// `LOWER(text)`: Unicode's default lowercase mapping (`'ÉΣ'` → `'éς'`), not only ASCII
    /// as SQLite's built-in.
    Lower,
    /// `UPPER(text)`: Unicode's default uppercase mapping (`'straße'` → `'STRASSE'`).
    Upper,
    /// `LENGTH(text | blob)`: characters of text, bytes of a blob.
    Length,
    /// `ABS(number)`
    Abs,
    /// `COALESCE(a, b, …)`: the first argument that is not NULL.
    Coalesce,
}

impl Func {
    /// The function's SQL name.
    pub fn sql_name(self) -> &'static str {
        match self {
            Func::Lower => "lower",
            Func::Upper => "upper",
            Func::Length => "length",
            Func::Abs => "abs",
            Func::Coalesce => "coalesce",
        }
    }
}

/// An expression over one input row: the columns of the scanned (or joined) tables, or,
/// after aggregation, the group keys followed by the aggregate results.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// A constant.
    Literal(Value),
    /// The value at `index` in the input row; `name` is how it prints.
    Column {
        /// Position in the input row.
        index: usize,
        /// The column as written (`t.a`, `a`, `count(*)`).
        name: String,
    },
    /// `NOT e`
    Not(Box<Expr>),
    /// `-e`
    Neg(Box<Expr>),
    /// `l op r`
    Binary {
        /// The operator.
        op: BinOp,
        /// Left operand.
        left: Box<Expr>,
        /// Right operand.
        right: Box<Expr>,
    },
    /// `e IS [NOT] NULL`
    IsNull {
        /// The operand.
        expr: Box<Expr>,
        /// `IS NOT NULL`.
        negated: bool,
    },
    /// `e [NOT] IN (list)`
    InList {
        /// The operand.
        expr: Box<Expr>,
        /// The candidates.
        list: Vec<Expr>,
        /// `NOT IN`.
        negated: bool,
    },
    /// `e [NOT] BETWEEN low AND high`
    Between {
        /// The operand.
        expr: Box<Expr>,
        /// Lower bound, inclusive.
        low: Box<Expr>,
        /// Upper bound, inclusive.
        high: Box<Expr>,
        /// `NOT BETWEEN`.
        negated: bool,
    },
    /// `e [NOT] LIKE pattern` (case-sensitive; `%` any run, `_` one character)
    Like {
        /// The text.
        expr: Box<Expr>,
        /// The pattern.
        pattern: Box<Expr>,
        /// `NOT LIKE`.
        negated: bool,
    },
    /// `MATCH(column, 'query')`
    Match {
        /// The text column.
        expr: Box<Expr>,
        /// The full-text query.
        query: FtQuery,
    },
    /// A scalar function call.
    Call {
        /// The function.
        func: Func,
        /// Its arguments.
        args: Vec<Expr>,
    },
}

impl Expr {
    /// `l op r`.
    pub fn binary(op: BinOp, left: Expr, right: Expr) -> Expr {
        Expr::Binary {
            op,
            left: Box::new(left),
            right: Box::new(right),
        }
    }

    /// The conjunction of `parts` (`None` when there are none).
    pub fn and_all(parts: Vec<Expr>) -> Option<Expr> {
        parts
            .into_iter()
            .reduce(|acc, e| Expr::binary(BinOp::And, acc, e))
    }

    /// The top-level conjuncts of the expression (`a AND (b AND c)` gives a, b, c).
    pub fn conjuncts(self) -> Vec<Expr> {
        match self {
            Expr::Binary {
                op: BinOp::And,
                left,
                right,
            } => {
                let mut out = left.conjuncts();
                out.extend(right.conjuncts());
                out
            }
            e => vec![e],
        }
    }

    /// Visits every column position the expression reads.
    pub fn columns(&self, out: &mut Vec<usize>) {
        match self {
            Expr::Literal(_) => {}
            Expr::Column { index, .. } => out.push(*index),
            Expr::Not(e) | Expr::Neg(e) | Expr::IsNull { expr: e, .. } => e.columns(out),
            Expr::Match { expr, .. } => expr.columns(out),
            Expr::Binary { left, right, .. } => {
                left.columns(out);
                right.columns(out);
            }
            Expr::Like { expr, pattern, .. } => {
                expr.columns(out);
                pattern.columns(out);
            }
            Expr::InList { expr, list, .. } => {
                expr.columns(out);
                list.iter().for_each(|e| e.columns(out));
            }
            Expr::Between {
                expr, low, high, ..
            } => {
                expr.columns(out);
                low.columns(out);
                high.columns(out);
            }
            Expr::Call { args, .. } => args.iter().for_each(|e| e.columns(out)),
        }
    }

    /// Evaluates the expression over `row`.
    pub fn eval(&self, row: &[Value]) -> Result<Value> {
        Ok(match self {
            Expr::Literal(v) => v.clone(),
            Expr::Column { index, name } => row
                .get(*index)
                .cloned()
                .ok_or_else(|| Error::Eval(format!("column `{name}` is missing from the row")))?,
            Expr::Not(e) => match e.eval(row)? {
                Value::Bool(b) => Value::Bool(!b),
                _ => Value::Null,
            },
            Expr::Neg(e) => match e.eval(row)? {
                Value::Int(i) => Value::Int(i.checked_neg().ok_or_else(overflow)?),
                Value::Double(d) => Value::Double(-d).canonical(),
                _ => Value::Null,
            },
            Expr::Binary { op, left, right } => match op {
                BinOp::And => match left.eval(row)? {
                    Value::Bool(false) => Value::Bool(false),
                    l => match (l, right.eval(row)?) {
                        (_, Value::Bool(false)) => Value::Bool(false),
                        (Value::Bool(true), Value::Bool(true)) => Value::Bool(true),
                        _ => Value::Null,
                    },
                },
                BinOp::Or => match left.eval(row)? {
                    Value::Bool(true) => Value::Bool(true),
                    l => match (l, right.eval(row)?) {
                        (_, Value::Bool(true)) => Value::Bool(true),
                        (Value::Bool(false), Value::Bool(false)) => Value::Bool(false),
                        _ => Value::Null,
                    },
                },
                op => binary(*op, &left.eval(row)?, &right.eval(row)?)?,
            },
            Expr::IsNull { expr, negated } => Value::Bool(expr.eval(row)?.is_null() != *negated),
            Expr::InList {
                expr,
                list,
                negated,
            } => {
                let v = expr.eval(row)?;
                if v.is_null() {
                    return Ok(Value::Null);
                }
                let mut saw_null = false;
                let mut found = false;
                for e in list {
                    match v.sql_cmp(&e.eval(row)?) {
                        Some(Ordering::Equal) => {
                            found = true;
                            break;
                        }
                        None => saw_null = true,
                        Some(_) => {}
                    }
                }
                if found {
                    Value::Bool(!negated)
                } else if saw_null {
                    Value::Null
                } else {
                    Value::Bool(*negated)
                }
            }
            Expr::Between {
                expr,
                low,
                high,
                negated,
            } => {
                let v = expr.eval(row)?;
                let lo = binary(BinOp::GtEq, &v, &low.eval(row)?)?;
                let hi = binary(BinOp::LtEq, &v, &high.eval(row)?)?;
                let both = match (lo, hi) {
                    (Value::Bool(false), _) | (_, Value::Bool(false)) => Value::Bool(false),
                    (Value::Bool(true), Value::Bool(true)) => Value::Bool(true),
                    _ => Value::Null,
                };
                match both {
                    Value::Bool(b) => Value::Bool(b != *negated),
                    v => v,
                }
            }
            Expr::Like {
                expr,
                pattern,
                negated,
            } => match (expr.eval(row)?, pattern.eval(row)?) {
                (Value::Text(s), Value::Text(p)) => Value::Bool(like(&s, &p) != *negated),
                _ => Value::Null,
            },
            Expr::Match { expr, query } => match expr.eval(row)? {
                Value::Text(s) => {
                    let words: HashSet<String> = tokenize(&s).into_iter().collect();
                    Value::Bool(query.matches(&words))
                }
                _ => Value::Null,
            },
            Expr::Call { func, args } => call(*func, args, row)?,
        })
    }

    /// Whether the expression is TRUE over `row` (NULL and FALSE are not).
    pub fn is_true(&self, row: &[Value]) -> Result<bool> {
        Ok(matches!(self.eval(row)?, Value::Bool(true)))
    }

    fn precedence(&self) -> u8 {
        match self {
            Expr::Binary { op: BinOp::Or, .. } => 1,
            Expr::Binary { op: BinOp::And, .. } => 2,
            Expr::Not(_) => 3,
            Expr::Binary { op, .. } if op.is_comparison() => 4,
            Expr::IsNull { .. }
            | Expr::InList { .. }
            | Expr::Between { .. }
            | Expr::Like { .. } => 4,
            Expr::Binary {
                op: BinOp::Add | BinOp::Sub | BinOp::Concat,
                ..
            } => 5,
            Expr::Binary { .. } => 6,
            _ => 7,
        }
    }
}

fn overflow() -> Error {
    Error::Eval("integer overflow; use DOUBLE values for results this large".into())
}

/// A binary operator other than AND and OR applied to two values.
pub(crate) fn binary(op: BinOp, l: &Value, r: &Value) -> Result<Value> {
    if l.is_null() || r.is_null() {
        return Ok(Value::Null);
    }
    if op.is_comparison() {
        let Some(o) = l.sql_cmp(r) else {
            return Ok(Value::Null);
        };
        return Ok(Value::Bool(match op {
            BinOp::Eq => o == Ordering::Equal,
            BinOp::NotEq => o != Ordering::Equal,
            BinOp::Lt => o == Ordering::Less,
            BinOp::LtEq => o != Ordering::Greater,
            BinOp::Gt => o == Ordering::Greater,
            _ => o != Ordering::Less,
        }));
    }
    Ok(match (op, l, r) {
        (BinOp::Concat, Value::Text(a), Value::Text(b)) => Value::Text(format!("{a}{b}")),
        (_, Value::Int(a), Value::Int(b)) => {
            let (a, b) = (*a, *b);
            match op {
                BinOp::Add => Value::Int(a.checked_add(b).ok_or_else(overflow)?),
                BinOp::Sub => Value::Int(a.checked_sub(b).ok_or_else(overflow)?),
                BinOp::Mul => Value::Int(a.checked_mul(b).ok_or_else(overflow)?),
                BinOp::Div if b == 0 => Value::Null,
                BinOp::Div => Value::Int(a.checked_div(b).ok_or_else(overflow)?),
                BinOp::Mod if b == 0 => Value::Null,
                BinOp::Mod => Value::Int(a.checked_rem(b).ok_or_else(overflow)?),
                _ => Value::Null,
            }
        }
        (_, Value::Int(_) | Value::Double(_), Value::Int(_) | Value::Double(_)) => {
            let (a, b) = (as_double(l), as_double(r));
            let d = match op {
                BinOp::Add => a + b,
                BinOp::Sub => a - b,
                BinOp::Mul => a * b,
                BinOp::Div if b == 0.0 => return Ok(Value::Null),
                BinOp::Div => a / b,
                BinOp::Mod => {
                    // SQLite takes the remainder of the integer parts.
                    let (a, b) = (a.trunc(), b.trunc());
                    if b == 0.0 {
                        return Ok(Value::Null);
                    }
                    a % b
                }
                _ => return Ok(Value::Null),
            };
            if d.is_nan() {
                Value::Null
            } else {
                Value::Double(d).canonical()
            }
        }
        _ => Value::Null,
    })
}

/// A number as a double (integers convert, anything else is 0).
pub(crate) fn as_double(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Double(d) => *d,
        _ => 0.0,
    }
}

fn call(func: Func, args: &[Expr], row: &[Value]) -> Result<Value> {
    if func == Func::Coalesce {
        for a in args {
            let v = a.eval(row)?;
            if !v.is_null() {
                return Ok(v);
            }
        }
        return Ok(Value::Null);
    }
    let v = match args.first() {
        Some(a) => a.eval(row)?,
        None => Value::Null,
    };
    Ok(match (func, v) {
        (Func::Lower, Value::Text(s)) => Value::Text(s.to_lowercase()),
        (Func::Upper, Value::Text(s)) => Value::Text(s.to_uppercase()),
        (Func::Length, Value::Text(s)) => Value::Int(s.chars().count() as i64),
        (Func::Length, Value::Blob(b)) => Value::Int(b.len() as i64),
        (Func::Abs, Value::Int(i)) => Value::Int(i.checked_abs().ok_or_else(overflow)?),
        (Func::Abs, Value::Double(d)) => Value::Double(d.abs()),
        _ => Value::Null,
    })
}

/// SQL LIKE, case-sensitive: `%` matches any run of characters, `_` exactly one.
pub fn like(text: &str, pattern: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    // Iterative matching with backtracking to the last `%` (linear in practice).
    let (mut ti, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('%') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '_' || c == t[ti] => {
                ti += 1;
                pi += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '%')
}

impl fmt::Display for Expr {
    /// The expression as SQL (column names as written, parentheses where needed).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prec = self.precedence();
        let sub = |f: &mut fmt::Formatter<'_>, e: &Expr, min: u8| {
            if e.precedence() < min {
                write!(f, "({e})")
            } else {
                write!(f, "{e}")
            }
        };
        match self {
            Expr::Literal(v) => f.write_str(&v.to_sql()),
            Expr::Column { name, .. } => f.write_str(name),
            Expr::Not(e) => {
                f.write_str("NOT ")?;
                sub(f, e, prec)
            }
            Expr::Neg(e) => {
                f.write_str("-")?;
                sub(f, e, 7)
            }
            Expr::Binary { op, left, right } => {
                sub(f, left, prec)?;
                write!(f, " {} ", op.symbol())?;
                sub(f, right, prec + 1)
            }
            Expr::IsNull { expr, negated } => {
                sub(f, expr, 5)?;
                f.write_str(if *negated { " IS NOT NULL" } else { " IS NULL" })
            }
            Expr::InList {
                expr,
                list,
                negated,
            } => {
                sub(f, expr, 5)?;
                f.write_str(if *negated { " NOT IN (" } else { " IN (" })?;
                for (i, e) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{e}")?;
                }
                f.write_str(")")
            }
            Expr::Between {
                expr,
                low,
                high,
                negated,
            } => {
                sub(f, expr, 5)?;
                f.write_str(if *negated {
                    " NOT BETWEEN "
                } else {
                    " BETWEEN "
                })?;
                sub(f, low, 5)?;
                f.write_str(" AND ")?;
                sub(f, high, 5)
            }
            Expr::Like {
                expr,
                pattern,
                negated,
            } => {
                sub(f, expr, 5)?;
                f.write_str(if *negated { " NOT LIKE " } else { " LIKE " })?;
                sub(f, pattern, 5)
            }
            Expr::Match { expr, query } => write!(
                f,
                "MATCH({expr}, {})",
                Value::Text(query.to_string()).to_sql()
            ),
            Expr::Call { func, args } => {
                write!(f, "{}(", func.sql_name())?;
                for (i, e) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{e}")?;
                }
                f.write_str(")")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn col(i: usize) -> Expr {
        Expr::Column {
            index: i,
            name: format!("c{i}"),
        }
    }

    #[test]
    fn three_valued_logic() {
        let null = Expr::Literal(Value::Null);
        let t = Expr::Literal(Value::Bool(true));
        let f = Expr::Literal(Value::Bool(false));
        let and = |a: &Expr, b: &Expr| Expr::binary(BinOp::And, a.clone(), b.clone());
        let or = |a: &Expr, b: &Expr| Expr::binary(BinOp::Or, a.clone(), b.clone());
        assert_eq!(and(&null, &f).eval(&[]).unwrap(), Value::Bool(false));
        assert_eq!(and(&null, &t).eval(&[]).unwrap(), Value::Null);
        assert_eq!(or(&null, &t).eval(&[]).unwrap(), Value::Bool(true));
        assert_eq!(or(&null, &f).eval(&[]).unwrap(), Value::Null);
        assert_eq!(
            Expr::Not(Box::new(null.clone())).eval(&[]).unwrap(),
            Value::Null
        );
        let in_list = Expr::InList {
            expr: Box::new(col(0)),
            list: vec![Expr::Literal(Value::Int(1)), null],
            negated: false,
        };
        assert_eq!(in_list.eval(&[Value::Int(1)]).unwrap(), Value::Bool(true));
        assert_eq!(in_list.eval(&[Value::Int(2)]).unwrap(), Value::Null);
    }

    #[test]
    fn arithmetic_follows_sqlite() {
        let e = |op, a: Value, b: Value| binary(op, &a, &b).unwrap();
        assert_eq!(e(BinOp::Div, Value::Int(7), Value::Int(-2)), Value::Int(-3));
        assert_eq!(e(BinOp::Mod, Value::Int(-7), Value::Int(2)), Value::Int(-1));
        assert_eq!(e(BinOp::Div, Value::Int(1), Value::Int(0)), Value::Null);
        assert_eq!(
            e(BinOp::Add, Value::Int(1), Value::Double(0.5)),
            Value::Double(1.5)
        );
        assert!(binary(BinOp::Add, &Value::Int(i64::MAX), &Value::Int(1)).is_err());
    }

    #[test]
    fn like_patterns() {
        assert!(like("hello", "h%o"));
        assert!(like("hello", "_ello"));
        assert!(like("", "%"));
        assert!(!like("Hello", "hello"));
        assert!(like("abcabc", "%bc%c"));
        assert!(!like("abc", "abcd%"));
    }

    #[test]
    fn prints_as_sql() {
        let e = Expr::binary(
            BinOp::Mul,
            Expr::binary(BinOp::Add, col(0), Expr::Literal(Value::Int(1))),
            col(1),
        );
        assert_eq!(e.to_string(), "(c0 + 1) * c1");
        let e = Expr::binary(
            BinOp::And,
            Expr::binary(BinOp::Or, col(0), col(1)),
            Expr::Not(Box::new(col(2))),
        );
        assert_eq!(e.to_string(), "(c0 OR c1) AND NOT c2");
    }
}
