//! The tables a statement reads: FROM resolved into a scope, where each table's columns
//! sit in the combined input row, and column names resolved against it.

use sqlparser::ast as sql;

use super::names::{at, ident, object_name};
use crate::error::{Error, Result};
use crate::expr::Expr;
use crate::schema::{Catalog, Column, TableSchema};
use crate::value::ColumnType;

/// The tables in scope and where their columns sit in the input row.
#[derive(Default)]
pub(super) struct Scope<'a> {
    pub(super) tables: Vec<(String, &'a TableSchema, usize)>,
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
    pub(super) fn table_of(&self, index: usize) -> Option<usize> {
        self.tables
            .iter()
            .position(|(_, s, o)| (*o..o + s.columns.len()).contains(&index))
    }

    pub(super) fn resolve(&self, parts: &[sql::Ident]) -> Result<(Expr, ColumnType)> {
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

/// Resolves FROM into a scope; returns the join's ON condition when there is one.
pub(super) fn from_clause<'c>(
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

/// The schema column at a position of the scope's row.
pub(super) fn column_at<'a>(scope: &'a Scope<'_>, index: usize) -> Option<&'a Column> {
    let t = scope.table_of(index)?;
    let (_, schema, offset) = scope.tables.get(t)?;
    schema.columns.get(index - offset)
}
