//! Full-text search through the whole client against SQLite FTS5: documents in mixed case,
//! with accents, non-Latin scripts, punctuation and emoji go through the client's tokens and
//! the index provider's full-text index; each MATCH must return exactly FTS5's rows.
#![allow(clippy::unwrap_used, missing_docs)]

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_matches_agree_with_fts5() {
    let seed = wwt_tests::seed(SEED);
    let dir = tempfile::tempdir().unwrap();
    let shape = Shape {
        providers: 6,
        heartbeat_ms: 200,
        transport: Transport::Memory,
        seed: Some(seed),
        ..Shape::default()
    };
    let net = LocalNet::start(dir.path(), shape).await.unwrap();
    let config = ClientConfig::new(net.endpoints.tracker_list().unwrap());
    let client = Client::connect(&Keystore::generate(), net.connector(), config)
        .await
        .unwrap();
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
