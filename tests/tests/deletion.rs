//! Deletion end to end (DESIGN §13), in memory and over loopback gRPC: a dropped table gives
//! the providers their bytes back and its pieces leave the audits; compaction gives back the
//! space of deleted rows while every query keeps SQLite's answer; a drop cut short is finished
//! by the owner's next client; deleted pieces are never served again.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use wwt_client::db::{Client, ClientConfig};
use wwt_devnet::{Hooks, LocalNet, Shape, Transport};
use wwt_engine::{Keystore, SegmentManifest};
use wwt_net::types::{DeletePieces, Locate, PieceId, ReadPiece, SegmentId};
use wwt_net::{Identity, NetError};
use wwt_query::Value;
use wwt_tracker::audit::Outcome;
use wwt_tracker::clock::ManualClock;

#[path = "../../query/tests/support/sqlgen.rs"]
mod sqlgen;
use sqlgen::{INDEXES, SCHEMA, check, result_rows, sqlite, sqlite_rows};

/// Audit steps after which a test gives up waiting for the trackers' deletes.
const MAX_STEPS: usize = 60;

async fn network(dir: &std::path::Path, transport: Transport) -> (LocalNet, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let shape = Shape {
        providers: 6,
        heartbeat_ms: 200,
        transport,
        seed: Some(wwt_tests::seed(0xde1_2026)),
        ..Shape::default()
    };
    let hooks = Hooks {
        audit_clock: Some(clock.clone()),
        ..Hooks::default()
    };
    (
        LocalNet::start_with(dir, shape, hooks).await.unwrap(),
        clock,
    )
}

async fn connect(net: &LocalNet, keys: &Keystore, auto_compact: bool) -> Client {
    let mut config = ClientConfig::new(net.endpoints.tracker_list().unwrap());
    config.auto_compact = auto_compact;
    Client::connect(keys, net.connector(), config)
        .await
        .unwrap()
}

/// A network, an owner and its client, with an empty table `docs (id, body)`.
async fn with_docs(
    dir: &std::path::Path,
    transport: Transport,
) -> (LocalNet, Arc<ManualClock>, Keystore, Client) {
    let (net, clock) = network(dir, transport).await;
    let keys = Keystore::generate();
    let client = connect(&net, &keys, true).await;
    client
        .execute("CREATE TABLE docs (id BIGINT PRIMARY KEY, body TEXT)")
        .await
        .unwrap();
    (net, clock, keys, client)
}

/// Bytes each provider holds, and has freed, in provider order.
async fn provider_bytes(net: &LocalNet) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for p in &net.endpoints.providers {
        let s = net
            .connector()
            .provider(&p.address)
            .unwrap()
            .status()
            .await
            .unwrap();
        out.push((s.used, s.freed));
    }
    out
}

/// Moves the audit clock a minute on and runs one audit step on every tracker; returns the
/// pieces challenged and whether every challenge passed.
async fn audit_round(net: &LocalNet, clock: &ManualClock) -> (HashSet<PieceId>, bool) {
    clock.advance_by(60_000);
    let mut pieces = HashSet::new();
    let mut all_passed = true;
    for t in 0..net.endpoints.trackers.len() {
        let report = net.tracker(t).unwrap().audit_step().await.unwrap();
        for c in report.challenges {
            all_passed &= c.outcome == Outcome::Pass;
            pieces.insert(c.piece);
        }
    }
    (pieces, all_passed)
}

/// Runs audit rounds until `done` holds of the providers' bytes; panics after [`MAX_STEPS`].
async fn audit_until(
    net: &LocalNet,
    clock: &ManualClock,
    what: &str,
    done: impl Fn(&[(u64, u64)]) -> bool,
) -> Vec<(u64, u64)> {
    for _ in 0..MAX_STEPS {
        let bytes = provider_bytes(net).await;
        if done(&bytes) {
            return bytes;
        }
        audit_round(net, clock).await;
    }
    panic!("{what}: not done after {MAX_STEPS} audit steps");
}

fn pieces_of(segments: &[SegmentManifest]) -> HashSet<PieceId> {
    segments
        .iter()
        .flat_map(|m| m.pieces.iter().map(|p| PieceId(p.hash.0)))
        .collect()
}

/// Inserts `rows` documents of `size` bytes into `docs`, 500 rows a statement.
async fn load_docs(client: &Client, rows: i64, size: usize) {
    for start in (0..rows).step_by(500) {
        let batch = (start..(start + 500).min(rows))
            .map(|i| {
                let body = format!("{i:08} ").repeat(size / 9 + 1)[..size].to_string();
                vec![Value::Int(i), Value::Text(body)]
            })
            .collect();
        client.insert_rows("docs", batch).await.unwrap();
    }
}

async fn a_dropped_table_gives_its_bytes_back(transport: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let (net, clock) = network(dir.path(), transport).await;
    let keys = Keystore::generate();
    let client = connect(&net, &keys, true).await;
    let before = provider_bytes(&net).await;
    client
        .execute("CREATE TABLE docs (id BIGINT PRIMARY KEY, body TEXT)")
        .await
        .unwrap();
    // 50 MiB of 8 KiB documents.
    load_docs(&client, 6_400, 8 << 10).await;
    let loaded = provider_bytes(&net).await;
    let segments = client.segments("docs").await.unwrap();
    let table_pieces = pieces_of(&segments);
    let (challenged, passed) = audit_round(&net, &clock).await;
    assert!(passed);
    assert!(
        !challenged.is_disjoint(&table_pieces),
        "the table's pieces are audited while it exists"
    );

    client.execute("DROP TABLE docs").await.unwrap();
    let table: Vec<u64> = loaded.iter().zip(&before).map(|(l, b)| l.0 - b.0).collect();
    let after = audit_until(&net, &clock, "the drop's deletes", |now| {
        now.iter()
            .zip(&before)
            .zip(&table)
            .all(|((n, b), t)| n.0.saturating_sub(b.0) * 20 <= *t)
    })
    .await;
    for (p, ((b, l), a)) in before.iter().zip(&loaded).zip(&after).enumerate() {
        println!(
            "provider {p}: {} bytes before the table, {} loaded, {} after the drop ({} freed)",
            b.0, l.0, a.0, a.1
        );
        assert!(a.1 > 0, "provider {p} freed nothing");
    }
    // The trackers audit none of its pieces any more, and no provider is blamed for them.
    for _ in 0..5 {
        let (challenged, passed) = audit_round(&net, &clock).await;
        assert!(passed, "a challenge failed after the drop");
        assert!(challenged.is_disjoint(&table_pieces));
    }
    // Every tracker says the segments are gone, and a provider serves none of the pieces.
    let owner = Identity::from_secret(keys.identity.to_bytes());
    let tracker = net
        .connector()
        .tracker(&net.endpoints.trackers[0].address)
        .unwrap();
    for m in segments.iter().take(8) {
        let located = tracker
            .locate(
                owner
                    .sign(Locate {
                        segment: SegmentId(m.segment.0),
                    })
                    .unwrap(),
            )
            .await;
        assert!(
            located.unwrap().deleted,
            "the tracker still maps a dropped segment"
        );
    }
    for p in &net.endpoints.providers {
        let provider = net.connector().provider(&p.address).unwrap();
        for piece in table_pieces.iter().take(8) {
            let read = provider
                .read(
                    owner
                        .sign(ReadPiece {
                            piece: *piece,
                            range: None,
                        })
                        .unwrap(),
                )
                .await;
            assert!(matches!(read, Err(NetError::NotFound(_))), "{read:?}");
        }
    }
    assert!(client.execute("SELECT count(*) FROM docs").await.is_err());
    net.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_table_gives_its_bytes_back_in_memory() {
    a_dropped_table_gives_its_bytes_back(Transport::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_table_gives_its_bytes_back_over_grpc() {
    a_dropped_table_gives_its_bytes_back(Transport::Grpc).await;
}

const QUERIES: &[&str] = &[
    "SELECT count(*), sum(b) FROM t",
    "SELECT id, s FROM t WHERE a = 3 ORDER BY id",
    "SELECT id, b FROM t WHERE b BETWEEN 100 AND 400 ORDER BY b, id",
    "SELECT id FROM t ORDER BY b, id LIMIT 7",
    "SELECT id FROM t ORDER BY id DESC LIMIT 5",
    "SELECT id, a, b, s FROM t ORDER BY id",
    "SELECT * FROM t WHERE id = 40",
    "SELECT * FROM t WHERE id = 41",
];

fn agree(conn: &rusqlite::Connection, sql: &str, got: Vec<Vec<Value>>, when: &str) {
    check(&sqlite_rows(conn, sql), &got, sql, "wwt").unwrap_or_else(|e| panic!("{when}: {e}"));
}

async fn compaction_gives_dead_rows_back_and_changes_no_answer(transport: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let (net, clock) = network(dir.path(), transport).await;
    let keys = Keystore::generate();
    // Compaction runs by hand here, from one device while another reads.
    let writer = connect(&net, &keys, false).await;
    writer.execute(SCHEMA).await.unwrap();
    writer.execute(INDEXES).await.unwrap();
    let conn = sqlite();
    let rows = 3_000;
    for start in (0..rows).step_by(300) {
        let values: Vec<String> = (start..start + 300)
            .map(|i| {
                format!(
                    "({i}, {}, {}, '{}')",
                    i % 7,
                    (i * 37) % 1000,
                    format!("row {i} ").repeat(40)
                )
            })
            .collect();
        let sql = format!("INSERT INTO t (id, a, b, s) VALUES {}", values.join(", "));
        conn.execute(&sql, []).unwrap();
        writer.execute(&sql).await.unwrap();
    }
    let delete = "DELETE FROM t WHERE id % 10 <> 0";
    conn.execute(delete, []).unwrap();
    writer.execute(delete).await.unwrap();
    let sparse = writer.segments("t").await.unwrap();
    let live_bytes: u64 = sqlite_rows(&conn, "SELECT sum(length(s)) + 40 * count(*) FROM t")
        .first()
        .and_then(|r| match r.first() {
            Some(Value::Int(n)) => Some(*n as u64),
            _ => None,
        })
        .unwrap();

    // A second device of the owner queries while the first compacts; with no segment cache
    // every query fetches pieces, so one holding a locator into a deleted segment meets it.
    let mut config = ClientConfig::new(net.endpoints.tracker_list().unwrap());
    config.cache_bytes = 0;
    let reader = Client::connect(&keys, net.connector(), config)
        .await
        .unwrap();
    let done = AtomicBool::new(false);
    let compacting = async {
        let report = writer.compact(Some("t")).await.unwrap();
        done.store(true, Ordering::SeqCst);
        report
    };
    let querying = async {
        let mut during = 0;
        while !done.load(Ordering::SeqCst) {
            // In memory a query may finish without waiting once: let the compaction run.
            tokio::task::yield_now().await;
            for sql in QUERIES {
                agree(
                    &conn,
                    sql,
                    result_rows(sql, reader.execute(sql).await),
                    "during",
                );
                during += 1;
            }
        }
        during
    };
    let (report, during) = tokio::join!(compacting, querying);
    let (_, c) = &report[0];
    println!("compaction: {c:?}; {during} queries compared while it ran");
    assert!(c.rewritten > 0 && c.rows == 300, "{c:?}");
    assert!(during > 0);
    for client in [&writer, &reader] {
        for sql in QUERIES {
            agree(
                &conn,
                sql,
                result_rows(sql, client.execute(sql).await),
                "after",
            );
        }
    }
    // What the table takes: its segments' bytes, within 20 % of the rows it keeps.
    let compacted = writer.segments("t").await.unwrap();
    let table_bytes: u64 = compacted.iter().map(|m| m.segment_len).sum();
    println!(
        "table: {} segments of {} bytes before, {} of {table_bytes} after, for {live_bytes} \
         bytes of rows",
        sparse.len(),
        sparse.iter().map(|m| m.segment_len).sum::<u64>(),
        compacted.len()
    );
    assert!(
        table_bytes * 10 <= live_bytes * 12,
        "{table_bytes} for {live_bytes}"
    );
    // The old segments' pieces are deleted at every holder; no challenge fails for it.
    let old = pieces_of(&sparse);
    let kept = pieces_of(&compacted);
    let gone: HashSet<_> = old.difference(&kept).copied().collect();
    let freed_before: u64 = provider_bytes(&net).await.iter().map(|b| b.1).sum();
    let gone_bytes: u64 = sparse
        .iter()
        .filter(|m| !compacted.iter().any(|c| c.segment == m.segment))
        .map(|m| m.shard_len * m.pieces.len() as u64)
        .sum();
    audit_until(&net, &clock, "the compaction's deletes", |now| {
        now.iter().map(|b| b.1).sum::<u64>() >= freed_before + gone_bytes
    })
    .await;
    for _ in 0..3 {
        let (challenged, passed) = audit_round(&net, &clock).await;
        assert!(passed);
        assert!(challenged.is_disjoint(&gone));
    }
    net.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_gives_dead_rows_back_and_changes_no_answer_in_memory() {
    compaction_gives_dead_rows_back_and_changes_no_answer(Transport::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_gives_dead_rows_back_and_changes_no_answer_over_grpc() {
    compaction_gives_dead_rows_back_and_changes_no_answer(Transport::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_cut_short_is_finished_by_the_next_client() {
    let dir = tempfile::tempdir().unwrap();
    let (mut net, clock, keys, client) = with_docs(dir.path(), Transport::Memory).await;
    let before = provider_bytes(&net).await;
    load_docs(&client, 500, 8 << 10).await;
    // Every tracker is down: the table leaves the catalog, its data cannot be deleted yet.
    net.stop_trackers().await.unwrap();
    client.execute("DROP TABLE docs").await.unwrap();
    drop(client);
    for t in 0..net.endpoints.trackers.len() {
        net.restart_tracker(t).await.unwrap();
    }
    net.wait_alive(6).await.unwrap();
    // The owner's next client finishes the drop when it connects.
    let next = connect(&net, &keys, true).await;
    let after = audit_until(&net, &clock, "the finished drop's deletes", |now| {
        now.iter().zip(&before).all(|(n, b)| n.1 > b.1)
    })
    .await;
    println!("bytes before the table {before:?}, after the drop {after:?}");
    // The name is free again, for a new table with none of the old rows.
    next.execute("CREATE TABLE docs (id BIGINT PRIMARY KEY, body TEXT)")
        .await
        .unwrap();
    let count = result_rows(
        "SELECT count(*) FROM docs",
        next.execute("SELECT count(*) FROM docs").await,
    );
    assert_eq!(count, vec![vec![Value::Int(0)]]);
    net.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_deletes_only_for_the_owner_or_a_trusted_tracker() {
    let dir = tempfile::tempdir().unwrap();
    let (net, _clock, keys, client) = with_docs(dir.path(), Transport::Grpc).await;
    load_docs(&client, 10, 1 << 10).await;
    let pieces = pieces_of(&client.segments("docs").await.unwrap());
    let stranger = Identity::generate().unwrap();
    let owner = Identity::from_secret(keys.identity.to_bytes());
    let request = |who: &Identity| {
        who.sign(DeletePieces {
            pieces: pieces.iter().copied().collect(),
        })
        .unwrap()
    };
    let mut freed = 0;
    for p in &net.endpoints.providers {
        let provider = net.connector().provider(&p.address).unwrap();
        let held = provider.status().await.unwrap().pieces;
        let refused = provider.delete(request(&stranger)).await;
        assert!(
            matches!(refused, Err(NetError::Forbidden(_))),
            "{refused:?}"
        );
        assert_eq!(provider.status().await.unwrap().pieces, held);
        freed += provider.delete(request(&owner)).await.unwrap().freed;
    }
    assert!(freed > 0);
    // Its pieces gone, the table cannot be read: the read names the rows it lost.
    let read = client.execute("SELECT * FROM docs").await;
    assert!(read.is_err(), "{read:?}");
    net.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_row_is_no_such_row_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let (net, _clock, _keys, client) = with_docs(dir.path(), Transport::Memory).await;
    load_docs(&client, 400, 4 << 10).await;
    client
        .execute("UPDATE docs SET body = 'short' WHERE id = 5")
        .await
        .unwrap();
    assert_eq!(
        client.history("docs", &Value::Int(5)).await.unwrap().len(),
        2
    );
    // Deleting most rows compacts the table on its own (auto_compact).
    let before = client.segments("docs").await.unwrap();
    client
        .execute("DELETE FROM docs WHERE id >= 20")
        .await
        .unwrap();
    let after = client.segments("docs").await.unwrap();
    assert!(
        after.len() < before.len(),
        "{} → {}",
        before.len(),
        after.len()
    );
    let sql = "SELECT id FROM docs WHERE id = 300";
    assert!(result_rows(sql, client.execute(sql).await).is_empty());
    let history = client.history("docs", &Value::Int(300)).await.unwrap();
    assert!(history.is_empty(), "{history:?}");
    let sql = "SELECT count(*) FROM docs";
    assert_eq!(
        result_rows(sql, client.execute(sql).await),
        vec![vec![Value::Int(20)]]
    );
    // A kept row's history ends where the compaction deleted its older version.
    let history = client.history("docs", &Value::Int(5)).await.unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].row[1], Value::Text("short".into()));
    net.shutdown().await.unwrap();
}
