//! `wwt demo`, the main job in one command: starts a real local network (a tracker and six
//! providers serving gRPC on loopback, three also index providers), creates a
//! table with realistic rows through SQL, runs a query on each index with what the index
//! provider learns, updates a row and walks its history, shows what each party stored (and
//! that none of it is plaintext), then stops two providers (one of them an index provider) and
//! reads every row back from a fresh client that has only the keys, and stops a third to show
//! the rows that are lost.
//!
//! Every result is checked against what the sample rows say ([`sample`]): each query's rows,
//! the update's versions, and every row read back, compared one by one with the row written;
//! a difference fails the demo, naming the row.

mod sample;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail, ensure};
use wwt_engine::Keystore;
use wwt_query::{Outcome, Row, Value};

use crate::shell::{Settings, print_outcome};
use sample::{BALANCE, Expect};
use wwt_client::db::{Client, ClientConfig, ClientError};
use wwt_client::store::StoreError;
use wwt_devnet::{LocalNet, Shape, scan};

/// Options of `wwt demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Folder for the network's nodes (default: a fresh temporary folder, removed after).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Sample rows to write.
    #[arg(long, default_value_t = 20_000)]
    pub rows: usize,
    /// Seed of the network's node keys and placement draws (default: random keys).
    #[arg(long)]
    pub seed: Option<u64>,
}

async fn show(client: &Client, title: &str, sql: &str) -> Result<Vec<Outcome>> {
    println!("\n-- {title}\nwwt> {sql}");
    let start = Instant::now();
    let out = client.execute(sql).await?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let mut stdout = std::io::stdout().lock();
    for o in &out {
        print_outcome(o, Settings::default(), &mut stdout)?;
    }
    println!("({ms:.1} ms)");
    Ok(out)
}

/// Fails with every difference between `outcome` and `expect`, or prints what matched.
fn verify(what: &str, expect: &Expect, outcome: &[Outcome]) -> Result<()> {
    match expect.check(outcome) {
        Ok(matched) => {
            println!("   checked: {matched}");
            Ok(())
        }
        Err(wrong) => bail!("{what} returned the wrong rows:\n  {}", wrong.join("\n  ")),
    }
}

/// What the parties see of a query: its EXPLAIN (pushed, on the client, leaked).
async fn explain(client: &Client, sql: &str) -> Result<()> {
    for o in client.execute(&format!("EXPLAIN {sql}")).await? {
        if let Outcome::Explain(text) = o {
            for line in text.lines() {
                println!("   | {line}");
            }
        }
    }
    Ok(())
}

/// Runs the demo.
pub async fn run(o: &Options) -> Result<()> {
    let tmp;
    let root = match &o.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    ensure!(o.rows > 0, "--rows must be at least 1");
    let shape = Shape {
        heartbeat_ms: 200,
        seed: o.seed,
        ..Shape::default()
    };
    let mut net = LocalNet::start(&root.join("net"), shape).await?;
    println!(
        "wwt demo: a local network on loopback under {}{}",
        root.display(),
        o.seed.map(|s| format!(" (seed {s})")).unwrap_or_default()
    );
    for n in net
        .endpoints
        .trackers
        .iter()
        .chain(&net.endpoints.providers)
    {
        let role = if n.index { " (index provider)" } else { "" };
        println!("  {:<11} {}{role}", n.name, n.address);
    }

    // The owner's keys live only in this process: the network sees ciphertext.
    let keys = Keystore::generate();
    let config = ClientConfig::new(net.endpoints.tracker_list()?);
    let client = Client::connect(&keys, net.connector(), config.clone()).await?;
    show(
        &client,
        "a table, and an index of each kind",
        "CREATE TABLE people (id BIGINT PRIMARY KEY, name TEXT NOT NULL, email TEXT, city TEXT, \
         bio TEXT, balance DOUBLE, joined TIMESTAMP); \
         CREATE INDEX ON people USING fulltext (bio); \
         CREATE INDEX ON people USING hash (city); \
         CREATE INDEX ON people USING btree (balance)",
    )
    .await?;
    let rows: Vec<Row> = (0..o.rows).map(sample::row).collect();
    println!(
        "\n{} sample rows, e.g. {}",
        rows.len(),
        rows[0]
            .iter()
            .map(Value::to_sql)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let start = Instant::now();
    for chunk in rows.chunks(5_000) {
        client.insert_rows("people", chunk.to_vec()).await?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "inserted: encrypted, coded RS 4+2, uploaded and indexed in {secs:.2} s ({:.0} rows/s)",
        rows.len() as f64 / secs
    );

    // A row that exists however many were written (4242 of the default 20,000).
    let pick = 4242 % rows.len();
    for q in sample::queries(&rows, pick) {
        let out = show(&client, q.title, &q.sql).await?;
        verify(q.title, &q.expect, &out)?;
        explain(&client, &q.sql).await?;
    }
    let out = show(
        &client,
        "an update writes a new version, hash-linked to the old one",
        &format!("UPDATE people SET balance = balance + 100 WHERE id = {pick}"),
    )
    .await?;
    ensure!(
        matches!(out[..], [Outcome::Updated(1)]),
        "the update changed {out:?}, not the one row {pick}"
    );
    let history = client.history("people", &Value::Int(pick as i64)).await?;
    for v in &history {
        println!("   version {}: balance {}", v.version, v.row[BALANCE]);
    }
    // The rows as they now are: the picked one with its new balance.
    let mut written = rows.clone();
    written[pick][BALANCE] = match &rows[pick][BALANCE] {
        Value::Double(b) => Value::Double(b + 100.0),
        other => bail!("balance {other:?} is not a number"),
    };
    let versions: Vec<Row> = history.iter().map(|v| v.row.clone()).collect();
    let wrong = sample::compare(&versions, &[written[pick].clone(), rows[pick].clone()]);
    ensure!(
        wrong.is_empty(),
        "the history of row {pick} is wrong:\n  {}",
        wrong.join("\n  ")
    );
    println!("   checked: 2 versions, the new one first, as written");

    println!("\nwhat each party stored (scanned for sample values, names and words):");
    let needles = [
        "Lovelace",
        "example.org",
        "Nairobi",
        "cryptography",
        "people",
        "balance",
    ];
    let mut total = 0;
    for n in net
        .endpoints
        .trackers
        .iter()
        .chain(&net.endpoints.providers)
    {
        let found = scan(&n.dir, &needles)?;
        total += found.hits.len();
        println!(
            "  {:<11} {:>4} files, {:>10} bytes, {} plaintext hits",
            n.name,
            found.files,
            found.bytes,
            found.hits.len()
        );
    }
    ensure!(total == 0, "plaintext found in the network's files");
    println!("  all parties: 0 plaintext hits");

    let check = "SELECT count(*), sum(balance), min(joined), max(name) FROM people";
    let before = client.execute(check).await?;
    drop(client);
    let all = "SELECT * FROM people ORDER BY id";
    for (stop, names) in [
        (
            vec![1, 4],
            "provider-1 (one of the 3 index providers), provider-4",
        ),
        (vec![5], "provider-1, provider-4, provider-5"),
    ] {
        for p in stop {
            net.stop_provider(p).await?;
        }
        // A fresh client, as on a new machine: only the keys, nothing cached.
        let fresh = Client::connect(&keys, net.connector(), config.clone()).await?;
        let start = Instant::now();
        match fresh.execute(check).await {
            Ok(after) => {
                ensure!(after == before, "the rows read back differ");
                // Every row, each compared with the row written.
                let back = match &fresh.execute(all).await?[..] {
                    [Outcome::Rows(result)] => result.rows.clone(),
                    other => bail!("{all} returned {other:?}"),
                };
                let wrong = sample::compare(&back, &written);
                ensure!(
                    wrong.is_empty(),
                    "{} of the rows read back differ from the rows written:\n  {}",
                    wrong.len(),
                    wrong
                        .iter()
                        .take(20)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("\n  ")
                );
                println!(
                    "\nstopped {names}: a fresh client with only the keys read all {} rows back \
                     and they match the rows written, one by one, in {:.2} s",
                    back.len(),
                    start.elapsed().as_secs_f64()
                );
            }
            Err(ClientError::Store(lost @ StoreError::RowsLost { .. })) => {
                println!("\nstopped {names}: {lost}");
            }
            Err(e) => bail!(e),
        }
    }
    net.shutdown().await?;
    Ok(())
}
