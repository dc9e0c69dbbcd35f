//! `wwt demo`, the main job in one command: starts a real local network (a tracker and six
//! providers serving gRPC on loopback), writes sample rows through the storage engine and the
//! storage client, shows that no stored byte is plaintext, stops two providers and reads every
//! row back, then stops a third and shows the rows that can no longer be read.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use wwt_engine::table::RowWrite;
use wwt_engine::{CodingParams, MasterKey, Table};
use wwt_net::Identity;

use crate::devnet::{self, LocalNet, Shape};
use crate::store::{SegmentCache, Storage, StorageConfig, StoreError};

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

fn sample_row(i: usize) -> String {
    let first = FIRST[i % 8];
    let last = LAST[(i / 8) % 8];
    format!(
        "{{\"id\":{i},\"name\":\"{first} {last}\",\"email\":\"{}.{}{i}@example.org\",\"city\":\"{}\",\"balance\":{}}}",
        first.to_lowercase(),
        last.to_lowercase(),
        CITY[(i * 7) % 6],
        (i * 7919) % 100_000
    )
}

/// Runs the demo.
pub fn run(o: &Options) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run_async(o))
}

async fn run_async(o: &Options) -> Result<()> {
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
    for n in net
        .endpoints
        .trackers
        .iter()
        .chain(&net.endpoints.providers)
    {
        println!("  {:<11} {}", n.name, n.address);
    }

    // The owner's keys live only in this process: the network sees ciphertext.
    let master = MasterKey::generate();
    let mut table = Table::new(&master, "people", CodingParams::default(), 256 << 10)?;
    let rows: Vec<String> = (0..o.rows).map(sample_row).collect();
    println!("\n{} sample rows, e.g. {}", rows.len(), rows[0]);
    let row_ids = table.keys().row_id.clone();
    let batch = table.write(rows.iter().enumerate().map(|(i, r)| RowWrite {
        row: row_ids.row_id(&(i as u64).to_le_bytes()),
        version: 1,
        plaintext: r.as_bytes(),
    }));
    let manifests = batch
        .segments
        .iter()
        .map(|s| (s.manifest.segment, s.manifest.clone()))
        .collect();

    let storage = Storage::new(
        Identity::generate()?,
        &net.endpoints.tracker_list()?,
        net.connector(),
        StorageConfig::default(),
    )?;
    let start = Instant::now();
    let mut bytes = 0;
    for chunk in batch.segments.chunks(8) {
        for report in futures::future::join_all(chunk.iter().map(|s| storage.put(s))).await {
            bytes += report?.bytes_sent;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "encrypted, coded RS 4+2 and uploaded: {} segments, {} pieces, {:.1} MB in {secs:.2} s",
        batch.segments.len(),
        batch.segments.len() * 6,
        bytes as f64 / 1e6
    );
    let (lines, _) = devnet::status(&net.endpoints, net.connector().as_ref()).await;
    for line in lines {
        println!("  {line}");
    }

    let needles = ["Lovelace", "example.org", "Nairobi", "\"balance\""];
    let (files, hits) = scan(net.dir(), &needles)?;
    println!(
        "\nscanned all {files} files the tracker and providers wrote for {needles:?}: {hits} plaintext hits"
    );
    ensure!(hits == 0, "plaintext found in the network's files");

    for (stop, names) in [
        (vec![1, 4], "provider-1, provider-4"),
        (vec![5], "provider-1, provider-4, provider-5"),
    ] {
        for p in stop {
            net.stop_provider(p).await?;
        }
        let start = Instant::now();
        match storage
            .read_rows(
                &mut table,
                &manifests,
                &batch.locators,
                &mut SegmentCache::new(0),
            )
            .await
        {
            Ok(back) => {
                for (i, row) in back.iter().enumerate() {
                    ensure!(
                        row == rows[i].as_bytes(),
                        "row {i} read back different bytes"
                    );
                }
                println!(
                    "stopped {names}: {}/{} rows read back and checked in {:.2} s",
                    back.len(),
                    rows.len(),
                    start.elapsed().as_secs_f64()
                );
            }
            Err(e @ StoreError::RowsLost { .. }) => println!("stopped {names}: {e}"),
            Err(e) => bail!(e),
        }
    }
    net.shutdown().await?;
    Ok(())
}

/// Counts the files under `dir` and the occurrences of `needles` in them.
fn scan(dir: &Path, needles: &[&str]) -> Result<(usize, usize)> {
    let mut files = 0;
    let mut hits = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = e?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            files += 1;
            let bytes = std::fs::read(&path)?;
            for n in needles {
                hits += bytes
                    .windows(n.len())
                    .filter(|w| *w == n.as_bytes())
                    .count();
            }
        }
    }
    Ok((files, hits))
}
