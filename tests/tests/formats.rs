//! Tables written by earlier builds stay readable: what changed in how the client files its
//! data is still read the old way.
#![allow(clippy::unwrap_used, missing_docs)]

use wwt_client::db::{Client, ClientConfig};
use wwt_devnet::{LocalNet, Shape, Transport};
use wwt_engine::{Keystore, RowCipher, RowId as EngineRowId, SegmentManifest};
use wwt_index::{Batch, Query, QueryOutput, RowEntries, RowId, RowOp, TableId};
use wwt_net::Identity;
use wwt_net::index::{Append, ApplyBatch, GetHead, LogOp, QueryTable, entry_hash, open_entry};
use wwt_query::Value;

/// Manifests were filed under the first 16 bytes of their segment id before 2026-12 (the index
/// provider could link them to the ids trackers and the DHT see); they are now filed under a
/// PRF. A table whose manifests are all at the old place reads back whole.
#[tokio::test(flavor = "multi_thread")]
async fn manifests_filed_under_legacy_row_ids_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let shape = Shape {
        transport: Transport::Memory,
        index_providers: 1,
        seed: Some(wwt_tests::seed(0xf0_2026)),
        ..Shape::default()
    };
    let net = LocalNet::start(dir.path(), shape).await.unwrap();
    let keys = Keystore::generate();
    let config = || ClientConfig::new(net.endpoints.tracker_list().unwrap());
    let client = Client::connect(&keys, net.connector(), config())
        .await
        .unwrap();
    client
        .execute("CREATE TABLE t (id BIGINT PRIMARY KEY, body TEXT)")
        .await
        .unwrap();
    let values: String = (0..500)
        .map(|i| format!("({i}, 'row {i}')"))
        .collect::<Vec<_>>()
        .join(",");
    client
        .execute(&format!("INSERT INTO t VALUES {values}"))
        .await
        .unwrap();
    drop(client);

    // Move every manifest to where an earlier client filed it, as that client sealed it.
    let index = net
        .connector()
        .index(&net.endpoints.index_address().unwrap())
        .unwrap();
    let owner = Identity::from_secret(keys.identity.to_bytes());
    let segments = TableId(keys.master.table_id("\0segments").0);
    let hidden = keys.master.table("\0segments");
    let mut cipher = RowCipher::new(&hidden.row, hidden.id);
    let request = QueryTable {
        table: segments,
        query: Query::Scan {
            after: None,
            limit: 1000,
        },
    };
    let QueryOutput::Rows(hits) = index
        .query(owner.sign(request).unwrap())
        .await
        .unwrap()
        .value
    else {
        panic!("a scan answered with counts");
    };
    assert!(!hits.is_empty(), "the insert filed no manifest");
    let mut ops = Vec::new();
    for hit in hits {
        let bytes = cipher
            .open(EngineRowId(hit.row.0), hit.version, &hit.locator)
            .unwrap();
        let manifest = SegmentManifest::from_bytes(&bytes).unwrap();
        let legacy = RowId(manifest.segment.0[..16].try_into().unwrap());
        assert_ne!(
            legacy, hit.row,
            "a manifest is still filed by its segment id"
        );
        ops.push(RowOp::Put(RowEntries {
            row: legacy,
            version: 1,
            locator: cipher.seal(EngineRowId(legacy.0), 1, &bytes),
            equality: Vec::new(),
            range: Vec::new(),
            text: Vec::new(),
        }));
        ops.push(RowOp::Delete {
            row: hit.row,
            version: hit.version + 1,
        });
    }
    // The change goes in as the owner's next log entry, on its one replica.
    let head = index
        .head(
            owner
                .sign(GetHead {
                    owner: owner.node_id(),
                })
                .unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    let (_, last) = open_entry(&head).unwrap();
    let apply = Append {
        seq: last.seq + 1,
        prev: entry_hash(&head),
        replicas: last.replicas,
        op: LogOp::Apply(ApplyBatch {
            table: segments,
            batch: Batch { ops },
        }),
    };
    index.append(owner.sign(apply).unwrap()).await.unwrap();

    let fresh = Client::connect(&keys, net.connector(), config())
        .await
        .unwrap();
    let out = fresh
        .execute("SELECT count(*), min(body), max(id) FROM t")
        .await
        .unwrap();
    let rows = match out.as_slice() {
        [wwt_query::Outcome::Rows(r)] => r.rows.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        rows,
        vec![vec![
            Value::Int(500),
            Value::Text("row 0".into()),
            Value::Int(499)
        ]]
    );
    net.shutdown().await.unwrap();
}
