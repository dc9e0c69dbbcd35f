//! Whole-system tests: a network of providers, trackers and clients in one process, and
//! tests that spawn the real `wwt` binary.

use std::sync::Arc;

use wwt_client::store::{Storage, StorageConfig};
use wwt_devnet::LocalNet;
use wwt_engine::Table;
use wwt_engine::table::{RowWrite, WriteBatch};
use wwt_net::{Connector, Identity};
use wwt_tracker::Tracker;
use wwt_tracker::audit::StepReport;
use wwt_tracker::clock::{Clock, ManualClock};

/// The seed of a whole-network test: `WWT_TEST_SEED` (hex `0x…` or decimal) when set, to
/// replay a failure, else `default`. Printed, so every run names the seed that replays it.
/// Devnet node keys, placement and audit draws, faults and choices all derive from it.
pub fn seed(default: u64) -> u64 {
    let seed = match std::env::var("WWT_TEST_SEED") {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
                None => text.replace('_', "").parse(),
            };
            parsed.unwrap_or_else(|_| {
                panic!("WWT_TEST_SEED={text} is not a u64 (hex 0x… or decimal)")
            })
        }
        Err(_) => default,
    };
    println!("seed {seed:#x} (replay: WWT_TEST_SEED={seed:#x})");
    seed
}

/// Writes `rows` into `table` as the first versions of rows 0, 1, 2, …
pub fn write_rows(table: &mut Table, rows: &[Vec<u8>]) -> WriteBatch {
    let row_ids = table.keys().row_id.clone();
    table.write(rows.iter().enumerate().map(|(i, r)| RowWrite {
        row: row_ids.row_id(&(i as u64).to_le_bytes()),
        version: 1,
        plaintext: r,
    }))
}

/// `owner`'s storage path through `net`'s trackers as listed now.
pub fn storage(net: &LocalNet, owner: &Identity) -> Storage {
    storage_with(net, owner, net.connector(), StorageConfig::default())
}

/// `owner`'s storage path through `net`'s trackers as listed now, over `connector`.
pub fn storage_with(
    net: &LocalNet,
    owner: &Identity,
    connector: Arc<dyn Connector>,
    config: StorageConfig,
) -> Storage {
    let trackers = net
        .endpoints
        .tracker_list()
        .expect("the network's trackers");
    Storage::new(owner.clone(), &trackers, connector, config).expect("a storage path")
}

/// One audit step of `tracker` on `clock`. Misbehaving providers sit on some answers until
/// the simulated clock reaches them (`stalled(now)` of them still out): the clock moves on by
/// `stall_ms`, past their deadlines, only once every challenge still out is one of those
/// (each then has two sleeps on the clock, the tracker's deadline and the provider's own),
/// so no honest answer on its way is made late.
pub async fn audit_step_past_stalls(
    tracker: &Tracker,
    clock: &ManualClock,
    stall_ms: u64,
    stalled: impl Fn(u64) -> usize,
) -> StepReport {
    let mut changes = clock.changes();
    let step = tracker.audit_step();
    tokio::pin!(step);
    loop {
        let stalled = stalled(clock.now_ms());
        if stalled > 0 && clock.sleeping() == 2 * stalled {
            clock.advance_by(stall_ms);
        }
        tokio::select! {
            report = &mut step => return report.expect("an audit step"),
            () = changes.next() => {}
        }
    }
}

/// GETs `url` (`http://host:port/path`) over HTTP/1.0: the status code and the body.
pub async fn http_get(url: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .expect("sending the request");
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .await
        .expect("an HTTP reply in UTF-8");
    let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    (status, body.to_string())
}

/// The node's metrics at `url` (its `/metrics`), read with a parser of the Prometheus text
/// format. Panics on a line the parser cannot read: the format must hold line by line.
pub async fn scrape(url: &str) -> prometheus_parse::Scrape {
    use prometheus_parse::LineInfo;
    let (status, text) = http_get(url).await;
    assert_eq!(status, 200, "{url}: {text}");
    for line in text.lines() {
        let ignored = matches!(LineInfo::parse(line), LineInfo::Ignored);
        assert!(
            !ignored || line == "# EOF",
            "{url}: unreadable line {line:?}"
        );
    }
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text")
}

/// The sum of metric `name`'s samples whose labels include `labels` (0 if none has).
pub fn metric(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    use prometheus_parse::Value;
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{name} is not a scalar: {other:?}"),
        })
        .sum()
}
