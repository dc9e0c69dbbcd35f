//! What a provider shows its operator on its HTTP endpoint ([`wwt_net::ops`]): its metrics
//! (pieces and bytes held, free, freed; with an index, the owners, log entries and
//! namespaces it serves), read at each scrape, and its page: what it holds, and its audits
//! and credit as each of its trackers reports them.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tracing::warn;
use wwt_net::audit::AuditReport;
use wwt_net::ops::html::{self, escape, short};
use wwt_net::ops::{RequestMetrics, Sample, Site, write_metric};
use wwt_net::types::NodeId;
use wwt_net::{Connector, NetError, now_ms};

use crate::index::IndexService;
use crate::service::Provider;

/// How long the page waits for each tracker's report.
const TRACKER_TIMEOUT: Duration = Duration::from_secs(3);
/// Audit log entries asked of each tracker (the most a report holds); the page lists those
/// about this provider.
const REPORT_ENTRIES: u32 = 1000;
/// Audits listed on the page.
const AUDITS_SHOWN: usize = 50;

/// A provider's operator view. It holds the provider and its index service weakly: a
/// connection left open past shutdown does not keep their stores open.
#[derive(Clone)]
pub struct ProviderSite {
    provider: Weak<Provider>,
    index: Option<Weak<IndexService>>,
    connector: Arc<dyn Connector>,
}

impl std::fmt::Debug for ProviderSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSite").finish_non_exhaustive()
    }
}

impl ProviderSite {
    /// The view of `provider` (and its `index` service), asking its trackers over
    /// `connector`.
    pub fn new(
        provider: &Arc<Provider>,
        index: Option<&Arc<IndexService>>,
        connector: Arc<dyn Connector>,
    ) -> ProviderSite {
        ProviderSite {
            provider: Arc::downgrade(provider),
            index: index.map(Arc::downgrade),
            connector,
        }
    }

    fn provider(&self) -> Result<Arc<Provider>, NetError> {
        self.provider
            .upgrade()
            .ok_or_else(|| NetError::Unavailable("the provider is stopping".into()))
    }

    /// The index service, if the provider is an index provider (and not stopping).
    fn index(&self) -> Option<Arc<IndexService>> {
        self.index.as_ref().and_then(Weak::upgrade)
    }

    /// Its registry of metrics: its gRPC requests, and its holdings at each scrape.
    pub fn metrics(&self) -> (Registry, RequestMetrics) {
        let mut registry = Registry::with_prefix("wwt");
        let requests = RequestMetrics::register(&mut registry);
        registry.register_collector(Box::new(self.clone()));
        (registry, requests)
    }

    /// Each trusted tracker's report (or why there is none), sorted by tracker.
    async fn reports(&self) -> Vec<(NodeId, Result<AuditReport, String>)> {
        let Ok(provider) = self.provider() else {
            return Vec::new();
        };
        let mut trackers: Vec<(NodeId, String)> = provider
            .trackers()
            .iter()
            .map(|(id, address)| (*id, address.clone()))
            .collect();
        trackers.sort();
        join_all(trackers.into_iter().map(|(id, address)| async move {
            let asked = async {
                let tracker = self.connector.tracker(&address)?;
                tracker.audits(REPORT_ENTRIES).await
            };
            let report = match tokio::time::timeout(TRACKER_TIMEOUT, asked).await {
                Ok(Ok(report)) => Ok(report),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {} s", TRACKER_TIMEOUT.as_secs())),
            };
            (id, report)
        }))
        .await
    }

    async fn render(&self) -> Result<String, NetError> {
        let provider = self.provider()?;
        let me = provider.node_id();
        let held = provider.holdings()?;
        let mut facts = vec![
            ("node", me.to_string()),
            (
                "zone",
                escape(if held.zone.is_empty() {
                    "—"
                } else {
                    &held.zone
                }),
            ),
            ("pieces", held.pieces.to_string()),
            (
                "bytes",
                format!(
                    "{} held of {}, {} free",
                    html::bytes(held.used),
                    html::bytes(held.capacity),
                    html::bytes(held.capacity.saturating_sub(held.used))
                ),
            ),
            ("freed by deletes", html::bytes(held.freed)),
        ];
        if let Some(index) = self.index() {
            let (owners, entries, open) = index.served()?;
            facts.push((
                "index",
                format!("{owners} owners' logs, {entries} entries, {open} namespaces open"),
            ));
        }
        let mut body = html::facts(&facts);
        let reports = self.reports().await;
        let mut credit = Vec::new();
        let mut audits = Vec::new();
        for (tracker, report) in &reports {
            let tracker_cell = format!("<code title=\"{tracker}\">{}</code>", short(tracker));
            let report = match report {
                Ok(report) => report,
                Err(why) => {
                    credit.push(vec![
                        tracker_cell,
                        format!("<span class=\"bad\">{}</span>", escape(why)),
                    ]);
                    continue;
                }
            };
            let row = report.credits.iter().find(|c| c.node == me);
            credit.push(vec![
                tracker_cell.clone(),
                row.map_or("not audited yet".into(), |c| {
                    format!(
                        "{} ‰, {}; {} pieces; passed {}, failed {}, missed {}, \
                         inconclusive {}",
                        c.credit,
                        if c.vetted { "vetted" } else { "in vetting" },
                        c.pieces,
                        c.passed,
                        c.failed,
                        c.missed,
                        c.inconclusive
                    )
                }),
            ]);
            audits.extend(
                report
                    .entries
                    .iter()
                    .filter(|e| e.provider == me)
                    .map(|e| (e.time_ms, tracker_cell.clone(), e.clone())),
            );
        }
        body.push_str(&html::table(
            "Credit at each tracker",
            &["tracker", "standing"],
            &credit,
        ));
        audits.sort_by_key(|(time, _, _)| std::cmp::Reverse(*time));
        let now = now_ms();
        let rows: Vec<Vec<String>> = audits
            .iter()
            .take(AUDITS_SHOWN)
            .map(|(time, tracker, e)| {
                let outcome = match e.outcome.as_str() {
                    "pass" | "done" => format!("<span class=\"good\">{}</span>", e.outcome),
                    "fail" | "missed" => format!("<span class=\"bad\">{}</span>", e.outcome),
                    other => escape(other),
                };
                vec![
                    html::ago(*time, now),
                    tracker.clone(),
                    escape(&e.kind),
                    outcome,
                    format!("<code>{}</code>", short(&e.piece)),
                    escape(&e.detail),
                ]
            })
            .collect();
        body.push_str(&html::table(
            "Latest audits",
            &["when", "tracker", "kind", "outcome", "piece", "detail"],
            &rows,
        ));
        Ok(body)
    }
}

#[async_trait]
impl Site for ProviderSite {
    async fn page(&self) -> String {
        let title = match self.provider() {
            Ok(provider) => format!("wwt provider {}", short(&provider.node_id())),
            Err(_) => "wwt provider".to_string(),
        };
        html::document_or_error(&title, self.render().await)
    }

    fn health(&self) -> Result<(), String> {
        self.provider()
            .and_then(|provider| provider.holdings())
            .map(|_| ())
            .map_err(|e| format!("the provider cannot read its store: {e}"))
    }
}

impl Collector for ProviderSite {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge};
        let held = match self.provider().and_then(|provider| provider.holdings()) {
            Ok(held) => held,
            Err(e) => {
                warn!(error = %e, "reading the provider's holdings for its metrics");
                return Ok(());
            }
        };
        let mut metrics = vec![
            ("provider_pieces", "Pieces held", Gauge, held.pieces),
            (
                "provider_used_bytes",
                "Bytes of pieces held",
                Gauge,
                held.used,
            ),
            (
                "provider_capacity_bytes",
                "Bytes of pieces offered",
                Gauge,
                held.capacity,
            ),
            (
                "provider_free_bytes",
                "Bytes offered and not held",
                Gauge,
                held.capacity.saturating_sub(held.used),
            ),
            (
                "provider_freed_bytes",
                "Bytes given back by deletes",
                Counter,
                held.freed,
            ),
        ];
        match self.index().map(|index| index.served()) {
            None => {}
            Some(Ok((owners, entries, open))) => metrics.extend([
                (
                    "index_owners",
                    "Owners whose logs this index replica keeps",
                    Gauge,
                    owners as u64,
                ),
                (
                    "index_log_entries",
                    "Entries of the owners' logs this replica holds",
                    Gauge,
                    entries,
                ),
                (
                    "index_namespaces_open",
                    "Index namespaces open now",
                    Gauge,
                    open as u64,
                ),
            ]),
            Some(Err(e)) => warn!(error = %e, "reading the index service's state for its metrics"),
        }
        for (name, help, kind, value) in metrics {
            write_metric(&mut encoder, name, help, kind, &[Sample::new(value)])?;
        }
        Ok(())
    }
}
