//! Fixtures of the planner's unit tests: a catalog of two indexed tables and shorthands
//! that plan a statement against it.

#![allow(clippy::unwrap_used)]

use super::{parse, plan};
use crate::error::Result;
use crate::plan::{AccessPath, IndexLookup, Plan, Pushdown, SelectPlan};
use crate::schema::Catalog;

/// A catalog with `docs` (fulltext body, hash author, btree year, NOT NULL btree score)
/// and `authors` (hash country).
pub(super) fn catalog() -> Catalog {
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

pub(super) fn plan_of(sql: &str) -> Result<Plan> {
    plan(&catalog(), &parse(sql)?.remove(0))
}

pub(super) fn select(sql: &str) -> SelectPlan {
    match plan_of(sql).unwrap() {
        Plan::Select(s) => s,
        other => panic!("{other:?}"),
    }
}

pub(super) fn path(sql: &str) -> AccessPath {
    select(sql).tables.remove(0).path
}

pub(super) fn lookup(sql: &str) -> IndexLookup {
    match path(sql) {
        AccessPath::Index(Pushdown::Lookup(l)) => l,
        other => panic!("{sql}: {other:?}"),
    }
}
