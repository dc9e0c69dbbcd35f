//! `wwt bench-audit`: what audits and repair cost.
//!
//! - Tracker CPU: sentinel challenges (draw + verify, on 4 MiB segments' 1 MiB shards) and
//!   chunk challenges (Bao proof check) per second on one core, in process.
//! - Bytes on the wire per challenge and per answer, of each kind.
//! - On a local network (8 providers, 1 tracker, loopback gRPC, audits on a simulated clock):
//!   the time to upload `--mib` MiB of pieces, one round of challenges on every piece, and the
//!   time to repair every piece of 2 providers killed out of the 8, in the same run; and the
//!   audit report (unauthenticated) over gRPC, summing the piece map against reusing the sums.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, ensure};
use bytes::Bytes;
use prost::Message;
use wwt_engine::table::RowWrite;
use wwt_engine::{AuditKey, CodingParams, MasterKey, PieceHash, Table, piece, proof};
use wwt_net::audit::{Challenge, ChallengeAnswer, ChallengeKind};
use wwt_net::types::{ByteRange, PieceId};
use wwt_net::{Identity, proto};
use wwt_tracker::AuditConfig;
use wwt_tracker::clock::{Clock, ManualClock};

use wwt_client::store::{Storage, StorageConfig};
use wwt_devnet::{Hooks, LocalNet, Shape, Transport};

/// Options of `wwt bench-audit`.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// MiB of pieces to upload, then to lose 2/8 of and repair.
    #[arg(long, default_value_t = 1024)]
    pub mib: u64,
    /// Segment size in MiB (RS 4+2: pieces are a quarter of it).
    #[arg(long, default_value_t = 4)]
    pub segment_mib: usize,
    /// Challenges timed for the per-core figures.
    #[arg(long, default_value_t = 2000)]
    pub challenges: usize,
}

/// What the benchmark measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Sentinel challenges drawn and verified per second on one core.
    pub sentinel_per_core: f64,
    /// Chunk challenges verified per second on one core.
    pub chunk_per_core: f64,
    /// Signed sentinel challenge, its answer, a chunk challenge, its answer: bytes on the wire.
    pub wire: [usize; 4],
    /// Piece bytes uploaded.
    pub bytes: u64,
    /// Seconds to upload (and entrust) them.
    pub upload_s: f64,
    /// Challenges in one round over every piece, and its seconds (loopback gRPC, 32 in flight).
    pub round: (usize, f64),
    /// Pieces repaired after 2 of 8 providers died, and the seconds it took.
    pub repaired: (u64, f64),
    /// The audit report over gRPC in ms: the first after the upload (summing the map), and
    /// the median of the next 21 (the map unchanged).
    pub report_ms: (f64, f64),
}

const SENTINELS_PER_CHALLENGE: u32 = 8;

/// Tracker CPU per challenge, on one piece of a `segment`-byte segment.
fn per_core(segment: usize, n: usize) -> Result<(f64, f64, [usize; 4])> {
    let audit = AuditKey::from_bytes([1; 32]);
    let shard_len = (segment / 4) as u64;
    let sentinels = piece::sentinel_count(shard_len);
    let shard: Vec<u8> = (0..shard_len).map(|i| (i * 7 % 251) as u8).collect();
    let segment_id = wwt_engine::SegmentId([2; 32]);
    let view = wwt_engine::PieceView::new(&audit, segment_id, 0, 0, shard_len, sentinels);
    let bytes = view.build(&shard);
    let hash = PieceHash::of(&bytes);
    let q = SENTINELS_PER_CHALLENGE as usize;

    // Sentinel: what the tracker does per challenge: the piece's view and order, the
    // positions, and the check of the answer. The provider's answers are made beforehand.
    let at = |i: usize| (i * q) % (sentinels as usize - q);
    let answers: Vec<Vec<u8>> = {
        let order = audit.sentinel_order(&hash, sentinels);
        (0..n)
            .map(|i| piece::answer_challenge(&bytes, &view.challenge(&order[at(i)..at(i) + q])))
            .collect::<Result<_, _>>()?
    };
    let start = Instant::now();
    let mut right = 0;
    for (i, answer) in answers.iter().enumerate() {
        let view = wwt_engine::PieceView::new(&audit, segment_id, 0, 0, shard_len, sentinels);
        let order = audit.sentinel_order(&hash, sentinels);
        let which = &order[at(i)..at(i) + q];
        std::hint::black_box(view.challenge(which));
        right += usize::from(view.verify(which, answer));
    }
    let sentinel_per_core = n as f64 / start.elapsed().as_secs_f64();
    ensure!(right == n, "a right answer failed");

    let (groups, _) = proof::groups(&bytes);
    let proofs: Vec<(u64, Vec<u8>)> = (0..64)
        .map(|i| {
            let offset = (i * 7919 % (bytes.len() / 1024)) as u64 * 1024;
            Ok((
                offset,
                proof::prove(
                    std::io::Cursor::new(&bytes),
                    bytes.len() as u64,
                    &groups,
                    offset,
                    1024,
                )?,
            ))
        })
        .collect::<Result<_>>()?;
    let start = Instant::now();
    for i in 0..n {
        let (offset, slice) = &proofs[i % proofs.len()];
        proof::verify(&hash, *offset, 1024, slice)?;
    }
    let chunk_per_core = n as f64 / start.elapsed().as_secs_f64();

    // Bytes on the wire: signed requests and answers as gRPC carries them (protobuf).
    let tracker = Identity::from_secret([3; 32]);
    let piece_id = PieceId(hash.0);
    let which = &audit.sentinel_order(&hash, sentinels)[..q];
    let positions = view.challenge(which);
    let sentinel_answer = ChallengeAnswer {
        piece: piece_id,
        data: Bytes::from(piece::answer_challenge(&bytes, &positions)?),
        proof: Bytes::new(),
    };
    let request = |kind| -> Result<usize> {
        let signed = tracker.sign(Challenge {
            piece: piece_id,
            kind,
        })?;
        Ok(proto::SignedRequest::from(signed).encoded_len())
    };
    let (offset, slice) = &proofs[0];
    let chunk_answer = ChallengeAnswer {
        piece: piece_id,
        data: Bytes::copy_from_slice(&bytes[*offset as usize..*offset as usize + 1024]),
        proof: Bytes::copy_from_slice(slice),
    };
    let wire = [
        request(ChallengeKind::Sentinels(positions))?,
        sentinel_answer.wire_len(),
        request(ChallengeKind::Chunk(ByteRange {
            offset: *offset,
            len: 1024,
        }))?,
        chunk_answer.wire_len(),
    ];
    Ok((sentinel_per_core, chunk_per_core, wire))
}

/// Rows of `len` bytes for the ids `ids`, each the BLAKE3 stream of its id: incompressible,
/// and the same in every run.
pub(crate) fn hashed_rows(ids: std::ops::Range<u64>, len: usize) -> Vec<Vec<u8>> {
    ids.map(|id| {
        let mut row = vec![0u8; len];
        blake3::Hasher::new()
            .update(&id.to_le_bytes())
            .finalize_xof()
            .fill(&mut row);
        row
    })
    .collect()
}

/// Runs the benchmark and prints its figures.
pub async fn measure(o: &Options) -> Result<Report> {
    let segment = o.segment_mib.max(1) << 20;
    let (sentinel_per_core, chunk_per_core, wire) = per_core(segment, o.challenges.max(10))?;
    println!(
        "tracker CPU, one core: {sentinel_per_core:.0} sentinel challenges/s (q = {SENTINELS_PER_CHALLENGE}, {} KiB pieces), {chunk_per_core:.0} chunk challenges/s (1 KiB + Bao proof)",
        (segment / 4) >> 10
    );
    println!(
        "bytes on the wire: sentinel challenge {} + answer {}; chunk challenge {} + answer {}",
        wire[0], wire[1], wire[2], wire[3]
    );

    let dir = tempfile::tempdir()?;
    let clock = Arc::new(ManualClock::new(1_000_000));
    let hooks = Hooks {
        audit_clock: Some(clock.clone()),
        audit: Some(AuditConfig {
            mean_interval_ms: 1_000,
            sentinels_per_challenge: SENTINELS_PER_CHALLENGE,
            deadline_ms: 30_000,
            offline_threshold_ms: 60_000,
            repairs_per_step: 16,
            seed: Some(0xbe7c),
            ..AuditConfig::default()
        }),
        ..Hooks::default()
    };
    let shape = Shape {
        providers: 8,
        capacity: (o.mib << 20).max(64 << 20),
        heartbeat_ms: 200,
        transport: Transport::Grpc,
        ..Shape::default()
    };
    let mut net = LocalNet::start_with(dir.path(), shape, hooks).await?;
    let owner = Identity::from_secret([4; 32]);
    let client = Storage::new(
        owner,
        &net.endpoints.tracker_list()?,
        net.connector(),
        StorageConfig::default(),
    )?;

    // Upload: rows of 4 KiB, coded and stored a batch of 16 segments at a time, until the
    // pieces add up to the size asked for. Only the upload is timed.
    let master = MasterKey::from_bytes([5; 32]);
    let mut table = Table::new(&master, "bench", CodingParams::default(), segment)?;
    let audit = table.keys().audit.clone();
    let row_ids = table.keys().row_id.clone();
    let target = o.mib << 20;
    let (mut bytes, mut upload_s, mut next_row) = (0u64, 0.0, 0u64);
    let rows_per_batch = (16 * segment / 4200).max(1) as u64;
    while bytes < target {
        let rows = hashed_rows(next_row..next_row + rows_per_batch, 4096);
        let batch = table.write(rows.iter().zip(next_row..).map(|(row, id)| RowWrite {
            row: row_ids.row_id(&id.to_le_bytes()),
            version: 1,
            plaintext: row,
        }));
        next_row += rows_per_batch;
        let start = Instant::now();
        let puts = batch.segments.iter().map(|s| client.put_audited(s, &audit));
        for put in futures::future::join_all(puts).await {
            bytes += put?.bytes_sent;
        }
        upload_s += start.elapsed().as_secs_f64();
    }
    println!(
        "upload: {:.0} MiB of pieces in {upload_s:.1} s ({:.0} MB/s), entrusted to the tracker",
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / 1e6 / upload_s
    );

    // The audit report, which anyone may ask for: the first after the upload sums the piece
    // map; while the map is unchanged, the next ones reuse the sums.
    let api = net
        .connector()
        .tracker(&net.endpoints.trackers[0].address)?;
    let timed = || async {
        let start = Instant::now();
        let report = api.audits(0).await?;
        anyhow::Ok((start.elapsed().as_secs_f64() * 1e3, report))
    };
    let (summed, report) = timed().await?;
    let mut kept = Vec::new();
    for _ in 0..21 {
        kept.push(timed().await?.0);
    }
    let report_ms = (summed, crate::median(kept));
    println!(
        "audit report over loopback gRPC, {} pieces mapped: {:.2} ms summing the map, then {:.2} ms (p50 of 21) while it is unchanged ({:.1}x)",
        report.credits.iter().map(|c| c.pieces).sum::<u64>(),
        report_ms.0,
        report_ms.1,
        report_ms.0 / report_ms.1
    );

    // One round of challenges on every piece, all providers up.
    let tracker = net.tracker(0)?;
    let t0 = clock.now_ms();
    clock.advance_to(t0 + 30_000);
    let start = Instant::now();
    let step = tracker.audit_step().await?;
    let round = (step.challenges.len(), start.elapsed().as_secs_f64());
    let passed = step
        .challenges
        .iter()
        .filter(|c| c.outcome == wwt_tracker::audit::Outcome::Pass)
        .count();
    ensure!(
        passed == round.0,
        "{} of {} challenges failed",
        round.0 - passed,
        round.0
    );
    println!(
        "one round of challenges: {} on {} pieces in {:.2} s over loopback gRPC ({:.0}/s), {passed} passed",
        round.0,
        round.0,
        round.1,
        round.0 as f64 / round.1
    );

    // Two providers die; they miss a round, then another past the offline threshold, and
    // lose their pieces to repair.
    for p in [1, 5] {
        net.stop_provider(p).await?;
    }
    clock.advance_to(clock.now_ms() + 30_000);
    tracker.audit_step().await?;
    clock.advance_to(clock.now_ms() + 61_000);
    let start = Instant::now();
    let mut step = tracker.audit_step().await?;
    ensure!(
        step.condemned.len() == 2,
        "expected the 2 dead providers condemned, got {:?}",
        step.condemned
    );
    let mut repaired = step.repaired as u64;
    while tracker.audit_report(0)?.repairs_pending > 0 {
        ensure!(
            start.elapsed().as_secs() < 3600,
            "repair did not finish in an hour"
        );
        step = tracker.audit_step().await?;
        repaired += step.repaired as u64;
    }
    let repair_s = start.elapsed().as_secs_f64();
    let piece_len = (segment / 4) as f64;
    println!(
        "repair: {repaired} pieces ({:.0} MiB) of 2 dead providers out of 8 re-coded and placed in {repair_s:.1} s ({:.0} MB/s of pieces rebuilt), against {upload_s:.1} s to upload all {:.0} MiB",
        repaired as f64 * piece_len / (1 << 20) as f64,
        repaired as f64 * piece_len / 1e6 / repair_s,
        bytes as f64 / (1 << 20) as f64
    );
    drop(tracker);
    net.shutdown().await?;
    Ok(Report {
        sentinel_per_core,
        chunk_per_core,
        wire,
        bytes,
        upload_s,
        round,
        repaired: (repaired, repair_s),
        report_ms,
    })
}

/// `wwt bench-audit`.
pub async fn run(o: &Options) -> Result<()> {
    measure(o).await.map(|_| ())
}
