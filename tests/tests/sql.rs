//! SQL end to end: the client over a local network (in memory and over loopback gRPC) against
//! SQLite on the same plaintext data, the catalog recovered on a "new machine", row history,
//! failed statements leaving nothing visible, no plaintext in any file the network wrote, and
//! one client shared by spawned tasks.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use wwt_client::db::{Client, ClientConfig, ClientError};
use wwt_devnet::{LocalNet, Shape, Transport, scan};
use wwt_engine::Keystore;
use wwt_query::{Outcome, Value};

#[path = "../../query/tests/support/sqlgen.rs"]
mod sqlgen;
use sqlgen::*;

async fn network(transport: Transport) -> (tempfile::TempDir, LocalNet) {
    let dir = tempfile::tempdir().unwrap();
    let shape = Shape {
        providers: 6,
        heartbeat_ms: 200,
        transport,
        seed: Some(wwt_tests::seed(0x5a1_2026)),
        ..Shape::default()
    };
    let net = LocalNet::start(dir.path(), shape).await.unwrap();
    (dir, net)
}

async fn connect(net: &LocalNet, keys: &Keystore) -> Client {
    let mut config = ClientConfig::new(net.endpoints.tracker_list().unwrap());
    // Tiny batches: every streamed SELECT and full scan here spans many pages.
    config.stream_batch = 3;
    Client::connect(keys, net.connector(), config)
        .await
        .unwrap()
}

async fn rows(client: &Client, sql: &str) -> Vec<Vec<Value>> {
    result_rows(sql, client.execute(sql).await)
}

fn changed(out: &[Outcome]) -> usize {
    match out {
        [Outcome::Updated(n) | Outcome::Deleted(n)] => *n,
        other => panic!("{other:?}"),
    }
}

/// `sql`'s rows read one at a time from [`Client::query`]'s stream.
async fn streamed(client: &Client, sql: &str) -> Vec<Vec<Value>> {
    let mut stream = client
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut out = Vec::new();
    while let Some(row) = stream.next().await.unwrap_or_else(|e| panic!("{sql}: {e}")) {
        out.push(row.into_iter().map(normalize).collect());
    }
    out
}

/// `cases` random data sets, each with 12 generated SELECTs, 4 streamed SELECTs without
/// ORDER BY and 2 changes, on the client and on SQLite; returns the number of statements
/// compared.
async fn agrees_with_sqlite(transport: Transport, cases: usize) -> usize {
    let (_dir, net) = network(transport).await;
    let client = connect(&net, &Keystore::generate()).await;
    client.execute(SCHEMA).await.unwrap();
    client.execute(INDEXES).await.unwrap();
    let strategy = (
        data(),
        proptest::collection::vec(query(), 12),
        proptest::collection::vec(unordered_query(), 4),
        proptest::collection::vec(change(), 2),
    );
    let mut runner = fixed_runner(wwt_tests::seed(1));
    let mut compared = 0;
    for case in 0..cases {
        let (data, queries, unordered, changes) = strategy.new_tree(&mut runner).unwrap().current();
        let conn = sqlite();
        client
            .execute("DELETE FROM t; DELETE FROM u")
            .await
            .unwrap();
        for ins in inserts(&data) {
            conn.execute(&ins, []).unwrap();
            client.execute(&ins).await.unwrap();
        }
        for sql in &queries {
            let expected = sqlite_rows(&conn, sql);
            check(&expected, &rows(&client, sql).await, sql, "wwt")
                .unwrap_or_else(|e| panic!("case {case}: {e}"));
            compared += 1;
        }
        for (sql, all, window) in &unordered {
            let all = sqlite_rows(&conn, all);
            check_unordered(&all, &streamed(&client, sql).await, *window, sql, "wwt")
                .unwrap_or_else(|e| panic!("case {case}: {e}"));
            compared += 1;
        }
        for sql in &changes {
            let n = conn.execute(sql, []).unwrap();
            assert_eq!(n, changed(&client.execute(sql).await.unwrap()), "{sql}");
            check(
                &sqlite_rows(&conn, ALL_T),
                &rows(&client, ALL_T).await,
                sql,
                "wwt",
            )
            .unwrap_or_else(|e| panic!("case {case}: {e}"));
            compared += 1;
        }
    }
    net.shutdown().await.unwrap();
    compared
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_agrees_with_sqlite_in_memory() {
    let n = agrees_with_sqlite(Transport::Memory, 25).await;
    println!("{n} statements agree with SQLite (in memory)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_agrees_with_sqlite_over_grpc() {
    let n = agrees_with_sqlite(Transport::Grpc, 6).await;
    println!("{n} statements agree with SQLite (loopback gRPC)");
}

/// Issue 22's two wrong answers, through the client's real tokens and OPE against SQLite: a
/// hash index on a DOUBLE and a BOOL column (the key encoder once refused both, so every
/// insert and lookup failed), and integer literals past 2^53 compared with a btree-indexed
/// DOUBLE column (a rounded literal pushed as a strict bound, or under a pushed LIMIT, left
/// out rows that qualify: only literals that convert exactly are pushed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_and_bool_indexes_agree_with_sqlite_past_2_pow_53() {
    let (_dir, net) = network(Transport::Memory).await;
    let client = connect(&net, &Keystore::generate()).await;
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    conn.execute(
        "CREATE TABLE m (id INTEGER PRIMARY KEY, y REAL, f INTEGER, z REAL)",
        [],
    )
    .unwrap();
    client
        .execute(
            "CREATE TABLE m (id BIGINT PRIMARY KEY, y DOUBLE, f BOOL, z DOUBLE);
             CREATE INDEX ON m USING hash (y);
             CREATE INDEX ON m USING hash (f);
             CREATE INDEX ON m USING btree (z)",
        )
        .await
        .unwrap();
    // z: 2^53 + 4, 2^53 + 1 (which rounds to 2^53 in both), 2^53 + 2, 2^60, -2^53, -2^60,
    // NULL, 2^53 - 1, -2^53 - 2: distinct, so ORDER BY z LIMIT n has one answer.
    let rows = "INSERT INTO m (id, y, f, z) VALUES
        (1, 0.0, TRUE, 9007199254740996.0),
        (2, -0.0, FALSE, 9007199254740993),
        (3, 1.5, NULL, 9007199254740994.0),
        (4, NULL, TRUE, 1152921504606846976),
        (5, -2.5, FALSE, -9007199254740992.0),
        (6, 1e300, TRUE, -1152921504606846976.0),
        (7, 2.0, NULL, NULL),
        (8, 9007199254740992.0, FALSE, 9007199254740991.0),
        (9, 0.5, TRUE, -9007199254740994.0)";
    conn.execute(rows, []).unwrap();
    client.execute(rows).await.unwrap();

    let mut queries: Vec<String> = [
        "y = 0",
        "y = 0.0",
        "y = -0.0",
        "y = 1.5",
        "y IN (2, -2.5, 1e300)",
        "y = 9007199254740992",
        "y = 9007199254740993",
        "y IS NULL",
        "y = NULL",
        "f = TRUE",
        "f = FALSE",
        "f IN (TRUE)",
        "f IS NULL",
        "f = NULL",
    ]
    .iter()
    .map(|w| format!("SELECT id FROM m WHERE {w} ORDER BY id"))
    .collect();
    let literals = [
        "9007199254740993",
        "9007199254740992",
        "9007199254740995",
        "-9007199254740993",
        "1152921504606846977",
        "1152921504606846976",
        "-1152921504606846977",
    ];
    for op in ["<", "<=", ">", ">=", "="] {
        for lit in literals {
            for tail in [
                "ORDER BY id",
                "ORDER BY z LIMIT 1",
                "ORDER BY z DESC LIMIT 2",
            ] {
                queries.push(format!("SELECT id FROM m WHERE z {op} {lit} {tail}"));
            }
        }
    }
    for sql in &queries {
        let expected = sqlite_rows(&conn, sql);
        check(&expected, &self::rows(&client, sql).await, sql, "wwt").unwrap();
    }

    // The index answered what it answers exactly, and only that.
    let explain = |sql: &str| {
        let client = &client;
        let sql = format!("EXPLAIN {sql}");
        async move {
            match client.execute(&sql).await.unwrap().pop() {
                Some(Outcome::Explain(text)) => text,
                other => panic!("{sql}: {other:?}"),
            }
        }
    };
    let text = explain("SELECT id FROM m WHERE y = -0.0").await;
    assert!(text.contains("hash index: y"), "{text}");
    let text = explain("SELECT id FROM m WHERE f = TRUE").await;
    assert!(text.contains("hash index: f"), "{text}");
    let text = explain("SELECT id FROM m WHERE z > 1152921504606846976 ORDER BY z LIMIT 1").await;
    assert!(text.contains("btree index"), "{text}");
    let text = explain("SELECT id FROM m WHERE z < 9007199254740993 ORDER BY z LIMIT 1").await;
    assert!(text.contains("FULL SCAN"), "{text}");
    net.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_network_stores_no_plaintext_and_a_new_machine_recovers_the_tables() {
    let (dir, net) = network(Transport::Grpc).await;
    let keys = Keystore::generate();
    let client = connect(&net, &keys).await;
    client
        .execute(
            "CREATE TABLE patients (id BIGINT PRIMARY KEY, name TEXT, diagnosis TEXT, ward TEXT, born TIMESTAMP);
             CREATE INDEX ON patients USING fulltext (diagnosis);
             CREATE INDEX ON patients USING hash (ward);
             CREATE INDEX ON patients USING btree (born)",
        )
        .await
        .unwrap();
    let mut values = Vec::new();
    for i in 0..200 {
        values.push(format!(
            "({i}, 'Zebulon Quixote{i}', 'chronic xylophonitis grade {}', 'ward-Ypsilanti', TIMESTAMP '19{:02}-03-04 05:06:07')",
            i % 3,
            i % 100
        ));
    }
    client
        .execute(&format!(
            "INSERT INTO patients (id, name, diagnosis, ward, born) VALUES {}",
            values.join(", ")
        ))
        .await
        .unwrap();
    client
        .execute("UPDATE patients SET ward = 'ward-Kalamazoo' WHERE id = 7")
        .await
        .unwrap();
    let found = rows(
        &client,
        "SELECT count(*) FROM patients WHERE MATCH(diagnosis, 'xylophonitis AND grade') AND ward = 'ward-Ypsilanti'",
    )
    .await;
    assert_eq!(found, vec![vec![Value::Int(199)]]);

    let needles = [
        "Zebulon",
        "Quixote",
        "xylophonitis",
        "Ypsilanti",
        "Kalamazoo",
        "patients",
        "diagnosis",
    ];
    let found = scan(dir.path(), &needles).unwrap();
    assert!(found.hits.is_empty(), "plaintext on disk: {:?}", found.hits);
    // The scan read what holds the data: every provider's pieces, the index provider's indexes.
    for p in &net.endpoints.providers {
        assert!(
            scan(&p.dir.join("log"), &[]).unwrap().bytes > 0,
            "{}",
            p.name
        );
    }
    assert!(
        scan(&net.endpoints.providers[0].dir.join("index"), &[])
            .unwrap()
            .bytes
            > 0
    );

    // A new machine with only the keystore: the catalog comes back from the index provider.
    drop(client);
    let fresh = connect(&net, &keys).await;
    assert!(fresh.catalog().await.table("patients").is_ok());
    let back = rows(
        &fresh,
        "SELECT name, ward FROM patients WHERE born BETWEEN TIMESTAMP '1905-01-01 00:00:00' AND TIMESTAMP '1907-12-31 00:00:00' ORDER BY born, id LIMIT 2",
    )
    .await;
    assert_eq!(
        back,
        vec![
            vec![
                Value::Text("Zebulon Quixote5".into()),
                Value::Text("ward-Ypsilanti".into())
            ],
            vec![
                Value::Text("Zebulon Quixote105".into()),
                Value::Text("ward-Ypsilanti".into())
            ],
        ]
    );

    // Another owner's keys see nothing of it.
    let stranger = connect(&net, &Keystore::generate()).await;
    let err = stranger
        .execute("SELECT * FROM patients")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown table"), "{err}");
    net.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_failed_statements_drop_table_and_clear_errors() {
    let (_dir, net) = network(Transport::Memory).await;
    let keys = Keystore::generate();
    let client = connect(&net, &keys).await;
    client
        .execute(
            "CREATE TABLE acct (id TEXT PRIMARY KEY, balance BIGINT NOT NULL);
             INSERT INTO acct VALUES ('alice', 10), ('bob', 5)",
        )
        .await
        .unwrap();
    client
        .execute("UPDATE acct SET balance = balance + 1 WHERE id = 'alice'")
        .await
        .unwrap();
    client
        .execute("UPDATE acct SET balance = balance * 3 WHERE id = 'alice'")
        .await
        .unwrap();
    let history = client
        .history("acct", &Value::Text("alice".into()))
        .await
        .unwrap();
    let balances: Vec<&Value> = history.iter().map(|v| &v.row[1]).collect();
    assert_eq!(
        balances,
        vec![&Value::Int(33), &Value::Int(11), &Value::Int(10)]
    );
    assert!(history.windows(2).all(|w| w[0].version > w[1].version));

    // A duplicate key in one INSERT of many fails the whole statement: no row of it is visible.
    let err = client
        .execute("INSERT INTO acct VALUES ('carol', 1), ('bob', 2)")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already has a row"), "{err}");
    let all = rows(&client, "SELECT id FROM acct ORDER BY id").await;
    assert_eq!(
        all,
        vec![
            vec![Value::Text("alice".into())],
            vec![Value::Text("bob".into())]
        ]
    );

    // An index created over existing rows finds them.
    client
        .execute("CREATE INDEX ON acct USING btree (balance)")
        .await
        .unwrap();
    let rich = rows(
        &client,
        "SELECT id FROM acct WHERE balance > 6 ORDER BY balance",
    )
    .await;
    assert_eq!(rich, vec![vec![Value::Text("alice".into())]]);
    let plan = client
        .execute("EXPLAIN SELECT id FROM acct WHERE balance > 6")
        .await
        .unwrap();
    assert!(format!("{plan:?}").contains("btree"), "{plan:?}");

    let err = client.execute("SELEC id FROM acct").await.unwrap_err();
    assert!(err.to_string().contains("line 1, column 1"), "{err}");
    let err = client.execute("SELECT nope FROM acct").await.unwrap_err();
    assert!(err.to_string().contains("unknown column `nope`"), "{err}");
    let err = client
        .execute("INSERT INTO acct VALUES ('dave', 'lots')")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Query(_)), "{err}");
    let err = client
        .query("DELETE FROM acct WHERE id = 'alice'")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("use execute"), "{err}");
    let err = client
        .query("SELECT id FROM acct; SELECT id FROM acct")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("one SELECT"), "{err}");
    assert_eq!(
        rows(&client, "SELECT count(*) FROM acct").await,
        vec![vec![Value::Int(2)]]
    );

    // Re-inserting a deleted key works; its history starts afresh.
    client
        .execute("DELETE FROM acct WHERE id = 'bob'")
        .await
        .unwrap();
    client
        .execute("INSERT INTO acct VALUES ('bob', 7)")
        .await
        .unwrap();
    let bob = rows(&client, "SELECT balance FROM acct WHERE id = 'bob'").await;
    assert_eq!(bob, vec![vec![Value::Int(7)]]);

    // DROP TABLE: gone for this client and a fresh one; a table created again under the name
    // starts empty, with none of the old rows behind its new indexes.
    let out = client.execute("DROP TABLE acct").await.unwrap();
    assert!(matches!(out.as_slice(), [Outcome::Dropped]), "{out:?}");
    let err = client.execute("SELECT id FROM acct").await.unwrap_err();
    assert!(err.to_string().contains("unknown table"), "{err}");
    let err = client.execute("DROP TABLE acct").await.unwrap_err();
    assert!(err.to_string().contains("unknown table"), "{err}");
    client.execute("DROP TABLE IF EXISTS acct").await.unwrap();
    let fresh = connect(&net, &keys).await;
    assert!(fresh.catalog().await.table("acct").is_err());
    fresh
        .execute(
            "CREATE TABLE acct (id TEXT PRIMARY KEY, balance BIGINT NOT NULL);
             CREATE INDEX ON acct USING btree (balance);
             INSERT INTO acct VALUES ('erin', 3)",
        )
        .await
        .unwrap();
    for c in [&client, &fresh] {
        let all = rows(c, "SELECT id FROM acct WHERE balance > 0").await;
        assert_eq!(all, vec![vec![Value::Text("erin".into())]]);
        let alice = rows(c, "SELECT id FROM acct WHERE id = 'alice'").await;
        assert!(alice.is_empty(), "{alice:?}");
    }
    net.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_single_threaded_runtime_gets_a_clear_error() {
    let (_dir, net) = network(Transport::Memory).await;
    let client = Arc::new(connect(&net, &Keystore::generate()).await);
    client
        .execute("CREATE TABLE t (id BIGINT PRIMARY KEY)")
        .await
        .unwrap();
    // An aggregate runs the synchronous evaluator, which blocks its thread on the network.
    let err = client.execute("SELECT count(*) FROM t").await.unwrap_err();
    assert!(err.to_string().contains("multi-threaded"), "{err}");
}

/// Compiled, never run: every future a dApp gets from a [`Client`] or its row stream can be
/// spawned on a multi-threaded runtime.
#[allow(dead_code)]
fn every_client_future_is_send(
    client: &Client,
    stream: &mut wwt_client::db::RowStream<'_>,
    keys: &Keystore,
    connector: Arc<dyn wwt_net::Connector>,
    config: ClientConfig,
) {
    fn send<T: Send>(_: T) {}
    send(client.execute(""));
    send(client.query(""));
    send(stream.next_batch());
    send(stream.next());
    send(client.insert_rows("t", Vec::new()));
    send(client.catalog());
    send(client.tables());
    send(client.describe("t"));
    send(client.history("t", &Value::Null));
    send(client.segments("t"));
    send(client.compact(None));
    send(client.replicas());
    send(client.flush());
    send(Client::connect(keys, connector.clone(), config.clone()));
    send(Client::recover(keys, connector, config));
}

/// A dApp shares one client among the tasks it spawns (a web server's handlers): every
/// statement's future is `Send`, and statements from tasks on different threads all land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_shared_by_spawned_tasks_loses_no_row() {
    let (_dir, net) = network(Transport::Grpc).await;
    let client = Arc::new(connect(&net, &Keystore::generate()).await);
    client
        .execute("CREATE TABLE events (id BIGINT PRIMARY KEY, task BIGINT, body TEXT)")
        .await
        .unwrap();
    client
        .execute("CREATE INDEX ON events USING hash (task)")
        .await
        .unwrap();
    const TASKS: i64 = 4;
    const ROWS: i64 = 20;
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let client = client.clone();
            tokio::spawn(async move {
                for batch in 0..ROWS / 5 {
                    let values: Vec<String> = (0..5)
                        .map(|i| {
                            let id = task * 1000 + batch * 5 + i;
                            format!("({id}, {task}, 'event {id} of task {task}')")
                        })
                        .collect();
                    let sql = format!("INSERT INTO events VALUES {}", values.join(", "));
                    client.execute(&sql).await.unwrap();
                }
                let mine = format!("SELECT id FROM events WHERE task = {task} ORDER BY id");
                let (executed, streamed) =
                    (rows(&client, &mine).await, streamed(&client, &mine).await);
                assert_eq!(executed, streamed, "task {task}");
                executed
            })
        })
        .collect();
    for (task, handle) in (0..TASKS).zip(tasks) {
        let expected: Vec<Vec<Value>> = (0..ROWS)
            .map(|i| vec![Value::Int(task * 1000 + i)])
            .collect();
        assert_eq!(handle.await.unwrap(), expected, "task {task}");
    }
    let all = rows(&client, "SELECT count(*), count(DISTINCT task) FROM events").await;
    assert_eq!(all, vec![vec![Value::Int(TASKS * ROWS), Value::Int(TASKS)]]);
    net.shutdown().await.unwrap();
}
