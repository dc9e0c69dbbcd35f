//! `wwt demo`, the main job in one command: starts a real local network (a tracker and six
//! providers serving gRPC on loopback, each also an index provider), creates a
//! table with realistic rows through SQL, runs a query on each index with what the index
//! provider learns, updates a row and walks its history, shows what each party stored (and
//! that none of it is plaintext), then stops two providers and reads every row back from a
//! fresh client that has only the keys, and stops a third to show the rows that are lost.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail, ensure};
use wwt_engine::Keystore;
use wwt_query::{Outcome, Value};

use crate::shell::print_outcome;
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
}

const FIRST: [&str; 8] = [
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken",
];
const LAST: [&str; 8] = [
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson",
];
const CITY: [&str; 6] = ["Lisbon", "Nairobi", "Osaka", "Quito", "Tallinn", "Winnipeg"];
const TOPICS: [&str; 10] = [
    "compilers",
    "databases",
    "cryptography",
    "operating systems",
    "distributed consensus",
    "type theory",
    "networking",
    "graphics",
    "numerical analysis",
    "formal verification",
];

/// One sample person: id, name, email, city, bio, balance, joined.
fn sample_row(i: usize) -> Vec<Value> {
    let first = FIRST[i % 8];
    let last = LAST[(i / 8) % 8];
    let bio = format!(
        "{first} {last} works on {} and teaches {}; based in {}.",
        TOPICS[(i * 3) % 10],
        TOPICS[(i * 7 + 1) % 10],
        CITY[(i * 7) % 6]
    );
    vec![
        Value::Int(i as i64),
        Value::Text(format!("{first} {last}")),
        Value::Text(format!(
            "{}.{}{i}@example.org",
            first.to_lowercase(),
            last.to_lowercase()
        )),
        Value::Text(CITY[(i * 7) % 6].into()),
        Value::Text(bio),
        Value::Double(((i * 7919) % 100_000) as f64 / 10.0),
        Value::Timestamp(1_600_000_000_000_000 + (i as i64 % 1000) * 86_400_000_000),
    ]
}

async fn show(client: &Client, title: &str, sql: &str) -> Result<Vec<Outcome>> {
    println!("\n-- {title}\nwwt> {sql}");
    let start = Instant::now();
    let out = client.execute(sql).await?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let mut stdout = std::io::stdout().lock();
    for o in &out {
        print_outcome(o, false, &mut stdout)?;
    }
    println!("({ms:.1} ms)");
    Ok(out)
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
    let shape = Shape {
        heartbeat_ms: 200,
        ..Shape::default()
    };
    let mut net = LocalNet::start(&root.join("net"), shape).await?;
    println!(
        "wwt demo: a local network on loopback under {}",
        root.display()
    );
    let index = net.endpoints.index_address()?;
    for n in net
        .endpoints
        .trackers
        .iter()
        .chain(&net.endpoints.providers)
    {
        let role = if n.address == index {
            " (holds this client's indexes)"
        } else {
            ""
        };
        println!("  {:<11} {}{role}", n.name, n.address);
    }

    // The owner's keys live only in this process: the network sees ciphertext.
    let keys = Keystore::generate();
    let config = ClientConfig::new(net.endpoints.tracker_list()?, index);
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
    let rows: Vec<Vec<Value>> = (0..o.rows).map(sample_row).collect();
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

    let queries = [
        (
            "primary key: the index provider's primary map",
            "SELECT name, email, city FROM people WHERE id = 4242",
        ),
        (
            "equality (hash) index",
            "SELECT city, count(*) FROM people WHERE city IN ('Nairobi', 'Osaka') GROUP BY city ORDER BY city",
        ),
        (
            "range (btree) index over order-preserving ciphertexts",
            "SELECT name, balance FROM people WHERE balance BETWEEN 1000 AND 1010 ORDER BY balance DESC LIMIT 3",
        ),
        (
            "full-text index over keyed word tokens, BM25-ranked",
            "SELECT id, name FROM people WHERE MATCH(bio, 'cryptography AND NOT lisbon') LIMIT 3",
        ),
    ];
    for (title, sql) in queries {
        show(&client, title, sql).await?;
        explain(&client, sql).await?;
    }
    show(
        &client,
        "an update writes a new version, hash-linked to the old one",
        "UPDATE people SET balance = balance + 100 WHERE id = 4242",
    )
    .await?;
    let history = client.history("people", &Value::Int(4242)).await?;
    for v in &history {
        println!("   version {}: balance {}", v.version, v.row[5]);
    }

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
    for (stop, names) in [
        (vec![1, 4], "provider-1, provider-4"),
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
                println!(
                    "\nstopped {names}: a fresh client with only the keys read all {} rows back \
                     and they match, in {:.2} s",
                    rows.len(),
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
