//! The `wwt` command-line tool: argument parsing and the wiring of the libraries.
//!
//! Layout:
//! - [`shell`]: `wwt sql`, the interactive shell and script runner over `wwt_client::db::Client`.
//! - [`daemon`]: `wwt provider run` and `wwt tracker run`: flags and config files of the daemons.
//! - [`home`]: where the keystore and local state live (`$WWT_HOME`, default `~/.wwt`).
//! - [`demo`]: `wwt demo`, rows through a local network and back.
//! - [`devnet`]: `wwt devnet up` and `wwt devnet status`, over `wwt_devnet::LocalNet`.
//! - [`audits`]: `wwt tracker audits`, a tracker's audit log and credit as text.
//!
//! The `wwt bench…` commands run `wwt_bench`.

mod audits;
mod daemon;
mod demo;
mod devnet;
mod home;
mod shell;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use wwt_bench::sql as sqlbench;
use wwt_bench::{
    audit as auditbench, dht as dhtbench, engine as bench, index as indexbench, net as netbench,
};

/// wwt, the World Wide Table: an encrypted, decentralized table store.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Folder of the keystore and local state.
    #[arg(long, env = "WWT_HOME", global = true)]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a keystore (master key and identity) in the home folder.
    Init,
    /// Show the identity of the keystore in the home folder.
    Whoami,
    /// Run SQL against the network: an interactive shell, or `-c`/`-f` scripts.
    Sql(shell::Options),
    /// Rebuild the owner's index replicas from the log in pieces, with only the keystore
    /// (when every replica lost it), and print the tables and row counts restored.
    Recover(shell::NetworkOptions),
    /// Give back the space of dead rows: rewrite the live rows of segments less than half
    /// live into new segments and delete the old ones (one table, or every table).
    Compact(shell::CompactOptions),
    /// Measure the storage engine against raw AES-SIV on this machine.
    Bench(bench::Options),
    /// Measure SQL on a local network against SQLite on the same rows.
    BenchSql(sqlbench::Options),
    /// Measure audits: challenges per second per core, bytes per challenge, and the time to
    /// repair 2 lost providers of 8 against the time to upload.
    BenchAudit(auditbench::Options),
    /// Measure piece upload and download through the client on a local network against raw
    /// gRPC streaming of the same bytes.
    BenchNet(netbench::Options),
    /// Measure the encrypted indexes against plain tantivy and sled on the same rows.
    BenchIndex(indexbench::Options),
    /// Measure DHT lookups (hops and time) in swarms of up to 500 in-process nodes.
    BenchDht(dhtbench::Options),
    /// The main job: start a local network, write sample rows through it, stop two providers
    /// and read every row back.
    Demo(demo::Options),
    /// A local network of tracker and provider daemons on loopback.
    #[command(subcommand)]
    Devnet(devnet::Command),
    /// The provider daemon: holds coded pieces for its trackers' clients.
    #[command(subcommand)]
    Provider(ProviderCommand),
    /// The tracker daemon: places pieces, keeps the piece map, audits and repairs; or ask a
    /// running one.
    #[command(subcommand)]
    Tracker(TrackerCommand),
    /// An operator's key: vouch for the providers one runs.
    #[command(subcommand)]
    Operator(OperatorCommand),
}

#[derive(Subcommand, Debug)]
enum OperatorCommand {
    /// Certify a provider as one of this operator's and print the certificate (hex), to set as
    /// the provider's `operator_certificate` or `--operator-certificate`. Trackers give a
    /// segment at most one piece of one operator's providers, and vet at once the providers
    /// of the operators they list (`admission.operators` or `--operator`).
    Certify {
        /// The operator's key file (64 hex characters); created if missing.
        #[arg(long)]
        key: PathBuf,
        /// The provider's node id, as `wwt provider run` prints it.
        provider: wwt_net::types::NodeId,
    },
}

#[derive(Subcommand, Debug)]
enum ProviderCommand {
    /// Run a provider until Ctrl-C or SIGTERM.
    Run(daemon::ProviderArgs),
}

#[derive(Subcommand, Debug)]
enum TrackerCommand {
    /// Run a tracker until Ctrl-C or SIGTERM.
    Run(daemon::TrackerArgs),
    /// The tracker's audit log (latest entries), its providers' credit and its repairs.
    Audits {
        /// The tracker's gRPC address (default: the devnet's first tracker).
        #[arg(long, env = "WWT_TRACKER")]
        address: Option<String>,
        /// The devnet's folder, to find the tracker (default: <home>/devnet).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Log entries to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Asks a running tracker for its audit report and prints it.
fn tracker_audits(
    home: &std::path::Path,
    address: Option<String>,
    dir: Option<PathBuf>,
    limit: u32,
) -> Result<()> {
    runtime()?.block_on(async {
        let address = match address {
            Some(a) => a,
            None => {
                let dir = dir.unwrap_or_else(|| wwt_devnet::default_dir(home));
                let endpoints = wwt_devnet::Endpoints::load(&dir)?;
                endpoints
                    .trackers
                    .first()
                    .map(|t| t.address.clone())
                    .ok_or_else(|| anyhow::anyhow!("the devnet has no tracker"))?
            }
        };
        let tracker = wwt_net::Connector::tracker(
            &wwt_net::grpc::GrpcConnector::with_timeout(std::time::Duration::from_secs(10)),
            &address,
        )?;
        let report = tracker.audits(limit).await?;
        for line in audits::report_lines(&report) {
            println!("{line}");
        }
        Ok(())
    })
}
/// Logs to stderr: `RUST_LOG` if set, else `default` (daemons log more than commands).
fn tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let daemon = matches!(cli.command, Command::Provider(_) | Command::Tracker(_));
    tracing(if daemon { "info" } else { "warn" });
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let home = cli.home.unwrap_or_else(home::default_home);
    match cli.command {
        Command::Init => {
            let (path, keystore) = home::init(&home)?;
            println!("created keystore {}", path.display());
            println!(
                "identity {}",
                hex::encode(keystore.identity.verifying_key().as_bytes())
            );
            println!("back this file up: it is the only way to read your tables");
        }
        Command::Whoami => {
            let keystore = home::load(&home)?;
            println!(
                "{}",
                hex::encode(keystore.identity.verifying_key().as_bytes())
            );
        }
        Command::Sql(options) => runtime()?.block_on(shell::run(&home, &options))?,
        Command::Recover(options) => runtime()?.block_on(shell::recover(&home, &options))?,
        Command::Compact(options) => runtime()?.block_on(shell::compact(&home, &options))?,
        Command::Bench(options) => bench::run(&options)?,
        Command::BenchSql(options) => runtime()?.block_on(sqlbench::run(&options))?,
        Command::BenchAudit(options) => runtime()?.block_on(auditbench::run(&options))?,
        Command::BenchNet(options) => runtime()?.block_on(netbench::run(&options))?,
        Command::BenchIndex(options) => indexbench::run(&options),
        Command::BenchDht(options) => runtime()?.block_on(dhtbench::run(&options))?,
        Command::Demo(options) => runtime()?.block_on(demo::run(&options))?,
        Command::Devnet(command) => runtime()?.block_on(devnet::run(&home, command))?,
        Command::Tracker(TrackerCommand::Audits {
            address,
            dir,
            limit,
        }) => tracker_audits(&home, address, dir, limit)?,
        Command::Operator(OperatorCommand::Certify { key, provider }) => {
            let operator = wwt_net::Identity::load_or_create(&key)?;
            eprintln!(
                "operator {}: list it in the trackers' admission.operators (or --operator) to \
                 vet its providers at once",
                operator.node_id()
            );
            println!(
                "{}",
                wwt_net::types::OperatorCert::issue(&operator, &provider)
            );
        }
        Command::Provider(ProviderCommand::Run(args)) => runtime()?.block_on(async {
            let (config, listeners) = args.open().await?;
            anyhow::Ok(wwt_provider::run(config, listeners, daemon::shutdown_signal()).await?)
        })?,
        Command::Tracker(TrackerCommand::Run(args)) => runtime()?.block_on(async {
            let (config, listeners) = args.open().await?;
            anyhow::Ok(wwt_tracker::run(config, listeners, daemon::shutdown_signal()).await?)
        })?,
    }
    Ok(())
}
