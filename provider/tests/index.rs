//! The index service of a provider daemon, over real loopback gRPC and the in-memory network:
//! owners reach only their own tables, every request must be signed, and bad input is refused
//! with a clear status and changes nothing.
#![allow(clippy::unwrap_used)]

use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use wwt_index::{
    Batch, ColumnId, IndexKind, OpeEncoder, OpeKey, Order, Query, QueryOutput, RowEntries, RowId,
    RowOp, TableId, TableSchema, TextExpr, TextOptions, TokenKey,
};
use wwt_net::grpc::GrpcConnector;
use wwt_net::index::{ApplyBatch, CreateTable, GetCatalog, PutCatalog, QueryTable};
use wwt_net::memory::MemoryNetwork;
use wwt_net::{Connector, Identity, IndexApi, NetError, now_ms};
use wwt_provider::{IndexService, ProviderConfig};

const TABLE: TableId = TableId([7; 16]);
const TEXT: ColumnId = ColumnId(1);
const AGE: ColumnId = ColumnId(2);

/// An index service reached through `connector`, and what keeps it running.
struct Hosted {
    index: Arc<dyn IndexApi>,
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
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(wwt_provider::run(config, listener, async move {
        stopped.await.ok();
    }));
    Hosted {
        index: GrpcConnector::new().index(&address).unwrap(),
        _dir: dir,
        _stop: Some(stop),
    }
}

fn in_memory() -> Hosted {
    let dir = tempfile::tempdir().unwrap();
    let service = IndexService::open(dir.path(), std::time::Duration::from_secs(120)).unwrap();
    let network = MemoryNetwork::new();
    network.add_index("mem://provider", Arc::new(service));
    Hosted {
        index: network.index("mem://provider").unwrap(),
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

fn ids(out: QueryOutput) -> Vec<RowId> {
    match out {
        QueryOutput::Rows(hits) => hits.into_iter().map(|h| h.row).collect(),
        QueryOutput::Counts(_) => panic!("expected rows"),
    }
}

async fn owners_reach_only_their_tables(hosted: Hosted) {
    let index = hosted.index;
    let alice = Identity::generate().unwrap();
    let mallory = Identity::generate().unwrap();
    let schema = TableSchema {
        indexes: vec![(TEXT, IndexKind::FullText), (AGE, IndexKind::Range)],
    };
    let create = CreateTable {
        table: TABLE,
        schema,
    };
    index
        .create_table(alice.sign(create.clone()).unwrap())
        .await
        .unwrap();
    let mut ope = OpeEncoder::new(OpeKey::new([2; 32])).unwrap();
    let batch = Batch {
        ops: vec![
            RowOp::Put(row(1, "encrypted world table", 30, &mut ope)),
            RowOp::Put(row(2, "plain old table", 40, &mut ope)),
        ],
    };
    let receipt = index
        .apply(
            alice
                .sign(ApplyBatch {
                    table: TABLE,
                    batch,
                })
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(receipt.put, 2);

    let word = TokenKey::new([1; 32])
        .query_token("table", &TextOptions::default())
        .unwrap();
    let text = QueryTable {
        table: TABLE,
        query: Query::Text {
            column: TEXT,
            expr: TextExpr::Term(word),
            limit: 10,
        },
    };
    let found = ids(index
        .query(alice.sign(text.clone()).unwrap())
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
        ids(index.query(alice.sign(oldest).unwrap()).await.unwrap()),
        vec![RowId([2; 16])]
    );

    // Mallory names Alice's table: to her it does not exist, and she cannot write into it.
    let err = index
        .query(mallory.sign(text.clone()).unwrap())
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
    let err = index.apply(mallory.sign(wipe).unwrap()).await.unwrap_err();
    assert!(matches!(err, NetError::NotFound(_)), "{err}");

    // Catalogs: per owner, versioned.
    let v1 = index
        .put_catalog(
            alice
                .sign(PutCatalog {
                    expected_version: 0,
                    blob: b"sealed".to_vec(),
                })
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(v1, 1);
    let stale = PutCatalog {
        expected_version: 0,
        blob: b"other".to_vec(),
    };
    let err = index
        .put_catalog(alice.sign(stale).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Precondition(_)), "{err}");
    let mine = index
        .catalog(alice.sign(GetCatalog).unwrap())
        .await
        .unwrap();
    assert_eq!((mine.version, mine.blob.as_slice()), (1, &b"sealed"[..]));
    let theirs = index
        .catalog(mallory.sign(GetCatalog).unwrap())
        .await
        .unwrap();
    assert_eq!((theirs.version, theirs.blob.len()), (0, 0));

    // Replayed and garbage requests are refused; the table is unchanged. Mallory's query
    // names a table only Alice has; sent again, it is a replay.
    let forged = mallory.sign_with(text.clone(), now_ms(), [3; 16]);
    let replayed = forged.clone();
    let err = index.query(forged).await.unwrap_err();
    assert!(matches!(err, NetError::NotFound(_)), "{err}");
    let err = index.query(replayed).await.unwrap_err();
    assert!(matches!(err, NetError::Unauthenticated(_)), "{err}");
    let garbage =
        alice.sign_encoded::<ApplyBatch>(Bytes::from_static(&[0xff; 9]), now_ms(), [4; 16]);
    let err = index.apply(garbage).await.unwrap_err();
    assert!(matches!(err, NetError::BadRequest(_)), "{err}");
    let err = index
        .create_table(alice.sign(create).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Conflict(_)), "{err}");

    // A query on a column without the needed index says which index is missing.
    let no_index = QueryTable {
        table: TABLE,
        query: Query::Equal {
            column: AGE,
            values: vec![],
        },
    };
    let err = index
        .query(alice.sign(no_index).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, NetError::BadRequest(m) if m.contains("no equality (hash) index")),
        "{err}"
    );
    let found = ids(index.query(alice.sign(text).unwrap()).await.unwrap());
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
