//! `wwt bench`: the storage engine's encode and decode pipelines against raw AES-SIV on the
//! same bytes, measured in the same run, on one thread and on all cores.
//!
//! Encode = seal (AES-SIV) + pack + Reed-Solomon + whiten + sentinels + piece hash.
//! Decode = piece hash check + strip sentinels + un-whiten (+ RS when data pieces are lost)
//! + open (AES-SIV). Every figure is the median of `--runs` runs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use aes_siv::aead::KeyInit;
use aes_siv::siv::Aes256Siv;
use anyhow::{Result, ensure};
use wwt_engine::codec::EncodedSegment;
use wwt_engine::piece::PieceView;
use wwt_engine::segment::SegmentPacker;
use wwt_engine::table::RowWrite;
use wwt_engine::{CodingParams, MasterKey, PieceHash, RowCipher, RowId, Table};

use crate::median;

/// Options of `wwt bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Segment size in MiB.
    #[arg(long, default_value_t = 4)]
    pub segment_mib: usize,
    /// Plaintext bytes per row.
    #[arg(long, default_value_t = 1024)]
    pub row_bytes: usize,
    /// Segments per run and thread.
    #[arg(long, default_value_t = 4)]
    pub segments: usize,
    /// Runs per figure; the median is reported.
    #[arg(long, default_value_t = 7)]
    pub runs: usize,
    /// Data pieces (k).
    #[arg(long, default_value_t = 4)]
    pub data: usize,
    /// Parity pieces (m).
    #[arg(long, default_value_t = 2)]
    pub parity: usize,
    /// Threads for the all-cores figures (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// The rows of one thread's run: `segments` segments' worth of deterministic rows.
fn make_rows(o: &Options) -> Vec<Vec<u8>> {
    let per_segment = (o.segment_mib << 20) / (o.row_bytes + wwt_engine::row::SEAL_OVERHEAD);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..per_segment * o.segments)
        .map(|_| {
            (0..o.row_bytes)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b'a' + (x % 26) as u8
                })
                .collect()
        })
        .collect()
}

fn table(o: &Options) -> Result<Table> {
    Ok(Table::new(
        &MasterKey::from_bytes([42; 32]),
        "bench",
        CodingParams::new(o.data, o.parity)?,
        o.segment_mib << 20,
    )?)
}

fn writes(rows: &[Vec<u8>]) -> impl Iterator<Item = RowWrite<'_>> {
    rows.iter().enumerate().map(|(i, r)| RowWrite {
        row: RowId((i as u128).to_le_bytes()),
        version: 1,
        plaintext: r,
    })
}

/// Raw AES-SIV: the same rows, the same headers (AAD and nonce), one cipher instance,
/// encrypted in place into one buffer. The floor the pipeline is compared against.
fn raw_siv(rows: &[Vec<u8>]) -> Duration {
    let mut siv = Aes256Siv::new(&[7u8; 64].into());
    let mut buf = vec![0u8; rows.iter().map(Vec::len).max().unwrap_or(0)];
    let aad = [1u8; 40];
    let start = Instant::now();
    for (i, r) in rows.iter().enumerate() {
        let nonce = (i as u128).to_le_bytes();
        let body = &mut buf[..r.len()];
        body.copy_from_slice(r);
        let tag = siv
            .encrypt_inout_detached([&aad[..], &nonce[..]], body.into())
            .expect("two headers");
        black_box(tag);
    }
    start.elapsed()
}

fn encode(o: &Options, rows: &[Vec<u8>]) -> Result<(Duration, Vec<EncodedSegment>, Table)> {
    let mut t = table(o)?;
    let start = Instant::now();
    let batch = t.write(writes(rows));
    let elapsed = start.elapsed();
    black_box(&batch.locators);
    Ok((elapsed, batch.segments, t))
}

/// Decodes every segment (from all pieces, or with the first `lost` data pieces missing) and
/// opens every row.
/// Every bench row has the same length, so the sealed rows of a segment follow each other at
/// a fixed stride.
fn decode(
    t: &mut Table,
    segments: &[EncodedSegment],
    row_bytes: usize,
    lost: usize,
) -> Result<Duration> {
    let mut cipher = RowCipher::new(&t.keys().row, t.keys().id);
    let len = row_bytes + wwt_engine::row::SEAL_OVERHEAD;
    let start = Instant::now();
    let mut opened = 0usize;
    let mut index = 0u128;
    for enc in segments {
        let given: Vec<Option<&[u8]>> = enc
            .pieces
            .iter()
            .enumerate()
            .map(|(i, p)| (i >= lost).then_some(p.as_slice()))
            .collect();
        let bytes = t.decode_segment(&enc.manifest, &given)?;
        let mut at = 0;
        while at < bytes.len() {
            let plain = cipher.open(RowId(index.to_le_bytes()), 1, &bytes[at..at + len])?;
            black_box(plain);
            at += len;
            index += 1;
            opened += 1;
        }
    }
    let elapsed = start.elapsed();
    black_box(opened);
    Ok(elapsed)
}

/// The time the single-threaded encode spends in each stage, measured on their own.
struct Stages {
    seal_pack: Duration,
    rs: Duration,
    whiten_sentinels: Duration,
    hash: Duration,
}

fn stages(o: &Options, rows: &[Vec<u8>]) -> Result<Stages> {
    let t = table(o)?;
    let mut cipher = RowCipher::new(&t.keys().row, t.keys().id);
    let start = Instant::now();
    let mut packer = SegmentPacker::new(o.segment_mib << 20);
    for w in writes(rows) {
        black_box(packer.push(&mut cipher, w.row, w.version, w.plaintext));
    }
    let segments = packer.finish();
    let seal_pack = start.elapsed();

    let rs = reed_solomon_erasure::galois_8::ReedSolomon::new(o.data, o.parity.max(1))?;
    let mut whiten_sentinels = Duration::ZERO;
    let mut hash = Duration::ZERO;
    let start = Instant::now();
    let mut coded = Vec::new();
    for s in &segments {
        let shard_len = s.bytes.len().div_ceil(o.data);
        let mut shards: Vec<Vec<u8>> = s.bytes.chunks(shard_len).map(<[u8]>::to_vec).collect();
        shards.resize(o.data + o.parity.max(1), vec![]);
        for sh in &mut shards {
            sh.resize(shard_len, 0);
        }
        rs.encode(&mut shards)?;
        coded.push((s.id, shards));
    }
    let rs_time = start.elapsed();
    for (id, shards) in &coded {
        for (i, sh) in shards.iter().enumerate() {
            let view = PieceView::new(
                &t.keys().audit,
                *id,
                i,
                0,
                sh.len() as u64,
                wwt_engine::piece::sentinel_count(sh.len() as u64),
            );
            let start = Instant::now();
            let piece = view.build(sh);
            whiten_sentinels += start.elapsed();
            let start = Instant::now();
            black_box(PieceHash::of(&piece));
            hash += start.elapsed();
        }
    }
    Ok(Stages {
        seal_pack,
        rs: rs_time,
        whiten_sentinels,
        hash,
    })
}

/// Runs `work` on `threads` threads at once, `runs` times, and returns the median MB/s over
/// `bytes` bytes per thread (wall time of the slowest thread).
fn throughput(
    threads: usize,
    runs: usize,
    bytes: usize,
    work: impl Fn() -> Result<Duration> + Sync,
) -> Result<f64> {
    let mut rates = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let results: Vec<Result<Duration>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(&work)).collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a bench thread panicked")))
                })
                .collect()
        });
        let wall = if threads == 1 {
            results.into_iter().next().unwrap_or(Ok(Duration::ZERO))?
        } else {
            for r in results {
                r?;
            }
            start.elapsed()
        };
        rates.push((bytes * threads) as f64 / wall.as_secs_f64() / 1e6);
    }
    Ok(median(rates))
}

/// Runs the benchmark and prints its table.
pub fn run(o: &Options) -> Result<()> {
    ensure!(
        o.runs > 0 && o.segments > 0,
        "--runs and --segments must be at least 1"
    );
    ensure!(o.row_bytes > 0, "--row-bytes must be at least 1");
    let cores = o
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let rows = make_rows(o);
    let bytes: usize = rows.iter().map(Vec::len).sum();
    println!(
        "wwt bench: {} MiB segments, RS {}+{}, {}-byte rows, {} rows ({:.1} MiB) per thread, median of {} runs",
        o.segment_mib,
        o.data,
        o.parity,
        o.row_bytes,
        rows.len(),
        bytes as f64 / (1 << 20) as f64,
        o.runs
    );
    let (_, segments, _) = encode(o, &rows)?;
    let lost = o.parity.min(o.data);
    let mut lines: Vec<(String, Vec<f64>)> = Vec::new();
    let mut columns = vec![1];
    if cores > 1 {
        columns.push(cores);
    }
    let mut raw = Vec::new();
    let mut enc = Vec::new();
    let mut dec = Vec::new();
    let mut dec_lost = Vec::new();
    for &threads in &columns {
        raw.push(throughput(threads, o.runs, bytes, || Ok(raw_siv(&rows)))?);
        enc.push(throughput(threads, o.runs, bytes, || {
            Ok(encode(o, &rows)?.0)
        })?);
        dec.push(throughput(threads, o.runs, bytes, || {
            decode(&mut table(o)?, &segments, o.row_bytes, 0)
        })?);
        dec_lost.push(throughput(threads, o.runs, bytes, || {
            decode(&mut table(o)?, &segments, o.row_bytes, lost)
        })?);
    }
    lines.push(("raw AES-SIV encrypt".into(), raw.clone()));
    lines.push(("encode pipeline".into(), enc.clone()));
    lines.push(("decode pipeline, all pieces".into(), dec.clone()));
    lines.push((
        format!("decode pipeline, {lost} data pieces lost"),
        dec_lost.clone(),
    ));

    print!("{:<36}", "MB/s of row plaintext");
    for &t in &columns {
        print!(
            "{:>20}",
            format!("{t} thread{}", if t == 1 { "" } else { "s" })
        );
    }
    println!();
    for (name, values) in &lines {
        print!("{name:<36}");
        for (i, v) in values.iter().enumerate() {
            if name.starts_with("raw") {
                print!("{:>20}", format!("{v:.0}"));
            } else {
                print!("{:>20}", format!("{v:.0} ({:.2}x raw)", v / raw[i]));
            }
        }
        println!();
    }

    let mut st: Vec<Stages> = Vec::new();
    for _ in 0..o.runs {
        st.push(stages(o, &rows)?);
    }
    let med =
        |f: fn(&Stages) -> Duration| median(st.iter().map(|s| f(s).as_secs_f64() * 1e3).collect());
    let (sp, rs, ws, h) = (
        med(|s| s.seal_pack),
        med(|s| s.rs),
        med(|s| s.whiten_sentinels),
        med(|s| s.hash),
    );
    let total = sp + rs + ws + h;
    println!(
        "encode stages, 1 thread (ms per {:.1} MiB): seal+pack {sp:.1} ({:.0}%), RS {rs:.1} ({:.0}%), whiten+sentinels {ws:.1} ({:.0}%), piece hash {h:.1} ({:.0}%)",
        bytes as f64 / (1 << 20) as f64,
        100.0 * sp / total,
        100.0 * rs / total,
        100.0 * ws / total,
        100.0 * h / total,
    );
    Ok(())
}
