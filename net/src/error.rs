//! The one error type of the wire, and its single mapping to and from `tonic::Status`.

use tonic::{Code, Status};

/// What went wrong with a call, named for what the caller can do about it.
///
/// Every service (in memory or over gRPC) returns this; [`Status`] conversions live here only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// The request was unsigned, mis-signed, stale or replayed: sign it again, with a fresh
    /// nonce and a correct clock.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The signer may not do this (not the owner, not a trusted tracker): use the right identity.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The request itself is malformed or out of bounds: fix the input; retrying cannot help.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The piece, segment or node is not known here: look elsewhere.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request conflicts with what is stored (e.g. another owner's piece): do not retry.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The node has no room (capacity, or too few providers to place on): try other nodes.
    #[error("no capacity: {0}")]
    NoCapacity(String),
    /// A precondition no longer holds (expired reservation, wrong tracker): get a fresh one.
    #[error("precondition failed: {0}")]
    Precondition(String),
    /// The node could not be reached, dropped the call or timed out: retry or use another node.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The node failed internally (disk, database): retry later or use another node.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<NetError> for Status {
    fn from(err: NetError) -> Status {
        match err {
            NetError::Unauthenticated(m) => Status::unauthenticated(m),
            NetError::Forbidden(m) => Status::permission_denied(m),
            NetError::BadRequest(m) => Status::invalid_argument(m),
            NetError::NotFound(m) => Status::not_found(m),
            NetError::Conflict(m) => Status::already_exists(m),
            NetError::NoCapacity(m) => Status::resource_exhausted(m),
            NetError::Precondition(m) => Status::failed_precondition(m),
            NetError::Unavailable(m) => Status::unavailable(m),
            NetError::Internal(m) => Status::internal(m),
        }
    }
}

/// How an UNIMPLEMENTED answer reads: the node runs, but is another kind of node.
pub(crate) const NOT_SERVED: &str = "the node does not serve this call";

impl From<Status> for NetError {
    fn from(status: Status) -> NetError {
        let m = status.message().to_string();
        match status.code() {
            Code::Unauthenticated => NetError::Unauthenticated(m),
            Code::PermissionDenied => NetError::Forbidden(m),
            Code::InvalidArgument | Code::OutOfRange => NetError::BadRequest(m),
            Code::NotFound => NetError::NotFound(m),
            Code::AlreadyExists => NetError::Conflict(m),
            Code::ResourceExhausted => NetError::NoCapacity(m),
            Code::FailedPrecondition => NetError::Precondition(m),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted => {
                NetError::Unavailable(m)
            }
            Code::Internal => NetError::Internal(m),
            // The node runs, but not this service: another kind of node answered.
            Code::Unimplemented if m.is_empty() => NetError::Unavailable(NOT_SERVED.into()),
            Code::Unimplemented => NetError::Unavailable(format!("{NOT_SERVED} ({m})")),
            _ => NetError::Internal(format!("{:?}: {m}", status.code())),
        }
    }
}

impl From<prost::DecodeError> for NetError {
    fn from(err: prost::DecodeError) -> NetError {
        NetError::BadRequest(format!("undecodable protobuf: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_survives_the_status_round_trip() {
        let all = [
            NetError::Unauthenticated("a".into()),
            NetError::Forbidden("b".into()),
            NetError::BadRequest("c".into()),
            NetError::NotFound("d".into()),
            NetError::Conflict("e".into()),
            NetError::NoCapacity("f".into()),
            NetError::Precondition("g".into()),
            NetError::Unavailable("h".into()),
            NetError::Internal("i".into()),
        ];
        for err in all {
            let back = NetError::from(Status::from(err.clone()));
            assert_eq!(back, err);
        }
    }

    #[test]
    fn a_missing_service_is_unavailable_there() {
        let err = NetError::from(Status::unimplemented(""));
        assert!(
            matches!(&err, NetError::Unavailable(m) if m.starts_with(NOT_SERVED)),
            "{err}"
        );
    }
}
