//! Request caps per method: a server layer that reads each gRPC message's length from its
//! 5-byte header as the body passes and refuses one over its method's cap before its bytes
//! are read.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tonic::Status;
use tonic::body::Body as GrpcBody;
use tonic::codegen::http;

use super::MAX_MESSAGE;
use crate::audit::Mirror;
use crate::auth::Body;
use crate::index::{Append, QueryTable};
use crate::types::{ConfirmStored, StorePiece};

/// The cap of every request not named in [`LARGE_REQUESTS`]: signed reads, challenges,
/// heartbeats, reservations (256 piece specs, some 12 KiB), entrusted manifests (at most
/// 10 KiB), lookups; none legitimately passes a few KiB.
pub(super) const SMALL_REQUEST: usize = 64 << 10;
/// The requests that legitimately exceed [`SMALL_REQUEST`], by method path, with their caps.
pub(super) const LARGE_REQUESTS: [(&str, usize); 5] = [
    // Parts of a piece: up to a whole piece.
    (<StorePiece as Body>::METHOD, MAX_MESSAGE),
    // A log entry: a catalog (at most 4 MiB) or a batch of row operations (an INSERT of
    // 10,000 rows with a full-text column, bench-sql's batch, is some 4 MiB).
    (<Append as Body>::METHOD, 16 << 20),
    // Up to 16,384 receipts of about 320 bytes: some 5.3 MiB.
    (<ConfirmStored as Body>::METHOD, 8 << 20),
    // A mirrored segment: 256 pieces of 256 holders, some 2.3 MiB.
    (<Mirror as Body>::METHOD, 4 << 20),
    // A lookup of 10,000 row ids (the most one query returns) is some 180 KiB.
    (<QueryTable as Body>::METHOD, 1 << 20),
];

/// The largest request message the method at `path` (`/package.Service/Method`) takes.
pub(super) fn request_cap(path: &str) -> usize {
    LARGE_REQUESTS
        .iter()
        .find(|(method, _)| *method == path)
        .map_or(SMALL_REQUEST, |(_, cap)| *cap)
}

/// The largest cap among the methods of `service` (`package.Service`).
pub(super) fn largest_cap(service: &str) -> usize {
    LARGE_REQUESTS
        .iter()
        .filter(|(method, _)| {
            method
                .strip_prefix('/')
                .and_then(|m| m.strip_prefix(service))
                .is_some_and(|m| m.starts_with('/'))
        })
        .map(|(_, cap)| *cap)
        .fold(SMALL_REQUEST, usize::max)
}

/// A server layer that holds each request to its method's cap ([`request_cap`]).
///
/// tonic's own limit is per service, so the largest method's, and refuses with OUT_OF_RANGE;
/// this one is per method, and refuses with INVALID_ARGUMENT (a bad request: the caller must
/// send less, and no other node would take it either, where RESOURCE_EXHAUSTED would read as
/// "this node is full, try another").
#[derive(Debug, Clone, Copy)]
pub(super) struct CapRequests;

impl<S> tower::Layer<S> for CapRequests {
    type Service = CappedService<S>;

    fn layer(&self, inner: S) -> CappedService<S> {
        CappedService(inner)
    }
}

/// A service whose requests' bodies are [`CappedBody`]s.
#[derive(Debug, Clone)]
pub(super) struct CappedService<S>(S);

impl<S> tower::Service<http::Request<GrpcBody>> for CappedService<S>
where
    S: tower::Service<http::Request<GrpcBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<GrpcBody>) -> S::Future {
        let uri = request.uri().clone();
        let cap = request_cap(uri.path());
        self.0.call(request.map(|body| {
            GrpcBody::new(CappedBody {
                inner: body,
                uri,
                cap,
                header: [0; 5],
                header_read: 0,
                to_skip: 0,
                refused: false,
            })
        }))
    }
}

/// A request body passed on frame by frame, in which each gRPC message's header (compressed
/// flag, then its length as a big-endian u32) is read as it passes: a message declared longer
/// than `cap` ends the body with INVALID_ARGUMENT, which tonic answers as the call's status,
/// before the message's bytes are read.
struct CappedBody {
    inner: GrpcBody,
    /// The request's URI, for the error message.
    uri: http::Uri,
    cap: usize,
    /// The next message's header, `header_read` bytes of it seen so far.
    header: [u8; 5],
    header_read: usize,
    /// Bytes of the current message not seen yet.
    to_skip: usize,
    /// A message was refused: the body ends.
    refused: bool,
}

impl CappedBody {
    /// Follows the message framing through `data`; the declared length of the first message
    /// over the cap, if any.
    fn oversized(&mut self, mut data: &[u8]) -> Option<usize> {
        while !data.is_empty() {
            if self.to_skip > 0 {
                let n = self.to_skip.min(data.len());
                self.to_skip -= n;
                data = &data[n..];
                continue;
            }
            let n = (self.header.len() - self.header_read).min(data.len());
            self.header[self.header_read..self.header_read + n].copy_from_slice(&data[..n]);
            self.header_read += n;
            data = &data[n..];
            if self.header_read == self.header.len() {
                self.header_read = 0;
                let [_, a, b, c, d] = self.header;
                let len = u32::from_be_bytes([a, b, c, d]) as usize;
                if len > self.cap {
                    return Some(len);
                }
                self.to_skip = len;
            }
        }
        None
    }
}

impl http_body::Body for CappedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.refused {
            return Poll::Ready(None);
        }
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
            && let Some(len) = self.oversized(data)
        {
            self.refused = true;
            return Poll::Ready(Some(Err(Status::invalid_argument(format!(
                "a {len}-byte message to {}, which takes messages of at most {} bytes: send \
                 less in one call (split a large batch into several)",
                self.uri.path(),
                self.cap
            )))));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.refused || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
