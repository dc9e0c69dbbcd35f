//! What an operator sees over HTTP, on a network over loopback gRPC whose nodes serve their
//! operator's endpoint, with the audit clock driven by the test: `/metrics` parses as
//! Prometheus text and its counters move as rows are stored and audits run; `/health`
//! answers; the tracker's dashboard lists every provider; a provider's page shows its credit
//! and its audits.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;

use wwt_client::db::{Client, ClientConfig};
use wwt_devnet::{Hooks, LocalNet, Shape, Transport};
use wwt_engine::Keystore;
use wwt_tests::{http_get, metric, scrape};
use wwt_tracker::audit::Outcome;
use wwt_tracker::clock::ManualClock;

/// The labels of Store calls answered OK.
const STORED: [(&str, &str); 2] = [("method", "/wwt.v1.Provider/Store"), ("code", "Ok")];

/// Audit rounds the test runs.
const ROUNDS: usize = 5;

/// The sum of `name{labels}` over `urls`' metrics.
async fn total(urls: &[String], name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for url in urls {
        sum += metric(&scrape(url).await, name, labels);
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_dashboard_and_pages_follow_the_network() {
    let seed = wwt_tests::seed(0x0be_2026);
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let shape = Shape {
        providers: 6,
        heartbeat_ms: 200,
        transport: Transport::Grpc,
        http: true,
        seed: Some(seed),
        ..Shape::default()
    };
    let hooks = Hooks {
        audit_clock: Some(clock.clone()),
        ..Hooks::default()
    };
    let net = LocalNet::start_with(dir.path(), shape, hooks)
        .await
        .unwrap();
    let http = |n: &wwt_devnet::NodeInfo| n.http.clone().expect("an HTTP endpoint");
    let providers: Vec<String> = net
        .endpoints
        .providers
        .iter()
        .map(|p| format!("{}/metrics", http(p)))
        .collect();
    let tracker_http = http(&net.endpoints.trackers[0]);
    let tracker = [format!("{tracker_http}/metrics")];

    for n in net
        .endpoints
        .trackers
        .iter()
        .chain(&net.endpoints.providers)
    {
        assert_eq!(
            http_get(&format!("{}/health", http(n))).await,
            (200, "ok\n".into())
        );
    }
    let pieces_before = total(&providers, "wwt_provider_pieces", &[]).await;
    let stored_before = total(&providers, "wwt_grpc_requests_total", &STORED).await;
    assert_eq!(pieces_before, 0.0);

    let keys = Keystore::generate();
    let client = Client::connect(
        &keys,
        net.connector(),
        ClientConfig::new(net.endpoints.tracker_list().unwrap()),
    )
    .await
    .unwrap();
    client
        .execute("CREATE TABLE docs (id BIGINT PRIMARY KEY, body TEXT)")
        .await
        .unwrap();
    for batch in 0..4 {
        let values: Vec<String> = (batch * 100..(batch + 1) * 100)
            .map(|i| format!("({i}, '{}')", "w".repeat(2_000 + i)))
            .collect();
        client
            .execute(&format!("INSERT INTO docs VALUES {}", values.join(", ")))
            .await
            .unwrap();
    }

    let pieces = total(&providers, "wwt_provider_pieces", &[]).await;
    let stored = total(&providers, "wwt_grpc_requests_total", &STORED).await;
    let used = total(&providers, "wwt_provider_used_bytes", &[]).await;
    println!("pieces {pieces_before} → {pieces}, Store calls {stored_before} → {stored}");
    assert!(pieces > 0.0, "no piece counted");
    assert!(
        stored - stored_before >= pieces,
        "{stored} Store calls for {pieces} pieces"
    );
    assert!(
        used > 400.0 * 2_000.0,
        "{used} bytes held for 800 KB of rows"
    );
    let entrusted = total(
        &tracker,
        "wwt_grpc_requests_total",
        &[("method", "/wwt.v1.Tracker/Entrust"), ("code", "Ok")],
    )
    .await;
    assert!(entrusted > 0.0);
    let tracker_metrics = scrape(&tracker[0]).await;
    for p in &net.endpoints.providers {
        let placed = tracker_metrics.samples.iter().any(|s| {
            s.metric == "wwt_tracker_provider_reserved_bytes"
                && s.labels.get("provider") == Some(p.node.as_str())
        });
        assert!(placed, "no reserved bytes for {}", p.name);
    }
    let audited = total(&tracker, "wwt_tracker_provider_pieces", &[]).await;
    assert_eq!(audited, pieces, "pieces under audit");

    let passed_before = total(
        &tracker,
        "wwt_tracker_audits_total",
        &[("outcome", "passed")],
    )
    .await;
    let mut passed = 0;
    let mut challenged_providers = HashSet::new();
    for _ in 0..ROUNDS {
        clock.advance_by(60_000);
        let report = net.tracker(0).unwrap().audit_step().await.unwrap();
        for c in report.challenges {
            if c.outcome == Outcome::Pass {
                passed += 1;
                challenged_providers.insert(c.provider.to_string());
            }
        }
    }
    let passed_after = total(
        &tracker,
        "wwt_tracker_audits_total",
        &[("outcome", "passed")],
    )
    .await;
    let challenged = total(
        &providers,
        "wwt_grpc_requests_total",
        &[("method", "/wwt.v1.Provider/Challenge"), ("code", "Ok")],
    )
    .await;
    println!("{passed} challenges passed; the metric went {passed_before} → {passed_after}");
    assert!(passed > 0, "no challenge in {ROUNDS} rounds");
    assert_eq!(passed_after - passed_before, passed as f64);
    assert!(challenged >= passed as f64);
    let failed = total(
        &tracker,
        "wwt_tracker_audits_total",
        &[("outcome", "failed")],
    )
    .await;
    assert_eq!(failed, 0.0);

    // The dashboard names every provider, with its address.
    let (status, page) = http_get(&format!("{tracker_http}/")).await;
    assert_eq!(status, 200);
    for p in &net.endpoints.providers {
        assert!(
            page.contains(&format!("title=\"{}\"", p.node)),
            "{} missing",
            p.name
        );
        assert!(page.contains(&p.address), "{} missing", p.address);
    }
    assert!(page.contains("<svg"), "no chart");
    assert!(page.contains("Repair queue (0 segments)"));

    // A provider's page shows its standing at the tracker, and its audits if it had any.
    let tracker_id = &net.endpoints.trackers[0].node;
    for p in &net.endpoints.providers {
        let (status, page) = http_get(&format!("{}/", http(p))).await;
        assert_eq!(status, 200);
        assert!(page.contains(&format!("title=\"{tracker_id}\"")), "{page}");
        assert!(page.contains("Credit at each tracker"));
        assert!(!page.contains("not audited yet"), "{page}");
        if challenged_providers.contains(&p.node) {
            assert!(
                page.contains("class=\"good\">pass<"),
                "no audit listed: {page}"
            );
        }
    }

    // A connection that never finishes its request does not hold a node's shutdown, nor
    // its stores: the index provider and the tracker restart in this process (their
    // databases' locks let go) and serve again.
    let mut net = net;
    let idle = |n: &wwt_devnet::NodeInfo| {
        let at = http(n).trim_start_matches("http://").to_string();
        async move {
            use tokio::io::AsyncWriteExt;
            let mut stream = tokio::net::TcpStream::connect(&at).await.unwrap();
            let half = format!("GET / HTTP/1.1\r\nHost: {at}\r\n");
            stream.write_all(half.as_bytes()).await.unwrap();
            stream
        }
    };
    let _idle = [
        idle(&net.endpoints.providers[0]).await,
        idle(&net.endpoints.trackers[0]).await,
    ];
    let restarted = async {
        net.restart_provider(0, false).await.unwrap();
        net.restart_tracker(0).await.unwrap();
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), restarted)
        .await
        .expect("a restart held by an idle HTTP connection");
    for n in [&net.endpoints.providers[0], &net.endpoints.trackers[0]] {
        // The restarted node binds its HTTP endpoint as it starts: wait for it.
        let at = http(n).trim_start_matches("http://").to_string();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while tokio::net::TcpStream::connect(&at).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{at} never came back"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            http_get(&format!("{}/health", http(n))).await,
            (200, "ok\n".into())
        );
    }
    net.shutdown().await.unwrap();
}
