//! `wwt devnet up` and `wwt devnet status`: a [`LocalNet`] of daemons on loopback until
//! Ctrl-C, and one line per node of a running one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, ensure};
use clap::Subcommand;
use wwt_devnet::{ENDPOINTS_FILE, Endpoints, LocalNet, Shape, default_dir};
use wwt_net::grpc::GrpcConnector;
use wwt_net::index::{GetHead, open_entry};
use wwt_net::{Connector, Identity};

/// `wwt devnet …`.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start trackers and providers on 127.0.0.1 and run until Ctrl-C.
    Up {
        /// Providers to start.
        #[arg(long, default_value_t = 6)]
        providers: usize,
        /// Trackers to start.
        #[arg(long, default_value_t = 1)]
        trackers: usize,
        /// How many of the providers also host encrypted indexes.
        #[arg(long, default_value_t = 3)]
        index_providers: usize,
        /// Space each provider offers, in MiB.
        #[arg(long, default_value_t = 1024)]
        capacity_mib: u64,
        /// Folder for the nodes' data and the endpoints file (default: <home>/devnet).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// One line per node: health, pieces, bytes live and freed. Exits non-zero while a node is down.
    Status {
        /// The devnet's folder (default: <home>/devnet).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// Runs `command` for the devnet of the home folder `home`.
pub async fn run(home: &Path, command: Command) -> Result<()> {
    match command {
        Command::Up {
            providers,
            trackers,
            index_providers,
            capacity_mib,
            dir,
        } => {
            let dir = dir.unwrap_or_else(|| default_dir(home));
            let shape = Shape {
                trackers,
                providers,
                index_providers,
                capacity: capacity_mib << 20,
                http: true,
                ..Shape::default()
            };
            let mut net = LocalNet::start(&dir, shape).await?;
            for n in net
                .endpoints
                .trackers
                .iter()
                .chain(&net.endpoints.providers)
            {
                println!("{:<11} {}  {}", n.name, n.address, n.node);
                if let Some(http) = &n.http {
                    println!("{:<11} {http}  (metrics, health, its page)", "");
                }
            }
            for seed in &net.endpoints.dht {
                println!("{:<11} {seed}", "dht seed");
            }
            println!(
                "devnet up: endpoints in {}; Ctrl-C stops it",
                dir.join(ENDPOINTS_FILE).display()
            );
            let failed = tokio::select! {
                stop = tokio::signal::ctrl_c() => stop.map(|()| None)?,
                (name, why) = net.failure() => Some(why.context(format!("{name} stopped"))),
            };
            let stopped = net.shutdown().await;
            match failed {
                Some(why) => {
                    if let Err(e) = stopped {
                        eprintln!("stopping the other nodes: {e:#}");
                    }
                    Err(why.context("the devnet lost a node, so it stopped"))
                }
                None => {
                    stopped?;
                    println!("devnet stopped");
                    Ok(())
                }
            }
        }
        Command::Status { dir } => {
            let dir = dir.unwrap_or_else(|| default_dir(home));
            let endpoints = Endpoints::load(&dir)?;
            // With a keystore in the home, each index provider's copy of its owner's log.
            let owner = crate::home::load(home)
                .ok()
                .map(|k| Identity::from_secret(k.identity.to_bytes()));
            let (lines, all_up) = status(&endpoints, &GrpcConnector::new(), owner.as_ref()).await;
            for line in lines {
                println!("{line}");
            }
            ensure!(all_up, "the devnet is not fully up");
            Ok(())
        }
    }
}

/// Where index provider `address`'s copy of `owner`'s log stands, as a line's ending.
async fn log_seq(connector: &dyn Connector, address: &str, owner: &Identity) -> String {
    let ask = async {
        let index = connector.index(address)?;
        let request = owner.sign(GetHead {
            owner: owner.node_id(),
        })?;
        let head = tokio::time::timeout(Duration::from_secs(3), index.head(request))
            .await
            .map_err(|_| wwt_net::NetError::Unavailable("no answer within 3 s".into()))??;
        Ok::<_, wwt_net::NetError>(match head {
            Some(entry) => open_entry(&entry)?.1.seq,
            None => 0,
        })
    };
    match ask.await {
        Ok(seq) => format!("; log of {} at seq {seq}", owner.node_id()),
        Err(e) => format!("; log of {}: {e}", owner.node_id()),
    }
}

/// One line per node: its health, pieces and bytes, and with `owner`, where each index
/// provider's copy of the owner's log stands; and whether every node answered.
async fn status(
    endpoints: &Endpoints,
    connector: &dyn Connector,
    owner: Option<&Identity>,
) -> (Vec<String>, bool) {
    let timeout = Duration::from_secs(3);
    let mut lines = Vec::new();
    let mut all_up = true;
    for t in &endpoints.trackers {
        let answer = async {
            let tracker = connector.tracker(&t.address)?;
            tokio::time::timeout(timeout, tracker.providers())
                .await
                .map_err(|_| wwt_net::NetError::Unavailable("no answer within 3 s".into()))?
        };
        match answer.await {
            Ok(ps) => {
                let alive = ps.iter().filter(|p| p.alive).count();
                let pieces: u64 = ps.iter().map(|p| p.pieces).sum();
                let index = ps.iter().filter(|p| p.alive && p.index).count();
                lines.push(format!(
                    "{:<11} up    {}  {}  {alive}/{} providers alive ({index} index), \
                     {pieces} pieces mapped",
                    t.name,
                    &t.node[..16],
                    t.address,
                    ps.len()
                ));
                let audits = async {
                    let tracker = connector.tracker(&t.address)?;
                    tokio::time::timeout(timeout, tracker.audits(0))
                        .await
                        .map_err(|_| {
                            wwt_net::NetError::Unavailable("no answer within 3 s".into())
                        })?
                };
                match audits.await {
                    Ok(report) => {
                        lines.push(format!(
                            "{:<11} audits: {} log entries, {} repairs pending, {} done",
                            "", report.log_length, report.repairs_pending, report.repairs_done
                        ));
                        lines.extend(crate::audits::credit_lines(&report.credits));
                    }
                    Err(e) => lines.push(format!("{:<11} audits: {e}", "")),
                }
            }
            Err(e) => {
                all_up = false;
                lines.push(format!(
                    "{:<11} DOWN  {}  {}  {e}",
                    t.name,
                    &t.node[..16],
                    t.address
                ));
            }
        }
    }
    for p in &endpoints.providers {
        let answer = async {
            let provider = connector.provider(&p.address)?;
            tokio::time::timeout(timeout, provider.status())
                .await
                .map_err(|_| wwt_net::NetError::Unavailable("no answer within 3 s".into()))?
        };
        match answer.await {
            Ok(s) => {
                let log = match (p.index, owner) {
                    (true, Some(owner)) => log_seq(connector, &p.address, owner).await,
                    _ => String::new(),
                };
                lines.push(format!(
                    "{:<11} up    {}  {}  {} pieces, {} bytes live of {}, {} bytes freed{log}",
                    p.name,
                    &p.node[..16],
                    p.address,
                    s.pieces,
                    s.used,
                    s.capacity,
                    s.freed
                ));
            }
            Err(e) => {
                all_up = false;
                lines.push(format!(
                    "{:<11} DOWN  {}  {}  {e}",
                    p.name,
                    &p.node[..16],
                    p.address
                ));
            }
        }
    }
    (lines, all_up)
}
