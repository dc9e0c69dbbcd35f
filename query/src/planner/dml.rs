//! Planning of the statements that write rows: INSERT (values checked and coerced), and
//! UPDATE and DELETE over one table with their WHERE split like a SELECT's.

use std::collections::HashSet;

use sqlparser::ast as sql;

use super::SUPPORTED;
use super::access::{choose_access, split_filter};
use super::bind::{Binder, type_name};
use super::names::{ident, object_name};
use super::scope::{Scope, from_clause};
use crate::codec::encode_key;
use crate::error::{Error, Result};
use crate::expr::Expr;
use crate::plan::{DeletePlan, Filter, InsertPlan, TableAccess, UpdatePlan};
use crate::schema::Catalog;
use crate::value::Value;

pub(super) fn insert(catalog: &Catalog, ins: &sql::Insert) -> Result<InsertPlan> {
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

pub(super) fn update(catalog: &Catalog, u: &sql::Update) -> Result<UpdatePlan> {
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

pub(super) fn delete(catalog: &Catalog, d: &sql::Delete) -> Result<DeletePlan> {
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
    use crate::plan::{AccessPath, Plan};
    use crate::planner::testing::plan_of;
    use crate::value::Value;

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
}
