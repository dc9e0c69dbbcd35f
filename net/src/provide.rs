//! Provider records in batches: the libp2p protocol `/wwt/provide/1` (`ProvideBatch` and
//! `ProvideAck` in `wwt.proto`).
//!
//! kad's `start_providing` runs a closest-peers lookup and then sends one `ADD_PROVIDER` per
//! peer, each on a substream of its own: about a dozen substreams per segment and per holder,
//! which cost a provider more CPU than storing the piece. While a node's routing table holds
//! fewer peers than kad's replication factor, that lookup can only end at every peer of the
//! table, so the node does the same with less: it keeps its announcements for [`BATCH_DELAY`]
//! and sends each peer of its table one message that lists them all. Each receiver adds the
//! records to its kad store, where kad's lookups find them as if `ADD_PROVIDER` had put them
//! there. A larger routing table takes kad's per-key path (see `node.rs`).

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::{PeerId, StreamProtocol};
use prost::Message;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use crate::NetError;
use crate::proto;
use crate::types::SegmentId;

/// The protocol name.
pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new("/wwt/provide/1");
/// How long an announcement waits for others to travel with.
pub(crate) const BATCH_DELAY: Duration = Duration::from_millis(250);
/// Segments per message at most; a fuller queue leaves at once.
pub(crate) const MAX_BATCH: usize = 4096;
/// Bytes of one encoded message at most: each segment id takes 34 (tag, length, 32 bytes).
const MAX_MESSAGE: usize = MAX_BATCH * 34;
/// How long a provider record lasts unless its provider republishes it (kad's default, set on
/// kad too so that records from batches and from `ADD_PROVIDER` expire alike).
pub(crate) const RECORD_TTL: Duration = Duration::from_secs(48 * 3600);

/// Reads and writes `ProvideBatch` requests and `ProvideAck` responses.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Codec;

impl request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Vec<SegmentId>;
    /// How many of the batch's records the receiver keeps.
    type Response = u32;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Self::Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        let batch: proto::ProvideBatch = read(io).await?;
        batch
            .segments
            .iter()
            .map(|s| SegmentId::from_slice(s).map_err(|e| invalid(e.to_string())))
            .collect()
    }

    async fn read_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Self::Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        Ok(read::<proto::ProvideAck, _>(io).await?.accepted)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        segments: Self::Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let batch = proto::ProvideBatch {
            segments: segments.iter().map(SegmentId::to_wire).collect(),
        };
        io.write_all(&batch.encode_to_vec()).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        accepted: Self::Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&proto::ProvideAck { accepted }.encode_to_vec())
            .await
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Reads one message, to the end of the stream (the sender closes it), refusing more than
/// [`MAX_MESSAGE`] bytes.
async fn read<M, T>(io: &mut T) -> io::Result<M>
where
    M: Message + Default,
    T: AsyncRead + Unpin + Send,
{
    let mut bytes = Vec::new();
    io.take(MAX_MESSAGE as u64 + 1)
        .read_to_end(&mut bytes)
        .await?;
    if bytes.len() > MAX_MESSAGE {
        return Err(invalid(format!(
            "a provide message over {MAX_MESSAGE} bytes ({MAX_BATCH} segments)"
        )));
    }
    M::decode(bytes.as_slice()).map_err(|e| invalid(format!("undecodable provide message: {e}")))
}

type Reply = oneshot::Sender<Result<(), NetError>>;

/// A node's own announcements: those waiting for the next batch, and the batches out.
pub(crate) struct Announcer {
    queued: Vec<(SegmentId, Reply)>,
    /// When the queued announcements leave: [`BATCH_DELAY`] after the first of them.
    due: Pin<Box<Sleep>>,
    /// Each request out → the announcers of its batch, shared by the batch's requests and told
    /// when the last of them is answered or fails.
    requests: HashMap<OutboundRequestId, Arc<Vec<Reply>>>,
}

impl Announcer {
    pub(crate) fn new() -> Announcer {
        Announcer {
            queued: Vec::new(),
            due: Box::pin(tokio::time::sleep(Duration::ZERO)),
            requests: HashMap::new(),
        }
    }

    /// Queues an announcement whose record is already in the local store; true when the queue
    /// is full and should leave now.
    pub(crate) fn queue(&mut self, segment: SegmentId, reply: Reply) -> bool {
        if self.queued.is_empty() {
            self.due.as_mut().reset(Instant::now() + BATCH_DELAY);
        }
        self.queued.push((segment, reply));
        self.queued.len() >= MAX_BATCH
    }

    /// Whether announcements wait for [`Announcer::due`].
    pub(crate) fn has_queued(&self) -> bool {
        !self.queued.is_empty()
    }

    /// Completes when the queued announcements should leave.
    pub(crate) async fn due(&mut self) {
        self.due.as_mut().await;
    }

    /// Sends every queued announcement to each of `peers` in one message per peer. Each
    /// announcer hears back once every peer answered or failed: the record is in the local
    /// store either way, and an unreachable peer only means readers find it after kad's
    /// republication.
    pub(crate) fn flush(
        &mut self,
        peers: &[PeerId],
        provide: &mut request_response::Behaviour<Codec>,
    ) {
        let (segments, replies): (Vec<SegmentId>, Vec<Reply>) =
            std::mem::take(&mut self.queued).into_iter().unzip();
        if peers.is_empty() {
            for reply in replies {
                let _ = reply.send(Ok(()));
            }
            return;
        }
        let replies = Arc::new(replies);
        for peer in peers {
            let id = provide.send_request(peer, segments.clone());
            self.requests.insert(id, replies.clone());
        }
    }

    /// One request of a batch was answered or failed.
    pub(crate) fn finished(&mut self, request: OutboundRequestId) {
        let Some(replies) = self.requests.remove(&request) else {
            return;
        };
        // The batch's last request holds the only reference left.
        if let Ok(replies) = Arc::try_unwrap(replies) {
            for reply in replies {
                let _ = reply.send(Ok(()));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use bytes::Bytes;
    use futures::io::Cursor;
    use request_response::Codec as _;

    use super::*;

    async fn decode(bytes: Vec<u8>) -> io::Result<Vec<SegmentId>> {
        Codec.read_request(&PROTOCOL, &mut Cursor::new(bytes)).await
    }

    #[tokio::test]
    async fn a_batch_reads_back_as_written() {
        let segments: Vec<SegmentId> = (0..MAX_BATCH as u32)
            .map(|i| SegmentId(*blake3::hash(&i.to_le_bytes()).as_bytes()))
            .collect();
        let mut wire = Cursor::new(Vec::new());
        Codec
            .write_request(&PROTOCOL, &mut wire, segments.clone())
            .await
            .unwrap();
        assert!(wire.get_ref().len() <= MAX_MESSAGE);
        assert_eq!(decode(wire.into_inner()).await.unwrap(), segments);

        let mut wire = Cursor::new(Vec::new());
        Codec
            .write_response(&PROTOCOL, &mut wire, 17)
            .await
            .unwrap();
        wire.set_position(0);
        assert_eq!(Codec.read_response(&PROTOCOL, &mut wire).await.unwrap(), 17);
    }

    #[tokio::test]
    async fn oversize_short_ids_and_garbage_are_refused() {
        let too_many = proto::ProvideBatch {
            segments: vec![Bytes::from(vec![1; 32]); MAX_BATCH + 1],
        };
        let err = decode(too_many.encode_to_vec()).await.unwrap_err();
        assert!(err.to_string().contains("over"), "{err}");

        let short = proto::ProvideBatch {
            segments: vec![Bytes::from(vec![1; 32]), Bytes::from(vec![2; 31])],
        };
        let err = decode(short.encode_to_vec()).await.unwrap_err();
        assert!(err.to_string().contains("got 31"), "{err}");

        let err = decode(vec![0xff; 40]).await.unwrap_err();
        assert!(err.to_string().contains("undecodable"), "{err}");
    }
}
