//! The daemons as processes: `wwt tracker run` and `wwt provider run` from the real binary,
//! and a provider killed with SIGKILL while it writes a piece, then restarted on its folder.
//! Nothing races the clock: the upload to kill stalls halfway by construction, and the
//! provider is frozen (SIGSTOP) before its log is checked and it is killed.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use wwt_net::grpc::GrpcConnector;
use wwt_net::types::{
    ByteRange, ConfirmStored, Locate, NodeId, PieceId, PieceSpec, PieceStream, ReadPiece,
    ReserveSegment, SegmentId, StorePiece, StoreReceipt,
};
use wwt_net::{Connector, Identity, NetError, TrackerApi};

/// A daemon process, killed (SIGKILL) when dropped.
struct Daemon {
    child: Child,
    node: NodeId,
    address: String,
    /// The multiaddress to join its DHT node through, if it runs one.
    dht: Option<String>,
    /// Its operator's HTTP endpoint, if it serves one.
    http: Option<String>,
}

impl Daemon {
    /// Starts `wwt <args>` and reads the line it prints once listening:
    /// `<role> <node id> listening on <address>`, then with `--http-listen` (flag or
    /// environment) `<role> <node id> http <url>`, and with `--dht-listen`
    /// `<role> <node id> dht <multiaddress>`.
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wwt"))
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(
            matches!(words.as_slice(), [_, _, "listening", "on", _]),
            "wwt {args:?} printed {line:?} (status {:?})",
            child.try_wait()
        );
        let mut next = |what: &str| {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            match line.split_whitespace().collect::<Vec<_>>().as_slice() {
                [_, node, said, addr] if *node == words[1] && *said == what => addr.to_string(),
                _ => panic!("wwt {args:?} printed {line:?} for its {what} endpoint"),
            }
        };
        let http_env = env.iter().any(|(k, _)| k.ends_with("_HTTP_LISTEN"));
        let http = (args.contains(&"--http-listen") || http_env).then(|| next("http"));
        let dht = args.contains(&"--dht-listen").then(|| next("dht"));
        Daemon {
            node: words[1].parse().unwrap(),
            address: words[4].to_string(),
            dht,
            http,
            child,
        }
    }

    /// `wwt tracker run` on any free loopback port, with its data in `dir`.
    fn tracker(dir: &Path) -> Daemon {
        let dir = dir.to_str().unwrap();
        Daemon::spawn(
            &[
                "tracker",
                "run",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                dir,
            ],
            &[],
        )
    }

    /// Sends `signal` (`STOP`, `CONT`, …) with kill(1).
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// SIGKILL, as `kill -9` does.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every millisecond until it gives a value or 30 s pass.
async fn poll<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn piece_bytes(seed: u64, len: usize) -> Bytes {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    Bytes::from(out)
}

/// Reserves a one-piece segment at `tracker` and stores it at the placed provider: all of
/// `data`, or with `stall_after: Some(n)` its first `n` bytes only, after which the upload
/// neither sends more nor ends (a client gone quiet mid-upload).
async fn store(
    client: &Identity,
    tracker: &dyn TrackerApi,
    connector: &dyn Connector,
    seed: u64,
    data: Bytes,
    stall_after: Option<usize>,
) -> Result<StoreReceipt, NetError> {
    let reserve = ReserveSegment {
        segment: segment(seed),
        pieces: vec![PieceSpec {
            index: 0,
            piece: PieceId::of(&data),
            size: data.len() as u64,
        }],
    };
    let placed = tracker
        .reserve(client.sign(reserve)?)
        .await?
        .pieces
        .remove(0);
    let request = client.sign(StorePiece {
        reservation: placed.reservation,
    })?;
    let stream = match stall_after {
        None => PieceStream::whole(data),
        Some(n) => {
            let parts: Vec<Result<Bytes, NetError>> = (0..n.min(data.len()))
                .step_by(1 << 20)
                .map(|at| Ok(data.slice(at..(at + (1 << 20)).min(n))))
                .collect();
            PieceStream::new(futures::stream::iter(parts).chain(futures::stream::pending()))
        }
    };
    connector
        .provider(&placed.address)?
        .store(request, stream)
        .await
}

fn segment(seed: u64) -> SegmentId {
    SegmentId(*blake3::hash(&seed.to_le_bytes()).as_bytes())
}

/// The piece log's files under a provider's folder: bytes long, and bytes allocated on disk
/// (the holes punched where no record is take none).
fn log_bytes(provider_dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(files) = std::fs::read_dir(provider_dir.join("log")) else {
        return (0, 0);
    };
    files
        .map(|f| f.unwrap().metadata().unwrap())
        .fold((0, 0), |(len, held), m| {
            (len + m.len(), held + m.blocks() * 512)
        })
}

async fn wait_alive(tracker: &dyn TrackerApi, address: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ps = tracker.providers().await.unwrap_or_default();
        if ps.iter().any(|p| p.address == address && p.alive) {
            return;
        }
        assert!(Instant::now() < deadline, "{address} never heartbeat");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_killed_mid_write_serves_no_partial_piece_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Daemon::tracker(&dir.path().join("tracker"));
    // The provider's settings come from a TOML file, its capacity from the environment.
    let provider_dir = dir.path().join("provider");
    let config = dir.path().join("provider.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nmax_piece_bytes = {}\nheartbeat_interval_ms = 200\n\
             [[trackers]]\nid = \"{}\"\naddress = \"{}\"\n",
            provider_dir.to_str().unwrap(),
            64 << 20,
            tracker.node,
            tracker.address
        ),
    )
    .unwrap();
    let args = [
        "provider",
        "run",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ];
    let env = [("WWT_PROVIDER_CAPACITY_BYTES", "1073741824")];
    let mut provider = Daemon::spawn(&args, &env);

    let connector = Arc::new(GrpcConnector::with_timeout(Duration::from_secs(60)));
    let tracker_api = connector.tracker(&tracker.address).unwrap();
    wait_alive(tracker_api.as_ref(), &provider.address).await;
    let client = Identity::generate().unwrap();

    // A complete piece, stored and confirmed.
    let kept = piece_bytes(1, 256 << 10);
    let receipt = store(
        &client,
        tracker_api.as_ref(),
        connector.as_ref(),
        1,
        kept.clone(),
        None,
    )
    .await
    .unwrap();
    tracker_api
        .confirm(
            client
                .sign(ConfirmStored {
                    receipts: vec![receipt],
                })
                .unwrap(),
        )
        .await
        .unwrap();

    // A large piece, stored whole: its record takes many writes.
    let big = piece_bytes(2, 32 << 20);
    store(
        &client,
        tracker_api.as_ref(),
        connector.as_ref(),
        2,
        big.clone(),
        None,
    )
    .await
    .unwrap();
    let complete = vec![kept.clone(), big];

    // Another whose upload stops after 3 MiB: the provider writes its first 2 MiB buffer to
    // the log and waits for the rest, which never comes. Once some of the record is in the
    // log, SIGSTOP freezes the provider, the log is checked to hold part of the record and
    // not all of it (a record is acknowledged only once whole and synced), and SIGKILL ends
    // the provider there.
    let seed = 3;
    let lost = piece_bytes(seed, 32 << 20);
    let record = wwt_provider::store::record_len(lost.len() as u64);
    let (before, _) = log_bytes(&provider_dir);
    let upload = {
        let (client, tracker_api, connector) =
            (client.clone(), tracker_api.clone(), connector.clone());
        let data = lost.clone();
        tokio::spawn(async move {
            let api = tracker_api.as_ref();
            store(&client, api, connector.as_ref(), seed, data, Some(3 << 20)).await
        })
    };
    // At least 1 MiB (more than the journal's few blocks; the 2 MiB buffer's write will
    // land): the record has begun.
    poll("the record to begin in the log", || {
        let (len, _) = log_bytes(&provider_dir);
        (len >= before + (1 << 20)).then_some(())
    })
    .await;
    provider.signal("STOP");
    let (len, _) = log_bytes(&provider_dir);
    let written = len - before;
    assert!(
        written > 0 && written < record,
        "{written} bytes of a {record}-byte record in the log"
    );
    assert!(!upload.is_finished(), "the stalled upload ended");
    provider.kill();
    let answer = upload.await.unwrap();
    assert!(answer.is_err(), "a receipt came from a killed provider");
    println!(
        "killed with {written} bytes of a {record}-byte record in the log ({} pieces complete)",
        complete.len()
    );

    let mut provider = Daemon::spawn(&args, &env);
    wait_alive(tracker_api.as_ref(), &provider.address).await;
    let api = connector.provider(&provider.address).unwrap();
    let status = api.status().await.unwrap();
    assert_eq!(status.capacity, 1 << 30);
    assert_eq!(status.pieces, complete.len() as u64);
    assert_eq!(
        status.used,
        complete.iter().map(|p| p.len() as u64).sum::<u64>()
    );
    // The cut-short record's blocks went back to the file system at start-up: the log holds
    // the complete records and no more than a few blocks of the journal's.
    let records: u64 = complete
        .iter()
        .map(|p| wwt_provider::store::record_len(p.len() as u64))
        .sum();
    let (_, held) = log_bytes(&provider_dir);
    assert!(
        held >= records && held <= records + (64 << 10),
        "the log holds {held} bytes for {records} bytes of complete records"
    );
    let read = |piece, range| client.sign(ReadPiece { piece, range }).unwrap();
    let err = api.read(read(PieceId::of(&lost), None)).await.unwrap_err();
    assert!(matches!(err, NetError::NotFound(_)), "{err}");
    // The tracker never heard of the lost piece: nothing to locate for its segment.
    let location = tracker_api
        .locate(
            client
                .sign(Locate {
                    segment: segment(seed),
                })
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(location.pieces.iter().all(|p| p.holders.is_empty()));

    // Complete pieces still serve, whole and by proven ranges.
    for data in &complete {
        let piece = PieceId::of(data);
        api.read(read(piece, None))
            .await
            .unwrap()
            .verify_whole()
            .unwrap();
        let range = ByteRange {
            offset: 1000,
            len: 5000,
        };
        let got = api.read(read(piece, Some(range))).await.unwrap();
        let proven =
            wwt_engine::proof::verify(&wwt_engine::PieceHash(piece.0), 1000, 5000, &got.proof)
                .unwrap();
        assert_eq!(proven, data[1000..6000]);
    }

    // Retrying the lost upload works, and the piece then serves.
    store(
        &client,
        tracker_api.as_ref(),
        connector.as_ref(),
        seed,
        lost.clone(),
        None,
    )
    .await
    .unwrap();
    api.read(read(PieceId::of(&lost), None))
        .await
        .unwrap()
        .verify_whole()
        .unwrap();
    provider.kill();
}

#[test]
fn daemons_refuse_bad_flags_and_config_files_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wwt"))
        .args(["provider", "run", "--tracker", "nobody@http://x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("64 hex"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = dir.path().join("tracker.toml");
    std::fs::write(&config, "liveness = 5\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wwt"))
        .args(["tracker", "run", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tracker.toml") && stderr.contains("liveness"),
        "{stderr}"
    );
}

/// What a user does with daemons started by hand: a tracker, six providers (one of them an
/// index provider through `--index`, another through `WWT_PROVIDER_INDEX`), then `wwt sql`
/// pointed at them. The tracker lists both index providers as such; SQL runs against one; a
/// provider that is no index provider gets an error that names the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_runs_against_an_index_provider_started_with_the_index_flag() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Daemon::tracker(&dir.path().join("tracker"));
    let at = format!("{}@{}", tracker.node, tracker.address);
    let providers: Vec<Daemon> = (0..6)
        .map(|i| {
            let data = dir.path().join(format!("provider-{i}"));
            match i {
                0 => provider(&data, &at, GIB, &["--index"], &[]),
                1 => provider(&data, &at, GIB, &[], &[("WWT_PROVIDER_INDEX", "true")]),
                _ => provider(&data, &at, GIB, &[], &[]),
            }
        })
        .collect();
    let connector = GrpcConnector::with_timeout(Duration::from_secs(10));
    let tracker_api = connector.tracker(&tracker.address).unwrap();
    for p in &providers {
        wait_alive(tracker_api.as_ref(), &p.address).await;
    }
    let listed = tracker_api.providers().await.unwrap();
    let index: Vec<bool> = providers
        .iter()
        .map(|p| listed.iter().any(|r| r.address == p.address && r.index))
        .collect();
    assert_eq!(index, [true, true, false, false, false, false]);

    let home = dir.path().join("home");
    let wwt = as_owner(&home);
    let out = wwt(&[
        "sql",
        "--trackers",
        &at,
        "--index",
        &providers[0].address,
        "-c",
        "CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT);
         CREATE INDEX ON notes USING fulltext (body);
         INSERT INTO notes VALUES (1, 'kept by hand'), (2, 'started by hand'), (3, 'other');
         SELECT count(*) FROM notes WHERE MATCH(body, 'hand')",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("inserted 3 rows"), "{stdout}");
    assert!(
        stdout.contains("count(*)\n--------\n       2\n(1 row)"),
        "{stdout}"
    );

    let out = wwt(&[
        "sql",
        "--trackers",
        &at,
        "--index",
        &providers[2].address,
        "-c",
        "SELECT count(*) FROM notes",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--index"), "{stderr}");
}

/// Daemons started by hand with `--http-listen` (or its variable) serve their operator's
/// endpoint: `/health`, `/metrics` that a Prometheus parser reads and whose counts follow
/// the rows `wwt sql` stores, and pages: the tracker's dashboard lists every provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_serve_metrics_health_and_pages_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tracker");
    let tracker = Daemon::spawn(
        &[
            "tracker",
            "run",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    let at = format!("{}@{}", tracker.node, tracker.address);
    let providers: Vec<Daemon> = (0..6)
        .map(|i| {
            let data = dir.path().join(format!("provider-{i}"));
            match i {
                0 => provider(
                    &data,
                    &at,
                    GIB,
                    &["--index", "--http-listen", "127.0.0.1:0"],
                    &[],
                ),
                _ => provider(
                    &data,
                    &at,
                    GIB,
                    &[],
                    &[("WWT_PROVIDER_HTTP_LISTEN", "127.0.0.1:0")],
                ),
            }
        })
        .collect();
    let connector = GrpcConnector::with_timeout(Duration::from_secs(10));
    let tracker_api = connector.tracker(&tracker.address).unwrap();
    for p in &providers {
        wait_alive(tracker_api.as_ref(), &p.address).await;
    }
    let http = |d: &Daemon| d.http.clone().expect("an HTTP endpoint");
    for d in providers.iter().chain([&tracker]) {
        assert_eq!(
            wwt_tests::http_get(&format!("{}/health", http(d))).await,
            (200, "ok\n".into())
        );
    }

    let home = dir.path().join("home");
    let wwt = as_owner(&home);
    let rows: Vec<String> = (0..300)
        .map(|i| format!("({i}, '{}')", "r".repeat(1_000)))
        .collect();
    let script = dir.path().join("notes.sql");
    std::fs::write(
        &script,
        format!(
            "CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT);\nINSERT INTO notes VALUES {};\n",
            rows.join(", ")
        ),
    )
    .unwrap();
    let out = wwt(&[
        "sql",
        "--trackers",
        &at,
        "--index",
        &providers[0].address,
        "-f",
        script.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut pieces = 0.0;
    for p in &providers {
        let metrics = wwt_tests::scrape(&format!("{}/metrics", http(p))).await;
        let held = wwt_tests::metric(&metrics, "wwt_provider_pieces", &[]);
        let stores = wwt_tests::metric(
            &metrics,
            "wwt_grpc_requests_total",
            &[("method", "/wwt.v1.Provider/Store"), ("code", "Ok")],
        );
        assert!(held > 0.0, "{} holds no piece", p.address);
        assert!(stores >= held, "{stores} stores for {held} pieces");
        pieces += held;
    }
    let index = wwt_tests::scrape(&format!("{}/metrics", http(&providers[0]))).await;
    assert_eq!(wwt_tests::metric(&index, "wwt_index_owners", &[]), 1.0);
    assert!(wwt_tests::metric(&index, "wwt_index_log_entries", &[]) >= 2.0);
    let metrics = wwt_tests::scrape(&format!("{}/metrics", http(&tracker))).await;
    assert_eq!(
        wwt_tests::metric(&metrics, "wwt_tracker_providers", &[("state", "alive")]),
        6.0
    );
    assert_eq!(
        wwt_tests::metric(&metrics, "wwt_tracker_provider_pieces", &[]),
        pieces
    );

    let (status, page) = wwt_tests::http_get(&format!("{}/", http(&tracker))).await;
    assert_eq!(status, 200);
    for p in &providers {
        assert!(page.contains(&format!("title=\"{}\"", p.node)), "{page}");
        assert!(page.contains(&p.address), "{page}");
    }
    let (status, page) = wwt_tests::http_get(&format!("{}/", http(&providers[1]))).await;
    assert_eq!(status, 200);
    assert!(
        page.contains(&format!("title=\"{}\"", tracker.node)),
        "{page}"
    );
}

/// `wwt init` in `home`, then `wwt <args>` as that owner: its output, whatever the status.
fn as_owner(home: &Path) -> impl Fn(&[&str]) -> std::process::Output + '_ {
    let wwt = move |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_wwt"))
            .args(args)
            .env("WWT_HOME", home)
            .output()
            .unwrap()
    };
    assert!(wwt(&["init"]).status.success());
    wwt
}

/// `wwt provider run` on any free loopback port with its data in `dir`, `capacity` bytes to
/// sell, reporting to the tracker `at`, with `flags` and `env` added.
fn provider(dir: &Path, at: &str, capacity: &str, flags: &[&str], env: &[(&str, &str)]) -> Daemon {
    let dir = dir.to_str().unwrap();
    let mut args = vec![
        "provider",
        "run",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir,
        "--tracker",
        at,
        "--capacity-bytes",
        capacity,
    ];
    args.extend_from_slice(flags);
    Daemon::spawn(&args, env)
}

/// 1 GiB, in bytes, as `--capacity-bytes` takes it.
const GIB: &str = "1073741824";

/// An index provider that sells no disk (`--index --capacity-bytes 0`).
fn index_provider(dir: &Path, at: &str) -> Daemon {
    provider(dir, at, "0", &["--index"], &[])
}

/// Three index providers started by hand hold an owner's log: one is killed with SIGKILL and
/// stays down, another is killed, its index folder deleted and started again, while `wwt sql`
/// goes on inserting; no statement fails, the wiped one catches up from the third, and after
/// the third is killed too, a new `wwt sql` still counts every row. Then all three lose their
/// folders, and `wwt recover` rebuilds them from the pieces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_replicas_survive_kill_9_and_a_wiped_folder() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Daemon::tracker(&dir.path().join("tracker"));
    let at = format!("{}@{}", tracker.node, tracker.address);
    let storage: Vec<Daemon> = (0..6)
        .map(|i| {
            provider(
                &dir.path().join(format!("provider-{i}")),
                &at,
                GIB,
                &[],
                &[],
            )
        })
        .collect();
    let index_dir = |i: usize| dir.path().join(format!("index-{i}"));
    let mut index: Vec<Daemon> = (0..3).map(|i| index_provider(&index_dir(i), &at)).collect();
    let connector = GrpcConnector::with_timeout(Duration::from_secs(10));
    let tracker_api = connector.tracker(&tracker.address).unwrap();
    for p in storage.iter().chain(&index) {
        wait_alive(tracker_api.as_ref(), &p.address).await;
    }

    let home = dir.path().join("home");
    // `wwt <args>` as this owner, which must succeed; its output.
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_wwt"))
            .args(args)
            .env("WWT_HOME", &home)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let wwt = |sql: &str| run(&["sql", "--trackers", &at, "-c", sql]);
    let insert = |from: u32| {
        let values: Vec<String> = (from..from + 100)
            .map(|i| format!("({i}, 'note {i}')"))
            .collect();
        wwt(&format!("INSERT INTO notes VALUES {}", values.join(", ")))
    };
    let count = |n: u32| format!("count(*)\n--------\n{n:>8}\n(1 row)");
    run(&["init"]);
    wwt("CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT);
         CREATE INDEX ON notes USING fulltext (body)");
    insert(0);

    index[0].kill();
    insert(100);
    // Wiped and started again on its folder: same identity, a new port, no log.
    index[1].kill();
    std::fs::remove_dir_all(index_dir(1).join("index")).unwrap();
    index[1] = index_provider(&index_dir(1), &at);
    wait_alive(tracker_api.as_ref(), &index[1].address).await;
    insert(200);
    let out = wwt("SELECT count(*) FROM notes WHERE MATCH(body, 'note')");
    assert!(out.contains(&count(300)), "{out}");

    // The wiped replica caught up from the third: alone with the dead one, it still answers.
    index[2].kill();
    let out = wwt("SELECT count(*) FROM notes");
    assert!(out.contains(&count(300)), "{out}");

    // Every index folder lost: `wwt recover` rebuilds the replicas from the pieces.
    index[1].kill();
    for (i, daemon) in index.iter_mut().enumerate() {
        std::fs::remove_dir_all(index_dir(i).join("index")).ok();
        *daemon = index_provider(&index_dir(i), &at);
        wait_alive(tracker_api.as_ref(), &daemon.address).await;
    }
    let out = run(&["recover", "--trackers", &at]);
    assert!(out.contains("table notes: 300 rows"), "{out}");
    let out = wwt("SELECT count(*) FROM notes WHERE MATCH(body, 'note')");
    assert!(out.contains(&count(300)), "{out}");
}

/// A network started by hand that joins one DHT: a tracker and six providers (three of them
/// index providers), each with `--dht-listen` and joined through `--dht-bootstrap`. `wwt sql`
/// writes through them with the DHT, the tracker is killed with SIGKILL, and a `wwt sql` that
/// joins the DHT through two providers still reads every row: its replicas from the head
/// record it published, their addresses and the segments' holders from the DHT. Then every
/// replica is killed and wiped, and `wwt recover` rebuilds them through the DHT alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_reads_through_the_dht_with_the_tracker_killed() {
    let dir = tempfile::tempdir().unwrap();
    let data = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let loopback = "/ip4/127.0.0.1/tcp/0";
    let mut tracker = Daemon::spawn(
        &[
            "tracker",
            "run",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &data("tracker"),
            "--dht-listen",
            loopback,
        ],
        &[],
    );
    let at = format!("{}@{}", tracker.node, tracker.address);
    let seed = tracker.dht.clone().unwrap();
    let mut providers: Vec<Daemon> = (0..6)
        .map(|i| {
            let mut flags = vec!["--dht-listen", loopback, "--dht-bootstrap", &seed];
            if i < 3 {
                flags.push("--index");
            }
            provider(
                &dir.path().join(format!("provider-{i}")),
                &at,
                GIB,
                &flags,
                &[],
            )
        })
        .collect();
    let connector = GrpcConnector::with_timeout(Duration::from_secs(10));
    let tracker_api = connector.tracker(&tracker.address).unwrap();
    for p in &providers {
        wait_alive(tracker_api.as_ref(), &p.address).await;
    }

    let home = dir.path().join("home");
    let wwt = as_owner(&home);
    let values: Vec<String> = (0..200).map(|i| format!("({i}, 'note {i}')")).collect();
    let out = wwt(&[
        "sql",
        "--trackers",
        &at,
        "--dht-bootstrap",
        &seed,
        "-c",
        &format!(
            "CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT);
             INSERT INTO notes VALUES {}",
            values.join(", ")
        ),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    tracker.kill();
    let out = wwt(&["sql", "--trackers", &at, "-c", "SELECT count(*) FROM notes"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("tracker"),
        "{stderr}"
    );
    let through = format!(
        "{},{}",
        providers[3].dht.as_deref().unwrap(),
        providers[4].dht.as_deref().unwrap()
    );
    // LIKE is not pushed to an index: every row is read from its pieces. Providers announce
    // their segments in the background, so the read is tried again until they are found.
    let read = || {
        wwt(&[
            "sql",
            "--trackers",
            &at,
            "--dht-bootstrap",
            &through,
            "-c",
            "SELECT count(*) FROM notes WHERE body LIKE 'note %'",
        ])
    };
    let out = poll("every row read through the DHT", || {
        let out = read();
        out.status.success().then_some(out)
    })
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("count(*)\n--------\n     200\n(1 row)"),
        "{stdout}"
    );

    // Every index replica killed and its folder lost, with the tracker still dead: the head
    // record leads `wwt recover` to the log in pieces, through the DHT alone.
    for (i, daemon) in providers.iter_mut().enumerate().take(3) {
        daemon.kill();
        let folder = dir.path().join(format!("provider-{i}"));
        std::fs::remove_dir_all(folder.join("index")).unwrap();
        *daemon = provider(
            &folder,
            &at,
            GIB,
            &[
                "--dht-listen",
                loopback,
                "--dht-bootstrap",
                &through,
                "--index",
            ],
            &[],
        );
    }
    let recover = || wwt(&["recover", "--trackers", &at, "--dht-bootstrap", &through]);
    // The restarted replicas' new addresses reach the DHT in the background: tried again.
    let out = poll("the replicas recovered through the DHT", || {
        let out = recover();
        out.status.success().then_some(out)
    })
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("table notes: 200 rows"), "{stdout}");
}

/// Two trackers started by hand as each other's `--peer`, eight providers reporting to both:
/// the tracker that leads half the segments is killed with SIGKILL, then a provider; the other
/// tracker takes over the first one's segments after its lease, audits, condemns the lost
/// provider and re-codes every piece it held, and `wwt sql` still reads every row, asking the
/// live tracker when the dead one does not answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_tracker_repairs_after_the_first_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let data = |name: &str| dir.path().join(name);
    // Identities and ports first: each tracker names the other when it starts.
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string()
    };
    let ids: Vec<NodeId> = ["tracker-a", "tracker-b"]
        .iter()
        .map(|t| {
            Identity::load_or_create(&data(t).join("node.key"))
                .unwrap()
                .node_id()
        })
        .collect();
    let listen = [free_port(), free_port()];
    let at = |t: usize| format!("{}@http://{}", ids[t], listen[t]);
    // Audits every 2 s per piece, chunk challenges only (sentinels would run out and ask for
    // refreshes); a provider missing every challenge for 4 s is lost.
    let config = data("tracker.toml");
    std::fs::write(
        &config,
        "lease_ms = 1000\n[audit]\nmean_interval_ms = 2000\nchunk_share = 1.0\n\
         deadline_ms = 2000\noffline_threshold_ms = 4000\n",
    )
    .unwrap();
    let tracker = |t: usize| {
        let name = ["tracker-a", "tracker-b"][t];
        Daemon::spawn(
            &[
                "tracker",
                "run",
                "--listen",
                &listen[t],
                "--data-dir",
                data(name).to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
                "--peer",
                &at(1 - t),
            ],
            &[],
        )
    };
    let mut trackers = [tracker(0), tracker(1)];
    let both = format!("{},{}", at(0), at(1));
    let mut providers: Vec<Daemon> = (0..8)
        .map(|i| {
            let flags: &[&str] = if i < 3 { &["--index"] } else { &[] };
            provider(&data(&format!("provider-{i}")), &both, GIB, flags, &[])
        })
        .collect();
    let connector = GrpcConnector::with_timeout(Duration::from_secs(10));
    for t in &trackers {
        let api = connector.tracker(&t.address).unwrap();
        for p in &providers {
            wait_alive(api.as_ref(), &p.address).await;
        }
    }

    let home = data("home");
    let wwt = as_owner(&home);
    let values: Vec<String> = (0..300).map(|i| format!("({i}, 'note {i}')")).collect();
    let statements =
        std::iter::once("CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT)".into()).chain(
            values
                .chunks(100)
                .map(|c| format!("INSERT INTO notes VALUES {}", c.join(", "))),
        );
    for sql in statements {
        let out = wwt(&["sql", "--trackers", &both, "-c", &sql]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Tracker a, then a storage provider, killed.
    trackers[0].kill();
    let lost = providers.remove(7);
    let lost_id = lost.node.to_string();
    drop(lost);
    let audits = || {
        let out = Command::new(env!("CARGO_BIN_EXE_wwt"))
            .args(["tracker", "audits", "--address", &trackers[1].address])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    // Tracker b's line for the lost provider: credit 0 and no piece left there.
    let deadline = Instant::now() + Duration::from_secs(90);
    let report = loop {
        let report = audits();
        let line = report
            .lines()
            .find(|l| l.contains(&format!("provider {}", &lost_id[..16])))
            .unwrap_or_default()
            .to_string();
        if line.contains("credit    0‰") && line.ends_with(" 0 pieces") {
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "tracker b did not repair what the lost provider held:\n{report}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(report.contains(" done"), "{report}");
    let out = wwt(&[
        "sql",
        "--trackers",
        &both,
        "-c",
        "SELECT count(*) FROM notes WHERE body LIKE 'note %'",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("count(*)\n--------\n     300\n(1 row)"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A permissioned network started by hand: an operator certifies one provider with
/// `wwt operator certify`; the tracker, run with `--permissioned --operator <key>`, lists that
/// provider as vetted, and refuses the heartbeats of a provider nobody certified
/// (PERMISSION_DENIED, saying what to do), which it never lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permissioned_tracker_admits_only_providers_its_operators_certified() {
    let dir = tempfile::tempdir().unwrap();
    // The providers' keys exist before they start, as an operator provisioning them makes them.
    let key_of = |name: &str| {
        let pdir = dir.path().join(name);
        std::fs::create_dir_all(&pdir).unwrap();
        Identity::load_or_create(&pdir.join("node.key")).unwrap()
    };
    let (certified, stranger) = (key_of("certified"), key_of("stranger"));
    let operator_key = dir.path().join("operator.key");
    let out = Command::new(env!("CARGO_BIN_EXE_wwt"))
        .args(["operator", "certify", "--key"])
        .arg(&operator_key)
        .arg(certified.node_id().to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let certificate = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let operator = Identity::load_or_create(&operator_key).unwrap().node_id();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&operator.to_string()),
        "the operator's key is named"
    );

    let tdir = dir.path().join("tracker");
    let operator_flag = operator.to_string();
    let tracker = Daemon::spawn(
        &[
            "tracker",
            "run",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            tdir.to_str().unwrap(),
            "--permissioned",
            "--operator",
            &operator_flag,
        ],
        &[],
    );
    let at = format!("{}@{}", tracker.node, tracker.address);
    let good = provider(
        &dir.path().join("certified"),
        &at,
        GIB,
        &["--operator-certificate", &certificate],
        &[],
    );
    let _bad = provider(&dir.path().join("stranger"), &at, GIB, &[], &[]);
    let api = GrpcConnector::new().tracker(&tracker.address).unwrap();
    wait_alive(api.as_ref(), &good.address).await;

    // The stranger's heartbeat, as its daemon sends it: refused, saying what to do.
    let beat = wwt_net::types::Heartbeat {
        address: "http://127.0.0.1:9".into(),
        zone: String::new(),
        capacity: 1 << 30,
        used: 0,
        pieces: 0,
        index: false,
        operator: None,
    };
    let err = api
        .heartbeat(stranger.sign(beat).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, NetError::Forbidden(why) if why.contains("operator certificate")),
        "{err}"
    );
    let listed = api.providers().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].node, certified.node_id());
    assert!(
        listed[0].vetted && listed[0].operator == Some(operator),
        "{listed:?}"
    );
}
