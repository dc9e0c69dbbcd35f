//! The evaluator against SQLite: random tables, a few hundred generated SELECTs, the same
//! answers. Each query runs on two in-memory databases, one with indexes (so the planner
//! pushes lookups) and one without (full scans), and on SQLite.
#![allow(clippy::unwrap_used, missing_docs)]

use proptest::prelude::*;
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
    let conn = sqlite();
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
    let mut runner = runner(50, file!(), None);
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
    let mut runner = runner(40, file!(), None);
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
    let mut runner = runner(50, file!(), None);
    let strategy = (data(), proptest::collection::vec(change(), 1..4));
    runner
        .run(&strategy, |(data, changes)| {
            let conn = sqlite();
            let mut db = MemoryDb::new();
            db.execute(SCHEMA).unwrap();
            db.execute(INDEXES).unwrap();
            for ins in inserts(&data) {
                conn.execute(&ins, []).unwrap();
                db.execute(&ins).unwrap();
            }
            for sql in &changes {
                let n = conn
                    .execute(sql, [])
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                let done = db.execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                let ours = match done.as_slice() {
                    [Outcome::Updated(n) | Outcome::Deleted(n)] => *n,
                    other => panic!("{other:?}"),
                };
                prop_assert_eq!(n, ours, "{}", sql);
                check(
                    &sqlite_rows(&conn, ALL_T),
                    &self::ours(&mut db, ALL_T),
                    sql,
                    "after the change",
                )?;
            }
            Ok(())
        })
        .unwrap();
}

/// Statements a user writes, each once, with wwt's spelling and SQLite's where they differ
/// (SQLite has no `TIMESTAMP '…'` literal and compares timestamps as their canonical text).
/// The first ones are the regressions of bugs the generated queries found.
#[test]
fn edge_statements_agree_with_sqlite() {
    let rows = "INSERT INTO t (id, b, big, y, ts, s) VALUES
        (1, 0, -9223372036854775808, -9.223372036854775808e18, '1969-12-31 23:59:59.999999', 'CAFÉ'),
        (2, 0, 9223372036854775807, 9007199254740992.0, '2000-02-29 12:00:00', 'café'),
        (3, 0, 9007199254740993, 9007199254740994.0, '0000-01-01 00:00:00', 'it''s \"x\"'),
        (4, 0, -9007199254740993, -0.0, NULL, 'ΟΔΟΣ')";
    let conn = sqlite();
    let mut indexed = MemoryDb::new();
    let mut plain = MemoryDb::new();
    indexed.execute(SCHEMA).unwrap();
    indexed.execute(INDEXES).unwrap();
    plain.execute(SCHEMA).unwrap();
    for db in [&mut indexed, &mut plain] {
        db.execute(rows).unwrap();
    }
    conn.execute(rows, []).unwrap();
    let same_sql = |s: &'static str| (s, s);
    for (ours_sql, sqlite_sql) in [
        // A DOUBLE column against an integer literal no double equals: the btree lookup used
        // the rounded literal (-2^63 + 1 → -2^63) and missed the row equal to the rounding.
        same_sql("SELECT id FROM t WHERE y < -9223372036854775807 ORDER BY id"),
        same_sql("SELECT id FROM t WHERE y < 9007199254740993 ORDER BY id"),
        same_sql("SELECT y FROM t WHERE y >= 9007199254740993 ORDER BY y LIMIT 1"),
        same_sql("SELECT id FROM t WHERE y IN (9007199254740993, 9007199254740994) ORDER BY id"),
        // -2^63 as a double is i64::MIN: the lookup dropped it as "no BIGINT".
        same_sql("SELECT id FROM t WHERE big IN (-9223372036854775809, 1) ORDER BY id"),
        same_sql("SELECT id FROM t WHERE big = -9.2233720368547758e18"),
        same_sql(
            "SELECT id FROM t WHERE big >= -9223372036854775808 AND big < -9007199254740992 ORDER BY id",
        ),
        same_sql("SELECT id FROM t WHERE big > 9.2233720368547758e18"),
        same_sql("SELECT id FROM t WHERE big = y ORDER BY id"),
        same_sql("SELECT max(big), min(big), min(y), max(y) FROM t"),
        // AVG of integers summed as doubles: i64::MIN + i64::MAX came out 0, not -1.
        same_sql("SELECT avg(big), avg(DISTINCT big), avg(b) FROM t"),
        // Case and Unicode.
        same_sql("SELECT id FROM t WHERE lower(s) = 'café' ORDER BY id"),
        same_sql("SELECT id FROM t WHERE upper(s) LIKE 'CAF%' AND s LIKE 'c%' ORDER BY id"),
        same_sql("SELECT lower(s), upper(s), length(s) FROM t ORDER BY id"),
        same_sql("SELECT id FROM T WHERE S LIKE '%\"x\"' OR s = 'it''s \"x\"' ORDER BY ID"),
        // Timestamps: the typed literal, other spellings, before the epoch and year 0.
        (
            "SELECT id FROM t WHERE ts < TIMESTAMP '1970-01-01 00:00:00' ORDER BY id",
            "SELECT id FROM t WHERE ts < '1970-01-01 00:00:00' ORDER BY id",
        ),
        (
            "SELECT id FROM t WHERE ts = '2000-02-29T12:00:00Z'",
            "SELECT id FROM t WHERE ts = '2000-02-29 12:00:00'",
        ),
        (
            "SELECT id FROM t WHERE ts BETWEEN '0000-01-01' AND '1969-12-31 23:59:59.999999' ORDER BY id",
            "SELECT id FROM t WHERE ts BETWEEN '0000-01-01 00:00:00' AND '1969-12-31 23:59:59.999999' ORDER BY id",
        ),
        same_sql("SELECT ts FROM t WHERE ts IS NOT NULL ORDER BY ts DESC"),
    ] {
        let expected = sqlite_rows(&conn, sqlite_sql);
        check(
            &expected,
            &ours(&mut indexed, ours_sql),
            ours_sql,
            "indexed",
        )
        .unwrap();
        check(
            &expected,
            &ours(&mut plain, ours_sql),
            ours_sql,
            "unindexed",
        )
        .unwrap();
    }
    // An integral double past 2^53 goes into a BIGINT column exactly, as in SQLite.
    let ins = "INSERT INTO t (id, b, big) VALUES (5, 0, 9.2e18)";
    conn.execute(ins, []).unwrap();
    indexed.execute(ins).unwrap();
    check(
        &sqlite_rows(&conn, ALL_T),
        &ours(&mut indexed, ALL_T),
        ins,
        "indexed",
    )
    .unwrap();
    // SUM of integers past i64 is an error in both.
    let sum = "SELECT sum(big) FROM t WHERE big > 0";
    assert!(conn.query_row(sum, [], |r| r.get::<_, i64>(0)).is_err());
    let err = indexed.execute(sum).unwrap_err();
    assert!(err.to_string().contains("integer overflow"), "{err}");
    // Where wwt differs on purpose: integer overflow is an error (SQLite goes to REAL).
    let err = indexed
        .execute("SELECT big + 1 FROM t WHERE id = 2")
        .unwrap_err();
    assert!(err.to_string().contains("integer overflow"), "{err}");
}

/// Full-text queries answered through the index equal the client-side evaluation.
#[test]
fn full_text_lookups_equal_client_side_matching() {
    let vocab = ["rust", "tokio", "sled", "java", "c", "go"];
    let mut runner = runner(40, file!(), None);
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
