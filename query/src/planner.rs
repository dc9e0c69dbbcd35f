//! From SQL text to [`Plan`]s: parsing, name resolution, type checking, and the split of
//! each WHERE into index lookups (pushed to the index provider) and a residual (run on the
//! client after decryption).

use std::collections::HashSet;
use std::ops::Bound;

use sqlparser::ast as sql;
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::{Parser, ParserError};

use crate::codec::encode_key;
use crate::error::{Error, Result};
use crate::exec::key_of;
use crate::expr::{BinOp, Expr, Func};
use crate::fulltext::FtQuery;
use crate::plan::{
    AccessPath, AggFunc, AggregateCall, Aggregation, DeletePlan, Direction, Filter, IndexLookup,
    InsertPlan, JoinPlan, Plan, Pushdown, SelectPlan, SortKey, TableAccess, UpdatePlan,
};
use crate::schema::{Catalog, Column, IndexDef, IndexKind, TableSchema};
use crate::value::{ColumnType, Value};

/// A parsed statement, ready for [`plan`].
pub type Statement = sql::Statement;

const SUPPORTED: &str = "wwt runs CREATE TABLE, CREATE INDEX, DROP TABLE, INSERT, SELECT, UPDATE, \
     DELETE and EXPLAIN";

/// Parses SQL text (one or more statements separated by `;`) with the generic dialect.
/// A syntax error carries the line and column of the offending token.
pub fn parse(text: &str) -> Result<Vec<Statement>> {
    Parser::parse_sql(&GenericDialect {}, text).map_err(|e| {
        let msg = match e {
            ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
            ParserError::RecursionLimitExceeded => "the statement nests too deeply".into(),
        };
        match msg.rfind(" at Line: ") {
            Some(i) => {
                let pos = &msg[i + " at Line: ".len()..];
                let (line, column) = pos.split_once(", Column: ").unwrap_or((pos, "0"));
                Error::Syntax {
                    line: line.trim().parse().unwrap_or(0),
                    column: column.trim().parse().unwrap_or(0),
                    message: msg[..i].to_string(),
                }
            }
            None => Error::Syntax {
                line: 0,
                column: 0,
                message: msg,
            },
        }
    })
}

/// Plans one statement against `catalog`. Nothing is changed: the caller applies the plan
/// (and, for CREATE, updates its catalog).
pub fn plan(catalog: &Catalog, stmt: &Statement) -> Result<Plan> {
    match stmt {
        sql::Statement::CreateTable(ct) => create_table(ct).map(Plan::CreateTable),
        sql::Statement::CreateIndex(ci) => create_index(catalog, ci),
        sql::Statement::Drop {
            object_type: sql::ObjectType::Table,
            if_exists,
            names,
            ..
        } => drop_table(catalog, *if_exists, names),
        sql::Statement::Insert(ins) => insert(catalog, ins).map(Plan::Insert),
        sql::Statement::Query(q) => select(catalog, q).map(Plan::Select),
        sql::Statement::Update(u) => update(catalog, u).map(Plan::Update),
        sql::Statement::Delete(d) => delete(catalog, d).map(Plan::Delete),
        sql::Statement::Explain {
            statement,
            analyze: false,
            ..
        } => Ok(Plan::Explain(Box::new(plan(catalog, statement)?))),
        other => {
            let text = other.to_string();
            let head: Vec<&str> = text.split_whitespace().take(2).collect();
            Err(Error::unsupported(
                format!("the statement `{} …`", head.join(" ")),
                SUPPORTED,
            ))
        }
    }
}

/// An identifier as wwt names it: lowercased unless quoted.
fn ident(i: &sql::Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

fn at(i: &sql::Ident) -> String {
    let s = i.span.start;
    if s.line == 0 {
        String::new()
    } else {
        format!(" (line {}, column {})", s.line, s.column)
    }
}

fn object_name(n: &sql::ObjectName) -> Result<String> {
    match n.0.as_slice() {
        [sql::ObjectNamePart::Identifier(i)] => Ok(ident(i)),
        _ => Err(Error::unsupported(
            format!("the qualified name `{n}`"),
            "name tables without a schema or database prefix",
        )),
    }
}

fn column_type(dt: &sql::DataType) -> Result<ColumnType> {
    use sql::DataType as D;
    Ok(match dt {
        D::Int(_)
        | D::Integer(_)
        | D::BigInt(_)
        | D::SmallInt(_)
        | D::TinyInt(_)
        | D::Int8(_)
        | D::Int64 => ColumnType::Int,
        D::Double(_) | D::DoublePrecision | D::Float(_) | D::Float64 | D::Real => {
            ColumnType::Double
        }
        D::Text | D::Varchar(_) | D::CharacterVarying(_) | D::Char(_) | D::String(_) => {
            ColumnType::Text
        }
        D::Bool | D::Boolean => ColumnType::Bool,
        D::Timestamp(_, _) | D::Datetime(_) => ColumnType::Timestamp,
        D::Blob(_) | D::Bytea | D::Binary(_) | D::Varbinary(_) => ColumnType::Blob,
        other => {
            return Err(Error::unsupported(
                format!("the column type {other}"),
                "use INT, BIGINT, DOUBLE, TEXT, BOOL, TIMESTAMP or BLOB",
            ));
        }
    })
}

fn create_table(ct: &sql::CreateTable) -> Result<TableSchema> {
    if ct.query.is_some() || ct.like.is_some() || ct.clone.is_some() {
        return Err(Error::unsupported(
            "CREATE TABLE … AS / LIKE / CLONE",
            "declare the columns, then INSERT the rows",
        ));
    }
    if ct.or_replace || ct.if_not_exists || ct.temporary {
        return Err(Error::unsupported(
            "OR REPLACE, IF NOT EXISTS and TEMPORARY",
            "write a plain CREATE TABLE",
        ));
    }
    let name = object_name(&ct.name)?;
    let mut columns: Vec<Column> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    for c in &ct.columns {
        let cname = ident(&c.name);
        if columns.iter().any(|x| x.name == cname) {
            return Err(Error::Constraint(format!(
                "column `{cname}` is declared twice{}",
                at(&c.name)
            )));
        }
        let mut not_null = false;
        for o in &c.options {
            match &o.option {
                sql::ColumnOption::NotNull => not_null = true,
                sql::ColumnOption::Null => {}
                sql::ColumnOption::PrimaryKey(_) => keys.push(cname.clone()),
                other => {
                    return Err(Error::unsupported(
                        format!("the column option `{other}` on `{cname}`"),
                        "columns take only PRIMARY KEY, NOT NULL and NULL",
                    ));
                }
            }
        }
        columns.push(Column {
            name: cname,
            ty: column_type(&c.data_type)?,
            not_null,
        });
    }
    for k in &ct.constraints {
        match k {
            sql::TableConstraint::PrimaryKey(pk) => {
                for ic in &pk.columns {
                    match &ic.column.expr {
                        sql::Expr::Identifier(i) => keys.push(ident(i)),
                        e => {
                            return Err(Error::unsupported(
                                format!("the key expression `{e}`"),
                                "name one column in PRIMARY KEY (…)",
                            ));
                        }
                    }
                }
            }
            other => {
                return Err(Error::unsupported(
                    format!("the table constraint `{other}`"),
                    "only PRIMARY KEY is supported",
                ));
            }
        }
    }
    let [key] = keys.as_slice() else {
        return Err(Error::Constraint(format!(
            "table `{name}` needs exactly one PRIMARY KEY column (it has {}); composite keys are not supported",
            keys.len()
        )));
    };
    let primary_key =
        columns
            .iter()
            .position(|c| &c.name == key)
            .ok_or_else(|| Error::UnknownColumn {
                message: format!("PRIMARY KEY names `{key}`, which is not a column of `{name}`"),
            })?;
    let pk = &mut columns[primary_key];
    pk.not_null = true;
    if matches!(pk.ty, ColumnType::Double | ColumnType::Bool) {
        return Err(Error::TypeMismatch(format!(
            "the primary key `{}` cannot be {}; use BIGINT, TEXT, TIMESTAMP or BLOB",
            pk.name, pk.ty
        )));
    }
    Ok(TableSchema {
        name,
        columns,
        primary_key,
        indexes: Vec::new(),
    })
}

fn drop_table(catalog: &Catalog, if_exists: bool, names: &[sql::ObjectName]) -> Result<Plan> {
    let [name] = names else {
        return Err(Error::unsupported(
            "dropping several tables in one statement",
            "write one DROP TABLE per table",
        ));
    };
    let name = object_name(name)?;
    match catalog.table(&name) {
        Ok(_) => Ok(Plan::DropTable { table: Some(name) }),
        Err(_) if if_exists => Ok(Plan::DropTable { table: None }),
        Err(e) => Err(e),
    }
}

fn create_index(catalog: &Catalog, ci: &sql::CreateIndex) -> Result<Plan> {
    let table = object_name(&ci.table_name)?;
    let schema = catalog.table(&table)?;
    if ci.unique || ci.predicate.is_some() || !ci.include.is_empty() {
        return Err(Error::unsupported(
            "UNIQUE, partial and covering indexes",
            "write CREATE INDEX [name] ON table USING fulltext|hash|btree (column)",
        ));
    }
    let kind = match &ci.using {
        Some(sql::IndexType::Hash) => IndexKind::Hash,
        Some(sql::IndexType::BTree) => IndexKind::BTree,
        Some(sql::IndexType::Custom(i)) if i.value.eq_ignore_ascii_case("fulltext") => {
            IndexKind::FullText
        }
        other => {
            return Err(Error::unsupported(
                match other {
                    Some(t) => format!("the index kind `{t}`"),
                    None => "an index without a kind".into(),
                },
                "say USING fulltext (MATCH), USING hash (=, IN) or USING btree (ranges, ORDER BY)",
            ));
        }
    };
    let column = match ci.columns.as_slice() {
        [c] => match &c.column.expr {
            sql::Expr::Identifier(i) => ident(i),
            e => {
                return Err(Error::unsupported(
                    format!("an index on the expression `{e}`"),
                    "index one column",
                ));
            }
        },
        _ => {
            return Err(Error::unsupported(
                "an index on several columns",
                "create one index per column",
            ));
        }
    };
    let col = schema.column(&column)?;
    if kind == IndexKind::FullText && col.ty != ColumnType::Text {
        return Err(Error::TypeMismatch(format!(
            "a fulltext index needs a TEXT column; `{column}` is {}",
            col.ty
        )));
    }
    if col.ty == ColumnType::Blob && kind == IndexKind::BTree {
        return Err(Error::TypeMismatch(format!(
            "a btree index orders values; `{column}` is a BLOB, index it USING hash"
        )));
    }
    let name = match &ci.name {
        Some(n) => object_name(n)?,
        None => format!("{table}_{column}_{kind}"),
    };
    let index = IndexDef { name, column, kind };
    // Check the name and kind are free now, so the plan can be applied as is.
    catalog.clone().add_index(&table, index.clone())?;
    Ok(Plan::CreateIndex { table, index })
}

fn insert(catalog: &Catalog, ins: &sql::Insert) -> Result<InsertPlan> {
    let sql::TableObject::TableName(name) = &ins.table else {
        return Err(Error::unsupported(
            "INSERT into a table function",
            "INSERT INTO table (columns) VALUES (…)",
        ));
    };
    if ins.on.is_some() || ins.returning.is_some() || ins.or.is_some() || ins.overwrite {
        return Err(Error::unsupported(
            "ON CONFLICT, OR REPLACE, RETURNING and OVERWRITE",
            "write a plain INSERT INTO table (columns) VALUES (…)",
        ));
    }
    let schema = catalog.table(&object_name(name)?)?;
    let positions: Vec<usize> = if ins.columns.is_empty() {
        (0..schema.columns.len()).collect()
    } else {
        let mut seen = HashSet::new();
        ins.columns
            .iter()
            .map(|c| {
                let n = object_name(c)?;
                let i = schema.column_index(&n).ok_or_else(|| {
                    schema
                        .column(&n)
                        .err()
                        .unwrap_or(Error::UnknownColumn { message: n.clone() })
                })?;
                if !seen.insert(i) {
                    return Err(Error::Constraint(format!(
                        "column `{n}` is listed twice in the INSERT"
                    )));
                }
                Ok(i)
            })
            .collect::<Result<_>>()?
    };
    let rows = match ins.source.as_deref().map(|q| q.body.as_ref()) {
        Some(sql::SetExpr::Values(v)) => &v.rows,
        _ => {
            return Err(Error::unsupported(
                "INSERT … SELECT and INSERT without VALUES",
                "list the rows: INSERT INTO table (columns) VALUES (…), (…)",
            ));
        }
    };
    let scope = Scope::default();
    let mut binder = Binder::new(&scope);
    let mut keys = HashSet::new();
    let mut out = Vec::with_capacity(rows.len());
    for (n, r) in rows.iter().enumerate() {
        if r.content.len() != positions.len() {
            return Err(Error::Constraint(format!(
                "row {} has {} values for {} columns",
                n + 1,
                r.content.len(),
                positions.len()
            )));
        }
        let mut row = vec![Value::Null; schema.columns.len()];
        for (e, &i) in r.content.iter().zip(&positions) {
            let col = &schema.columns[i];
            let (expr, _) = binder.bind(e, false)?;
            let v = expr.eval(&[])?.coerce_to(col.ty).map_err(|err| {
                Error::TypeMismatch(format!(
                    "row {}, column `{}`: {}",
                    n + 1,
                    col.name,
                    err.to_string().trim_start_matches("type mismatch: ")
                ))
            })?;
            row[i] = v;
        }
        for (col, v) in schema.columns.iter().zip(&row) {
            if col.not_null && v.is_null() {
                return Err(Error::Constraint(format!(
                    "row {}: column `{}` is NOT NULL; give it a value",
                    n + 1,
                    col.name
                )));
            }
        }
        if !keys.insert(encode_key(&row[schema.primary_key])?) {
            return Err(Error::Constraint(format!(
                "row {} repeats the primary key {} of an earlier row",
                n + 1,
                row[schema.primary_key].to_sql()
            )));
        }
        out.push(row);
    }
    Ok(InsertPlan {
        table: schema.clone(),
        rows: out,
    })
}

/// The tables in scope and where their columns sit in the input row.
#[derive(Default)]
struct Scope<'a> {
    tables: Vec<(String, &'a TableSchema, usize)>,
}

impl<'a> Scope<'a> {
    fn add(&mut self, alias: String, schema: &'a TableSchema) -> Result<()> {
        if self.tables.iter().any(|(a, _, _)| *a == alias) {
            return Err(Error::unsupported(
                format!("the table name `{alias}` twice in FROM"),
                "give one of them an alias: FROM t JOIN t AS t2 ON …",
            ));
        }
        let offset = self.width();
        self.tables.push((alias, schema, offset));
        Ok(())
    }

    fn width(&self) -> usize {
        self.tables.iter().map(|(_, s, _)| s.columns.len()).sum()
    }

    /// Which table a row position belongs to.
    fn table_of(&self, index: usize) -> Option<usize> {
        self.tables
            .iter()
            .position(|(_, s, o)| (*o..o + s.columns.len()).contains(&index))
    }

    fn resolve(&self, parts: &[sql::Ident]) -> Result<(Expr, ColumnType)> {
        let (qualifier, col) = match parts {
            [c] => (None, c),
            [t, c] => (Some(ident(t)), c),
            _ => {
                return Err(Error::unsupported(
                    "column names with more than two parts",
                    "write column or table.column",
                ));
            }
        };
        let name = ident(col);
        let mut found = Vec::new();
        for (alias, schema, offset) in &self.tables {
            if qualifier.as_ref().is_some_and(|q| q != alias) {
                continue;
            }
            if let Some(i) = schema.column_index(&name) {
                found.push((alias, offset + i, schema.columns[i].ty));
            }
        }
        match found.as_slice() {
            [(alias, index, ty)] => Ok((
                Expr::Column {
                    index: *index,
                    name: if self.tables.len() > 1 {
                        format!("{alias}.{name}")
                    } else {
                        name
                    },
                },
                *ty,
            )),
            [] => {
                let known: Vec<String> = self
                    .tables
                    .iter()
                    .filter(|(a, _, _)| qualifier.as_ref().is_none_or(|q| q == a))
                    .flat_map(|(a, s, _)| s.columns.iter().map(move |c| format!("{a}.{}", c.name)))
                    .collect();
                let what = match &qualifier {
                    Some(q) if !self.tables.iter().any(|(a, _, _)| a == q) => {
                        format!("no table `{q}` in FROM for column `{q}.{name}`{}", at(col))
                    }
                    _ => format!("unknown column `{name}`{}", at(col)),
                };
                Err(Error::UnknownColumn {
                    message: if known.is_empty() {
                        format!("{what}: the statement reads no table")
                    } else {
                        format!("{what}; the columns in scope are {}", known.join(", "))
                    },
                })
            }
            _ => Err(Error::UnknownColumn {
                message: format!(
                    "column `{name}`{} is ambiguous: qualify it with its table",
                    at(col)
                ),
            }),
        }
    }
}

/// A bound expression and its type (`None`: the NULL literal, which fits any type).
type Typed = (Expr, Option<ColumnType>);

/// The state of binding one SELECT's expressions.
struct Binder<'s, 'a> {
    scope: &'s Scope<'a>,
    /// Group keys, when binding after aggregation.
    group_by: Vec<Expr>,
    /// Aggregate calls found so far, with their result types.
    calls: Vec<(AggregateCall, Option<ColumnType>)>,
}

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
fn has_aggregate(e: &sql::Expr) -> bool {
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

fn numeric_result(a: Option<ColumnType>, b: Option<ColumnType>) -> Option<ColumnType> {
    match (a, b) {
        (Some(ColumnType::Int), Some(ColumnType::Int)) => Some(ColumnType::Int),
        (None, t) | (t, None) => t,
        _ => Some(ColumnType::Double),
    }
}

fn type_name(t: Option<ColumnType>) -> &'static str {
    t.map_or("NULL", ColumnType::sql_name)
}

impl<'s, 'a> Binder<'s, 'a> {
    fn new(scope: &'s Scope<'a>) -> Self {
        Binder {
            scope,
            group_by: Vec::new(),
            calls: Vec::new(),
        }
    }

    /// Binds `e`; `grouped` when it is evaluated after aggregation (projections, HAVING and
    /// ORDER BY of an aggregate query), where it reads group keys and aggregate results.
    fn bind(&mut self, e: &sql::Expr, grouped: bool) -> Result<Typed> {
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

    fn expect_bool(&self, x: &Expr, t: Option<ColumnType>, what: &str) -> Result<()> {
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

    fn function(&mut self, e: &sql::Expr, f: &sql::Function, grouped: bool) -> Result<Typed> {
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

/// Resolves FROM into a scope; returns the join's ON condition when there is one.
fn from_clause<'c>(
    catalog: &'c Catalog,
    from: &[sql::TableWithJoins],
    scope: &mut Scope<'c>,
) -> Result<Option<sql::Expr>> {
    let table = |scope: &mut Scope<'c>, f: &sql::TableFactor| -> Result<()> {
        match f {
            sql::TableFactor::Table {
                name,
                alias,
                args: None,
                ..
            } => {
                let schema = catalog.table(&object_name(name)?)?;
                let alias = alias
                    .as_ref()
                    .map_or(schema.name.clone(), |a| ident(&a.name));
                scope.add(alias, schema)
            }
            other => Err(Error::unsupported(
                format!("`{other}` in FROM"),
                "read tables by name; subqueries and table functions are not supported",
            )),
        }
    };
    match from {
        [] => Ok(None),
        [twj] => {
            table(scope, &twj.relation)?;
            match twj.joins.as_slice() {
                [] => Ok(None),
                [j] => {
                    table(scope, &j.relation)?;
                    match &j.join_operator {
                        sql::JoinOperator::Join(sql::JoinConstraint::On(on))
                        | sql::JoinOperator::Inner(sql::JoinConstraint::On(on)) => {
                            Ok(Some(on.clone()))
                        }
                        _ => Err(Error::unsupported(
                            "this kind of join",
                            "write an inner equi-join: FROM a JOIN b ON a.x = b.y",
                        )),
                    }
                }
                _ => Err(Error::unsupported(
                    "joins of more than two tables",
                    "join two tables at a time",
                )),
            }
        }
        _ => Err(Error::unsupported(
            "several tables separated by commas",
            "write FROM a JOIN b ON a.x = b.y",
        )),
    }
}

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

fn select(catalog: &Catalog, q: &sql::Query) -> Result<SelectPlan> {
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

/// The schema column at a position of the scope's row.
fn column_at<'a>(scope: &'a Scope<'_>, index: usize) -> Option<&'a Column> {
    let t = scope.table_of(index)?;
    let (_, schema, offset) = scope.tables.get(t)?;
    schema.columns.get(index - offset)
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

fn split_filter(conjuncts: Vec<Expr>, chosen: &[usize]) -> Filter {
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
fn choose_access(
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

/// The index lookup that answers `e` exactly, if the table's indexes allow one.
fn pushable(schema: &TableSchema, offset: usize, e: &Expr) -> Option<Pushdown> {
    let column = |x: &Expr| -> Option<&Column> {
        match x {
            Expr::Column { index, .. } => schema.columns.get(index.checked_sub(offset)?),
            _ => None,
        }
    };
    let lit = |x: &Expr, col: &Column| -> Option<Value> {
        match x {
            Expr::Literal(v) if !v.is_null() => v.clone().coerce_to(col.ty).ok(),
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

/// Pushes `ORDER BY col LIMIT n` into a btree lookup, and `LIMIT n` into a full-text
/// lookup, where the index's answer is then exactly the rows the query returns.
fn push_limit(plan: &mut SelectPlan) {
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
        (AccessPath::Index(Pushdown::Lookup(IndexLookup::FullText { limit, .. })), None)
            if plan.order_by.is_empty() =>
        {
            *limit = Some(n);
        }
        _ => {}
    }
}

/// Answers a lone `MIN(col)` or `MAX(col)` over a btree-indexed column with the first key of
/// an ordered range lookup (the index holds no NULLs, which MIN and MAX skip anyway).
fn push_min_max(plan: &mut SelectPlan) {
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

fn single_table<'c>(
    catalog: &'c Catalog,
    twj: &sql::TableWithJoins,
    scope: &mut Scope<'c>,
    what: &str,
) -> Result<()> {
    if !twj.joins.is_empty() {
        return Err(Error::unsupported(
            format!("{what} with a join"),
            format!("{what} one table at a time"),
        ));
    }
    from_clause(catalog, std::slice::from_ref(twj), scope).map(|_| ())
}

/// The access path and filter of an UPDATE or DELETE's WHERE over one table.
fn where_single(scope: &Scope<'_>, selection: Option<&sql::Expr>) -> Result<(TableAccess, Filter)> {
    let mut binder = Binder::new(scope);
    let conjuncts = match selection {
        Some(w) => {
            let (x, t) = binder.bind(w, false)?;
            binder.expect_bool(&x, t, "WHERE")?;
            x.conjuncts()
        }
        None => Vec::new(),
    };
    let Some((alias, schema, _)) = scope.tables.first() else {
        return Err(Error::unsupported("a statement without a table", SUPPORTED));
    };
    let mine: Vec<usize> = (0..conjuncts.len()).collect();
    let (path, used) = choose_access(schema, 0, &conjuncts, &mine);
    Ok((
        TableAccess {
            table: (*schema).clone(),
            alias: alias.clone(),
            path,
        },
        split_filter(conjuncts, &used),
    ))
}

fn update(catalog: &Catalog, u: &sql::Update) -> Result<UpdatePlan> {
    if u.from.is_some() || u.returning.is_some() || !u.order_by.is_empty() || u.limit.is_some() {
        return Err(Error::unsupported(
            "UPDATE … FROM, RETURNING, ORDER BY and LIMIT",
            "write UPDATE table SET column = value WHERE …",
        ));
    }
    let mut scope = Scope::default();
    single_table(catalog, &u.table, &mut scope, "UPDATE")?;
    let (access, filter) = where_single(&scope, u.selection.as_ref())?;
    let schema = &access.table;
    let mut binder = Binder::new(&scope);
    let mut assignments: Vec<(usize, Expr)> = Vec::new();
    for a in &u.assignments {
        let sql::AssignmentTarget::ColumnName(n) = &a.target else {
            return Err(Error::unsupported(
                "assigning to a tuple",
                "SET one column at a time",
            ));
        };
        let name = match n.0.last() {
            Some(sql::ObjectNamePart::Identifier(i)) => ident(i),
            _ => object_name(n)?,
        };
        let i = schema.column_index(&name).ok_or_else(|| {
            schema.column(&name).err().unwrap_or(Error::UnknownColumn {
                message: name.clone(),
            })
        })?;
        if i == schema.primary_key {
            return Err(Error::unsupported(
                format!("changing the primary key `{name}`"),
                "a row's id is derived from its key: DELETE the row and INSERT it with the new key",
            ));
        }
        if assignments.iter().any(|(j, _)| *j == i) {
            return Err(Error::Constraint(format!("column `{name}` is set twice")));
        }
        let col = &schema.columns[i];
        let (x, t) = binder.bind(&a.value, false)?;
        let x = match (x, t) {
            (Expr::Literal(v), _) => Expr::Literal(v.coerce_to(col.ty).map_err(|err| {
                Error::TypeMismatch(format!(
                    "SET {name}: {}",
                    err.to_string().trim_start_matches("type mismatch: ")
                ))
            })?),
            (x, t) if t.is_none_or(|t| t == col.ty || (t.is_numeric() && col.ty.is_numeric())) => x,
            (x, t) => {
                return Err(Error::TypeMismatch(format!(
                    "SET {name} = {x}: the column is {}, the value {}",
                    col.ty,
                    type_name(t)
                )));
            }
        };
        assignments.push((i, x));
    }
    Ok(UpdatePlan {
        access,
        filter,
        assignments,
    })
}

fn delete(catalog: &Catalog, d: &sql::Delete) -> Result<DeletePlan> {
    if !d.tables.is_empty() || d.using.is_some() || d.returning.is_some() || d.limit.is_some() {
        return Err(Error::unsupported(
            "multi-table DELETE, USING, RETURNING and LIMIT",
            "write DELETE FROM table WHERE …",
        ));
    }
    let from = match &d.from {
        sql::FromTable::WithFromKeyword(v) | sql::FromTable::WithoutKeyword(v) => v,
    };
    let [twj] = from.as_slice() else {
        return Err(Error::unsupported(
            "DELETE from several tables",
            "delete from one table at a time",
        ));
    };
    let mut scope = Scope::default();
    single_table(catalog, twj, &mut scope, "DELETE")?;
    let (access, filter) = where_single(&scope, d.selection.as_ref())?;
    Ok(DeletePlan { access, filter })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A catalog with `docs` (fulltext body, hash author, btree year, NOT NULL btree score)
    /// and `authors` (hash country).
    pub(crate) fn catalog() -> Catalog {
        let mut c = Catalog::new();
        for text in [
            "CREATE TABLE docs (id BIGINT PRIMARY KEY, author TEXT, year INT, score DOUBLE NOT NULL, body TEXT, note TEXT, at TIMESTAMP)",
            "CREATE INDEX ON docs USING fulltext (body)",
            "CREATE INDEX ON docs USING hash (author)",
            "CREATE INDEX by_year ON docs USING btree (year)",
            "CREATE INDEX ON docs USING btree (score)",
            "CREATE TABLE authors (name TEXT PRIMARY KEY, country TEXT, born INT)",
            "CREATE INDEX ON authors USING hash (country)",
        ] {
            let stmt = parse(text).unwrap().remove(0);
            match plan(&c, &stmt).unwrap() {
                Plan::CreateTable(t) => c.add_table(t).unwrap(),
                Plan::CreateIndex { table, index } => c.add_index(&table, index).unwrap(),
                other => panic!("{other:?}"),
            }
        }
        c
    }

    fn plan_of(sql: &str) -> Result<Plan> {
        plan(&catalog(), &parse(sql)?.remove(0))
    }

    fn select(sql: &str) -> SelectPlan {
        match plan_of(sql).unwrap() {
            Plan::Select(s) => s,
            other => panic!("{other:?}"),
        }
    }

    fn path(sql: &str) -> AccessPath {
        select(sql).tables.remove(0).path
    }

    fn lookup(sql: &str) -> IndexLookup {
        match path(sql) {
            AccessPath::Index(Pushdown::Lookup(l)) => l,
            other => panic!("{sql}: {other:?}"),
        }
    }

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
    fn create_table_and_index() {
        let c = catalog();
        let docs = c.table("docs").unwrap();
        assert_eq!(docs.primary_key, 0);
        assert!(docs.columns[3].not_null);
        assert!(docs.has_index("body", IndexKind::FullText));
        assert_eq!(docs.indexes[2].name, "by_year");
        assert_eq!(docs.indexes[0].name, "docs_body_fulltext");
        // The schema's SQL plans back to the same schema.
        let mut again = Catalog::new();
        for text in docs.to_sql() {
            match plan(&again, &parse(&text).unwrap()[0]).unwrap() {
                Plan::CreateTable(t) => again.add_table(t).unwrap(),
                Plan::CreateIndex { table, index } => again.add_index(&table, index).unwrap(),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(again.table("docs").unwrap(), docs);
    }

    #[test]
    fn bad_ddl_is_refused_with_reasons() {
        let c = Catalog::new();
        let err = |sql: &str| plan(&c, &parse(sql).unwrap()[0]).unwrap_err().to_string();
        assert!(err("CREATE TABLE t (a INT)").contains("exactly one PRIMARY KEY"));
        assert!(err("CREATE TABLE t (a DOUBLE PRIMARY KEY)").contains("cannot be DOUBLE"));
        assert!(err("CREATE TABLE t (a INT PRIMARY KEY, b JSON)").contains("column type JSON"));
        assert!(err("CREATE TABLE t (a INT PRIMARY KEY, a INT)").contains("declared twice"));
        let c = catalog();
        let err = |sql: &str| plan(&c, &parse(sql).unwrap()[0]).unwrap_err().to_string();
        assert!(err("CREATE INDEX ON docs USING gin (body)").contains("index kind"));
        assert!(err("CREATE INDEX ON docs USING fulltext (year)").contains("TEXT column"));
        assert!(err("CREATE INDEX x2 ON docs USING hash (author)").contains("already has"));
        assert!(
            err("CREATE INDEX ON nope USING hash (a)").contains("known tables are authors, docs")
        );
        assert!(err("DROP VIEW docs").contains("not supported"));
        assert!(err("DROP TABLE docs, authors").contains("one DROP TABLE per table"));
        assert!(err("DROP TABLE nope").contains("known tables are authors, docs"));
        assert_eq!(
            plan(&c, &parse("DROP TABLE IF EXISTS nope").unwrap()[0]).unwrap(),
            Plan::DropTable { table: None }
        );
    }

    #[test]
    fn syntax_errors_point_at_the_position() {
        match parse("SELECT *\nFROM docs WHERE year = = 1") {
            Err(Error::Syntax { line, column, .. }) => assert_eq!((line, column), (2, 24)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn insert_checks_and_coerces() {
        let Plan::Insert(p) = plan_of(
            "INSERT INTO docs (id, score, year, at) VALUES (1, 2, -3, '2024-01-02'), (2, 0.5, NULL, NULL)",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(p.rows[0][3], Value::Double(2.0));
        assert_eq!(p.rows[0][2], Value::Int(-3));
        assert!(matches!(p.rows[0][6], Value::Timestamp(_)));
        assert_eq!(p.rows[1][1], Value::Null);
        let err = |sql: &str| plan_of(sql).unwrap_err().to_string();
        assert!(err("INSERT INTO docs (id) VALUES (1)").contains("`score` is NOT NULL"));
        assert!(
            err("INSERT INTO docs (id, score, year) VALUES (1, 1, 'x')").contains("column `year`")
        );
        assert!(
            err("INSERT INTO docs (id, score) VALUES (1, 1), (1, 2)")
                .contains("repeats the primary key")
        );
        assert!(err("INSERT INTO docs (id, nope) VALUES (1, 1)").contains("no column `nope`"));
        assert!(err("INSERT INTO docs (id, score) VALUES (1)").contains("1 values for 2 columns"));
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

    #[test]
    fn update_and_delete() {
        let Plan::Update(u) =
            plan_of("UPDATE docs SET year = year + 1, note = 'x' WHERE author = 'ann'").unwrap()
        else {
            panic!()
        };
        assert_eq!(u.assignments.len(), 2);
        assert!(matches!(u.access.path, AccessPath::Index(_)));
        let err = plan_of("UPDATE docs SET id = 2 WHERE id = 1").unwrap_err();
        assert!(
            err.to_string().contains("DELETE the row and INSERT"),
            "{err}"
        );
        let err = plan_of("UPDATE docs SET year = 'x'").unwrap_err();
        assert!(err.to_string().contains("SET year"), "{err}");
        let Plan::Delete(d) = plan_of("DELETE FROM docs WHERE note = 'x'").unwrap() else {
            panic!()
        };
        assert_eq!(d.access.path, AccessPath::FullScan);
    }

    #[test]
    fn explain_says_what_is_pushed_and_what_leaks() {
        let text = plan_of(
            "EXPLAIN SELECT id FROM docs WHERE year BETWEEN 2000 AND 2010 AND note LIKE 'a%' ORDER BY year",
        )
        .unwrap()
        .explain();
        assert!(text.contains("btree index: 2000 <= year <= 2010"), "{text}");
        assert!(text.contains("filter: note LIKE 'a%'"), "{text}");
        assert!(
            text.contains("re-check pushed predicates: year BETWEEN 2000 AND 2010"),
            "{text}"
        );
        assert!(text.contains("order of column `docs.year`"), "{text}");
        assert!(text.contains("query pattern"), "{text}");
        let text = plan_of("EXPLAIN SELECT id FROM docs WHERE note = 'x'")
            .unwrap()
            .explain();
        assert!(text.contains("FULL SCAN"), "{text}");
        let text = plan_of("EXPLAIN SELECT id FROM docs WHERE MATCH(body, 'a b')")
            .unwrap()
            .explain();
        assert!(text.contains("which tokens co-occur"), "{text}");
        let text = plan_of("EXPLAIN INSERT INTO docs (id, score) VALUES (1, 2)")
            .unwrap()
            .explain();
        assert!(
            text.contains("equality pattern of column `docs.author`"),
            "{text}"
        );
    }
}
