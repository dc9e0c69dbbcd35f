//! `wwt demo`: sample rows through the storage engine onto six provider folders on local
//! disk, two providers lost, every row read back; a third lost, and the rows that can no
//! longer be read are named. Until the network lands (issue 3) the "providers" are folders.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use wwt_engine::codec::SegmentManifest;
use wwt_engine::table::RowWrite;
use wwt_engine::{CodingParams, Error, Locator, MasterKey, SegmentId, Table, hex, proof};

/// Options of `wwt demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Folder for the provider folders (default: a fresh temporary folder, removed after).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Sample rows to write.
    #[arg(long, default_value_t = 20_000)]
    pub rows: usize,
}

const PROVIDERS: usize = 6;
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

fn provider_dir(root: &Path, p: usize) -> PathBuf {
    root.join(format!("provider-{p}"))
}

/// Piece `i` of segment number `n` goes to provider `(n + i) % 6`: distinct per segment.
fn holder(n: usize, i: usize) -> usize {
    (n + i) % PROVIDERS
}

/// Runs the demo.
pub fn run(o: &Options) -> Result<()> {
    let tmp;
    let root = match &o.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let master = MasterKey::generate();
    let mut table = Table::new(&master, "people", CodingParams::default(), 1 << 20)?;
    let rows: Vec<String> = (0..o.rows).map(sample_row).collect();
    println!(
        "wwt demo: {} sample rows, RS 4+2, 1 MiB segments, {PROVIDERS} provider folders under {}",
        rows.len(),
        root.display()
    );
    println!("  e.g. {}", rows[0]);

    let batch = table.write(rows.iter().enumerate().map(|(i, r)| RowWrite {
        row: table_row_id(&master, i),
        version: 1,
        plaintext: r.as_bytes(),
    }));
    let mut manifests: HashMap<SegmentId, (usize, SegmentManifest)> = HashMap::new();
    for p in 0..PROVIDERS {
        fs::create_dir_all(provider_dir(&root, p))?;
    }
    for (n, enc) in batch.segments.iter().enumerate() {
        for (i, piece) in enc.pieces.iter().enumerate() {
            let path = provider_dir(&root, holder(n, i)).join(hex(&enc.manifest.pieces[i].hash.0));
            fs::write(&path, piece).with_context(|| format!("writing {}", path.display()))?;
        }
        manifests.insert(enc.manifest.segment, (n, enc.manifest.clone()));
    }
    println!(
        "wrote {} segments as {} pieces:",
        batch.segments.len(),
        batch.segments.len() * 6
    );
    for p in 0..PROVIDERS {
        let (files, bytes) = folder_size(&provider_dir(&root, p))?;
        println!("  provider-{p}: {files} pieces, {bytes} bytes");
    }

    let needles: Vec<&str> = ["Lovelace", "example.org", "Nairobi", "\"balance\""].to_vec();
    let hits = scan_for(&root, &needles)?;
    println!("scanned every stored byte for {needles:?}: {hits} plaintext hits");
    if hits > 0 {
        bail!("plaintext found in provider folders");
    }

    // A ranged read: one row from byte ranges of the data pieces, checked with chunk proofs.
    let loc = &batch.locators[rows.len() / 2];
    let ranged = read_ranged(&mut table, &root, &manifests, loc)?;
    println!(
        "ranged read of row {}: {} (fetched {} bytes, proofs verified)",
        rows.len() / 2,
        String::from_utf8_lossy(&ranged.0),
        ranged.1
    );

    for lost in [[1usize, 4].as_slice(), &[1, 4, 5]] {
        for p in lost {
            let dir = provider_dir(&root, *p);
            if dir.exists() {
                fs::remove_dir_all(&dir)?;
            }
        }
        let names: Vec<String> = lost.iter().map(|p| format!("provider-{p}")).collect();
        let (ok, failed) = read_all(&mut table, &root, &manifests, &batch.locators, &rows)?;
        println!(
            "lost {}: {ok}/{} rows read back and checked",
            names.join(", "),
            rows.len()
        );
        if let Some((_, why)) = failed.first() {
            let some: Vec<usize> = failed.iter().take(5).map(|(row, _)| *row).collect();
            println!(
                "  {} rows unreadable, e.g. rows {some:?}: {why}",
                failed.len()
            );
        }
    }
    Ok(())
}

fn table_row_id(master: &MasterKey, i: usize) -> wwt_engine::RowId {
    master
        .table("people")
        .row_id
        .row_id(&(i as u64).to_le_bytes())
}

fn folder_size(dir: &Path) -> Result<(usize, u64)> {
    let mut files = 0;
    let mut bytes = 0;
    for e in fs::read_dir(dir)? {
        files += 1;
        bytes += e?.metadata()?.len();
    }
    Ok((files, bytes))
}

fn scan_for(root: &Path, needles: &[&str]) -> Result<usize> {
    let mut hits = 0;
    for p in 0..PROVIDERS {
        for e in fs::read_dir(provider_dir(root, p))? {
            let bytes = fs::read(e?.path())?;
            for n in needles {
                hits += bytes
                    .windows(n.len())
                    .filter(|w| *w == n.as_bytes())
                    .count();
            }
        }
    }
    Ok(hits)
}

fn read_piece(root: &Path, n: usize, m: &SegmentManifest, i: usize) -> Option<Vec<u8>> {
    fs::read(provider_dir(root, holder(n, i)).join(hex(&m.pieces[i].hash.0))).ok()
}

fn read_ranged(
    table: &mut Table,
    root: &Path,
    manifests: &HashMap<SegmentId, (usize, SegmentManifest)>,
    loc: &Locator,
) -> Result<(Vec<u8>, u64)> {
    let mut fetched = 0;
    let row = table.read_row_ranged(
        loc,
        |id| manifests.get(id).map(|(_, m)| m.clone()),
        |m, r| {
            let n = manifests[&m.segment].0;
            let piece = read_piece(root, n, m, r.piece).ok_or(Error::NotEnoughPieces {
                segment: hex(&m.segment.0),
                intact: 0,
                needed: 1,
            })?;
            // The provider's side: the proof for the range. The reader's side: verify it.
            let (tree, _) = proof::outboard(&piece);
            let slice = proof::prove(&piece, &tree, r.piece_start, r.piece_len)?;
            fetched += slice.len() as u64;
            proof::verify(&m.pieces[r.piece].hash, r.piece_start, r.piece_len, &slice)
        },
    )?;
    Ok((row, fetched))
}

fn decode_segment(
    table: &Table,
    root: &Path,
    n: usize,
    m: &SegmentManifest,
) -> Result<Vec<u8>, Error> {
    let pieces: Vec<Option<Vec<u8>>> = (0..m.params.total())
        .map(|i| read_piece(root, n, m, i))
        .collect();
    let refs: Vec<Option<&[u8]>> = pieces.iter().map(Option::as_deref).collect();
    table.decode_segment(m, &refs)
}

/// Reads every row back, returning how many matched, and for each row that could not be
/// read, why.
fn read_all(
    table: &mut Table,
    root: &Path,
    manifests: &HashMap<SegmentId, (usize, SegmentManifest)>,
    locators: &[Locator],
    rows: &[String],
) -> Result<(usize, Vec<(usize, String)>)> {
    let decoded: HashMap<SegmentId, Result<Vec<u8>, Error>> = manifests
        .iter()
        .map(|(id, (n, m))| (*id, decode_segment(table, root, *n, m)))
        .collect();
    let mut ok = 0;
    let mut failed = Vec::new();
    for (i, loc) in locators.iter().enumerate() {
        let lost = loc
            .extents
            .iter()
            .find_map(|e| decoded[&e.segment].as_ref().err());
        if let Some(err) = lost {
            failed.push((i, err.to_string()));
            continue;
        }
        let row = table.read_row(loc, |id| decoded[id].as_deref().ok())?;
        ensure!(
            row == rows[i].as_bytes(),
            "row {i} read back different bytes"
        );
        ok += 1;
    }
    Ok((ok, failed))
}
