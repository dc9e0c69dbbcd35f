//! From SQL text to [`Plan`]s: parsing, name resolution, type checking, and the split of
//! each WHERE into index lookups (pushed to the index provider) and a residual (run on the
//! client after decryption).
//!
//! The modules, in the order a statement goes through them:
//! - `names`: identifiers, object names and column type names read from the AST.
//! - `ddl`: CREATE TABLE, DROP TABLE and CREATE INDEX.
//! - `scope`: FROM resolved into the tables in scope, and column names resolved against it.
//! - `bind`: expressions bound to typed [`Expr`](crate::expr::Expr)s, with type checks.
//! - `functions`: aggregates, MATCH and the scalar functions.
//! - `select`: SELECT, clause by clause.
//! - `pushdown`: which predicates an index answers exactly, as index lookups.
//! - `access`: the access path of each table, and the split of WHERE into the pushed
//!   re-check and the client's residual.
//! - `limit`: LIMIT, ORDER BY … LIMIT, MIN and MAX pushed into index lookups.
//! - `dml`: INSERT, UPDATE and DELETE.
//! - `show`: SHOW TABLES and DESCRIBE, recognized for whoever holds the catalog to answer.

mod access;
mod bind;
mod ddl;
mod dml;
mod functions;
mod limit;
mod names;
mod pushdown;
mod scope;
mod select;
mod show;
#[cfg(test)]
mod testing;

use sqlparser::ast as sql;
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::{Parser, ParserError};

use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::schema::Catalog;
use ddl::{create_index, create_table, drop_table};
use dml::{delete, insert, update};
use select::select;
pub use show::{CatalogQuery, catalog_query};

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
        sql::Statement::ShowTables { .. } | sql::Statement::ExplainTable { .. } => {
            Err(Error::unsupported(
                "SHOW TABLES and DESCRIBE as planned statements",
                "they read only the catalog: `wwt sql` prints them, and a program calls the \
                 client's `tables()` or `describe(name)` (see `catalog_query`)",
            ))
        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::testing::plan_of;
    use super::*;

    #[test]
    fn syntax_errors_point_at_the_position() {
        match parse("SELECT *\nFROM docs WHERE year = = 1") {
            Err(Error::Syntax { line, column, .. }) => assert_eq!((line, column), (2, 24)),
            other => panic!("{other:?}"),
        }
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
