//! `wwt bench-sql`: SQL on a local network (6 providers, 3 of them index providers, 1
//! tracker, loopback gRPC) against SQLite on the same rows in the same run (a file on the same
//! disk, B-tree indexes and an FTS5 table): bulk INSERT rows/s, and p50/p99 of a primary-key
//! lookup, a keyword top-10 and a range query with LIMIT 100, with the ratios; and the same
//! for an owner whose log is on three index replicas (R = 3) beside one on a single replica;
//! then, with no segment cache, primary-key and range p50/p99 through the tracker beside
//! through the DHT once every tracker is stopped; and compaction (MB/s of live rows rewritten
//! after 90 % of a table's rows are deleted) beside inserting the same rows afresh.

use std::time::Instant;

use anyhow::Result;
use wwt_engine::Keystore;
use wwt_query::{Outcome, Value};

use crate::{median, percentile};
use wwt_client::db::{Client, ClientConfig};
use wwt_devnet::{LocalNet, Shape};

/// Options of `wwt bench-sql`.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Rows to load.
    #[arg(long, default_value_t = 100_000)]
    pub rows: usize,
    /// Queries of each kind timed.
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    /// Rows per INSERT batch.
    #[arg(long, default_value_t = 10_000)]
    pub batch: usize,
}

const WORDS: [&str; 24] = [
    "ledger", "harbor", "violet", "engine", "quartz", "meadow", "signal", "copper", "lantern",
    "orbit", "thistle", "canyon", "pepper", "glacier", "saddle", "velvet", "ember", "falcon",
    "island", "marble", "nectar", "prairie", "ripple", "summit",
];

/// A deterministic row: id, a sentence of 12 words drawn with a skew, a price.
fn row(i: u64) -> (i64, String, i64) {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5555;
    let mut words = Vec::with_capacity(12);
    for _ in 0..12 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Squaring skews towards the first words, as natural text is skewed.
        let r = (x % 1000) as f64 / 1000.0;
        words.push(WORDS[((r * r) * WORDS.len() as f64) as usize]);
    }
    (i as i64, words.join(" "), (x % 1_000_000) as i64)
}

/// p50 and p99 of `n` runs of `query(i)`, in milliseconds.
async fn time_async<F, Fut>(n: usize, mut query: F) -> Result<(f64, f64)>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut ms = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        query(i).await?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok((percentile(&ms, 0.5), percentile(&ms, 0.99)))
}

fn time_sync(n: usize, mut query: impl FnMut(usize) -> Result<()>) -> Result<(f64, f64)> {
    futures::executor::block_on(time_async(n, |i| std::future::ready(query(i))))
}

fn count(out: Vec<Outcome>) -> Result<usize> {
    match out.as_slice() {
        [Outcome::Rows(rs)] => Ok(rs.rows.len()),
        other => anyhow::bail!("unexpected outcome {other:?}"),
    }
}

/// Runs the benchmark.
pub async fn run(o: &Options) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let rows: Vec<(i64, String, i64)> = (0..o.rows as u64).map(row).collect();
    let n = o.rows.max(1) as u64;

    // Baseline: SQLite on a file in the same folder, same rows, same batches.
    let db = rusqlite::Connection::open(dir.path().join("baseline.sqlite"))?;
    db.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
         CREATE TABLE items (id INTEGER PRIMARY KEY, body TEXT, price INTEGER);
         CREATE INDEX items_price ON items (price);
         CREATE VIRTUAL TABLE items_fts USING fts5 (body, content='items', content_rowid='id');",
    )?;
    let start = Instant::now();
    for chunk in rows.chunks(o.batch) {
        let tx = db.unchecked_transaction()?;
        {
            let mut ins = tx.prepare("INSERT INTO items (id, body, price) VALUES (?1, ?2, ?3)")?;
            let mut fts = tx.prepare("INSERT INTO items_fts (rowid, body) VALUES (?1, ?2)")?;
            for (id, body, price) in chunk {
                ins.execute(rusqlite::params![id, body, price])?;
                fts.execute(rusqlite::params![id, body])?;
            }
        }
        tx.commit()?;
    }
    let sqlite_insert = o.rows as f64 / start.elapsed().as_secs_f64();

    // wwt on a local network with three index providers: one owner's log on all three
    // (R = 3), another's on one (R = 1), the same rows and queries.
    let shape = Shape {
        heartbeat_ms: 500,
        ..Shape::default()
    };
    let mut net = LocalNet::start(&dir.path().join("net"), shape).await?;
    let single = measure(&net, &Keystore::generate(), 1, &rows, o).await?;
    let owner = Keystore::generate();
    let wwt = measure(&net, &owner, 3, &rows, o).await?;
    let key = |i: usize| (i as u64).wrapping_mul(7919) % n;
    let word = |i: usize| WORDS[i % WORDS.len()];
    let low = |i: usize| ((i as u64).wrapping_mul(104_729) % 990_000) as i64;
    let mut pk = db.prepare("SELECT * FROM items WHERE id = ?1")?;
    let sqlite_pk = time_sync(o.queries, |i| {
        pk.query_map([key(i) as i64], |_| Ok(()))?.count();
        Ok(())
    })?;
    let mut kw =
        db.prepare("SELECT rowid FROM items_fts WHERE items_fts MATCH ?1 ORDER BY rank LIMIT 10")?;
    let sqlite_kw = time_sync(o.queries, |i| {
        kw.query_map([word(i)], |_| Ok(()))?.count();
        Ok(())
    })?;
    let mut range =
        db.prepare("SELECT id, price FROM items WHERE price >= ?1 ORDER BY price LIMIT 100")?;
    let sqlite_range = time_sync(o.queries, |i| {
        range.query_map([low(i)], |_| Ok(()))?.count();
        Ok(())
    })?;
    let mut every = db.prepare(
        "SELECT items.id FROM items_fts JOIN items ON items.id = items_fts.rowid \
         WHERE items_fts MATCH ?1 AND items.price < ?2",
    )?;
    let mut matched = 0;
    let sqlite_every = time_sync(EVERY_MATCH_RUNS, |_| {
        matched = every
            .query_map(rusqlite::params![WORDS[0], EVERY_MATCH_PRICE], |_| Ok(()))?
            .count();
        Ok(())
    })?;
    let (compact, upload) = compaction(&net, &rows, o).await?;
    let (tracker_reads, dht_reads) = through_dht(&mut net, &owner, o).await?;
    net.shutdown().await?;
    let Figures {
        insert: wwt_insert,
        pk: wwt_pk,
        keyword: wwt_kw,
        range: wwt_range,
        every_match: wwt_every,
        ..
    } = wwt;

    println!(
        "wwt bench-sql: {} rows, {} queries each; wwt on 6 providers (3 index providers, \
         R = 3) + 1 tracker over loopback gRPC, SQLite (file, WAL, FTS5) on the same rows",
        o.rows, o.queries
    );
    println!("{:<28} {:>12} {:>12} {:>8}", "", "wwt", "SQLite", "ratio");
    let every_name = format!("MATCH, {matched} rows");
    println!(
        "{:<28} {:>12.0} {:>12.0} {:>7.2}x",
        "bulk INSERT rows/s",
        wwt_insert,
        sqlite_insert,
        wwt_insert / sqlite_insert
    );
    for (name, w, s) in [
        ("primary-key lookup", wwt_pk, sqlite_pk),
        ("keyword top-10", wwt_kw, sqlite_kw),
        ("range LIMIT 100", wwt_range, sqlite_range),
        (every_name.as_str(), wwt_every, sqlite_every),
    ] {
        println!(
            "{:<28} {:>12.3} {:>12.3} {:>7.1}x",
            format!("{name} p50 ms"),
            w.0,
            s.0,
            w.0 / s.0
        );
        println!(
            "{:<28} {:>12.3} {:>12.3} {:>7.1}x",
            format!("{name} p99 ms"),
            w.1,
            s.1,
            w.1 / s.1
        );
    }
    println!();
    println!("{:<28} {:>12} {:>12} {:>8}", "", "R = 3", "R = 1", "ratio");
    println!(
        "{:<28} {:>12.0} {:>12.0} {:>7.2}x",
        "bulk INSERT rows/s",
        wwt.insert,
        single.insert,
        wwt.insert / single.insert
    );
    for (name, three, one) in [
        ("primary-key lookup", wwt.pk, single.pk),
        ("keyword top-10", wwt.keyword, single.keyword),
        ("range LIMIT 100", wwt.range, single.range),
    ] {
        for (what, a, b) in [("p50", three.0, one.0), ("p99", three.1, one.1)] {
            println!(
                "{:<28} {:>12.3} {:>12.3} {:>7.2}x",
                format!("{name} {what} ms"),
                a,
                b,
                a / b
            );
        }
    }
    println!(
        "{:<28} {:>12.0} {:>12.0}",
        "log in pieces, bytes/row", wwt.log_bytes_per_row, single.log_bytes_per_row
    );
    println!();
    println!(
        "90 % of {} rows deleted, then the table compacted; the rows kept inserted afresh",
        o.rows
    );
    println!(
        "{:<28} {:>12} {:>12} {:>8}",
        "", "compaction", "INSERT", "ratio"
    );
    println!(
        "{:<28} {:>12.1} {:>12.1} {:>7.2}x",
        "MB/s of live rows (median)",
        compact,
        upload,
        compact / upload
    );
    println!();
    println!("no segment cache; the DHT with every tracker stopped");
    println!("{:<28} {:>12} {:>12} {:>8}", "", "DHT", "tracker", "ratio");
    for (name, dht, tracker) in [
        ("primary-key lookup", dht_reads.0, tracker_reads.0),
        ("keyword top-10", dht_reads.1, tracker_reads.1),
        ("range LIMIT 100", dht_reads.2, tracker_reads.2),
    ] {
        for (what, a, b) in [("p50", dht.0, tracker.0), ("p99", dht.1, tracker.1)] {
            println!(
                "{:<28} {:>12.3} {:>12.3} {:>7.2}x",
                format!("{name} {what} ms"),
                a,
                b,
                a / b
            );
        }
    }
    Ok(())
}

/// Inserts `rows` into `table` (id, body, price), `batch` rows a statement.
async fn insert<'r>(
    client: &Client,
    table: &str,
    rows: impl Iterator<Item = &'r (i64, String, i64)>,
    batch: usize,
) -> Result<()> {
    let rows: Vec<Vec<Value>> = rows
        .map(|(id, body, price)| {
            vec![
                Value::Int(*id),
                Value::Text(body.clone()),
                Value::Int(*price),
            ]
        })
        .collect();
    for chunk in rows.chunks(batch.max(1)) {
        client.insert_rows(table, chunk.to_vec()).await?;
    }
    Ok(())
}

/// Median MB/s, over three owners, of compacting a table of `rows` after 90 % of them were
/// deleted (live sealed rows rewritten), and of inserting the rows it keeps into a fresh
/// table of the same schema (the same rows uploaded).
async fn compaction(
    net: &LocalNet,
    rows: &[(i64, String, i64)],
    o: &Options,
) -> Result<(f64, f64)> {
    let schema = |name: &str| {
        format!(
            "CREATE TABLE {name} (id BIGINT PRIMARY KEY, body TEXT, price BIGINT);
             CREATE INDEX ON {name} USING fulltext (body);
             CREATE INDEX ON {name} USING btree (price)"
        )
    };
    let (mut compact, mut upload) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let mut config = ClientConfig::new(net.endpoints.tracker_list()?);
        config.auto_compact = false;
        let client = Client::connect(&Keystore::generate(), net.connector(), config).await?;
        client.execute(&schema("items")).await?;
        client.execute(&schema("kept")).await?;
        insert(&client, "items", rows.iter(), o.batch).await?;
        client
            .execute("DELETE FROM items WHERE id % 10 <> 0")
            .await?;
        let start = Instant::now();
        let report = client.compact(Some("items")).await?;
        let bytes = report.first().map_or(0, |(_, c)| c.live_bytes) as f64;
        compact.push(bytes / start.elapsed().as_secs_f64() / 1e6);
        let kept = rows.iter().filter(|(id, _, _)| id % 10 == 0);
        let start = Instant::now();
        insert(&client, "kept", kept, o.batch).await?;
        upload.push(bytes / start.elapsed().as_secs_f64() / 1e6);
        client.flush().await;
    }
    Ok((median(compact), median(upload)))
}

/// (p50, p99) ms of primary-key lookups, keyword top-10s and ranges.
type Times = ((f64, f64), (f64, f64), (f64, f64));

/// `owner`'s reads with no segment cache (every read fetches pieces): through the tracker,
/// then through the DHT once every tracker is stopped.
async fn through_dht(net: &mut LocalNet, owner: &Keystore, o: &Options) -> Result<(Times, Times)> {
    let mut config = ClientConfig::new(net.endpoints.tracker_list()?);
    config.discovery = Some(net.discovery());
    config.cache_bytes = 0;
    let client = Client::connect(owner, net.connector(), config.clone()).await?;
    let tracker = reads(&client, o).await?;
    net.stop_trackers().await?;
    let client = Client::connect(owner, net.connector(), config).await?;
    let dht = reads(&client, o).await?;
    Ok((tracker, dht))
}

/// What one owner measured: insert rows/s and (p50, p99) ms of each query kind.
#[derive(Clone, Copy)]
struct Figures {
    insert: f64,
    /// Bytes of pieces that the owner's log added per row loaded.
    log_bytes_per_row: f64,
    pk: (f64, f64),
    keyword: (f64, f64),
    range: (f64, f64),
    /// [`EVERY_MATCH`]: (p50, p99) ms.
    every_match: (f64, f64),
}

/// Loads `rows` as a new owner whose log is on `replicas` index providers, then times the
/// queries.
async fn measure(
    net: &LocalNet,
    owner: &Keystore,
    replicas: usize,
    rows: &[(i64, String, i64)],
    o: &Options,
) -> Result<Figures> {
    let mut config = ClientConfig::new(net.endpoints.tracker_list()?);
    config.replicas = replicas;
    config.discovery = Some(net.discovery());
    let client = Client::connect(owner, net.connector(), config).await?;
    client
        .execute(
            "CREATE TABLE items (id BIGINT PRIMARY KEY, body TEXT, price BIGINT);
             CREATE INDEX ON items USING fulltext (body);
             CREATE INDEX ON items USING btree (price)",
        )
        .await?;
    let start = Instant::now();
    insert(&client, "items", rows.iter(), o.batch).await?;
    let insert = rows.len() as f64 / start.elapsed().as_secs_f64();
    let log_bytes_per_row = client.log_piece_bytes() as f64 / rows.len().max(1) as f64;

    let (pk, keyword, range) = reads(&client, o).await?;
    let every_match = timed(&client, EVERY_MATCH_RUNS, |_| every_match_sql()).await?;
    client.flush().await;
    Ok(Figures {
        insert,
        log_bytes_per_row,
        pk,
        keyword,
        range,
        every_match,
    })
}

/// (p50, p99) ms of `o.queries` primary-key lookups, keyword top-10s and ranges with LIMIT 100
/// over `o.rows` rows.
async fn reads(client: &Client, o: &Options) -> Result<Times> {
    let n = o.rows.max(1) as u64;
    let key = |i: usize| (i as u64).wrapping_mul(7919) % n;
    let word = |i: usize| WORDS[i % WORDS.len()];
    let low = |i: usize| ((i as u64).wrapping_mul(104_729) % 990_000) as i64;
    let q = o.queries;
    let pk = timed(client, q, |i| {
        format!("SELECT * FROM items WHERE id = {}", key(i))
    })
    .await?;
    let keyword = timed(client, q, |i| {
        format!(
            "SELECT id FROM items WHERE MATCH(body, '{}') LIMIT 10",
            word(i)
        )
    })
    .await?;
    let range = timed(client, q, |i| {
        format!(
            "SELECT id, price FROM items WHERE price >= {} ORDER BY price LIMIT 100",
            low(i)
        )
    })
    .await?;
    Ok((pk, keyword, range))
}

/// The most common word and a price bound: a full-text match of about half the rows beside a
/// range predicate, read whole (no LIMIT), in pages at the index provider.
const EVERY_MATCH_PRICE: i64 = 500_000;
const EVERY_MATCH_RUNS: usize = 5;

fn every_match_sql() -> String {
    format!(
        "SELECT id FROM items WHERE MATCH(body, '{}') AND price < {EVERY_MATCH_PRICE}",
        WORDS[0]
    )
}

/// (p50, p99) ms of `n` runs of the statement `sql(i)`.
async fn timed(client: &Client, n: usize, sql: impl Fn(usize) -> String) -> Result<(f64, f64)> {
    time_async(n, |i| {
        let sql = sql(i);
        async move { count(client.execute(&sql).await?).map(drop) }
    })
    .await
}
