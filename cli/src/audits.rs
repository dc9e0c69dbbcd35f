//! `wwt tracker audits`: a tracker's audit log and its providers' credit, as text.

use wwt_net::audit::{AuditReport, CreditRecord};

fn short(bytes: &[u8]) -> String {
    hex::encode(&bytes[..8])
}

/// One line per provider: credit, vetting, challenge counts, uptime, storage proven, pieces.
pub fn credit_lines(credits: &[CreditRecord]) -> Vec<String> {
    credits
        .iter()
        .map(|c| {
            format!(
                "  provider {}  credit {:>4}‰  {:<8}  passed {:>5}  failed {:>3}  missed {:>4}  inconclusive {:>4}  up {:>7.1} h  {:>10} byte·s  {:>4} pieces",
                short(&c.node.0),
                c.credit,
                if c.vetted { "vetted" } else { "unvetted" },
                c.passed,
                c.failed,
                c.missed,
                c.inconclusive,
                c.uptime_ms as f64 / 3_600_000.0,
                c.byte_seconds,
                c.pieces
            )
        })
        .collect()
}

/// The whole report: summary, credit table, then the log entries, oldest first.
pub fn report_lines(report: &AuditReport) -> Vec<String> {
    let mut lines = vec![format!(
        "audit log: {} entries, head {}; repairs: {} pending, {} done",
        report.log_length,
        hex::encode(report.head),
        report.repairs_pending,
        report.repairs_done
    )];
    lines.extend(credit_lines(&report.credits));
    for e in &report.entries {
        lines.push(format!(
            "  #{:<6} t={:<14} {:<9} {:<6} provider {} piece {}  {}",
            e.seq,
            e.time_ms,
            e.kind,
            e.outcome,
            short(&e.provider.0),
            short(&e.piece.0),
            e.detail
        ));
    }
    lines
}
