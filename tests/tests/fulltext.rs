//! Full-text search through the whole client against SQLite FTS5: documents in mixed case,
//! with accents, non-Latin scripts, punctuation and emoji go through the client's tokens and
//! the index provider's full-text index; each MATCH must return exactly FTS5's rows. A match of
//! more rows than one index answer holds, beside other predicates, too (in memory and over
//! loopback gRPC), streamed or not.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashSet;
use std::time::Instant;

use proptest::strategy::{Strategy, ValueTree};
use wwt_client::db::{Client, ClientConfig};
use wwt_devnet::{LocalNet, Shape, Transport};
use wwt_engine::Keystore;
use wwt_query::Value;

#[path = "../../query/tests/support/ftgen.rs"]
mod ftgen;
#[path = "../../query/tests/support/sqlgen.rs"]
mod sqlgen;
use ftgen::*;

/// The seed these tests run with unless `WWT_TEST_SEED` replays another.
const SEED: u64 = 0xf75_2026;

/// Six providers on `transport`, a client of a fresh owner, and the seed of both.
async fn network(transport: Transport) -> (tempfile::TempDir, LocalNet, Client, u64) {
    let seed = wwt_tests::seed(SEED);
    let dir = tempfile::tempdir().unwrap();
    let shape = Shape {
        providers: 6,
        heartbeat_ms: 200,
        transport,
        seed: Some(seed),
        ..Shape::default()
    };
    let net = LocalNet::start(dir.path(), shape).await.unwrap();
    let config = ClientConfig::new(net.endpoints.tracker_list().unwrap());
    let client = Client::connect(&Keystore::generate(), net.connector(), config)
        .await
        .unwrap();
    (dir, net, client, seed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_matches_agree_with_fts5() {
    let (_dir, net, client, seed) = network(Transport::Memory).await;
    client
        .execute("CREATE TABLE d (id BIGINT PRIMARY KEY, body TEXT); CREATE INDEX ON d USING fulltext (body)")
        .await
        .unwrap();
    let strategy = (
        proptest::collection::vec(doc(), 4..24),
        proptest::collection::vec(ft_query(), 10),
    );
    let mut runner = sqlgen::fixed_runner(seed);
    let (mut compared, mut hits) = (0, 0);
    for case in 0..4 {
        let (docs, queries) = strategy.new_tree(&mut runner).unwrap().current();
        let conn = fts5(&docs);
        client.execute("DELETE FROM d").await.unwrap();
        let rows: Vec<String> = docs
            .iter()
            .enumerate()
            .map(|(i, d)| format!("({i}, {})", sqlgen::quote(d)))
            .collect();
        client
            .execute(&format!("INSERT INTO d VALUES {}", rows.join(", ")))
            .await
            .unwrap();
        for q in &queries {
            let want = fts5_ids(&conn, &q.fts5);
            let sql = format!(
                "SELECT id FROM d WHERE MATCH(body, {}) ORDER BY id",
                sqlgen::quote(&q.wwt)
            );
            let got: Vec<i64> = sqlgen::result_rows(&sql, client.execute(&sql).await)
                .into_iter()
                .map(|r| match r.as_slice() {
                    [Value::Int(i)] => *i,
                    other => panic!("{sql}: {other:?}"),
                })
                .collect();
            assert_eq!(
                got, want,
                "case {case}: wwt differs from FTS5 `{}` on\n  {sql}\ndocuments: {docs:?}",
                q.fts5
            );
            compared += 1;
            hits += usize::from(!want.is_empty());
        }
    }
    // The comparison means something only if queries do match rows.
    assert!(
        hits * 10 >= compared,
        "{hits} of {compared} queries matched"
    );
    println!("{compared} full-text queries agree with FTS5");
    net.shutdown().await.unwrap();
}

/// Rows of the `pkgs` table, more of them matching `library` than one index answer holds.
const PKGS: i64 = wwt_index::MAX_LIMIT as i64 * 6 / 5;
const LANGS: [&str; 5] = ["rust", "python", "c", "go", "java"];

/// Package `i`: its name, summary and installed size; seven in eight summaries say library.
fn package(i: i64) -> (String, String, i64) {
    let kind = if i % 8 == 0 { "tool" } else { "Library" };
    let summary = format!(
        "{kind} for {} {}",
        LANGS[(i % 5) as usize],
        ["fast", "small", "secure"][(i % 3) as usize]
    );
    (format!("pkg{i:05}"), summary, (i * 37) % 1000)
}

/// `sql`'s rows from [`Client::query`], read a batch at a time.
async fn streamed(client: &Client, sql: &str) -> Vec<Vec<Value>> {
    let mut stream = client
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut out = Vec::new();
    while let Some(batch) = stream
        .next_batch()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    {
        out.extend(batch);
    }
    out
}

fn sorted(mut rows: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
    rows.sort_by_key(|r| format!("{r:?}"));
    rows
}

/// `MATCH` over more than `MAX_LIMIT` rows, alone and beside range and other predicates,
/// returns what SQLite (FTS5 joined to the table) returns, through `execute` and through the
/// stream; a streamed match without LIMIT returns each row once.
async fn a_large_match_agrees_with_sqlite(transport: Transport) {
    let (_dir, net, client, _) = network(transport).await;
    client
        .execute(
            "CREATE TABLE pkgs (id BIGINT PRIMARY KEY, name TEXT, summary TEXT, installed_size BIGINT);
             CREATE INDEX ON pkgs USING fulltext (summary);
             CREATE INDEX ON pkgs USING btree (installed_size)",
        )
        .await
        .unwrap();
    let packages: Vec<(String, String, i64)> = (0..PKGS).map(package).collect();
    let summaries: Vec<String> = packages.iter().map(|p| p.1.clone()).collect();
    let conn = fts5(&summaries);
    conn.execute_batch(
        "CREATE TABLE pkgs (id INTEGER PRIMARY KEY, name TEXT, summary TEXT, installed_size INTEGER)",
    )
    .unwrap();
    for (start, chunk) in (0i64..).step_by(2_000).zip(packages.chunks(2_000)) {
        let values: Vec<String> = (start..)
            .zip(chunk)
            .map(|(i, (name, summary, size))| {
                format!("({i}, '{name}', {}, {size})", sqlgen::quote(summary))
            })
            .collect();
        let insert = format!("INSERT INTO pkgs VALUES {}", values.join(", "));
        conn.execute(&insert, []).unwrap();
        client.execute(&insert).await.unwrap();
    }
    let library = fts5_ids(&conn, "library");
    assert!(library.len() > wwt_index::MAX_LIMIT, "{}", library.len());

    // (wwt, SQLite over FTS5's table `f`): compared as written, or sorted without ORDER BY.
    let cases = [
        (
            "SELECT name FROM pkgs WHERE MATCH(summary, 'library') AND installed_size < 100",
            "SELECT name FROM pkgs WHERE id IN (SELECT rowid FROM f WHERE f MATCH 'library') AND installed_size < 100",
        ),
        (
            "SELECT name, installed_size FROM pkgs WHERE MATCH(summary, 'library') AND installed_size BETWEEN 200 AND 260 ORDER BY installed_size DESC, name",
            "SELECT name, installed_size FROM pkgs WHERE id IN (SELECT rowid FROM f WHERE f MATCH 'library') AND installed_size BETWEEN 200 AND 260 ORDER BY installed_size DESC, name",
        ),
        (
            "SELECT id FROM pkgs WHERE MATCH(summary, 'library -python') AND (name LIKE '%7' OR installed_size >= 990)",
            "SELECT id FROM pkgs WHERE id IN (SELECT rowid FROM f WHERE f MATCH 'library NOT python') AND (name LIKE '%7' OR installed_size >= 990)",
        ),
        (
            "SELECT count(*), min(name), max(installed_size) FROM pkgs WHERE MATCH(summary, 'library OR secure')",
            "SELECT count(*), min(name), max(installed_size) FROM pkgs WHERE id IN (SELECT rowid FROM f WHERE f MATCH 'library OR secure')",
        ),
    ];
    for (sql, oracle) in cases {
        let want = sqlgen::sqlite_rows(&conn, oracle);
        assert!(!want.is_empty(), "{oracle}");
        let started = Instant::now();
        let got = sqlgen::result_rows(sql, client.execute(sql).await);
        println!(
            "{sql}: {} rows in {:.2?} ({transport:?})",
            got.len(),
            started.elapsed()
        );
        if sql.contains("ORDER BY") {
            assert_eq!(got, want, "{sql}");
        } else {
            assert_eq!(sorted(got), sorted(want.clone()), "{sql}");
            let got = streamed(&client, sql).await;
            assert_eq!(sorted(got), sorted(want), "{sql} (streamed)");
        }
    }

    // Streamed without LIMIT: every matching row, each once.
    let sql = "SELECT id FROM pkgs WHERE MATCH(summary, 'library')";
    let started = Instant::now();
    let got: Vec<i64> = streamed(&client, sql)
        .await
        .into_iter()
        .map(|r| match r.as_slice() {
            [Value::Int(i)] => *i,
            other => panic!("{sql}: {other:?}"),
        })
        .collect();
    println!(
        "{sql}: {} rows streamed in {:.2?} ({transport:?})",
        got.len(),
        started.elapsed()
    );
    assert_eq!(
        got.iter().collect::<HashSet<_>>().len(),
        got.len(),
        "a row twice"
    );
    let mut got = got;
    got.sort_unstable();
    assert_eq!(got, library);
    // With LIMIT, the best-ranked rows as before: as many as asked, each a match.
    let sql = "SELECT id FROM pkgs WHERE MATCH(summary, 'secure library') LIMIT 25";
    let got = streamed(&client, sql).await;
    let secure: HashSet<i64> = fts5_ids(&conn, "secure library").into_iter().collect();
    assert_eq!(got.len(), 25, "{sql}");
    assert!(
        got.iter()
            .all(|r| matches!(r.as_slice(), [Value::Int(i)] if secure.contains(i))),
        "{sql}: {got:?}"
    );
    net.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_match_agrees_with_sqlite_in_memory() {
    a_large_match_agrees_with_sqlite(Transport::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_match_agrees_with_sqlite_over_grpc() {
    a_large_match_agrees_with_sqlite(Transport::Grpc).await;
}
