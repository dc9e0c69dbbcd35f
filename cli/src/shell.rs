//! `wwt sql`: an interactive SQL shell (history, multi-line statements ended by `;`, aligned
//! tables), or a script runner with `-c` and `-f`; `--json` prints one JSON object per
//! statement.
//!
//! Where the network is, in order: `--trackers`/`--index`/`--dht-bootstrap` (or
//! `WWT_TRACKERS`/`WWT_INDEX`/`WWT_DHT_BOOTSTRAP`), the config file (`--config`, `WWT_CONFIG`,
//! default `<home>/config.json`), then the devnet started by `wwt devnet up` in
//! `<home>/devnet`. With DHT bootstrap peers the shell joins the DHT as a client (a fresh
//! libp2p identity each run, not the owner's key): it reads through the DHT when trackers
//! cannot answer, and publishes the head of the owner's log there.

use std::io::IsTerminal;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use wwt_net::Identity;
use wwt_net::grpc::GrpcConnector;
use wwt_net::node::{Node, NodeConfig};
use wwt_net::types::NodeId;
use wwt_query::{Outcome, Row, Value};

use crate::home;
use wwt_client::db::{Client, ClientConfig};

/// Where the network is: flags and environment variables, each optional.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct NetworkOptions {
    /// Trackers as `<node id hex>@<address>`, comma-separated.
    #[arg(long, env = "WWT_TRACKERS", value_delimiter = ',')]
    pub trackers: Vec<String>,
    /// The index providers to keep this owner's log on, by gRPC address, comma-separated
    /// (default: R of those the trackers list, picked by rendezvous hashing).
    #[arg(long, env = "WWT_INDEX", value_delimiter = ',')]
    pub index: Vec<String>,
    /// How many index replicas a new owner's log gets.
    #[arg(long, env = "WWT_REPLICAS", default_value_t = 3)]
    pub replicas: usize,
    /// DHT peers to join through: multiaddresses ending in `/p2p/<peer id>`, comma-separated
    /// (a devnet's are in its endpoints file; none: trackers only).
    #[arg(long, env = "WWT_DHT_BOOTSTRAP", value_delimiter = ',')]
    pub dht_bootstrap: Vec<String>,
    /// A JSON config file with `trackers` and `index` (default: `<home>/config.json`).
    #[arg(long, env = "WWT_CONFIG")]
    pub config: Option<PathBuf>,
}

/// The config file's contents.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Trackers as `<node id hex>@<address>`.
    pub trackers: Vec<String>,
    /// The index providers to use, by address (one address, or a list).
    #[serde(default)]
    pub index: Addresses,
    /// DHT peers to join through: multiaddresses ending in `/p2p/<peer id>`.
    #[serde(default)]
    pub dht_bootstrap: Vec<String>,
}

/// One address or a list of them (config files written before replicas name one).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Addresses {
    /// One address.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Default for Addresses {
    fn default() -> Self {
        Addresses::Many(Vec::new())
    }
}

impl Addresses {
    fn into_vec(self) -> Vec<String> {
        match self {
            Addresses::One(a) => vec![a],
            Addresses::Many(v) => v,
        }
    }
}

/// Options of `wwt sql`.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Run these statements, print their results and exit.
    #[arg(short = 'c', long = "command", conflicts_with = "file")]
    pub command: Option<String>,
    /// Run the statements in this file and exit.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Print each statement's result as one JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Where the network is.
    #[command(flatten)]
    pub network: NetworkOptions,
}

fn parse_tracker(s: &str) -> Result<(NodeId, String)> {
    let (id, address) = s
        .split_once('@')
        .with_context(|| format!("tracker {s:?}: write it as <node id hex>@<address>"))?;
    let bytes =
        hex::decode(id).with_context(|| format!("tracker {s:?}: the node id is not hex"))?;
    Ok((NodeId::from_slice(&bytes)?, address.to_string()))
}

/// Where the network is: trackers `(node id, address)`, the index providers named to hold
/// the owner's log (none: picked from the trackers' list), and DHT bootstrap peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// Trackers.
    pub trackers: Vec<(NodeId, String)>,
    /// Index providers by address.
    pub index: Vec<String>,
    /// DHT bootstrap multiaddresses.
    pub dht_bootstrap: Vec<String>,
}

/// The network, from flags, the config file or the devnet.
pub fn resolve(home: &Path, options: &NetworkOptions) -> Result<Network> {
    let path = options
        .config
        .clone()
        .unwrap_or_else(|| home.join("config.json"));
    let file = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str::<NetworkConfig>(&text)
            .with_context(|| format!("reading {}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && options.config.is_none() => {
            NetworkConfig::default()
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let trackers = if options.trackers.is_empty() {
        file.trackers
    } else {
        options.trackers.clone()
    };
    let index = if options.index.is_empty() {
        file.index.into_vec()
    } else {
        options.index.clone()
    };
    let dht_bootstrap = if options.dht_bootstrap.is_empty() {
        file.dht_bootstrap
    } else {
        options.dht_bootstrap.clone()
    };
    if !trackers.is_empty() {
        let trackers = trackers
            .iter()
            .map(|t| parse_tracker(t))
            .collect::<Result<_>>()?;
        return Ok(Network {
            trackers,
            index,
            dht_bootstrap,
        });
    }
    let dir = wwt_devnet::default_dir(home);
    let endpoints = wwt_devnet::Endpoints::load(&dir).context(
        "no network configured: pass --trackers, write <home>/config.json, \
         or start a local network with `wwt devnet up`",
    )?;
    Ok(Network {
        trackers: endpoints.tracker_list()?,
        index,
        dht_bootstrap: if dht_bootstrap.is_empty() {
            endpoints.dht
        } else {
            dht_bootstrap
        },
    })
}

/// The client's settings for `options`: the network, R, the file in `home` where this
/// device keeps the head of the owner's log on that network (named by its trackers), and a
/// DHT node joined as a client if bootstrap peers are known (none reachable: trackers only).
pub async fn client_config(home: &Path, options: &NetworkOptions) -> Result<ClientConfig> {
    let Network {
        trackers,
        index,
        dht_bootstrap,
    } = resolve(home, options)?;
    let mut ids: Vec<&NodeId> = trackers.iter().map(|(id, _)| id).collect();
    ids.sort();
    let mut network = blake3::Hasher::new_derive_key("wwt 2026-12 network name");
    for id in ids {
        network.update(&id.0);
    }
    let name = hex::encode(&network.finalize().as_bytes()[..8]);
    let mut config = ClientConfig::new(trackers);
    config.index = index;
    config.replicas = options.replicas;
    config.head_file = Some(home.join("heads").join(name));
    if !dht_bootstrap.is_empty() {
        let node = NodeConfig {
            listen: "/ip4/0.0.0.0/tcp/0".into(),
            bootstrap: dht_bootstrap,
            query_timeout_ms: 10_000,
            connect_timeout_ms: 3_000,
            client: true,
            ..NodeConfig::default()
        };
        match Node::start(&Identity::generate()?, node).await {
            Ok((node, _task)) => config.discovery = Some(Arc::new(node)),
            Err(e) => tracing::warn!(error = %e, "cannot join the DHT: trackers only"),
        }
    }
    Ok(config)
}

/// Runs `wwt recover`.
pub async fn recover(home: &Path, options: &NetworkOptions) -> Result<()> {
    let keystore = home::load(home)?;
    let config = client_config(home, options).await?;
    let (client, recovered) =
        Client::recover(&keystore, Arc::new(GrpcConnector::new()), config).await?;
    client.flush().await;
    println!(
        "recovered {} log entries from the pieces onto {} index replicas:",
        recovered.entries,
        recovered.replicas.len()
    );
    for address in &recovered.replicas {
        println!("  {address}");
    }
    for (table, rows) in &recovered.tables {
        println!("table {table}: {rows} rows");
    }
    Ok(())
}

/// `wwt compact`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct CompactOptions {
    /// The table to compact (default: every table).
    pub table: Option<String>,
    #[command(flatten)]
    pub network: NetworkOptions,
}

/// Runs `wwt compact`: prints, per table, the segments rewritten, the rows moved and the bytes
/// given back.
pub async fn compact(home: &Path, options: &CompactOptions) -> Result<()> {
    let keystore = home::load(home)?;
    let config = client_config(home, &options.network).await?;
    let client = Client::connect(&keystore, Arc::new(GrpcConnector::new()), config).await?;
    let compacted = client.compact(options.table.as_deref()).await;
    client.flush().await;
    for (table, c) in compacted? {
        println!(
            "table {table}: {} of {} segments rewritten, {} rows ({} bytes) moved, {} bytes freed",
            c.rewritten, c.segments, c.rows, c.live_bytes, c.freed_bytes
        );
    }
    Ok(())
}

/// Runs `wwt sql`.
pub async fn run(home: &Path, options: &Options) -> Result<()> {
    let keystore = home::load(home)?;
    let config = client_config(home, &options.network).await?;
    let client = Client::connect(&keystore, Arc::new(GrpcConnector::new()), config).await?;
    let ran = run_with(home, &client, options).await;
    // The head of the last writes still on its way to the DHT goes out before exiting.
    client.flush().await;
    ran
}

async fn run_with(home: &Path, client: &Client, options: &Options) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if let Some(sql) = &options.command {
        return run_script(client, sql, options.json, &mut out).await;
    }
    if let Some(file) = &options.file {
        let sql =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        return run_script(client, &sql, options.json, &mut out).await;
    }
    if !std::io::stdin().is_terminal() {
        let mut sql = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut sql)?;
        return run_script(client, &sql, options.json, &mut out).await;
    }
    interactive(home, client, options.json).await
}

/// Runs every statement of `sql`, printing each result; a progress bar counts statements
/// when there are many and stderr is a terminal. Stops at the first error.
async fn run_script(
    client: &Client,
    sql: &str,
    json: bool,
    out: &mut impl std::io::Write,
) -> Result<()> {
    let statements = split_statements(sql);
    let bar = if statements.len() > 20 {
        let bar = ProgressBar::new(statements.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} statements, {elapsed} ({eta} left)")
                .context("progress bar template")?,
        );
        Some(bar)
    } else {
        None
    };
    for (i, stmt) in statements.iter().enumerate() {
        run_statement(client, stmt, json, out)
            .await
            .with_context(|| format!("statement {} of {}", i + 1, statements.len()))?;
        if let Some(bar) = &bar {
            bar.inc(1);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(())
}

async fn interactive(home: &Path, client: &Client, json: bool) -> Result<()> {
    let mut editor = rustyline::DefaultEditor::new()?;
    let history = home.join("sql_history");
    let _ = editor.load_history(&history);
    println!("wwt sql: end statements with `;`, Ctrl-D quits");
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() { "wwt> " } else { "...> " };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(rustyline::error::ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(rustyline::error::ReadlineError::Eof) => break,
            Err(e) => bail!(e),
        };
        buffer.push_str(&line);
        buffer.push('\n');
        if !line.trim_end().ends_with(';') {
            continue;
        }
        let sql = std::mem::take(&mut buffer);
        let _ = editor.add_history_entry(sql.trim());
        let started = std::time::Instant::now();
        let mut out = std::io::stdout().lock();
        for stmt in split_statements(&sql) {
            if let Err(e) = run_statement(client, &stmt, json, &mut out).await {
                eprintln!("error: {e:#}");
                break;
            }
        }
        if !json {
            writeln!(out, "({:.1} ms)", started.elapsed().as_secs_f64() * 1e3)?;
        }
    }
    let _ = editor.save_history(&history);
    Ok(())
}

/// Splits a script into statements at `;` outside quotes and comments (the parser splits
/// again; this only lets a long script show progress and report which statement failed).
fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '-') if chars.peek() == Some(&'-') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                current.push('\n');
                continue;
            }
            (None, ';') => {
                if !current.trim().is_empty() {
                    out.push(std::mem::take(&mut current));
                }
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out
}

fn json_value(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Int(i) => (*i).into(),
        Value::Double(d) => serde_json::Number::from_f64(*d)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Value::Bool(b) => (*b).into(),
        Value::Text(_) | Value::Timestamp(_) => v.to_string().into(),
        Value::Blob(b) => hex::encode(b).into(),
    }
}

/// Prints one statement's outcome: an aligned table (numbers right-aligned) or JSON.
pub fn print_outcome(o: &Outcome, json: bool, out: &mut impl std::io::Write) -> Result<()> {
    if let Outcome::Rows(rs) = o {
        let mut printer = RowPrinter::new(rs.columns.clone(), json);
        printer.batch(&rs.rows, out)?;
        return printer.finish(out);
    }
    if json {
        let v = match o {
            Outcome::Created => serde_json::json!({ "created": true }),
            Outcome::Dropped => serde_json::json!({ "dropped": true }),
            Outcome::Inserted(n) => serde_json::json!({ "inserted": n }),
            Outcome::Updated(n) => serde_json::json!({ "updated": n }),
            Outcome::Deleted(n) => serde_json::json!({ "deleted": n }),
            Outcome::Explain(text) => serde_json::json!({ "explain": text }),
            Outcome::Rows(_) => unreachable!("printed above"),
        };
        writeln!(out, "{v}")?;
        return Ok(());
    }
    match o {
        Outcome::Created => writeln!(out, "created")?,
        Outcome::Dropped => writeln!(out, "dropped")?,
        Outcome::Inserted(n) => writeln!(out, "inserted {n} rows")?,
        Outcome::Updated(n) => writeln!(out, "updated {n} rows")?,
        Outcome::Deleted(n) => writeln!(out, "deleted {n} rows")?,
        Outcome::Explain(text) => writeln!(out, "{text}")?,
        Outcome::Rows(_) => unreachable!("printed above"),
    }
    Ok(())
}

/// Prints a SELECT's rows as they arrive, batch by batch: an aligned table whose header,
/// widths and alignment come from the first batch (later batches only widen columns), or
/// one JSON object `{"columns": [...], "rows": [...]}`.
struct RowPrinter {
    json: bool,
    columns: Vec<String>,
    /// Set once the header is printed.
    widths: Option<Vec<usize>>,
    numeric: Vec<bool>,
    count: usize,
}

impl RowPrinter {
    fn new(columns: Vec<String>, json: bool) -> Self {
        RowPrinter {
            json,
            columns,
            widths: None,
            numeric: Vec::new(),
            count: 0,
        }
    }

    fn batch(&mut self, rows: &[Row], out: &mut impl std::io::Write) -> Result<()> {
        if self.json {
            if self.widths.is_none() {
                write!(
                    out,
                    "{{\"columns\":{},\"rows\":[",
                    serde_json::to_string(&self.columns)?
                )?;
                self.widths = Some(Vec::new());
            }
            for row in rows {
                if self.count > 0 {
                    write!(out, ",")?;
                }
                let values: Vec<serde_json::Value> = row.iter().map(json_value).collect();
                write!(out, "{}", serde_json::Value::Array(values))?;
                self.count += 1;
            }
            return Ok(());
        }
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| r.iter().map(|v| v.to_string()).collect())
            .collect();
        let first = self.widths.is_none();
        let widths = self
            .widths
            .get_or_insert_with(|| self.columns.iter().map(|c| c.chars().count()).collect());
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        if first {
            self.numeric = (0..self.columns.len())
                .map(|i| {
                    rows.iter().all(|r| {
                        matches!(
                            r.get(i),
                            Some(Value::Int(_) | Value::Double(_) | Value::Null)
                        )
                    })
                })
                .collect();
        }
        let line = |cells: &[String]| -> String {
            cells
                .iter()
                .zip(widths.iter())
                .zip(&self.numeric)
                .map(|((c, w), num)| {
                    if *num {
                        format!("{c:>w$}")
                    } else {
                        format!("{c:<w$}")
                    }
                })
                .collect::<Vec<_>>()
                .join(" | ")
        };
        if first {
            writeln!(out, "{}", line(&self.columns).trim_end())?;
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            writeln!(out, "{}", rule.join("-+-"))?;
        }
        for row in &cells {
            writeln!(out, "{}", line(row).trim_end())?;
        }
        self.count += rows.len();
        Ok(())
    }

    fn finish(mut self, out: &mut impl std::io::Write) -> Result<()> {
        if self.widths.is_none() {
            self.batch(&[], out)?;
        }
        if self.json {
            writeln!(out, "]}}")?;
        } else {
            let n = self.count;
            writeln!(out, "({n} row{})", if n == 1 { "" } else { "s" })?;
        }
        Ok(())
    }
}

/// Runs one statement and prints what it did; a SELECT's rows are printed a batch at a time
/// as they are read ([`Client::query`]), so a large result never sits whole in memory.
async fn run_statement(
    client: &Client,
    sql: &str,
    json: bool,
    out: &mut impl std::io::Write,
) -> Result<()> {
    let mut statements = wwt_query::parse(sql)?;
    let select = match statements.as_slice() {
        [wwt_query::Statement::Query(_)] => statements.pop(),
        _ => None,
    };
    let Some(select) = select else {
        for o in client.execute_parsed(statements).await? {
            print_outcome(&o, json, out)?;
        }
        return Ok(());
    };
    let mut rows = client.query_parsed(select).await?;
    let mut printer = RowPrinter::new(rows.columns().to_vec(), json);
    while let Some(batch) = rows.next_batch().await? {
        printer.batch(&batch, out)?;
        out.flush()?;
    }
    printer.finish(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use wwt_query::ResultSet;

    #[test]
    fn scripts_split_outside_quotes_and_comments() {
        let got = split_statements(
            "CREATE TABLE t (a TEXT PRIMARY KEY); -- a comment; with a semicolon\n\
             INSERT INTO t VALUES ('x;y'), ('it''s');\n  ;SELECT * FROM t",
        );
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[1].contains("'x;y'") && got[1].contains("'it''s'"));
        assert_eq!(got[2].trim(), "SELECT * FROM t");
    }

    #[test]
    fn tables_align_and_json_keeps_types() {
        let rs = Outcome::Rows(ResultSet {
            columns: vec!["name".into(), "n".into()],
            rows: vec![
                vec![Value::Text("ada".into()), Value::Int(7)],
                vec![Value::Text("grace".into()), Value::Int(1234)],
            ],
        });
        let mut text = Vec::new();
        print_outcome(&rs, false, &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert_eq!(
            text,
            "name  |    n\n------+-----\nada   |    7\ngrace | 1234\n(2 rows)\n"
        );
        let mut json = Vec::new();
        print_outcome(&rs, true, &mut json).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["rows"][1][1], 1234);
        assert_eq!(v["columns"][0], "name");
    }
}
