//! What a node shows its operator over plain HTTP: `/metrics` in the Prometheus text format
//! (from `prometheus-client`), `/health` for load balancers, and the node's own page at `/`.
//! [`RequestMetrics`] counts the gRPC requests a node answers, by method and status, with
//! their latency. [`html`] has the pieces the pages are made of.

pub mod html;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::NetError;
use crate::grpc::{self, Services};

/// The content type of the text `prometheus-client` writes (OpenMetrics 1.0, which
/// Prometheus reads).
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What a node shows on its HTTP endpoint beside its metrics.
#[async_trait]
pub trait Site: Send + Sync + 'static {
    /// Its page at `/`: a whole HTML document.
    async fn page(&self) -> String;
    /// `Err` says why it cannot serve now.
    fn health(&self) -> Result<(), String>;
}

/// Where a node serves, bound by whoever starts it: gRPC, and its operator endpoint if it
/// has one. Binding both before the node starts resolves a port of 0 once, so the address a
/// caller prints is the one served and nothing else can take it in between.
pub struct Listeners {
    /// gRPC.
    pub grpc: TcpListener,
    /// The operator endpoint ([`serve_node`]'s `http`).
    pub http: Option<TcpListener>,
}

impl Listeners {
    /// Binds `grpc`, and `http` when given.
    pub async fn bind(grpc: SocketAddr, http: Option<SocketAddr>) -> std::io::Result<Listeners> {
        let bind = |at: SocketAddr, what: &'static str| async move {
            TcpListener::bind(at).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen for {what} on {at}: {e}"))
            })
        };
        let grpc = bind(grpc, "gRPC").await?;
        let http = match http {
            Some(at) => Some(bind(at, "HTTP").await?),
            None => None,
        };
        Ok(Listeners { grpc, http })
    }

    /// Refuses to serve a node whose config asks for an operator endpoint at `http_listen`
    /// without the listener for it (the node does not bind it itself).
    pub fn serve_as(&self, http_listen: Option<SocketAddr>) -> Result<(), String> {
        match (http_listen, &self.http) {
            (Some(at), None) => Err(format!(
                "http_listen is {at}, but no HTTP listener was handed over: bind both with \
                 wwt_net::ops::Listeners::bind"
            )),
            _ => Ok(()),
        }
    }
}

/// A node's operator endpoint: where it listens, its metrics and its page.
pub struct Http {
    /// Where it listens.
    pub listener: TcpListener,
    /// `/metrics`.
    pub registry: Registry,
    /// `/` and `/health`.
    pub site: Arc<dyn Site>,
}

/// Serves `services` over gRPC on `listener` until `shutdown`, and `http` beside it until
/// the gRPC server stops.
pub async fn serve_node(
    services: Services,
    listener: TcpListener,
    http: Option<Http>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NetError> {
    let Some(http) = http else {
        return grpc::serve(services, listener, shutdown).await;
    };
    let (stop, stopped) = watch::channel(false);
    let grpc = async {
        let served = grpc::serve(services, listener, shutdown).await;
        let _ = stop.send(true);
        served
    };
    let (grpc, http) = tokio::join!(grpc, serve_http(http, stopped));
    grpc.and(http)
}

/// How long the HTTP endpoint, told to stop, waits for the requests under way.
const HTTP_DRAIN: Duration = Duration::from_secs(2);

/// Serves `/metrics`, `/health` and `/` until `stop` turns true (and then at most
/// [`HTTP_DRAIN`] more: a connection that never sends a request would otherwise hold a
/// graceful shutdown forever).
async fn serve_http(
    Http {
        listener,
        registry,
        site,
    }: Http,
    stop: watch::Receiver<bool>,
) -> Result<(), NetError> {
    let registry = Arc::new(registry);
    let health = site.clone();
    let app = Router::new()
        .route("/metrics", get(move || metrics(registry.clone())))
        .route(
            "/health",
            get(move || async move {
                match health.health() {
                    Ok(()) => (StatusCode::OK, "ok\n".to_string()),
                    Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
                }
            }),
        )
        .route("/", get(move || async move { Html(site.page().await) }));
    let stopped = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    let served = axum::serve(listener, app).with_graceful_shutdown(stopped(stop.clone()));
    tokio::select! {
        served = served => served.map_err(|e| NetError::Internal(format!("HTTP server failed: {e}"))),
        () = async {
            stopped(stop).await;
            tokio::time::sleep(HTTP_DRAIN).await;
        } => Ok(()),
    }
}

/// The registry's text, encoded off the runtime's threads (collectors read databases).
async fn metrics(registry: Arc<Registry>) -> Response {
    let encoded = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        encode(&mut text, &registry).map(|()| text)
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|encoded| encoded.map_err(|e| e.to_string()));
    match encoded {
        Ok(text) => ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the metrics failed: {e}\n"),
        )
            .into_response(),
    }
}

/// One sample of a metric read from a node's state at a scrape: its labels and value.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Its labels, `(name, value)`.
    pub labels: Vec<(&'static str, String)>,
    /// Its value.
    pub value: u64,
}

impl Sample {
    /// A sample without labels.
    pub fn new(value: u64) -> Sample {
        Sample {
            labels: Vec::new(),
            value,
        }
    }

    /// A sample with one label.
    pub fn labelled(name: &'static str, label: impl ToString, value: u64) -> Sample {
        Sample {
            labels: vec![(name, label.to_string())],
            value,
        }
    }
}

/// Writes metric `name` (a counter or a gauge, by `kind`) with `samples`, from a
/// [`prometheus_client::collector::Collector`].
pub fn write_metric(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: &[Sample],
) -> Result<(), std::fmt::Error> {
    let sample = |value: u64, at: MetricEncoder| match kind {
        MetricType::Counter => ConstCounter::new(value).encode(at),
        _ => ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(at),
    };
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    match samples {
        [one] if one.labels.is_empty() => sample(one.value, metric),
        _ => samples
            .iter()
            .try_for_each(|s| sample(s.value, metric.encode_family(&s.labels)?)),
    }
}

/// Labels of one request count: the method's path and the gRPC status code's name.
type RequestLabels = [(&'static str, String); 2];

/// The gRPC requests a node answered: `grpc_requests_total{method, code}` and
/// `grpc_request_duration_seconds{method}` (time to the response's headers, which for a
/// unary call is the handler's whole time).
#[derive(Debug, Clone)]
pub struct RequestMetrics {
    requests: Family<RequestLabels, Counter>,
    seconds: Family<[(&'static str, String); 1], Histogram>,
}

/// The method label of requests no service answers (UNIMPLEMENTED): a stranger's made-up
/// paths would otherwise make a label each.
const OTHER_METHOD: &str = "other";

impl RequestMetrics {
    /// Registers the request metrics in `registry`.
    pub fn register(registry: &mut Registry) -> RequestMetrics {
        let metrics = RequestMetrics {
            requests: Family::default(),
            // 100 µs to about 13 s.
            seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_1, 2.0, 18))
            }),
        };
        registry.register(
            "grpc_requests",
            "gRPC requests answered, by method and status code",
            metrics.requests.clone(),
        );
        registry.register(
            "grpc_request_duration_seconds",
            "Time from a gRPC request to its response's headers, by method",
            metrics.seconds.clone(),
        );
        metrics
    }

    /// Counts one request to `path` answered with `code` after `elapsed`.
    pub(crate) fn record(&self, path: &str, code: tonic::Code, elapsed: Duration) {
        let method = if code == tonic::Code::Unimplemented {
            OTHER_METHOD
        } else {
            path
        };
        self.requests
            .get_or_create(&[("method", method.into()), ("code", format!("{code:?}"))])
            .inc();
        self.seconds
            .get_or_create(&[("method", method.into())])
            .observe(elapsed.as_secs_f64());
    }
}
