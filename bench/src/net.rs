//! `wwt bench-net`: piece upload and download through the full client over loopback gRPC,
//! beside raw gRPC streaming of the same bytes, measured in the same run.
//!
//! - wwt: a local network (1 tracker, 6 providers, real disks) and the client's storage path:
//!   [`Storage::put`] (reserve at the tracker, store the pieces on their providers in
//!   parallel, each streamed, hashed and written durably, confirm the receipts) and
//!   [`Storage::fetch`] (locate, read k pieces in parallel, check their hashes).
//! - raw gRPC: the same pieces, signed the same way, streamed to 6 providers that do nothing
//!   (no checks, no hashing, no disk), and read back from memory.
//! - disk: as many reads as the wwt download makes (k pieces per segment), of the same size,
//!   straight from the records at the end of the providers' piece logs (this round's), as the
//!   providers read them (no network, no checks): the most the wwt download could reach on
//!   this disk.
//!
//! - the metrics layer: a small call (`Provider/Status`) to a provider whose server counts
//!   every request by method and code with its latency (`--http-listen`), alternating with
//!   the same call to one that does not.
//!
//! Each round codes fresh segments (untimed), then times raw upload, wwt upload, raw download,
//! wwt download and the disk read in turn (odd rounds in the reverse order of each group: wwt
//! upload, raw upload, disk read, wwt download, raw download), so all share the machine's state
//! of the moment and neither side always goes first; the figures are the medians over the
//! rounds. Beside MB/s it reports the CPU the process used in each phase: on a machine whose
//! cores are all busy that is the steadier measure of what each side costs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use anyhow::{Result, ensure};
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use prost::Message;
use tokio::net::TcpListener;
use wwt_engine::codec::EncodedSegment;
use wwt_engine::table::RowWrite;
use wwt_engine::{CodingParams, MasterKey, Table};
use wwt_net::audit::{Challenge, ChallengeAnswer};
use wwt_net::auth::Body;
use wwt_net::grpc::{self, GrpcConnector};
use wwt_net::types::{
    DeletePieces, Deleted, PieceData, PieceId, PieceStream, ProviderStatus, ReadPiece, Reservation,
    SegmentId, StorePiece, StoreReceipt,
};
use wwt_net::{Identity, NetError, ProviderApi, Signed, now_ms, read_piece, store_piece};

use crate::audit::hashed_rows;
use crate::median;
use wwt_client::store::{SEGMENTS_IN_FLIGHT, Storage, StorageConfig};
use wwt_devnet::{LocalNet, Shape, Transport};

/// Options of `wwt bench-net`.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// MiB of pieces uploaded and downloaded per round.
    #[arg(long, default_value_t = 256)]
    pub mib: u64,
    /// Segment size in MiB (RS 4+2: pieces are a quarter of it).
    #[arg(long, default_value_t = 4)]
    pub segment_mib: usize,
    /// Segments in flight at once (each puts its 6 pieces in parallel); the client's own
    /// figure by default.
    #[arg(long, default_value_t = SEGMENTS_IN_FLIGHT)]
    pub in_flight: usize,
    /// Rounds; the medians are reported.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

/// One round's figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct Round {
    /// Upload through the full client.
    pub upload: Phase,
    /// Upload of the same bytes over raw gRPC.
    pub raw_upload: Phase,
    /// Download through the full client (k pieces per segment).
    pub download: Phase,
    /// Download of the same pieces over raw gRPC.
    pub raw_download: Phase,
    /// Reading the same pieces straight from the providers' files.
    pub disk_read: Phase,
}

/// One timed phase of a round.
#[derive(Debug, Clone, Copy, Default)]
pub struct Phase {
    /// MB/s.
    pub rate: f64,
    /// Seconds of CPU the whole process used meanwhile (client, tracker, providers and null
    /// providers, all threads; NaN where it cannot be read). On a machine whose cores are all
    /// busy, a steadier measure of what each side costs than MB/s, which moves with whatever
    /// else the machine does.
    pub cpu: f64,
}

impl Phase {
    /// This phase's MB/s and CPU over `raw`'s.
    pub fn over(&self, raw: &Phase) -> Phase {
        Phase {
            rate: self.rate / raw.rate,
            cpu: self.cpu / raw.cpu,
        }
    }
}

/// The pieces the null providers serve, set before the downloads.
type Served = Arc<RwLock<HashMap<PieceId, Bytes>>>;

/// A request's body, decoded and validated as any server must, its signature unchecked.
fn unchecked<T: Body>(request: &Signed<T>) -> Result<T, NetError> {
    T::try_from(T::Wire::decode(request.body().clone())?)
}

/// A provider that takes every piece and keeps nothing: the raw gRPC transfer.
struct NullProvider {
    pieces: Served,
}

#[async_trait]
impl ProviderApi for NullProvider {
    async fn store(
        &self,
        request: Signed<StorePiece>,
        data: PieceStream,
    ) -> Result<StoreReceipt, NetError> {
        // No signature check, no hash, no disk.
        let StorePiece { reservation } = unchecked(&request)?;
        data.try_for_each(|_| std::future::ready(Ok(()))).await?;
        Ok(StoreReceipt {
            reservation,
            tag: [0; 32],
        })
    }

    async fn read(&self, request: Signed<ReadPiece>) -> Result<PieceData, NetError> {
        let piece = unchecked(&request)?.piece;
        let data = self
            .pieces
            .read()
            .map_err(|_| NetError::Internal("poisoned".into()))?
            .get(&piece)
            .cloned()
            .ok_or_else(|| NetError::NotFound(format!("piece {piece}")))?;
        Ok(PieceData {
            piece,
            piece_size: data.len() as u64,
            offset: 0,
            data,
            proof: Bytes::new(),
        })
    }

    async fn status(&self) -> Result<ProviderStatus, NetError> {
        Err(NetError::NotFound("no status".into()))
    }

    async fn challenge(&self, _request: Signed<Challenge>) -> Result<ChallengeAnswer, NetError> {
        Err(NetError::NotFound("no challenges".into()))
    }

    async fn delete(&self, _request: Signed<DeletePieces>) -> Result<Deleted, NetError> {
        Err(NetError::NotFound("no deletes".into()))
    }
}

/// The null providers, served on loopback like the real ones and called through the same
/// helpers and connector kind as the client's.
struct Raw {
    pieces: Served,
    addresses: Vec<String>,
    connector: GrpcConnector,
    owner: Identity,
    timeouts: StorageConfig,
}

impl Raw {
    async fn start(n: usize) -> Result<Raw> {
        let pieces = Served::default();
        let mut addresses = Vec::new();
        for _ in 0..n {
            let server = Arc::new(NullProvider {
                pieces: pieces.clone(),
            });
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let address = format!("http://{}", listener.local_addr()?);
            let services = grpc::Services {
                provider: Some(server),
                ..Default::default()
            };
            tokio::spawn(grpc::serve(services, listener, std::future::pending()));
            addresses.push(address);
        }
        Ok(Raw {
            pieces,
            addresses,
            connector: GrpcConnector::new(),
            owner: Identity::generate()?,
            timeouts: StorageConfig::default(),
        })
    }

    /// Streams every piece of `segment`, each to its own null provider, in parallel.
    async fn put(&self, segment: &EncodedSegment) -> Result<u64> {
        let stores = segment.pieces.iter().enumerate().map(|(i, piece)| {
            let data = Bytes::copy_from_slice(piece);
            let reservation = Reservation {
                // The id the coding computed, as `Storage::put` takes it: no hashing here.
                piece: PieceId(segment.manifest.pieces[i].hash.0),
                size: data.len() as u64,
                segment: SegmentId(segment.manifest.segment.0),
                index: i as u32,
                provider: self.owner.node_id(),
                owner: self.owner.node_id(),
                expires_ms: now_ms() + 600_000,
                tracker: self.owner.node_id(),
                tracker_tag: [0; 32],
                provider_tag: [0; 32],
            };
            store_piece(
                &self.connector,
                &self.owner,
                &self.addresses[i % self.addresses.len()],
                reservation,
                data,
                self.timeouts.store_timeout,
            )
        });
        let receipts = futures::future::try_join_all(stores).await?;
        Ok(receipts.iter().map(|r| r.reservation.size).sum())
    }

    /// Reads the k data pieces of `segment` back, in parallel.
    async fn fetch(&self, segment: &EncodedSegment) -> Result<u64> {
        let k = segment.manifest.params.data;
        let reads = segment.manifest.pieces[..k]
            .iter()
            .enumerate()
            .map(|(i, p)| {
                read_piece(
                    &self.connector,
                    &self.owner,
                    &self.addresses[i % self.addresses.len()],
                    ReadPiece {
                        piece: PieceId(p.hash.0),
                        range: None,
                    },
                    self.timeouts.read_timeout,
                )
            });
        let pieces = futures::future::try_join_all(reads).await?;
        Ok(pieces.iter().map(|p| p.data.len() as u64).sum())
    }

    /// Lets the null providers serve `segments`' pieces.
    fn serve(&self, segments: &[EncodedSegment]) -> Result<()> {
        let mut pieces = self
            .pieces
            .write()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        pieces.clear();
        for segment in segments {
            for (piece, meta) in segment.pieces.iter().zip(&segment.manifest.pieces) {
                pieces.insert(PieceId(meta.hash.0), Bytes::copy_from_slice(piece));
            }
        }
        Ok(())
    }
}

/// One record to read: a provider's log file, opened for direct reads, and where it starts.
type RecordAt = (Arc<std::fs::File>, u64);

/// Where the disk read reads, per segment: k records of the segment's piece size, dealt to
/// the providers in turn and taken from the end of each provider's last log file (where this
/// round's pieces are: every piece of the bench has the same size, so records lie one record
/// length apart); and the piece size. As many reads as the wwt download makes, of the same
/// size, from where the providers keep pieces.
fn record_reads(
    segments: &[EncodedSegment],
    dirs: &[PathBuf],
) -> Result<Vec<(Vec<RecordAt>, usize)>> {
    let mut logs = Vec::new();
    for dir in dirs {
        let last = std::fs::read_dir(dir.join("log"))?
            .map(|f| f.map(|f| f.path()))
            .collect::<std::io::Result<Vec<_>>>()?
            .into_iter()
            .max()
            .ok_or_else(|| anyhow::anyhow!("{} has no piece log", dir.display()))?;
        let len = std::fs::metadata(&last)?.len();
        let file = wwt_provider::store::open_for_direct_reads(&last)?;
        logs.push((Arc::new(file), len, 0u64));
    }
    let mut reads = Vec::new();
    let mut next = 0;
    for s in segments {
        let size = s.manifest.piece_len();
        let record = wwt_provider::store::record_len(size);
        let mut segment = Vec::new();
        for _ in 0..s.manifest.params.data {
            let (file, len, taken) = &mut logs[next % dirs.len()];
            next += 1;
            let records = *len / record;
            ensure!(records > 0, "a provider's last log holds no record");
            *taken += 1;
            let from_end = (*taken - 1) % records + 1;
            segment.push((file.clone(), *len - from_end * record));
        }
        reads.push((segment, size as usize));
    }
    Ok(reads)
}

/// Reads one segment's `size`-byte pieces at `records` in parallel, as a provider reads them.
async fn read_records(records: &[RecordAt], size: usize) -> Result<u64> {
    let reads = records.iter().cloned().map(|(file, offset)| {
        tokio::task::spawn_blocking(move || wwt_provider::store::read_direct(&file, offset, size))
    });
    let mut bytes = 0;
    for read in futures::future::join_all(reads).await {
        bytes += read??.len() as u64;
    }
    Ok(bytes)
}

/// Seconds taken and seconds of CPU used.
struct Spent {
    seconds: f64,
    cpu: f64,
}

impl Spent {
    /// The phase that moved `bytes` in this time.
    fn phase(&self, bytes: impl IntoIterator<Item = u64>) -> Phase {
        Phase {
            rate: bytes.into_iter().sum::<u64>() as f64 / 1e6 / self.seconds,
            cpu: self.cpu,
        }
    }
}

/// The CPU time this process has used so far, user and system, all threads, in seconds: from
/// `/proc/self/stat`, in the kernel's clock ticks (100 per second on Linux's common ABIs). NaN
/// where it cannot be read.
fn cpu_seconds() -> f64 {
    let used = || -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The fields after the command name (which may hold spaces) start at field 3: user
        // and system time are fields 14 and 15.
        let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
        let user: u64 = fields.next()?.parse().ok()?;
        let system: u64 = fields.next()?.parse().ok()?;
        Some((user + system) as f64 / 100.0)
    };
    used().unwrap_or(f64::NAN)
}

/// Runs `each` on every item (one per segment), `in_flight` at a time; returns the time and
/// CPU taken and the outputs (in completion order), so that checks on them stay out of the
/// timing.
async fn timed<'a, I, F, Fut, T>(
    items: &'a [I],
    in_flight: usize,
    each: F,
) -> Result<(Spent, Vec<T>)>
where
    F: Fn(&'a I) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let (start, cpu) = (Instant::now(), cpu_seconds());
    let outputs = stream::iter(items.iter().map(each))
        .buffer_unordered(in_flight.max(1))
        .try_collect()
        .await?;
    let spent = Spent {
        seconds: start.elapsed().as_secs_f64(),
        cpu: cpu_seconds() - cpu,
    };
    Ok((spent, outputs))
}

/// The outputs of `a` and `b`, run one after the other: `a` first unless `reverse`.
async fn in_turn<A, B>(
    reverse: bool,
    a: impl Future<Output = Result<A>>,
    b: impl Future<Output = Result<B>>,
) -> Result<(A, B)> {
    if reverse {
        let b = b.await?;
        Ok((a.await?, b))
    } else {
        let a = a.await?;
        Ok((a, b.await?))
    }
}

/// Runs the benchmark, printing each round and the medians; returns the rounds.
pub async fn measure(o: &Options) -> Result<Vec<Round>> {
    let segment = o.segment_mib.max(1) << 20;
    let runs = o.runs.max(1);
    let dir = tempfile::tempdir()?;
    let shape = Shape {
        providers: 6,
        // Every round's pieces stay stored: room for all of them, spread over 6 providers.
        capacity: ((runs as u64 * o.mib) << 20) / 2 + (64 << 20),
        transport: Transport::Grpc,
        ..Shape::default()
    };
    let net = LocalNet::start(dir.path(), shape).await?;
    let client = Storage::new(
        Identity::generate()?,
        &net.endpoints.tracker_list()?,
        net.connector(),
        StorageConfig::default(),
    )?;
    let raw = Raw::start(shape.providers).await?;
    let dirs: Vec<PathBuf> = net
        .endpoints
        .providers
        .iter()
        .map(|p| p.dir.clone())
        .collect();
    let params = CodingParams::default();
    println!(
        "{} providers and 1 tracker on loopback gRPC; {} MiB segments (RS {}+{}); {} MiB of pieces per round, {} segments in flight",
        shape.providers, o.segment_mib, params.data, params.parity, o.mib, o.in_flight
    );

    let mut table = Table::new(&MasterKey::generate(), "bench", params, segment)?;
    let row_ids = table.keys().row_id.clone();
    const ROW: usize = 4096;
    // Rows per round: enough that the pieces (1.5× the rows, plus sentinels) add up to `mib`.
    let rows_per_round =
        ((o.mib << 20) * params.data as u64 / (params.data + params.parity) as u64 / ROW as u64)
            .max(1);
    let mut rounds = Vec::new();
    for r in 0..runs as u64 {
        let first = r * rows_per_round;
        let rows = hashed_rows(first..first + rows_per_round, ROW);
        let batch = table.write(rows.iter().zip(first..).map(|(row, id)| RowWrite {
            row: row_ids.row_id(&id.to_le_bytes()),
            version: 1,
            plaintext: row,
        }));
        let segments = batch.segments;
        raw.serve(&segments)?;

        // Even rounds run raw, then wwt (then the disk read); odd rounds the reverse, so
        // neither side always meets the other's leftovers (warm caches, dirty pages).
        let reverse = r % 2 == 1;
        let raw_put = async {
            let (spent, sent) = timed(&segments, o.in_flight, |s| raw.put(s)).await?;
            Ok(spent.phase(sent))
        };
        let wwt_put = async {
            let (spent, sent) = timed(&segments, o.in_flight, |s| async {
                let report = client.put(s).await?;
                ensure!(
                    report.sent == s.pieces.len(),
                    "{} of {} pieces stored",
                    report.sent,
                    s.pieces.len()
                );
                Ok(report.bytes_sent)
            })
            .await?;
            Ok(spent.phase(sent))
        };
        let (raw_upload, upload) = in_turn(reverse, raw_put, wwt_put).await?;

        let raw_fetch = async {
            let (spent, read) = timed(&segments, o.in_flight, |s| raw.fetch(s)).await?;
            Ok(spent.phase(read))
        };
        let wwt_fetch = async {
            let client = &client;
            let (spent, fetched) = timed(&segments, o.in_flight, |s| async move {
                Ok((s, client.fetch(&s.manifest).await?))
            })
            .await?;
            // Checked after the timing, as the raw side checks nothing.
            let mut bytes = 0;
            for (s, pieces) in &fetched {
                for (got, sent) in pieces.iter().zip(&s.pieces) {
                    if let Some(got) = got {
                        ensure!(got == sent, "a fetched piece differs from the one stored");
                        bytes += got.len() as u64;
                    }
                }
                ensure!(
                    pieces.iter().flatten().count() == s.manifest.params.data,
                    "fewer than k pieces fetched"
                );
            }
            Ok(spent.phase([bytes]))
        };
        let disk = async {
            let records = record_reads(&segments, &dirs)?;
            let (spent, read) =
                timed(&records, o.in_flight, |(r, size)| read_records(r, *size)).await?;
            Ok(spent.phase(read))
        };
        let (raw_download, (download, disk_read)) =
            in_turn(reverse, raw_fetch, in_turn(reverse, wwt_fetch, disk)).await?;
        let (up, down) = (upload.over(&raw_upload), download.over(&raw_download));
        println!(
            "round {}: upload wwt {:7.1} MB/s, raw {:7.1} MB/s ({:.2}), CPU {:.2}× raw's; download wwt {:7.1} MB/s, raw {:7.1} MB/s ({:.2}), CPU {:.2}× raw's; disk {:7.1} MB/s",
            r + 1,
            upload.rate,
            raw_upload.rate,
            up.rate,
            up.cpu,
            download.rate,
            raw_download.rate,
            down.rate,
            down.cpu,
            disk_read.rate
        );
        rounds.push(Round {
            upload,
            raw_upload,
            download,
            raw_download,
            disk_read,
        });
    }
    let of = |f: &dyn Fn(&Round) -> f64| median(rounds.iter().map(f).collect());
    let summary = |what: &str, wwt: fn(&Round) -> Phase, raw: fn(&Round) -> Phase| {
        println!(
            "{what} (median of {runs}): wwt {:7.1} MB/s, raw gRPC {:7.1} MB/s, ratio {:.2}; CPU per round wwt {:.2} s, raw {:.2} s, wwt {:.2}× raw's",
            of(&|r| wwt(r).rate),
            of(&|r| raw(r).rate),
            of(&|r| wwt(r).over(&raw(r)).rate),
            of(&|r| wwt(r).cpu),
            of(&|r| raw(r).cpu),
            of(&|r| wwt(r).over(&raw(r)).cpu)
        );
    };
    summary("upload  ", |r| r.upload, |r| r.raw_upload);
    summary("download", |r| r.download, |r| r.raw_download);
    println!(
        "disk read of as many records (median of {runs}): {:7.1} MB/s, raw gRPC / disk {:.2}, wwt / disk {:.2}",
        of(&|r| r.disk_read.rate),
        of(&|r| r.raw_download.rate / r.disk_read.rate),
        of(&|r| r.download.rate / r.disk_read.rate)
    );
    net.shutdown().await?;
    let (counted, plain) = metrics_cost(STATUS_CALLS).await?;
    println!(
        "Provider/Status over loopback gRPC (p50 of {STATUS_CALLS} each, alternating): {counted:.1} µs with the metrics layer, {plain:.1} µs without, ratio {:.3}",
        counted / plain
    );
    Ok(rounds)
}

/// Calls timed on each side of [`metrics_cost`].
const STATUS_CALLS: usize = 2000;

/// The median µs of `calls` `Provider/Status` calls to a provider serving metrics, and of as
/// many to one without, each on its own local network, the calls alternating.
async fn metrics_cost(calls: usize) -> Result<(f64, f64)> {
    let mut nets = Vec::new();
    for http in [true, false] {
        let dir = tempfile::tempdir()?;
        let shape = Shape {
            providers: 1,
            index_providers: 0,
            transport: Transport::Grpc,
            http,
            ..Shape::default()
        };
        let net = LocalNet::start(dir.path(), shape).await?;
        let provider = net
            .connector()
            .provider(&net.endpoints.providers[0].address)?;
        nets.push((dir, net, provider));
    }
    let mut micros = [Vec::new(), Vec::new()];
    for i in 0..2 * calls {
        let (_, _, provider) = &nets[i % 2];
        let start = Instant::now();
        provider.status().await?;
        micros[i % 2].push(start.elapsed().as_secs_f64() * 1e6);
    }
    for (_dir, net, _) in nets {
        net.shutdown().await?;
    }
    let [counted, plain] = micros;
    Ok((median(counted), median(plain)))
}

/// `wwt bench-net`.
pub async fn run(o: &Options) -> Result<()> {
    measure(o).await.map(|_| ())
}
