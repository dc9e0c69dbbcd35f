//! A server layer that counts each request in [`RequestMetrics`]: its method, status code and
//! time to the response's headers.

use std::task::{Context, Poll};
use std::time::Instant;

use futures::FutureExt;
use futures::future::BoxFuture;
use tonic::codegen::http;

use crate::ops::RequestMetrics;

/// Counts requests in its metrics, if it has any.
#[derive(Debug, Clone)]
pub(super) struct Metered(pub Option<RequestMetrics>);

impl<S> tower::Layer<S> for Metered {
    type Service = MeteredService<S>;

    fn layer(&self, inner: S) -> MeteredService<S> {
        MeteredService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct MeteredService<S> {
    inner: S,
    metrics: Option<RequestMetrics>,
}

impl<S, B, R> tower::Service<http::Request<B>> for MeteredService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Some(metrics) = self.metrics.clone() else {
            return self.inner.call(request).boxed();
        };
        let counted = Counted {
            metrics,
            path: request.uri().path().to_owned(),
            start: Instant::now(),
            code: tonic::Code::Cancelled,
        };
        let answered = self.inner.call(request);
        async move {
            // The whole guard moves in (not only the field set below): it counts on drop.
            let mut counted = counted;
            let result = answered.await;
            counted.code = match &result {
                Ok(response) => status_code(response),
                Err(_) => tonic::Code::Internal,
            };
            result
        }
        .boxed()
    }
}

/// One request, counted when it is dropped: with its response's code, or CANCELLED when
/// it never got one (the server's timeout, or the caller gone, dropped it first).
struct Counted {
    metrics: RequestMetrics,
    path: String,
    start: Instant,
    code: tonic::Code,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.metrics
            .record(&self.path, self.code, self.start.elapsed());
    }
}

/// The status of a response: in its headers when the handler refused the call (tonic sends
/// an error as trailers only); a response whose headers carry none is under way, OK.
fn status_code<R>(response: &http::Response<R>) -> tonic::Code {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32)
}
