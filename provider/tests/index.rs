//! The index service of a provider daemon, over real loopback gRPC and the in-memory network:
//! owners reach only their own tables and logs, every request must be signed, and bad input
//! (forged, reordered, duplicated, oversized log entries) is refused with a clear status and
//! changes nothing.
#![allow(clippy::unwrap_used)]

use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;
use wwt_index::{
    Batch, ColumnId, IndexKind, OpeEncoder, OpeKey, Order, Query, QueryOutput, RowEntries, RowId,
    RowOp, TableId, TableSchema, TextExpr, TextOptions, TextOrder, TokenKey,
};
use wwt_net::grpc::GrpcConnector;
use wwt_net::index::{
    Answer, Append, ApplyBatch, CreateTable, GetCatalog, GetEntries, GetHead, LogHead, LogOp,
    MAX_REPLICAS, PutCatalog, QueryTable, entry_hash, open_entry,
};
use wwt_net::memory::MemoryNetwork;
use wwt_net::ops::Listeners;
use wwt_net::types::NodeId;
use wwt_net::{Connector, Identity, IndexApi, NetError, Signed, now_ms, proto};
use wwt_provider::{IndexService, ProviderConfig};

const TABLE: TableId = TableId([7; 16]);
const TEXT: ColumnId = ColumnId(1);
const AGE: ColumnId = ColumnId(2);

/// An index service reached through `connector`, and what keeps it running.
struct Hosted {
    index: Arc<dyn IndexApi>,
    node: NodeId,
    _dir: tempfile::TempDir,
    _stop: Option<oneshot::Sender<()>>,
}

async fn over_grpc() -> Hosted {
    let dir = tempfile::tempdir().unwrap();
    let config = ProviderConfig {
        data_dir: dir.path().to_path_buf(),
        index: true,
        ..ProviderConfig::default()
    };
    let node = Identity::load_or_create(&config.identity_path())
        .unwrap()
        .node_id();
    let listeners = Listeners::bind(([127, 0, 0, 1], 0).into(), None)
        .await
        .unwrap();
    let address = format!("http://{}", listeners.grpc.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(wwt_provider::run(config, listeners, async move {
        stopped.await.ok();
    }));
    Hosted {
        index: GrpcConnector::new().index(&address).unwrap(),
        node,
        _dir: dir,
        _stop: Some(stop),
    }
}

fn in_memory() -> Hosted {
    let dir = tempfile::tempdir().unwrap();
    let config = ProviderConfig {
        data_dir: dir.path().to_path_buf(),
        index: true,
        ..ProviderConfig::default()
    };
    let network = MemoryNetwork::new();
    let service = IndexService::open(&config, Arc::new(network.clone())).unwrap();
    let node = Identity::load_or_create(&config.identity_path())
        .unwrap()
        .node_id();
    network.add_index("mem://provider", Arc::new(service));
    Hosted {
        index: network.index("mem://provider").unwrap(),
        node,
        _dir: dir,
        _stop: None,
    }
}

fn row(i: u8, words: &str, age: u64, ope: &mut OpeEncoder) -> RowEntries {
    RowEntries {
        row: RowId([i; 16]),
        version: 1,
        locator: vec![i; 40],
        equality: vec![],
        range: vec![(AGE, ope.encrypt(age).unwrap())],
        text: vec![(
            TEXT,
            TokenKey::new([1; 32]).text_tokens(words, &TextOptions::default()),
        )],
    }
}

fn ids(out: Answer<QueryOutput>) -> Vec<RowId> {
    match out.value {
        QueryOutput::Rows(hits) => hits.into_iter().map(|h| h.row).collect(),
        QueryOutput::Counts(_) => panic!("expected rows"),
    }
}

/// An owner writing its log by hand: the seq and hash of its head, its one replica.
struct Writer {
    id: Identity,
    head: LogHead,
    replica: NodeId,
}

impl Writer {
    fn new(replica: NodeId) -> Writer {
        Writer {
            id: Identity::generate().unwrap(),
            head: LogHead::default(),
            replica,
        }
    }

    /// The same owner, believing its head is `head`.
    fn at(&self, head: LogHead) -> Writer {
        Writer {
            id: self.id.clone(),
            head,
            replica: self.replica,
        }
    }

    /// The next entry, signed.
    fn next(&self, op: LogOp) -> Signed<Append> {
        self.id
            .sign(Append {
                seq: self.head.seq + 1,
                prev: self.head.hash,
                replicas: vec![self.replica],
                op,
            })
            .unwrap()
    }

    async fn append(&mut self, index: &Arc<dyn IndexApi>, op: LogOp) -> Result<(), NetError> {
        let entry = self.next(op);
        let head = index.append(entry.clone()).await?;
        assert_eq!(head.hash, entry_hash(&entry));
        self.head = head;
        Ok(())
    }

    async fn head(&self, index: &Arc<dyn IndexApi>) -> u64 {
        let owner = self.id.node_id();
        let entry = index.head(self.id.sign(GetHead { owner }).unwrap()).await;
        entry.unwrap().map_or(0, |e| open_entry(&e).unwrap().1.seq)
    }
}

fn catalog(version: u64, blob: &[u8]) -> LogOp {
    LogOp::Catalog(PutCatalog {
        expected_version: version - 1,
        blob: blob.to_vec(),
    })
}

async fn owners_reach_only_their_tables(hosted: Hosted) {
    let index = hosted.index;
    let mut alice = Writer::new(hosted.node);
    let mut mallory = Writer::new(hosted.node);
    let schema = TableSchema {
        indexes: vec![(TEXT, IndexKind::FullText), (AGE, IndexKind::Range)],
    };
    let create = CreateTable {
        table: TABLE,
        schema,
    };
    alice
        .append(&index, LogOp::CreateTable(create.clone()))
        .await
        .unwrap();
    let mut ope = OpeEncoder::new(OpeKey::new([2; 32])).unwrap();
    let batch = Batch {
        ops: vec![
            RowOp::Put(row(1, "encrypted world table", 30, &mut ope)),
            RowOp::Put(row(2, "plain old table", 40, &mut ope)),
        ],
    };
    let apply = ApplyBatch {
        table: TABLE,
        batch,
    };
    alice.append(&index, LogOp::Apply(apply)).await.unwrap();

    let word = TokenKey::new([1; 32])
        .query_token("table", &TextOptions::default())
        .unwrap();
    let text = QueryTable {
        table: TABLE,
        query: Query::Text {
            column: TEXT,
            expr: TextExpr::Term(word),
            limit: 10,
            order: TextOrder::Score,
        },
    };
    let found = ids(index
        .query(alice.id.sign(text.clone()).unwrap())
        .await
        .unwrap());
    assert_eq!(found.len(), 2);
    let oldest = QueryTable {
        table: TABLE,
        query: Query::Range {
            column: AGE,
            lower: Bound::Unbounded,
            upper: Bound::Unbounded,
            order: Order::Desc,
            limit: Some(1),
        },
    };
    assert_eq!(
        ids(index.query(alice.id.sign(oldest).unwrap()).await.unwrap()),
        vec![RowId([2; 16])]
    );

    // Mallory names Alice's table: to her it does not exist, and she cannot write into it,
    // nor read Alice's log.
    let err = index
        .query(mallory.id.sign(text.clone()).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::NotFound(_)), "{err}");
    let wipe = ApplyBatch {
        table: TABLE,
        batch: Batch {
            ops: vec![RowOp::Delete {
                row: RowId([1; 16]),
                version: 9,
            }],
        },
    };
    let err = mallory
        .append(&index, LogOp::Apply(wipe.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::NotFound(_)), "{err}");
    assert_eq!(mallory.head(&index).await, 0, "a refused entry is not kept");
    let owner = alice.id.node_id();
    let err = index
        .head(mallory.id.sign(GetHead { owner }).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Forbidden(_)), "{err}");
    let err = index
        .entries(
            mallory
                .id
                .sign(GetEntries {
                    owner,
                    after: 0,
                    limit: 10,
                })
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Forbidden(_)), "{err}");

    // Catalogs: per owner, one per entry.
    alice.append(&index, catalog(1, b"sealed")).await.unwrap();
    let mine = index
        .catalog(alice.id.sign(GetCatalog).unwrap())
        .await
        .unwrap();
    assert_eq!(
        (mine.value.version, mine.value.blob.as_slice(), mine.seq),
        (1, &b"sealed"[..], 3)
    );
    let theirs = index
        .catalog(mallory.id.sign(GetCatalog).unwrap())
        .await
        .unwrap();
    assert_eq!((theirs.value.version, theirs.value.blob.len()), (0, 0));
    assert_eq!(alice.head(&index).await, 3);

    // Bad entries are refused with a clear status and change nothing: a seq already taken by
    // another entry, a gap, a wrong previous hash, a forged signature, garbage, too many
    // replicas. The same entry sent again is kept once.
    let taken = alice.at(LogHead {
        seq: 2,
        ..alice.head
    });
    let err = index
        .append(taken.next(catalog(1, b"other")))
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Conflict(_)), "{err}");
    let gap = alice.at(LogHead {
        seq: 7,
        ..alice.head
    });
    let err = index
        .append(gap.next(catalog(2, b"other")))
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Precondition(_)), "{err}");
    let fork = alice.at(LogHead {
        hash: [9; 32],
        ..alice.head
    });
    let err = index
        .append(fork.next(catalog(2, b"other")))
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Conflict(_)), "{err}");
    let mut tampered = proto::SignedRequest::from(alice.next(catalog(2, b"other")));
    tampered.body = alice
        .id
        .sign(Append {
            seq: alice.head.seq + 1,
            prev: alice.head.hash,
            replicas: vec![hosted.node],
            op: LogOp::Apply(wipe),
        })
        .unwrap()
        .body()
        .clone();
    let err = index
        .append(Signed::try_from(tampered).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Unauthenticated(_)), "{err}");
    let garbage =
        alice
            .id
            .sign_encoded::<Append>(Bytes::from_static(&[0xff; 9]), now_ms(), [4; 16]);
    let err = index.append(garbage).await.unwrap_err();
    assert!(matches!(err, NetError::BadRequest(_)), "{err}");
    let crowded = alice
        .id
        .sign(Append {
            seq: alice.head.seq + 1,
            prev: alice.head.hash,
            replicas: vec![hosted.node; MAX_REPLICAS + 1],
            op: catalog(2, b"other"),
        })
        .unwrap();
    let err = index.append(crowded).await.unwrap_err();
    assert!(matches!(err, NetError::BadRequest(_)), "{err}");
    let err = alice
        .append(&index, LogOp::CreateTable(create))
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Conflict(_)), "{err}");
    let again = alice.next(catalog(2, b"second"));
    let first = index.append(again.clone()).await.unwrap();
    assert_eq!(index.append(again).await.unwrap(), first, "kept once");
    assert_eq!(alice.head(&index).await, 4);
    let mine = index
        .catalog(alice.id.sign(GetCatalog).unwrap())
        .await
        .unwrap();
    assert_eq!(
        (mine.value.version, mine.value.blob.as_slice(), mine.seq),
        (2, &b"second"[..], 4)
    );

    // Replayed reads are refused.
    let forged = mallory.id.sign_with(text.clone(), now_ms(), [3; 16]);
    let replayed = forged.clone();
    let err = index.query(forged).await.unwrap_err();
    assert!(matches!(err, NetError::NotFound(_)), "{err}");
    let err = index.query(replayed).await.unwrap_err();
    assert!(matches!(err, NetError::Unauthenticated(_)), "{err}");

    // A query on a column without the needed index says which index is missing.
    let no_index = QueryTable {
        table: TABLE,
        query: Query::Equal {
            column: AGE,
            values: vec![],
        },
    };
    let err = index
        .query(alice.id.sign(no_index).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, NetError::BadRequest(m) if m.contains("no equality (hash) index")),
        "{err}"
    );
    let found = ids(index.query(alice.id.sign(text).unwrap()).await.unwrap());
    assert_eq!(found.len(), 2);
}

#[tokio::test]
async fn owners_reach_only_their_tables_over_grpc() {
    owners_reach_only_their_tables(over_grpc().await).await;
}

#[tokio::test]
async fn owners_reach_only_their_tables_in_memory() {
    owners_reach_only_their_tables(in_memory()).await;
}
