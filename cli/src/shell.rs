//! `wwt sql`: an interactive SQL shell (history, multi-line statements ended by `;`, aligned
//! tables), or a script runner with `-c` and `-f`; `--json` prints one JSON object per
//! statement. psql's backslash commands (`\dt`, `\d t`, `\di`, `\timing`, `\x`, `\?`, `\q`)
//! and `SHOW TABLES`/`DESCRIBE t` work in both ([`meta`]); results print through [`print`].
//!
//! Where the network is, in order: `--trackers`/`--index`/`--dht-bootstrap` (or
//! `WWT_TRACKERS`/`WWT_INDEX`/`WWT_DHT_BOOTSTRAP`), the config file (`--config`, `WWT_CONFIG`,
//! default `<home>/config.json`), then the devnet started by `wwt devnet up` in
//! `<home>/devnet`. With DHT bootstrap peers the shell joins the DHT as a client (a fresh
//! libp2p identity each run, not the owner's key): it reads through the DHT when trackers
//! cannot answer, and publishes the head of the owner's log there.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use wwt_net::Identity;
use wwt_net::grpc::GrpcConnector;
use wwt_net::node::{Node, NodeConfig};
use wwt_net::types::NodeId;

use crate::home;
use meta::Meta;
use print::RowPrinter;
pub use print::{Settings, print_outcome};
use wwt_client::db::{Client, ClientConfig};

mod meta;
mod print;

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
    let settings = Settings {
        json: options.json,
        ..Settings::default()
    };
    if let Some(sql) = &options.command {
        return run_script(client, sql, settings, &mut out).await;
    }
    if let Some(file) = &options.file {
        let sql =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        return run_script(client, &sql, settings, &mut out).await;
    }
    if !std::io::stdin().is_terminal() {
        let mut sql = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut sql)?;
        return run_script(client, &sql, settings, &mut out).await;
    }
    interactive(home, client, settings).await
}

/// Runs every statement and backslash command of `sql`, printing each result; a progress
/// bar counts them when there are many and stderr is a terminal. Stops at the first error,
/// or at `\q`.
async fn run_script(
    client: &Client,
    sql: &str,
    mut settings: Settings,
    out: &mut impl std::io::Write,
) -> Result<()> {
    let items = split_script(sql);
    let bar = if items.len() > 20 {
        let bar = ProgressBar::new(items.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} statements, {elapsed} ({eta} left)")
                .context("progress bar template")?,
        );
        Some(bar)
    } else {
        None
    };
    for (i, item) in items.iter().enumerate() {
        let go_on = run_item(client, item, &mut settings, out)
            .await
            .with_context(|| format!("statement {} of {}", i + 1, items.len()))?;
        if let Some(bar) = &bar {
            bar.inc(1);
        }
        if !go_on {
            break;
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(())
}

/// Runs a statement or a backslash command; false after `\q`.
async fn run_item(
    client: &Client,
    item: &Item,
    settings: &mut Settings,
    out: &mut impl std::io::Write,
) -> Result<bool> {
    match item {
        Item::Meta(line) => meta::run(client, &meta::parse(line)?, settings, out).await,
        Item::Sql(sql) => {
            let started = std::time::Instant::now();
            run_statement(client, sql, *settings, out).await?;
            settings.print_time(started.elapsed(), out)?;
            Ok(true)
        }
    }
}

async fn interactive(home: &Path, client: &Client, mut settings: Settings) -> Result<()> {
    let mut editor = rustyline::DefaultEditor::new()?;
    let history = home.join("sql_history");
    let _ = editor.load_history(&history);
    println!("wwt sql: end statements with `;`, \\? lists the commands, \\q or Ctrl-D quits");
    settings.timing = true;
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
        // A backslash command runs at once, without `;`.
        let meta = buffer.is_empty() && line.trim_start().starts_with('\\');
        buffer.push_str(&line);
        buffer.push('\n');
        if !meta && !line.trim_end().ends_with(';') {
            continue;
        }
        let input = std::mem::take(&mut buffer);
        let _ = editor.add_history_entry(input.trim());
        let mut out = std::io::stdout().lock();
        let mut go_on = true;
        for item in split_script(&input) {
            match run_item(client, &item, &mut settings, &mut out).await {
                Ok(more) => go_on = more,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    break;
                }
            }
        }
        if !go_on {
            break;
        }
    }
    let _ = editor.save_history(&history);
    Ok(())
}

/// One thing a script asks for: a statement, or a backslash command (a line of its own).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Item {
    Sql(String),
    Meta(String),
}

/// Splits a script into statements at `;` outside quotes and comments (the parser splits
/// again; this only lets a long script show progress and report which statement failed),
/// and backslash commands: a line that starts with `\` between statements.
fn split_script(sql: &str) -> Vec<Item> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\\') if current.trim().is_empty() => {
                let mut line = String::from(c);
                line.extend(chars.by_ref().take_while(|&c| c != '\n'));
                out.push(Item::Meta(line.trim_end().to_string()));
                current.clear();
                continue;
            }
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
                    out.push(Item::Sql(std::mem::take(&mut current)));
                }
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        out.push(Item::Sql(current));
    }
    out
}

/// Runs one statement and prints what it did; a SELECT's rows are printed a batch at a time
/// as they are read ([`Client::query`]), so a large result never sits whole in memory.
/// `SHOW TABLES` and `DESCRIBE t` read the catalog ([`meta`]).
async fn run_statement(
    client: &Client,
    sql: &str,
    mut settings: Settings,
    out: &mut impl std::io::Write,
) -> Result<()> {
    let mut statements = wwt_query::parse(sql)?;
    if let [stmt] = statements.as_slice()
        && let Some(q) = wwt_query::catalog_query(stmt)?
    {
        meta::run(client, &Meta::Catalog(q), &mut settings, out).await?;
        return Ok(());
    }
    let select = match statements.as_slice() {
        [wwt_query::Statement::Query(_)] => statements.pop(),
        _ => None,
    };
    let Some(select) = select else {
        for o in client.execute_parsed(statements).await? {
            print_outcome(&o, settings, out)?;
        }
        return Ok(());
    };
    let mut rows = client.query_parsed(select).await?;
    let mut printer = RowPrinter::new(rows.columns().to_vec(), settings);
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

    #[test]
    fn scripts_split_outside_quotes_and_comments() {
        let got = split_script(
            "CREATE TABLE t (a TEXT PRIMARY KEY); -- a comment; with a semicolon\n\
             INSERT INTO t VALUES ('x;y'), ('it''s');\n  ;SELECT * FROM t",
        );
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(matches!(&got[1], Item::Sql(s) if s.contains("'x;y'") && s.contains("'it''s'")));
        assert!(matches!(&got[2], Item::Sql(s) if s.trim() == "SELECT * FROM t"));
    }

    #[test]
    fn backslash_commands_take_their_line_between_statements() {
        let got = split_script("\\x\nSELECT '\\d';\n  \\d notes\nSELECT 1;\\timing\nSELECT 2");
        let meta = |s: &str| Item::Meta(s.into());
        assert_eq!(got[0], meta("\\x"));
        assert!(matches!(&got[1], Item::Sql(s) if s.contains("'\\d'")));
        assert_eq!(got[2], meta("\\d notes"));
        assert!(matches!(&got[3], Item::Sql(s) if s.trim() == "SELECT 1"));
        assert_eq!(got[4], meta("\\timing"));
        assert!(matches!(&got[5], Item::Sql(s) if s.trim() == "SELECT 2"));
        assert_eq!(got.len(), 6);
    }
}
