//! A smoke run of `wwt bench-audit` at a small size: the benchmark's own checks (every
//! challenge of the first round passes, the 2 killed providers are condemned, every queued
//! piece is repaired) hold; the figures themselves are not asserted.
#![allow(clippy::unwrap_used)]

use wwt_bench::audit::{Options, measure};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_audit_benchmark_uploads_challenges_and_repairs() {
    let report = measure(&Options {
        mib: 8,
        segment_mib: 1,
        challenges: 20,
    })
    .await
    .unwrap();
    assert!(report.round.0 > 0, "{report:?}");
    assert!(report.repaired.0 > 0, "{report:?}");
}
