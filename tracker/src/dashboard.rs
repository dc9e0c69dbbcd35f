//! What a tracker shows its operator on its HTTP endpoint ([`wwt_net::ops`]): its metrics
//! (providers, credit, audits, repairs, deletes), read from its state at each scrape, and
//! its dashboard page: the providers, audits and repairs over the last hours, the repair
//! queue.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tracing::warn;
use wwt_net::NetError;
use wwt_net::audit::{AuditEntry, AuditReport};
use wwt_net::ops::html::{self, Series, escape, short};
use wwt_net::ops::{RequestMetrics, Sample, Site, write_metric};
use wwt_net::types::{NodeId, ProviderRecord};

use crate::audit::QueuedRepair;
use crate::service::Tracker;

/// The span the dashboard's chart covers, and its buckets.
const CHART_MS: u64 = 6 * 3_600_000;
const BUCKET_MS: u64 = 15 * 60_000;
/// Audit log entries the chart reads at most.
const CHART_ENTRIES: usize = 100_000;
/// Repair-queue segments listed on the page.
const QUEUE_SHOWN: usize = 50;
/// Providers listed on the page, those under audit and alive first. Anyone may heartbeat
/// with a fresh key: the list, like the per-provider metrics, leaves out the providers
/// neither alive nor holding pieces here.
const PROVIDERS_SHOWN: usize = 500;
/// Characters of a provider's address or zone shown (it says what it likes).
const TEXT_SHOWN: usize = 80;

/// The tracker's registry of metrics: its gRPC requests, and its state at each scrape.
pub fn metrics(tracker: &Arc<Tracker>) -> (Registry, RequestMetrics) {
    let mut registry = Registry::with_prefix("wwt");
    let requests = RequestMetrics::register(&mut registry);
    registry.register_collector(Box::new(TrackerState(Arc::downgrade(tracker))));
    (registry, requests)
}

/// The tracker's page and health.
pub fn site(tracker: &Arc<Tracker>) -> Arc<dyn Site> {
    Arc::new(TrackerState(Arc::downgrade(tracker)))
}

/// The tracker as its endpoint sees it: a weak handle, so a connection left open past
/// shutdown does not keep its database open.
#[derive(Debug)]
struct TrackerState(Weak<Tracker>);

/// What the metrics and the page read of the tracker: the providers alive or under audit
/// here, bytes reserved on each, its audit report.
type State = (Vec<ProviderRecord>, HashMap<NodeId, u64>, AuditReport);

impl TrackerState {
    fn tracker(&self) -> Result<Arc<Tracker>, NetError> {
        self.0
            .upgrade()
            .ok_or_else(|| NetError::Unavailable("the tracker is stopping".into()))
    }

    fn state(&self) -> Result<State, NetError> {
        let tracker = self.tracker()?;
        let report = tracker.audit_report(0)?;
        let audited: HashMap<NodeId, u64> =
            report.credits.iter().map(|c| (c.node, c.pieces)).collect();
        let mut records = tracker.records()?;
        records.retain(|r| r.alive || audited.get(&r.node).is_some_and(|p| *p > 0));
        Ok((records, tracker.placed_bytes()?, report))
    }
}

impl Collector for TrackerState {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (records, reserved, report) = match self.state() {
            Ok(state) => state,
            Err(e) => {
                warn!(error = %e, "reading the tracker's state for its metrics");
                return write_metric(
                    &mut encoder,
                    "tracker_state_readable",
                    "Whether the tracker could read its state for this scrape",
                    MetricType::Gauge,
                    &[Sample::new(0)],
                );
            }
        };
        let tracker = self.tracker().map_err(|_| std::fmt::Error)?;
        let alive = records.iter().filter(|r| r.alive).count() as u64;
        let vetted = records.iter().filter(|r| r.vetted).count() as u64;
        let e = &mut encoder;
        use MetricType::{Counter, Gauge};
        write_metric(
            e,
            "tracker_state_readable",
            "Whether the tracker could read its state for this scrape",
            Gauge,
            &[Sample::new(1)],
        )?;
        write_metric(
            e,
            "tracker_providers",
            "Providers known from heartbeats, by whether they are alive",
            Gauge,
            &[
                Sample {
                    labels: vec![("state", "alive".into())],
                    value: alive,
                },
                Sample {
                    labels: vec![("state", "down".into())],
                    value: records.len() as u64 - alive,
                },
            ],
        )?;
        write_metric(
            e,
            "tracker_providers_vetted",
            "Providers vetted by audits or by an operator's certificate",
            Gauge,
            &[Sample::new(vetted)],
        )?;
        let per = |f: fn(&ProviderRecord) -> u64| -> Vec<Sample> {
            records
                .iter()
                .map(|r| Sample::labelled("provider", r.node, f(r)))
                .collect()
        };
        write_metric(
            e,
            "tracker_provider_capacity_bytes",
            "Bytes each provider offers, as its last heartbeat said",
            Gauge,
            &per(|r| r.capacity),
        )?;
        write_metric(
            e,
            "tracker_provider_used_bytes",
            "Bytes each provider holds, as its last heartbeat said",
            Gauge,
            &per(|r| r.used),
        )?;
        write_metric(
            e,
            "tracker_provider_reserved_bytes",
            "Bytes placed on each provider since its last heartbeat, not yet in its used bytes",
            Gauge,
            &records
                .iter()
                .map(|r| {
                    Sample::labelled(
                        "provider",
                        r.node,
                        reserved.get(&r.node).copied().unwrap_or(0),
                    )
                })
                .collect::<Vec<_>>(),
        )?;
        let credits = &report.credits;
        write_metric(
            e,
            "tracker_provider_credit",
            "Each provider's credit at this tracker, per mille",
            Gauge,
            &credits
                .iter()
                .map(|c| Sample::labelled("provider", c.node, c.credit.into()))
                .collect::<Vec<_>>(),
        )?;
        write_metric(
            e,
            "tracker_provider_pieces",
            "Pieces of each provider under this tracker's audit",
            Gauge,
            &credits
                .iter()
                .map(|c| Sample::labelled("provider", c.node, c.pieces))
                .collect::<Vec<_>>(),
        )?;
        let outcomes: Vec<Sample> = credits
            .iter()
            .flat_map(|c| {
                [
                    ("passed", c.passed),
                    ("failed", c.failed),
                    ("missed", c.missed),
                    ("inconclusive", c.inconclusive),
                ]
                .map(|(outcome, value)| Sample {
                    labels: vec![
                        ("provider", c.node.to_string()),
                        ("outcome", outcome.into()),
                    ],
                    value,
                })
            })
            .collect();
        write_metric(
            e,
            "tracker_audits",
            "Challenges sent to each provider, by outcome",
            Counter,
            &outcomes,
        )?;
        write_metric(
            e,
            "tracker_repairs_pending",
            "Segments waiting in the repair queue",
            Gauge,
            &[Sample::new(report.repairs_pending)],
        )?;
        write_metric(
            e,
            "tracker_repairs",
            "Pieces repaired or refreshed",
            Counter,
            &[Sample::new(report.repairs_done)],
        )?;
        write_metric(
            e,
            "tracker_deletes_pending",
            "Copies waiting to be deleted at their holders",
            Gauge,
            &[Sample::new(tracker.deletes_pending() as u64)],
        )?;
        write_metric(
            e,
            "tracker_pieces_deleted",
            "Copies deleted at their holders",
            Counter,
            // A count that could not be read is left out: a 0 would read as a reset.
            &tracker
                .pieces_deleted()
                .map(Sample::new)
                .into_iter()
                .collect::<Vec<_>>(),
        )?;
        write_metric(
            e,
            "tracker_audit_log_entries",
            "Entries in the hash-linked audit log",
            Counter,
            &[Sample::new(report.log_length)],
        )
    }
}

#[async_trait]
impl Site for TrackerState {
    async fn page(&self) -> String {
        let state = TrackerState(self.0.clone());
        // The page reads the piece map and the audit log: off the runtime's threads.
        let page = tokio::task::spawn_blocking(move || {
            let title = match state.tracker() {
                Ok(tracker) => format!("wwt tracker {}", short(&tracker.node_id())),
                Err(_) => "wwt tracker".to_string(),
            };
            html::document_or_error(&title, state.render())
        });
        page.await
            .unwrap_or_else(|e| html::document_or_error("wwt tracker", Err::<String, _>(e)))
    }

    fn health(&self) -> Result<(), String> {
        self.tracker()
            .and_then(|tracker| tracker.pieces_deleted())
            .map(|_| ())
            .map_err(|e| format!("the tracker cannot read its state: {e}"))
    }
}

impl TrackerState {
    fn render(&self) -> Result<String, NetError> {
        let tracker = self.tracker()?;
        let (records, reserved, report) = self.state()?;
        let now = tracker.audits.clock.now_ms();
        let (entries, cut) =
            tracker.audit_entries_since(now.saturating_sub(CHART_MS), CHART_ENTRIES)?;
        let (queued, queue) = tracker.repair_queue(QUEUE_SHOWN)?;
        let alive = records.iter().filter(|r| r.alive).count();
        let mut body = html::facts(&[
            ("node", tracker.node_id().to_string()),
            (
                "providers",
                format!("{} known, {alive} alive", records.len()),
            ),
            (
                "bytes",
                format!(
                    "{} held of {} offered",
                    html::bytes(records.iter().map(|r| r.used).sum()),
                    html::bytes(records.iter().map(|r| r.capacity).sum())
                ),
            ),
            (
                "repairs",
                format!(
                    "{} pending, {} done",
                    report.repairs_pending, report.repairs_done
                ),
            ),
            (
                "deletes",
                format!(
                    "{} pending, {} done",
                    tracker.deletes_pending(),
                    tracker.pieces_deleted()?
                ),
            ),
            ("audit log", format!("{} entries", report.log_length)),
        ]);
        body.push_str(&providers_table(
            &records, &reserved, &report, &entries, now,
        ));
        body.push_str(&chart(&entries, now));
        if cut {
            let _ = write!(
                body,
                "<p>The chart shows the latest {CHART_ENTRIES} entries of the last 6 hours.</p>"
            );
        }
        body.push_str(&queue_table(queued, &queue, now));
        Ok(body)
    }
}

fn providers_table(
    records: &[ProviderRecord],
    reserved: &HashMap<NodeId, u64>,
    report: &AuditReport,
    entries: &[AuditEntry],
    now: u64,
) -> String {
    let credits: HashMap<NodeId, _> = report.credits.iter().map(|c| (c.node, c)).collect();
    let mut last_audit: HashMap<NodeId, &AuditEntry> = HashMap::new();
    for entry in entries.iter().filter(|e| is_challenge(e)) {
        last_audit.insert(entry.provider, entry);
    }
    let mut shown: Vec<&ProviderRecord> = records.iter().collect();
    shown.sort_by_key(|r| (!credits.contains_key(&r.node), !r.alive, r.node));
    shown.truncate(PROVIDERS_SHOWN);
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|r| {
            let c = credits.get(&r.node);
            let state = if r.alive {
                "<span class=\"good\">alive</span>"
            } else {
                "<span class=\"bad\">down</span>"
            };
            let last = last_audit.get(&r.node).map_or("—".to_string(), |e| {
                format!(
                    "{} {} ({})",
                    escape(&e.kind),
                    escape(&e.outcome),
                    html::ago(e.time_ms, now)
                )
            });
            vec![
                format!("<code title=\"{}\">{}</code>", r.node, short(&r.node)),
                escape(clip(&r.address)),
                escape(if r.zone.is_empty() {
                    "—"
                } else {
                    clip(&r.zone)
                }),
                state.to_string(),
                if r.vetted { "vetted" } else { "in vetting" }.to_string(),
                format!("{}", c.map_or(r.credit, |c| c.credit)),
                match reserved.get(&r.node).copied().unwrap_or(0) {
                    0 => format!("{} of {}", html::bytes(r.used), html::bytes(r.capacity)),
                    placed => format!(
                        "{} (+{} placed) of {}",
                        html::bytes(r.used),
                        html::bytes(placed),
                        html::bytes(r.capacity)
                    ),
                },
                format!("{}", c.map_or(0, |c| c.pieces)),
                c.map_or("—".into(), |c| {
                    format!(
                        "{} / {} / {} / {}",
                        c.passed, c.failed, c.missed, c.inconclusive
                    )
                }),
                last,
            ]
        })
        .collect();
    let title = if records.len() > shown.len() {
        format!("Providers ({}, the first {})", records.len(), shown.len())
    } else {
        format!("Providers ({})", records.len())
    };
    html::table(
        &title,
        &[
            "node",
            "address",
            "zone",
            "state",
            "vetting",
            "credit ‰",
            "bytes",
            "pieces audited",
            "passed / failed / missed / inconclusive",
            "last audit",
        ],
        &rows,
    )
}

/// At most [`TEXT_SHOWN`] characters of `text`.
fn clip(text: &str) -> &str {
    text.char_indices()
        .nth(TEXT_SHOWN)
        .map_or(text, |(end, _)| &text[..end])
}

/// Whether `entry` is a challenge's result (not a repair).
fn is_challenge(entry: &AuditEntry) -> bool {
    matches!(entry.kind.as_str(), "sentinel" | "chunk" | "complaint")
}

/// Audits by outcome and repairs, per bucket of the last [`CHART_MS`].
fn chart(entries: &[AuditEntry], now: u64) -> String {
    let buckets = (CHART_MS / BUCKET_MS) as usize;
    let start = now.saturating_sub(CHART_MS);
    let mut counts = vec![[0u64; 5]; buckets];
    for e in entries {
        let Some(bucket) = e
            .time_ms
            .checked_sub(start)
            .map(|t| ((t / BUCKET_MS) as usize).min(buckets - 1))
        else {
            continue;
        };
        let series = match (e.kind.as_str(), e.outcome.as_str()) {
            ("repair" | "refresh", _) => 4,
            (_, _) if !is_challenge(e) => continue,
            (_, "pass") => 0,
            (_, "fail") => 1,
            (_, "missed") => 2,
            _ => 3,
        };
        counts[bucket][series] += 1;
    }
    let series: Vec<Series> = [
        ("passed", "#2a2"),
        ("failed", "#c22"),
        ("missed", "#e90"),
        ("inconclusive", "#999"),
        ("repairs", "#36c"),
    ]
    .iter()
    .enumerate()
    .map(|(k, (name, colour))| Series {
        name,
        colour,
        values: counts.iter().map(|c| c[k]).collect(),
    })
    .collect();
    let per_hour = (3_600_000 / BUCKET_MS) as usize;
    let labels: Vec<(usize, String)> = (0..buckets)
        .step_by(per_hour)
        .map(|i| (i, format!("−{} h", (buckets - i) / per_hour)))
        .collect();
    html::bar_chart(
        "Audits and repairs, last 6 hours (per 15 minutes)",
        &series,
        &labels,
    )
}

fn queue_table(queued: usize, queue: &[QueuedRepair], now: u64) -> String {
    let rows: Vec<Vec<String>> = queue
        .iter()
        .map(|q| {
            let pieces: Vec<String> = q
                .pieces
                .iter()
                .map(|(index, lost)| match lost {
                    Some(holder) => format!("{index} (lost at {})", short(holder)),
                    None => format!("{index} (refresh)"),
                })
                .collect();
            let retry = if q.retry_ms > now {
                format!("in {} s", (q.retry_ms - now) / 1000)
            } else {
                "now".to_string()
            };
            vec![
                format!("<code>{}</code>", short(&q.segment)),
                escape(&pieces.join(", ")),
                q.failures.to_string(),
                retry,
            ]
        })
        .collect();
    let title = if queued > queue.len() {
        format!(
            "Repair queue ({queued} segments, the first {})",
            queue.len()
        )
    } else {
        format!("Repair queue ({queued} segments)")
    };
    html::table(
        &title,
        &["segment", "pieces", "failed tries", "next try"],
        &rows,
    )
}
