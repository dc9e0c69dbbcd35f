//! Full-text MATCH against SQLite FTS5, not against a model built on wwt's own tokenizer:
//! documents in mixed case, with accents, non-Latin scripts, punctuation and emoji; queries
//! with AND, OR and NOT in each spelling wwt takes. The evaluator with a full-text index
//! (the lookup path) and without (client-side matching) must return exactly FTS5's rows.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use wwt_query::{MemoryDb, Value};

#[path = "support/ftgen.rs"]
mod ftgen;
#[path = "support/sqlgen.rs"]
mod sqlgen;
use ftgen::*;

fn ids(db: &mut MemoryDb, sql: &str) -> Vec<i64> {
    sqlgen::result_rows(sql, db.execute(sql))
        .into_iter()
        .map(|r| match r.as_slice() {
            [Value::Int(i)] => *i,
            other => panic!("{sql}: {other:?}"),
        })
        .collect()
}

/// Two databases holding `docs` in `d (id, body)`: one with a full-text index on `body`.
fn databases(docs: &[String]) -> (MemoryDb, MemoryDb) {
    let mut indexed = MemoryDb::new();
    indexed
        .execute("CREATE TABLE d (id BIGINT PRIMARY KEY, body TEXT); CREATE INDEX ON d USING fulltext (body)")
        .unwrap();
    let mut plain = MemoryDb::new();
    plain
        .execute("CREATE TABLE d (id BIGINT PRIMARY KEY, body TEXT)")
        .unwrap();
    for (i, d) in docs.iter().enumerate() {
        let ins = format!("INSERT INTO d VALUES ({i}, {})", sqlgen::quote(d));
        indexed.execute(&ins).unwrap();
        plain.execute(&ins).unwrap();
    }
    (indexed, plain)
}

#[test]
fn matches_agree_with_fts5() {
    let (queries, hits) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let mut runner = sqlgen::runner(64, file!(), None);
    let strategy = (
        proptest::collection::vec(doc(), 0..24),
        proptest::collection::vec(ft_query(), 8),
    );
    runner
        .run(&strategy, |(docs, cases)| {
            let conn = fts5(&docs);
            let (mut indexed, mut plain) = databases(&docs);
            for q in &cases {
                let want = fts5_ids(&conn, &q.fts5);
                let sql = format!(
                    "SELECT id FROM d WHERE MATCH(body, {}) ORDER BY id",
                    sqlgen::quote(&q.wwt)
                );
                for (which, db) in [("indexed", &mut indexed), ("unindexed", &mut plain)] {
                    let got = ids(db, &sql);
                    prop_assert_eq!(
                        &got,
                        &want,
                        "{} differs from FTS5 `{}` on\n  {}\ndocuments: {:?}",
                        which,
                        q.fts5,
                        sql,
                        docs
                    );
                }
                queries.fetch_add(1, Ordering::Relaxed);
                if !want.is_empty() {
                    hits.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        })
        .unwrap();
    // The comparison means something only if queries do match rows.
    let (queries, hits) = (queries.into_inner(), hits.into_inner());
    assert!(hits * 5 >= queries, "{hits} of {queries} queries matched");
}

#[test]
fn tokenizers_agree_on_the_vocabulary_and_differ_only_where_documented() {
    let mut texts: Vec<String> = Vec::new();
    for w in VOCAB {
        texts.push(w.to_string());
        texts.push(cased(w, u64::MAX));
    }
    texts.extend(DIFFERENCES.iter().map(|(t, _, _)| t.to_string()));
    let conn = fts5(&texts);
    for (i, w) in VOCAB.iter().enumerate() {
        for j in [2 * i, 2 * i + 1] {
            assert_eq!(
                wwt_query::tokenize(&texts[j]),
                [*w],
                "wwt on {:?}",
                texts[j]
            );
            assert_eq!(fts5_tokens(&conn, j as i64), [*w], "FTS5 on {:?}", texts[j]);
        }
    }
    for (k, (text, ours, theirs)) in DIFFERENCES.iter().enumerate() {
        let rowid = (2 * VOCAB.len() + k) as i64;
        assert_eq!(wwt_query::tokenize(text), *ours, "wwt on {text:?}");
        assert_eq!(fts5_tokens(&conn, rowid), *theirs, "FTS5 on {text:?}");
    }
}

#[test]
fn a_user_finds_words_whatever_their_case() {
    let docs: Vec<String> = [
        "Café au lait, CRÈME brûlée!",
        "ПРИВЕТ, мир — Ёлка",
        "Ἀθήνα (Αθήνα) — ΕΛΛΆΔΑ",
        "straße/STRASSE",
        "rust-tokio; sled's",
    ]
    .map(String::from)
    .to_vec();
    let (mut indexed, mut plain) = databases(&docs);
    let conn = fts5(&docs);
    for (q, fts5_q, want) in [
        ("café CRÈME", "\"café\" AND \"CRÈME\"", vec![0]),
        ("привет ЁЛКА", "\"привет\" AND \"ЁЛКА\"", vec![1]),
        ("ελλάδα", "\"ελλάδα\"", vec![2]),
        ("STRASSE -straße", "\"STRASSE\" NOT \"straße\"", vec![]),
        ("Straße OR crème", "\"Straße\" OR \"crème\"", vec![0, 3]),
        ("TOKIO NOT java", "\"TOKIO\" NOT \"java\"", vec![4]),
    ] {
        let sql = format!("SELECT id FROM d WHERE MATCH(body, '{q}') ORDER BY id");
        assert_eq!(ids(&mut indexed, &sql), want, "{q}");
        assert_eq!(ids(&mut plain, &sql), want, "{q}");
        assert_eq!(fts5_ids(&conn, fts5_q), want, "FTS5 {fts5_q}");
    }
}
