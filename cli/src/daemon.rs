//! `wwt provider run` and `wwt tracker run`: the daemons' flags, their config files (TOML or
//! JSON, the libraries' own config structs), and the listener they serve on.
//!
//! Flags override the file; every flag a deployment sets also reads an environment variable.
//! The daemons themselves are [`wwt_provider::run`] and [`wwt_tracker::run`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use wwt_net::Identity;
use wwt_net::node::NodeConfig;
use wwt_net::node::multiaddr::{Multiaddr, Protocol};
use wwt_net::ops::Listeners;
use wwt_net::types::{NodeId, OperatorCert};
use wwt_provider::{ProviderConfig, TrackerEndpoint};
use wwt_tracker::{PeerTracker, TrackerConfig};

/// Another node as given on the command line: `<node id hex>@<gRPC address>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAt {
    /// Its node id.
    pub id: NodeId,
    /// Its gRPC address.
    pub address: String,
}

impl FromStr for NodeAt {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, address) = s
            .split_once('@')
            .ok_or_else(|| format!("{s:?} is not <node id>@<address>"))?;
        let id = id
            .parse()
            .map_err(|e| format!("node id {id:?} (64 hex characters): {e}"))?;
        if address.is_empty() {
            return Err(format!("{s:?} has no address after '@'"));
        }
        Ok(NodeAt {
            id,
            address: address.to_string(),
        })
    }
}

/// Flags of a daemon's libp2p node (the DHT).
#[derive(clap::Args, Debug, Clone)]
pub struct DhtArgs {
    /// Join the DHT, listening on this multiaddress (e.g. `/ip4/0.0.0.0/tcp/4001`).
    #[arg(long, env = "WWT_DHT_LISTEN")]
    pub dht_listen: Option<String>,
    /// DHT peers to join through: multiaddresses ending in `/p2p/<peer id>`, comma-separated.
    #[arg(long, env = "WWT_DHT_BOOTSTRAP", value_delimiter = ',')]
    pub dht_bootstrap: Vec<String>,
}

impl DhtArgs {
    /// Applies the flags to the file's DHT section (creating it when `--dht-listen` is given).
    fn apply(self, dht: &mut Option<NodeConfig>) {
        if let Some(listen) = self.dht_listen {
            dht.get_or_insert_with(NodeConfig::default).listen = listen;
        }
        if !self.dht_bootstrap.is_empty() {
            dht.get_or_insert_with(NodeConfig::default).bootstrap = self.dht_bootstrap;
        }
    }
}

/// `wwt provider run`: serve pieces.
#[derive(clap::Args, Debug)]
pub struct ProviderArgs {
    /// Settings file, TOML or JSON (by extension), with the fields of `ProviderConfig`.
    #[arg(long, env = "WWT_PROVIDER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to serve gRPC on (port 0: any free port; the chosen one is printed).
    #[arg(long, env = "WWT_PROVIDER_LISTEN", default_value = "127.0.0.1:7100")]
    pub listen: SocketAddr,
    /// Serve `/metrics` (Prometheus), `/health` and the provider's page over HTTP here (port
    /// 0: any free port; the chosen one is printed).
    #[arg(long, env = "WWT_PROVIDER_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Folder for pieces, metadata and the identity key.
    #[arg(long, env = "WWT_PROVIDER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address announced to trackers and in the DHT (default: http://<listen address>).
    #[arg(long, env = "WWT_PROVIDER_ADVERTISE")]
    pub advertise: Option<String>,
    /// Failure zone (rack, site) announced to trackers.
    #[arg(long, env = "WWT_PROVIDER_ZONE")]
    pub zone: Option<String>,
    /// Bytes of piece data offered.
    #[arg(long, env = "WWT_PROVIDER_CAPACITY_BYTES")]
    pub capacity_bytes: Option<u64>,
    /// Trackers to trust and report to, `<node id>@<address>`, repeated or comma-separated
    /// (replaces the file's list).
    #[arg(long = "tracker", env = "WWT_PROVIDER_TRACKERS", value_delimiter = ',')]
    pub trackers: Vec<NodeAt>,
    /// Also be an index provider: host owners' encrypted indexes and catalogs (as
    /// `index = true` in the config file).
    #[arg(long, env = "WWT_PROVIDER_INDEX")]
    pub index: bool,
    /// Its operator's certificate, from `wwt operator certify`.
    #[arg(long, env = "WWT_PROVIDER_OPERATOR_CERTIFICATE")]
    pub operator_certificate: Option<OperatorCert>,
    /// The DHT node.
    #[command(flatten)]
    pub dht: DhtArgs,
}

/// `wwt tracker run`: place pieces and map them.
#[derive(clap::Args, Debug)]
pub struct TrackerArgs {
    /// Settings file, TOML or JSON (by extension), with the fields of `TrackerConfig`.
    #[arg(long, env = "WWT_TRACKER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to serve gRPC on (port 0: any free port; the chosen one is printed).
    #[arg(long, env = "WWT_TRACKER_LISTEN", default_value = "127.0.0.1:7000")]
    pub listen: SocketAddr,
    /// Serve `/metrics` (Prometheus), `/health` and the dashboard over HTTP here (port 0:
    /// any free port; the chosen one is printed).
    #[arg(long, env = "WWT_TRACKER_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Folder for the piece map and the identity key.
    #[arg(long, env = "WWT_TRACKER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The other trackers of the network, `<node id>@<address>`, repeated or comma-separated
    /// (replaces the file's list).
    #[arg(long = "peer", env = "WWT_TRACKER_PEERS", value_delimiter = ',')]
    pub peers: Vec<NodeAt>,
    /// Operator keys whose certified providers are vetted at once, repeated or
    /// comma-separated (added to the file's `admission.operators`).
    #[arg(
        long = "operator",
        env = "WWT_TRACKER_OPERATORS",
        value_delimiter = ','
    )]
    pub operators: Vec<NodeId>,
    /// Admit only providers certified by one of the operators.
    #[arg(long, env = "WWT_TRACKER_PERMISSIONED")]
    pub permissioned: bool,
    /// The DHT node.
    #[command(flatten)]
    pub dht: DhtArgs,
}

/// Reads a config file, TOML unless its name ends in `.json`; the defaults without a file.
fn load<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).with_context(|| format!("in {}", path.display()))
    } else {
        toml::from_str(&text).with_context(|| format!("in {}", path.display()))
    }
}

/// Binds `listen` and `http` and prints the lines a supervisor (or a test) reads: who listens
/// where, where its HTTP endpoint is, and with a DHT node, the multiaddress to join the DHT
/// through.
async fn bind(
    role: &str,
    identity: &Path,
    listen: SocketAddr,
    http: Option<SocketAddr>,
    dht: Option<&mut NodeConfig>,
) -> Result<Listeners> {
    let node = Identity::load_or_create(identity)?.node_id();
    let listeners = Listeners::bind(listen, http).await?;
    println!(
        "{role} {node} listening on http://{}",
        listeners.grpc.local_addr()?
    );
    if let Some(http) = &listeners.http {
        println!("{role} {node} http http://{}", http.local_addr()?);
    }
    if let Some(dht) = dht {
        let peer = wwt_net::node::peer_id(&node)?;
        println!("{role} {node} dht {}/p2p/{peer}", dht_listen(dht)?);
    }
    Ok(listeners)
}

/// The DHT node's listen multiaddress, with a port of 0 replaced by a free port chosen now,
/// so the daemon can print where it will listen before the node starts.
fn dht_listen(dht: &mut NodeConfig) -> Result<String> {
    let addr: Multiaddr = dht
        .listen
        .parse()
        .with_context(|| format!("DHT listen address {:?}", dht.listen))?;
    let mut ip = None;
    let resolved: Multiaddr = addr
        .iter()
        .map(|part| match part {
            Protocol::Ip4(a) => {
                ip = Some(std::net::IpAddr::V4(a));
                Ok(part)
            }
            Protocol::Ip6(a) => {
                ip = Some(std::net::IpAddr::V6(a));
                Ok(part)
            }
            Protocol::Tcp(0) => {
                let ip = ip.context("a DHT listen address names its IP before its port")?;
                let port = std::net::TcpListener::bind((ip, 0))
                    .and_then(|l| l.local_addr())
                    .with_context(|| format!("no free port for the DHT on {ip}"))?
                    .port();
                Ok(Protocol::Tcp(port))
            }
            other => Ok(other),
        })
        .collect::<Result<_>>()?;
    dht.listen = resolved.to_string();
    Ok(dht.listen.clone())
}

impl ProviderArgs {
    /// The provider's config (file, then flags) and its bound listeners.
    pub async fn open(self) -> Result<(ProviderConfig, Listeners)> {
        let mut config: ProviderConfig = load(self.config.as_deref())?;
        if let Some(dir) = self.data_dir {
            config.data_dir = dir;
        }
        if self.advertise.is_some() {
            config.advertise = self.advertise;
        }
        if let Some(zone) = self.zone {
            config.zone = zone;
        }
        if let Some(capacity) = self.capacity_bytes {
            config.capacity_bytes = capacity;
        }
        if !self.trackers.is_empty() {
            config.trackers = self
                .trackers
                .into_iter()
                .map(|t| TrackerEndpoint {
                    id: t.id,
                    address: t.address,
                })
                .collect();
        }
        config.index |= self.index;
        if self.operator_certificate.is_some() {
            config.operator_certificate = self.operator_certificate;
        }
        self.dht.apply(&mut config.dht);
        let identity = config.identity_path();
        if self.http_listen.is_some() {
            config.http_listen = self.http_listen;
        }
        let listeners = bind(
            "provider",
            &identity,
            self.listen,
            config.http_listen,
            config.dht.as_mut(),
        )
        .await?;
        Ok((config, listeners))
    }
}

impl TrackerArgs {
    /// The tracker's config (file, then flags) and its bound listeners.
    pub async fn open(self) -> Result<(TrackerConfig, Listeners)> {
        let mut config: TrackerConfig = load(self.config.as_deref())?;
        if let Some(dir) = self.data_dir {
            config.data_dir = dir;
        }
        if !self.peers.is_empty() {
            config.peers = self
                .peers
                .into_iter()
                .map(|p| PeerTracker {
                    id: p.id,
                    address: p.address,
                })
                .collect();
        }
        config.admission.operators.extend(self.operators);
        config.admission.permissioned |= self.permissioned;
        self.dht.apply(&mut config.dht);
        let identity = config.identity_path();
        if self.http_listen.is_some() {
            config.http_listen = self.http_listen;
        }
        let listeners = bind(
            "tracker",
            &identity,
            self.listen,
            config.http_listen,
            config.dht.as_mut(),
        )
        .await?;
        Ok((config, listeners))
    }
}

/// Resolves on Ctrl-C or SIGTERM: the daemons' shutdown signal.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the daemon");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn node_at_parses_and_says_what_is_wrong() {
        let id = "ab".repeat(32);
        let at: NodeAt = format!("{id}@http://127.0.0.1:7000").parse().unwrap();
        assert_eq!(at.id.to_string(), id);
        assert_eq!(at.address, "http://127.0.0.1:7000");
        assert!(
            "http://x"
                .parse::<NodeAt>()
                .unwrap_err()
                .contains("<node id>@")
        );
        assert!(
            format!("{id}@")
                .parse::<NodeAt>()
                .unwrap_err()
                .contains("no address")
        );
        assert!(
            "zz@http://x"
                .parse::<NodeAt>()
                .unwrap_err()
                .contains("64 hex")
        );
    }

    #[derive(clap::Parser)]
    struct Provider {
        #[command(flatten)]
        args: ProviderArgs,
    }

    #[tokio::test]
    async fn index_flag_makes_an_index_provider_and_keeps_the_files_setting() {
        use clap::Parser as _;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_str().unwrap();
        let open = |flags: &[&str]| {
            let mut argv = vec!["wwt", "--listen", "127.0.0.1:0", "--data-dir", data];
            argv.extend_from_slice(flags);
            Provider::try_parse_from(argv).unwrap().args.open()
        };
        assert!(!open(&[]).await.unwrap().0.index);
        assert!(open(&["--index"]).await.unwrap().0.index);
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "index = true\n").unwrap();
        let (config, _) = open(&["--config", file.to_str().unwrap()]).await.unwrap();
        assert!(
            config.index,
            "a flag left out keeps the file's index = true"
        );
    }

    #[test]
    fn config_files_are_toml_or_json_and_refuse_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let toml_file = dir.path().join("p.toml");
        std::fs::write(&toml_file, "capacity_bytes = 1234\nzone = \"a\"\n").unwrap();
        let c: ProviderConfig = load(Some(&toml_file)).unwrap();
        assert_eq!((c.capacity_bytes, c.zone.as_str()), (1234, "a"));
        let json_file = dir.path().join("t.json");
        std::fs::write(&json_file, r#"{"liveness_timeout_ms": 99000}"#).unwrap();
        let t: TrackerConfig = load(Some(&json_file)).unwrap();
        assert_eq!(t.liveness_timeout_ms, 99_000);
        std::fs::write(&toml_file, "capacity = 1\n").unwrap();
        let err = load::<ProviderConfig>(Some(&toml_file)).unwrap_err();
        assert!(format!("{err:#}").contains("capacity"), "{err:#}");
    }
}
