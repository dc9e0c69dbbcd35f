//! The evaluator against SQLite: random tables, a few hundred generated SELECTs, the same
//! answers. Each query runs on two in-memory databases, one with indexes (so the planner
//! pushes lookups) and one without (full scans), and on SQLite.
#![allow(clippy::unwrap_used, missing_docs)]

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use wwt_query::{MemoryDb, Outcome, Plan, RowSource, SelectStream, Value, access_keys, streams};

#[path = "support/sqlgen.rs"]
mod sqlgen;
use sqlgen::*;

fn ours(db: &mut MemoryDb, sql: &str) -> Vec<Vec<Value>> {
    result_rows(sql, db.execute(sql))
}

/// `sql` run as a stream fed three rows at a time, stopping once LIMIT is reached; `None`
/// for a SELECT that does not stream (a join, an aggregate, ORDER BY).
fn streamed(db: &MemoryDb, sql: &str) -> Option<Vec<Vec<Value>>> {
    let stmt = wwt_query::parse(sql).unwrap().pop().unwrap();
    let Plan::Select(plan) = wwt_query::plan(db.catalog(), &stmt).unwrap() else {
        panic!("{sql}: not a SELECT");
    };
    if !streams(&plan) {
        return None;
    }
    let mut stream = SelectStream::new(plan).unwrap();
    let table = stream.access().table.clone();
    let keys = access_keys(db, stream.access()).unwrap();
    let mut out = Vec::new();
    for chunk in keys.chunks(3) {
        if stream.finished() {
            break;
        }
        out.extend(stream.push(db.fetch(&table, chunk).unwrap()).unwrap());
    }
    Some(
        out.into_iter()
            .map(|r| r.into_iter().map(normalize).collect())
            .collect(),
    )
}

/// SQLite and an indexed in-memory database, both holding `data`.
fn loaded(data: &Data) -> (rusqlite::Connection, MemoryDb) {
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    conn.execute_batch(SQLITE_SCHEMA).unwrap();
    let mut indexed = MemoryDb::new();
    indexed.execute(SCHEMA).unwrap();
    indexed.execute(INDEXES).unwrap();
    for ins in inserts(data) {
        conn.execute(&ins, []).unwrap();
        indexed.execute(&ins).unwrap();
    }
    (conn, indexed)
}

#[test]
fn evaluator_agrees_with_sqlite() {
    let mut runner = TestRunner::new(Config {
        cases: 50,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (data(), proptest::collection::vec(query(), 12));
    runner
        .run(&strategy, |(data, queries)| {
            let (conn, mut indexed) = loaded(&data);
            let mut plain = MemoryDb::new();
            plain.execute(SCHEMA).unwrap();
            for ins in inserts(&data) {
                plain.execute(&ins).unwrap();
            }
            for sql in &queries {
                let expected = sqlite_rows(&conn, sql);
                check(&expected, &ours(&mut indexed, sql), sql, "indexed")?;
                check(&expected, &ours(&mut plain, sql), sql, "unindexed")?;
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn unordered_selects_stream_like_sqlite() {
    let mut runner = TestRunner::new(Config {
        cases: 40,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (data(), proptest::collection::vec(unordered_query(), 8));
    runner
        .run(&strategy, |(data, queries)| {
            let (conn, mut indexed) = loaded(&data);
            for (sql, all, window) in &queries {
                let all = sqlite_rows(&conn, all);
                check_unordered(&all, &ours(&mut indexed, sql), *window, sql, "indexed")?;
                let rows = streamed(&indexed, sql).expect("a SELECT without ORDER BY streams");
                check_unordered(&all, &rows, *window, sql, "streamed")?;
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn updates_and_deletes_agree_with_sqlite() {
    let mut runner = TestRunner::new(Config {
        cases: 50,
        failure_persistence: None,
        ..Config::default()
    });
    let change = prop_oneof![
        (predicate(""), -3i64..4)
            .prop_map(|(w, k)| format!("UPDATE t SET a = b + {k}, s = 'up' WHERE {w}")),
        predicate("").prop_map(|w| format!("UPDATE t SET x = NULL, f = NOT f WHERE {w}")),
        predicate("").prop_map(|w| format!("DELETE FROM t WHERE {w}")),
    ];
    let strategy = (data(), proptest::collection::vec(change, 1..4));
    runner
        .run(&strategy, |(data, changes)| {
            let conn = rusqlite::Connection::open_in_memory().unwrap();
            conn.execute_batch(SQLITE_SCHEMA).unwrap();
            let mut db = MemoryDb::new();
            db.execute(SCHEMA).unwrap();
            db.execute(INDEXES).unwrap();
            for ins in inserts(&data) {
                conn.execute(&ins, []).unwrap();
                db.execute(&ins).unwrap();
            }
            for sql in &changes {
                let n = conn.execute(sql, []).unwrap();
                let done = db.execute(sql).unwrap();
                let ours = match done.as_slice() {
                    [Outcome::Updated(n) | Outcome::Deleted(n)] => *n,
                    other => panic!("{other:?}"),
                };
                prop_assert_eq!(n, ours, "{}", sql);
                let all = "SELECT id, a, b, x, s, f FROM t ORDER BY id";
                check(
                    &sqlite_rows(&conn, all),
                    &self::ours(&mut db, all),
                    sql,
                    "after the change",
                )?;
            }
            Ok(())
        })
        .unwrap();
}

/// Full-text queries answered through the index equal the client-side evaluation.
#[test]
fn full_text_lookups_equal_client_side_matching() {
    let vocab = ["rust", "tokio", "sled", "java", "c", "go"];
    let mut runner = TestRunner::new(Config {
        cases: 40,
        failure_persistence: None,
        ..Config::default()
    });
    let doc = prop::sample::subsequence(vocab.to_vec(), 0..4).prop_map(|w| w.join(" "));
    let term = prop::sample::select(vocab.to_vec()).prop_map(String::from);
    let q = term.prop_recursive(2, 6, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} OR {b})")),
            (inner.clone(), inner).prop_map(|(a, b)| format!("({a} -{b})")),
        ]
    });
    let strategy = (proptest::collection::vec(doc, 0..20), q, 0u32..5);
    runner
        .run(&strategy, |(docs, q, n)| {
            let mut indexed = MemoryDb::new();
            indexed
                .execute("CREATE TABLE d (id INT PRIMARY KEY, body TEXT); CREATE INDEX ON d USING fulltext (body)")
                .unwrap();
            let mut plain = MemoryDb::new();
            plain.execute("CREATE TABLE d (id INT PRIMARY KEY, body TEXT)").unwrap();
            for (i, d) in docs.iter().enumerate() {
                let ins = format!("INSERT INTO d VALUES ({i}, '{d}')");
                indexed.execute(&ins).unwrap();
                plain.execute(&ins).unwrap();
            }
            let sql = format!("SELECT id FROM d WHERE MATCH(body, '{q}') ORDER BY id");
            prop_assert_eq!(ours(&mut indexed, &sql), ours(&mut plain, &sql));
            // A pushed LIMIT returns that many of the matching rows.
            let all = ours(&mut plain, &sql);
            let limited = ours(&mut indexed, &format!("SELECT id FROM d WHERE MATCH(body, '{q}') LIMIT {n}"));
            prop_assert_eq!(limited.len(), all.len().min(n as usize));
            prop_assert!(limited.iter().all(|r| all.contains(r)));
            Ok(())
        })
        .unwrap();
}
