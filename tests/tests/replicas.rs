//! The index plane survives its nodes: an owner's log on three replicas (index providers), in
//! memory and over loopback gRPC with the same bodies. A replica lost in the middle of a
//! workload fails no statement; wiped, it catches up from its peers alone and then serves
//! every query by itself; replicas that lie about their head, drop entries or forward forged
//! ones are never believed; two clients of one owner writing at once lose no row; and a
//! device that saw a newer head never takes an emptied replica set for an empty database.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use proptest::strategy::{Strategy, ValueTree};
use prost::Message;
use wwt_client::db::{Client, ClientConfig, ReplicaStatus};
use wwt_devnet::{Hooks, LocalNet, Shape, Transport};
use wwt_engine::Keystore;
use wwt_index::{CatalogBlob, Query, QueryOutput, TableId, TableSchema, TextOrder};
use wwt_net::index::{
    Answer, Append, CreateTable, GetCatalog, GetEntries, GetHead, LogHead, LogOp, QueryTable,
    entry_hash, open_entry,
};
use wwt_net::{IndexApi, NetError, Signed, proto};
use wwt_query::Value;

#[path = "../../query/tests/support/sqlgen.rs"]
mod sqlgen;
use sqlgen::*;

/// How a lying index provider lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lie {
    /// It shows the first head it ever showed (an empty log), as a replica rolled back or
    /// wiped would; its queries find nothing.
    Stale,
    /// It acknowledges entries without keeping them.
    Drop,
    /// It hands peers catching up from it entries with a broken signature.
    Forge,
    /// It answers every page after a cursor (of a scan or a full-text match) with the first
    /// page again, as a server that ignores the cursor would.
    IgnoresCursor,
}

/// Which provider lies, and how (shared with every index provider's wrapper).
type Liar = Arc<Mutex<Option<(usize, Lie)>>>;

struct Lying {
    inner: Arc<dyn IndexApi>,
    p: usize,
    liar: Liar,
    /// The first head it showed: what it shows while [`Lie::Stale`].
    first: Mutex<Option<Option<Signed<Append>>>>,
    /// The last first page it answered: what it answers while [`Lie::IgnoresCursor`].
    first_page: Mutex<Option<Answer<QueryOutput>>>,
}

/// Whether `request` asks for a page after a cursor (`None`: not a paged query).
fn after_a_cursor(request: &Signed<QueryTable>) -> Option<bool> {
    let wire = proto::QueryRequest::decode(request.body().clone()).ok()?;
    match QueryTable::try_from(wire).ok()?.query {
        Query::Scan { after, .. }
        | Query::Text {
            order: TextOrder::Rows { after },
            ..
        } => Some(after.is_some()),
        _ => None,
    }
}

impl Lying {
    fn lie(&self) -> Option<Lie> {
        match *self.liar.lock().unwrap() {
            Some((p, lie)) if p == self.p => Some(lie),
            _ => None,
        }
    }
}

#[async_trait]
impl IndexApi for Lying {
    async fn append(&self, entry: Signed<Append>) -> Result<LogHead, NetError> {
        if self.lie() == Some(Lie::Drop) {
            let seq = wwt_net::index::open_entry(&entry)?.1.seq;
            return Ok(LogHead {
                seq,
                hash: entry_hash(&entry),
            });
        }
        self.inner.append(entry).await
    }

    async fn head(&self, request: Signed<GetHead>) -> Result<Option<Signed<Append>>, NetError> {
        let head = self.inner.head(request).await?;
        let mut first = self.first.lock().unwrap();
        let first = first.get_or_insert_with(|| head.clone());
        if self.lie() == Some(Lie::Stale) {
            return Ok(first.clone());
        }
        Ok(head)
    }

    async fn entries(&self, request: Signed<GetEntries>) -> Result<Vec<Signed<Append>>, NetError> {
        let entries = self.inner.entries(request).await?;
        if self.lie() != Some(Lie::Forge) {
            return Ok(entries);
        }
        Ok(entries
            .into_iter()
            .map(|e| {
                let mut wire = proto::SignedRequest::from(e);
                let auth = wire.auth.as_mut().unwrap();
                let mut signature = auth.signature.to_vec();
                signature[0] ^= 1;
                auth.signature = signature.into();
                Signed::try_from(wire).unwrap()
            })
            .collect())
    }

    async fn query(&self, request: Signed<QueryTable>) -> Result<Answer<QueryOutput>, NetError> {
        if self.lie() == Some(Lie::IgnoresCursor) {
            let first = self.first_page.lock().unwrap().clone();
            match (after_a_cursor(&request), first) {
                (Some(true), Some(first)) => return Ok(first),
                (Some(false), _) => {
                    let answer = self.inner.query(request).await?;
                    *self.first_page.lock().unwrap() = Some(answer.clone());
                    return Ok(answer);
                }
                _ => {}
            }
        }
        if self.lie() == Some(Lie::Stale) {
            let first = self.first.lock().unwrap().clone().flatten();
            let seq = first.map_or(0, |e| wwt_net::index::open_entry(&e).unwrap().1.seq);
            return Ok(Answer {
                value: QueryOutput::Rows(Vec::new()),
                seq,
            });
        }
        self.inner.query(request).await
    }

    async fn catalog(&self, request: Signed<GetCatalog>) -> Result<Answer<CatalogBlob>, NetError> {
        self.inner.catalog(request).await
    }
}

async fn network(transport: Transport, seed: u64, liar: &Liar) -> (tempfile::TempDir, LocalNet) {
    let dir = tempfile::tempdir().unwrap();
    // Seven providers: RS 4+2 pieces still find six homes with one down. Four index
    // providers: an owner's three replicas and one to replace them.
    let shape = Shape {
        providers: 7,
        index_providers: 4,
        heartbeat_ms: 200,
        transport,
        seed: Some(seed),
        ..Shape::default()
    };
    let liar = liar.clone();
    let hooks = Hooks {
        index_layer: Some(Arc::new(move |p, inner| {
            Arc::new(Lying {
                inner,
                p,
                liar: liar.clone(),
                first: Mutex::new(None),
                first_page: Mutex::new(None),
            })
        })),
        ..Hooks::default()
    };
    let net = LocalNet::start_with(dir.path(), shape, hooks)
        .await
        .unwrap();
    (dir, net)
}

/// A network, one owner's keys and client, the oracle, and the workload's tables on both.
struct Owner {
    _dir: tempfile::TempDir,
    net: LocalNet,
    keys: Keystore,
    client: Client,
    conn: rusqlite::Connection,
}

async fn owner(transport: Transport, seed: u64, liar: &Liar) -> Owner {
    let (_dir, net) = network(transport, seed, liar).await;
    let keys = Keystore::generate();
    let client = connect(&net, &keys).await;
    client.execute(SCHEMA).await.unwrap();
    Owner {
        _dir,
        net,
        keys,
        client,
        conn: sqlite(),
    }
}

async fn connect(net: &LocalNet, keys: &Keystore) -> Client {
    let config = ClientConfig::new(net.endpoints.tracker_list().unwrap());
    Client::connect(keys, net.connector(), config)
        .await
        .unwrap()
}

/// The provider number of a replica.
fn provider(net: &LocalNet, replica: &ReplicaStatus) -> usize {
    net.endpoints
        .providers
        .iter()
        .position(|p| p.address == replica.address)
        .unwrap()
}

/// The client's replicas, in its order, as provider numbers.
async fn replicas(net: &LocalNet, client: &Client) -> Vec<usize> {
    let (_, set) = client.replicas().await.unwrap();
    set.iter().map(|r| provider(net, r)).collect()
}

/// Waits until provider `p`'s replica holds the head `client` knows (60 s at most).
async fn caught_up(net: &LocalNet, client: &Client, p: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (head, set) = client.replicas().await.unwrap();
        let seq = set.iter().find(|r| provider(net, r) == p).map(|r| r.seq);
        if seq == Some(head) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replica on provider {p} is at {seq:?}, not {head}, after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Restarts replica `set[0]` with its index folder wiped, waits until it has caught up from
/// its peers, stops the others, and compares every query answered through it alone.
async fn wiped_then_alone(
    net: &mut LocalNet,
    client: &Client,
    conn: &rusqlite::Connection,
    queries: &[String],
    set: &[usize],
) -> usize {
    net.restart_provider(set[0], true).await.unwrap();
    caught_up(net, client, set[0]).await;
    for p in &set[1..] {
        net.stop_provider(*p).await.unwrap();
    }
    agree(client, conn, queries).await
}

/// Runs `sql` on the client and on SQLite; it must succeed on both.
async fn both(client: &Client, conn: &rusqlite::Connection, sql: &str) {
    client
        .execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    conn.execute_batch(sql).unwrap();
}

/// Every query, and the whole of `t`, as SQLite answers them; the number compared.
async fn agree(client: &Client, conn: &rusqlite::Connection, queries: &[String]) -> usize {
    for sql in queries.iter().map(String::as_str).chain([ALL_T]) {
        let got = result_rows(sql, client.execute(sql).await);
        check(&sqlite_rows(conn, sql), &got, sql, "wwt").unwrap();
    }
    queries.len() + 1
}

/// One round of a workload: data loaded afresh, changes to it, and queries to compare.
struct Round {
    load: Vec<String>,
    changes: Vec<String>,
    queries: Vec<String>,
}

/// `rounds` rounds of INSERT, UPDATE and DELETE drawn from `seed`.
fn workload(seed: u64, rounds: usize) -> Vec<Round> {
    let strategy = (
        data(),
        proptest::collection::vec(change(), 6),
        proptest::collection::vec(query(), 12),
    );
    let mut runner = fixed_runner(seed);
    (0..rounds)
        .map(|_| {
            let (data, changes, queries) = strategy.new_tree(&mut runner).unwrap().current();
            let mut load = vec!["DELETE FROM t".to_string(), "DELETE FROM u".to_string()];
            load.extend(inserts(&data));
            Round {
                load,
                changes,
                queries,
            }
        })
        .collect()
}

/// Runs a round's load and the first `changes` of its changes on both.
async fn run(client: &Client, conn: &rusqlite::Connection, round: &Round, changes: usize) {
    for sql in round.load.iter().chain(&round.changes[..changes]) {
        both(client, conn, sql).await;
    }
}

async fn a_lost_replica_fails_nothing_and_a_wiped_one_catches_up(transport: Transport) {
    let seed = wwt_tests::seed(0x1e9_2026);
    let liar = Liar::default();
    let Owner {
        _dir,
        mut net,
        keys,
        client,
        conn,
    } = owner(transport, seed, &liar).await;
    let rounds = workload(seed, 3);
    let set = replicas(&net, &client).await;
    assert_eq!(set.len(), 3, "R = 3 replicas");
    run(&client, &conn, &rounds[0], 6).await;
    let mut compared = agree(&client, &conn, &rounds[0].queries).await;

    // The first replica (the one that takes each entry first) dies mid-workload. (The
    // trackers are let notice first: an upload does not yet place pieces around a provider
    // that died since its tracker last heard from it.)
    net.stop_provider(set[0]).await.unwrap();
    net.wait_alive(6).await.unwrap();
    run(&client, &conn, &rounds[1], 3).await;
    client.execute(INDEXES).await.unwrap();
    for sql in &rounds[1].changes[3..] {
        both(&client, &conn, sql).await;
    }
    compared += agree(&client, &conn, &rounds[1].queries).await;
    run(&client, &conn, &rounds[2], 6).await;
    compared += agree(&client, &conn, &rounds[2].queries).await;

    // Back with its index folder wiped: it catches up from its peers alone; then the other
    // two stop, and it answers every query by itself.
    compared += wiped_then_alone(&mut net, &client, &conn, &rounds[2].queries, &set).await;
    // A new device finds the head on the one replica left.
    let fresh = connect(&net, &keys).await;
    compared += agree(&fresh, &conn, &rounds[2].queries).await;
    println!("{compared} statements agree with SQLite");
    net.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_replica_fails_nothing_and_a_wiped_one_catches_up_in_memory() {
    a_lost_replica_fails_nothing_and_a_wiped_one_catches_up(Transport::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_replica_fails_nothing_and_a_wiped_one_catches_up_over_grpc() {
    a_lost_replica_fails_nothing_and_a_wiped_one_catches_up(Transport::Grpc).await;
}

async fn lying_replicas_are_never_believed(transport: Transport) {
    let seed = wwt_tests::seed(0x11e_2026);
    let liar = Liar::default();
    let Owner {
        _dir,
        mut net,
        keys: _,
        client,
        conn,
    } = owner(transport, seed, &liar).await;
    client.execute(INDEXES).await.unwrap();
    let rounds = workload(seed, 3);
    let set = replicas(&net, &client).await;
    run(&client, &conn, &rounds[0], 6).await;

    // The first replica shows an old head and withholds every row: skipped, reported behind.
    *liar.lock().unwrap() = Some((set[0], Lie::Stale));
    run(&client, &conn, &rounds[1], 6).await;
    let mut compared = agree(&client, &conn, &rounds[1].queries).await;
    let (head, status) = client.replicas().await.unwrap();
    assert!(status[0].seq < head, "{status:?} at {head}");

    // It acknowledges entries and drops them: its head shows it behind.
    *liar.lock().unwrap() = Some((set[0], Lie::Drop));
    run(&client, &conn, &rounds[2], 6).await;
    compared += agree(&client, &conn, &rounds[2].queries).await;
    let (head, status) = client.replicas().await.unwrap();
    assert!(status[0].seq < head, "{status:?} at {head}");

    // It forges the entries it hands a wiped peer: the peer refuses them and catches up
    // from the honest one; alone, it then answers every query.
    *liar.lock().unwrap() = Some((set[0], Lie::Forge));
    let order = [set[1], set[0], set[2]];
    compared += wiped_then_alone(&mut net, &client, &conn, &rounds[2].queries, &order).await;
    println!("{compared} statements agree with SQLite");
    net.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_replicas_are_never_believed_in_memory() {
    lying_replicas_are_never_believed(Transport::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_replicas_are_never_believed_over_grpc() {
    lying_replicas_are_never_believed(Transport::Grpc).await;
}

/// A replica that ignores the cursor of paged reads (it answers the first page again) gets
/// an error naming the fault from the client's page checks, never a row twice and never a
/// loop: a streamed full scan and a streamed full-text match, each replica lying in turn.
async fn a_replica_ignoring_cursors_is_caught(transport: Transport) {
    let seed = wwt_tests::seed(0xc0_2026);
    let liar = Liar::default();
    let (_dir, net) = network(transport, seed, &liar).await;
    let mut config = ClientConfig::new(net.endpoints.tracker_list().unwrap());
    config.stream_batch = 8;
    let client = Client::connect(&Keystore::generate(), net.connector(), config)
        .await
        .unwrap();
    client
        .execute(
            "CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT);
             CREATE INDEX ON notes USING fulltext (body)",
        )
        .await
        .unwrap();
    let values: Vec<String> = (0..40).map(|i| format!("({i}, 'note {i}')")).collect();
    client
        .execute(&format!("INSERT INTO notes VALUES {}", values.join(", ")))
        .await
        .unwrap();
    let every: Vec<i64> = (0..40).collect();
    let mut caught = 0;
    for r in replicas(&net, &client).await {
        *liar.lock().unwrap() = Some((r, Lie::IgnoresCursor));
        for sql in [
            "SELECT id FROM notes",
            "SELECT id FROM notes WHERE MATCH(body, 'note')",
        ] {
            let read = async {
                let mut stream = client.query(sql).await?;
                let mut rows = Vec::new();
                while let Some(batch) = stream.next_batch().await? {
                    rows.extend(batch);
                }
                Ok::<_, wwt_client::db::ClientError>(rows)
            };
            let read = tokio::time::timeout(Duration::from_secs(60), read)
                .await
                .unwrap_or_else(|_| panic!("{sql}: the client looped on replica {r}'s pages"));
            match read {
                Ok(rows) => {
                    let mut ids: Vec<i64> = rows
                        .iter()
                        .map(|row| match row.as_slice() {
                            [Value::Int(id)] => *id,
                            other => panic!("{sql}: {other:?}"),
                        })
                        .collect();
                    ids.sort_unstable();
                    assert_eq!(ids, every, "{sql}, replica {r} lying");
                }
                Err(e) => {
                    assert!(e.to_string().contains("use another replica"), "{sql}: {e}");
                    caught += 1;
                }
            }
        }
    }
    assert!(caught > 0, "no read went to a lying replica");
    *liar.lock().unwrap() = None;
    net.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_ignoring_cursors_is_caught_in_memory() {
    a_replica_ignoring_cursors_is_caught(Transport::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_ignoring_cursors_is_caught_over_grpc() {
    a_replica_ignoring_cursors_is_caught(Transport::Grpc).await;
}

async fn recovery_from_the_keystore_alone_restores_every_table(transport: Transport) {
    let seed = wwt_tests::seed(0x4ec_2026);
    let Owner {
        _dir,
        mut net,
        keys,
        client,
        conn,
    } = owner(transport, seed, &Liar::default()).await;
    let rounds = workload(seed, 2);
    run(&client, &conn, &rounds[0], 3).await;
    // With two storage providers down, no segment finds six homes: the indexes are created,
    // but their log entries cannot go into pieces yet. The next statement stores them.
    let storage: Vec<usize> = (0..net.endpoints.providers.len())
        .filter(|p| !net.endpoints.providers[*p].index)
        .take(2)
        .collect();
    for p in &storage {
        net.stop_provider(*p).await.unwrap();
    }
    net.wait_alive(5).await.unwrap();
    client.execute(INDEXES).await.unwrap();
    for p in &storage {
        net.restart_provider(*p, false).await.unwrap();
    }
    net.wait_alive(7).await.unwrap();
    run(&client, &conn, &rounds[1], 6).await;
    let mut compared = agree(&client, &conn, &rounds[1].queries).await;
    drop(client);

    // Every replica loses its index folder: only the keys and the pieces are left.
    for p in net.endpoints.index_providers().collect::<Vec<_>>() {
        net.restart_provider(p, true).await.unwrap();
    }
    let config = ClientConfig::new(net.endpoints.tracker_list().unwrap());
    let (client, recovered) = Client::recover(&keys, net.connector(), config)
        .await
        .unwrap();
    // Every table, with as many rows as SQLite holds (names as SQL folds them).
    let tables: Vec<(String, i64)> = recovered
        .tables
        .iter()
        .map(|(name, rows)| (name.to_lowercase(), *rows))
        .collect();
    let want: Vec<(String, i64)> = ["t", "u"]
        .iter()
        .map(
            |t| match sqlite_rows(&conn, &format!("SELECT count(*) FROM {t}"))[0][0] {
                Value::Int(n) => (t.to_string(), n),
                ref other => panic!("{other:?}"),
            },
        )
        .collect();
    assert_eq!(tables, want);
    assert_eq!(recovered.replicas.len(), 3);
    compared += agree(&client, &conn, &rounds[1].queries).await;
    // A device connecting afterwards finds it all.
    let fresh = connect(&net, &keys).await;
    compared += agree(&fresh, &conn, &rounds[1].queries).await;
    println!(
        "recovered {} log entries; {compared} statements agree with SQLite",
        recovered.entries
    );
    net.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_from_the_keystore_alone_restores_every_table_in_memory() {
    recovery_from_the_keystore_alone_restores_every_table(Transport::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_from_the_keystore_alone_restores_every_table_over_grpc() {
    recovery_from_the_keystore_alone_restores_every_table(Transport::Grpc).await;
}

async fn a_replica_gone_for_good_is_replaced(transport: Transport) {
    let seed = wwt_tests::seed(0x9e9_2026);
    let Owner {
        _dir,
        mut net,
        keys,
        client,
        conn,
    } = owner(transport, seed, &Liar::default()).await;
    client.execute(INDEXES).await.unwrap();
    let rounds = workload(seed, 2);
    run(&client, &conn, &rounds[0], 6).await;
    let set = replicas(&net, &client).await;
    let spare = net
        .endpoints
        .index_providers()
        .find(|p| !set.contains(p))
        .unwrap();

    // A replica dies for good: once the trackers no longer list it, a device that connects
    // replaces it with the spare, its next entries name the new set, and the spare catches
    // up from the other two.
    net.stop_provider(set[0]).await.unwrap();
    net.wait_alive(6).await.unwrap();
    let device = connect(&net, &keys).await;
    let now = replicas(&net, &device).await;
    assert!(now.contains(&spare) && !now.contains(&set[0]), "{now:?}");
    run(&device, &conn, &rounds[1], 6).await;
    caught_up(&net, &device, spare).await;

    // Through the spare alone, every query matches.
    let mut config = ClientConfig::new(net.endpoints.tracker_list().unwrap());
    config.index = vec![net.endpoints.providers[spare].address.clone()];
    let alone = Client::connect(&keys, net.connector(), config)
        .await
        .unwrap();
    let compared = agree(&alone, &conn, &rounds[1].queries).await;
    println!("{compared} statements agree with SQLite");
    net.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_gone_for_good_is_replaced_in_memory() {
    a_replica_gone_for_good_is_replaced(Transport::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_gone_for_good_is_replaced_over_grpc() {
    a_replica_gone_for_good_is_replaced(Transport::Grpc).await;
}

/// Two devices of one owner raced for a seq and one replica kept the loser's entry: it
/// refuses every later entry and cannot catch up. A replica catching up never follows it. A
/// device that connects replaces it with the spare, which catches up; then another of the
/// first set stops, and writes and reads go on.
async fn a_replica_holding_a_losing_entry_is_replaced(transport: Transport) {
    let seed = wwt_tests::seed(0xf0e_2026);
    let Owner {
        _dir,
        mut net,
        keys,
        client,
        conn,
    } = owner(transport, seed, &Liar::default()).await;
    let rounds = workload(seed, 2);
    run(&client, &conn, &rounds[0], 6).await;
    let set = replicas(&net, &client).await;
    let spare = net
        .endpoints
        .index_providers()
        .find(|p| !set.contains(p))
        .unwrap();

    // The other device's entry for the next seq reaches only the last replica of the set.
    let owner = wwt_net::Identity::from_secret(keys.identity.to_bytes());
    let (connector, providers) = (net.connector(), net.endpoints.providers.clone());
    let index = |p: usize| connector.index(&providers[p].address).unwrap();
    let head_of = |p: usize| {
        let (api, ask) = (
            index(p),
            owner.sign(GetHead {
                owner: owner.node_id(),
            }),
        );
        async move { api.head(ask.unwrap()).await.unwrap() }
    };
    // An entry after `head`, naming `replicas`, that creates a table nobody else does.
    let after = |head: &Signed<Append>, replicas: Vec<wwt_net::types::NodeId>, table: u8| {
        owner
            .sign(Append {
                seq: open_entry(head).unwrap().1.seq + 1,
                prev: entry_hash(head),
                replicas,
                op: LogOp::CreateTable(CreateTable {
                    table: TableId([table; 16]),
                    schema: TableSchema { indexes: vec![] },
                }),
            })
            .unwrap()
    };
    let head = head_of(set[2]).await.unwrap();
    let named = open_entry(&head).unwrap().1.replicas;
    index(set[2])
        .append(after(&head, named, 0xfe))
        .await
        .unwrap();
    // This device's entry wins the seq at the other two.
    run(&client, &conn, &rounds[1], 3).await;

    // The second replica, wiped and handed an entry of the head's lineage that names the
    // forked replica first, catches up from the next one: to the head, not the losing entry.
    let head = head_of(set[0]).await.unwrap();
    net.restart_provider(set[1], true).await.unwrap();
    let node = |p: usize| providers[p].node_id().unwrap();
    let probe = after(&head, vec![node(set[2]), node(set[0]), node(set[1])], 0xfd);
    let refused = index(set[1]).append(probe).await.unwrap_err();
    assert!(matches!(refused, NetError::Precondition(_)), "{refused}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while head_of(set[1]).await.map(|h| entry_hash(&h)) != Some(entry_hash(&head)) {
        assert!(
            Instant::now() < deadline,
            "seed {seed:#x}: the wiped replica never reached the head"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let device = connect(&net, &keys).await;
    let now = replicas(&net, &device).await;
    assert!(
        now.contains(&spare) && !now.contains(&set[2]),
        "seed {seed:#x}: {now:?}"
    );
    for sql in &rounds[1].changes[3..] {
        both(&device, &conn, sql).await;
    }
    caught_up(&net, &device, spare).await;
    net.stop_provider(set[0]).await.unwrap();
    net.wait_alive(6).await.unwrap();
    both(
        &device,
        &conn,
        "INSERT INTO u VALUES (424242, 1, 'after the fork')",
    )
    .await;
    let compared = agree(&device, &conn, &rounds[1].queries).await;
    println!("{compared} statements agree with SQLite");
    net.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_holding_a_losing_entry_is_replaced_in_memory() {
    a_replica_holding_a_losing_entry_is_replaced(Transport::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_holding_a_losing_entry_is_replaced_over_grpc() {
    a_replica_holding_a_losing_entry_is_replaced(Transport::Grpc).await;
}

/// Two devices of one owner insert into one table at once: every row of both lands.
async fn two_clients_of_one_owner_lose_no_row(transport: Transport) {
    let seed = wwt_tests::seed(0x2c1_2026);
    let (_dir, net) = network(transport, seed, &Liar::default()).await;
    let keys = Keystore::generate();
    let first = connect(&net, &keys).await;
    first
        .execute(
            "CREATE TABLE n (id BIGINT PRIMARY KEY, who TEXT); CREATE INDEX ON n USING hash (who)",
        )
        .await
        .unwrap();
    let second = connect(&net, &keys).await;
    let rows = 40;
    let write = |client: Client, who: &'static str, offset: i64| async move {
        for i in 0..rows {
            let sql = format!("INSERT INTO n VALUES ({}, '{who}')", offset + i);
            client
                .execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        client
    };
    // Interleaved on one task: each waits on the network while the other goes on.
    let (a, b) = tokio::join!(write(first, "first", 0), write(second, "second", 1000));
    for client in [&a, &b] {
        let sql = "SELECT who, count(*) FROM n GROUP BY who ORDER BY who";
        assert_eq!(
            result_rows(sql, client.execute(sql).await),
            vec![
                vec![Value::Text("first".into()), Value::Int(rows)],
                vec![Value::Text("second".into()), Value::Int(rows)],
            ]
        );
    }
    net.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_of_one_owner_lose_no_row_in_memory() {
    two_clients_of_one_owner_lose_no_row(Transport::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_of_one_owner_lose_no_row_over_grpc() {
    two_clients_of_one_owner_lose_no_row(Transport::Grpc).await;
}

/// A device whose catalog is older than the log's (another device created a table since)
/// creates a table: both tables stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_created_on_a_stale_catalog_loses_no_other_table() {
    let seed = wwt_tests::seed(0x5ca_2026);
    let (_dir, net) = network(Transport::Memory, seed, &Liar::default()).await;
    let keys = Keystore::generate();
    let first = connect(&net, &keys).await;
    first
        .execute("CREATE TABLE a (id BIGINT PRIMARY KEY)")
        .await
        .unwrap();
    let second = connect(&net, &keys).await;
    second
        .execute("CREATE TABLE b (id BIGINT PRIMARY KEY)")
        .await
        .unwrap();
    // The first device reads (and so learns the new head) before it writes.
    first.execute("SELECT * FROM a").await.unwrap();
    first
        .execute("CREATE TABLE c (id BIGINT PRIMARY KEY); INSERT INTO c VALUES (1)")
        .await
        .unwrap();
    let fresh = connect(&net, &keys).await;
    let names: Vec<String> = fresh
        .catalog()
        .await
        .tables()
        .map(|t| t.name.clone())
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
    net.shutdown().await.unwrap();
}

/// A device that saw a newer head, or a new one that finds the log in pieces further on,
/// refuses an emptied replica set instead of showing no tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_never_takes_wiped_replicas_for_an_empty_database() {
    let seed = wwt_tests::seed(0x3e9_2026);
    let (dir, mut net) = network(Transport::Memory, seed, &Liar::default()).await;
    let keys = Keystore::generate();
    let mut config = ClientConfig::new(net.endpoints.tracker_list().unwrap());
    config.head_file = Some(dir.path().join("head"));
    let client = Client::connect(&keys, net.connector(), config.clone())
        .await
        .unwrap();
    client
        .execute("CREATE TABLE notes (id BIGINT PRIMARY KEY); INSERT INTO notes VALUES (1)")
        .await
        .unwrap();
    drop(client);
    for p in net.endpoints.index_providers().collect::<Vec<_>>() {
        net.restart_provider(p, true).await.unwrap();
    }
    let err = Client::connect(&keys, net.connector(), config)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("behind seq"), "{err}");
    // A new device, with no kept head, finds the log in pieces ahead of the replicas.
    let config = ClientConfig::new(net.endpoints.tracker_list().unwrap());
    let err = Client::connect(&keys, net.connector(), config)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("wwt recover"), "{err}");
    net.shutdown().await.unwrap();
}
