//! Store tests through the public API: a property test against a plaintext model, and the
//! refusals of bad input (nothing changed).
#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use proptest::prelude::*;
use wwt_index::ope::{u64_from_f64, u64_from_i64};
use wwt_index::{
    Batch, CatalogBlob, ColumnId, EqToken, IndexError, IndexKind, IndexStore, LocalIndexStore,
    OpeCiphertext, OpeEncoder, OpeKey, Order, OwnerId, Query, QueryOutput, RowEntries, RowId,
    RowOp, StoreOptions, TableId, TableSchema, TextExpr, TextOptions, TextOrder, Token, TokenKey,
};

const EQ: ColumnId = ColumnId(1);
const INT: ColumnId = ColumnId(2);
const FLOAT: ColumnId = ColumnId(3);
const TEXT: ColumnId = ColumnId(4);
const VOCAB: [&str; 6] = ["apple", "Berry", "cherry", "date", "elder", "fig"];
const OWNER: OwnerId = OwnerId([1; 32]);
const TABLE: TableId = TableId([2; 16]);

thread_local! {
    static OPE: RefCell<OpeEncoder> = RefCell::new(OpeEncoder::new(OpeKey::new([3; 32])).unwrap());
}

fn tokens() -> TokenKey {
    TokenKey::new([4; 32])
}

fn ope(v: u64) -> OpeCiphertext {
    OPE.with(|e| e.borrow_mut().encrypt(v).unwrap())
}

fn eq_token(v: u8) -> EqToken {
    tokens().eq_token(&[v])
}

fn word(w: &str) -> Token {
    tokens().query_token(w, &TextOptions::default()).unwrap()
}

fn schema() -> TableSchema {
    TableSchema {
        indexes: vec![
            (EQ, IndexKind::Equality),
            (INT, IndexKind::Range),
            (FLOAT, IndexKind::Range),
            (TEXT, IndexKind::FullText),
        ],
    }
}

/// One row's plaintext.
#[derive(Clone, Debug)]
struct Row {
    eq: u8,
    int: i64,
    float: f64,
    words: Vec<usize>,
}

fn row_id(i: u8) -> RowId {
    RowId(*blake3::hash(&[i]).as_bytes().first_chunk().unwrap())
}

fn entries(i: u8, version: u64, r: &Row) -> RowEntries {
    let text: Vec<&str> = r.words.iter().map(|&w| VOCAB[w]).collect();
    RowEntries {
        row: row_id(i),
        version,
        locator: vec![i, version as u8],
        equality: vec![(EQ, eq_token(r.eq))],
        range: vec![
            (INT, ope(u64_from_i64(r.int))),
            (FLOAT, ope(u64_from_f64(r.float))),
        ],
        text: vec![(
            TEXT,
            tokens().text_tokens(&text.join(" "), &TextOptions::default()),
        )],
    }
}

fn rows(out: QueryOutput) -> Vec<RowId> {
    match out {
        QueryOutput::Rows(hits) => hits.into_iter().map(|h| h.row).collect(),
        QueryOutput::Counts(_) => panic!("expected rows"),
    }
}

fn sorted(mut v: Vec<RowId>) -> Vec<RowId> {
    v.sort();
    v
}

fn int_strategy() -> impl Strategy<Value = i64> + Clone {
    prop_oneof![
        prop::sample::select(vec![
            i64::MIN,
            -65534,
            -65533,
            -1,
            0,
            1,
            32767,
            32768,
            65532,
            65533,
            i64::MAX
        ]),
        -3i64..3,
        any::<i64>(),
    ]
}

fn float_strategy() -> impl Strategy<Value = f64> + Clone {
    prop_oneof![
        prop::sample::select(vec![
            f64::NEG_INFINITY,
            -1.5,
            -0.0,
            0.0,
            0.5,
            1e300,
            f64::INFINITY
        ]),
        any::<f64>().prop_filter("not NaN", |f| !f.is_nan()),
    ]
}

fn row_strategy() -> impl Strategy<Value = Row> {
    (
        0u8..4,
        int_strategy(),
        float_strategy(),
        prop::collection::vec(0usize..VOCAB.len(), 0..5),
    )
        .prop_map(|(eq, int, float, words)| Row {
            eq,
            int,
            float,
            words,
        })
}

/// A write: put (Some) or delete (None) row `i`.
type Op = (u8, Option<Row>);

fn text_expr() -> impl Strategy<Value = TextExpr> {
    let leaf = (0usize..VOCAB.len()).prop_map(|w| TextExpr::Term(word(VOCAB[w])));
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(TextExpr::And),
            prop::collection::vec(inner.clone(), 0..3).prop_map(TextExpr::Or),
            inner.prop_map(|e| TextExpr::Not(Box::new(e))),
        ]
    })
}

fn eval_text(expr: &TextExpr, r: &Row) -> bool {
    match expr {
        TextExpr::Term(t) => r.words.iter().any(|&w| word(VOCAB[w]) == *t),
        TextExpr::And(xs) => xs.iter().all(|x| eval_text(x, r)),
        TextExpr::Or(xs) => xs.iter().any(|x| eval_text(x, r)),
        TextExpr::Not(x) => !eval_text(x, r),
    }
}

fn bound_strategy<T: Clone + std::fmt::Debug + 'static>(
    s: impl Strategy<Value = T> + Clone + 'static,
) -> impl Strategy<Value = Bound<T>> {
    prop_oneof![
        Just(Bound::Unbounded),
        s.clone().prop_map(Bound::Included),
        s.prop_map(Bound::Excluded),
    ]
}

fn in_bounds<T>(
    v: &T,
    lo: &Bound<T>,
    hi: &Bound<T>,
    cmp: impl Fn(&T, &T) -> std::cmp::Ordering,
) -> bool {
    use std::cmp::Ordering::*;
    let lo_ok = match lo {
        Bound::Unbounded => true,
        Bound::Included(l) => cmp(v, l) != Less,
        Bound::Excluded(l) => cmp(v, l) == Greater,
    };
    let hi_ok = match hi {
        Bound::Unbounded => true,
        Bound::Included(h) => cmp(v, h) != Greater,
        Bound::Excluded(h) => cmp(v, h) == Less,
    };
    lo_ok && hi_ok
}

fn map_bound<T, U>(b: &Bound<T>, f: impl Fn(&T) -> U) -> Bound<U> {
    match b {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(x) => Bound::Included(f(x)),
        Bound::Excluded(x) => Bound::Excluded(f(x)),
    }
}

/// Maps a generated (int, float) pair onto the unsigned order of one range column.
type KeyFn = fn(&(i64, f64)) -> u64;

#[derive(Clone, Debug)]
struct RangeCase {
    int: bool,
    lo: Bound<(i64, f64)>,
    hi: Bound<(i64, f64)>,
    desc: bool,
    limit: Option<usize>,
}

fn range_case() -> impl Strategy<Value = RangeCase> {
    let v = (int_strategy(), float_strategy());
    (
        any::<bool>(),
        bound_strategy(v.clone()),
        bound_strategy(v),
        any::<bool>(),
        prop::option::of(0usize..6),
    )
        .prop_map(|(int, lo, hi, desc, limit)| RangeCase {
            int,
            lo,
            hi,
            desc,
            limit,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Every index returns exactly what a plaintext evaluation of the live rows returns.
    #[test]
    fn indexes_agree_with_a_plaintext_model(
        batches in prop::collection::vec(prop::collection::vec((0u8..12, prop::option::weighted(0.8, row_strategy())), 1..10), 1..4),
        eq_values in prop::collection::vec(0u8..5, 1..3),
        ranges in prop::collection::vec(range_case(), 4),
        exprs in prop::collection::vec(text_expr(), 4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalIndexStore::open(dir.path()).unwrap();
        store.create_table(&OWNER, &TABLE, &schema()).unwrap();
        let mut model: BTreeMap<u8, Row> = BTreeMap::new();
        let mut versions: BTreeMap<u8, u64> = BTreeMap::new();
        for batch in &batches {
            let mut seen = BTreeSet::new();
            let ops: Vec<&Op> = batch.iter().filter(|(i, _)| seen.insert(*i)).collect();
            let mut wire = Batch::default();
            for (i, row) in ops {
                let v = versions.entry(*i).or_default();
                *v += 1;
                match row {
                    Some(r) => {
                        wire.ops.push(RowOp::Put(entries(*i, *v, r)));
                        model.insert(*i, r.clone());
                    }
                    None => {
                        wire.ops.push(RowOp::Delete { row: row_id(*i), version: *v });
                        model.remove(i);
                    }
                }
            }
            store.apply(&OWNER, &TABLE, &wire).unwrap();
        }

        // Primary map.
        let all: Vec<RowId> = (0..12).map(row_id).collect();
        let got = match store.query(&OWNER, &TABLE, &Query::Get { rows: all }).unwrap() {
            QueryOutput::Rows(h) => h.into_iter().map(|h| (h.row, h.version)).collect::<Vec<_>>(),
            QueryOutput::Counts(_) => panic!("expected rows"),
        };
        let want: Vec<_> = model.keys().map(|i| (row_id(*i), versions[i])).collect();
        prop_assert_eq!(sorted_pairs(got), sorted_pairs(want.clone()));

        // Full scan, a page of 3 at a time: every live row once, in row-id order.
        let mut scanned = Vec::new();
        let mut after = None;
        loop {
            let page = match store.query(&OWNER, &TABLE, &Query::Scan { after, limit: 3 }).unwrap() {
                QueryOutput::Rows(h) => h,
                QueryOutput::Counts(_) => panic!("expected rows"),
            };
            let Some(last) = page.last() else { break };
            after = Some(last.row);
            scanned.extend(page.iter().map(|h| (h.row, h.version)));
        }
        prop_assert_eq!(scanned, sorted_pairs(want));

        // Equality: = and IN.
        let values: Vec<EqToken> = eq_values.iter().map(|v| eq_token(*v)).collect();
        let got = rows(store.query(&OWNER, &TABLE, &Query::Equal { column: EQ, values }).unwrap());
        let want: Vec<RowId> = model.iter().filter(|(_, r)| eq_values.contains(&r.eq)).map(|(i, _)| row_id(*i)).collect();
        prop_assert_eq!(got, sorted(want));

        // Counts per value.
        let QueryOutput::Counts(counts) = store.query(&OWNER, &TABLE, &Query::CountByValue { column: EQ, values: None }).unwrap() else { panic!() };
        let mut want: BTreeMap<EqToken, u64> = BTreeMap::new();
        for r in model.values() {
            *want.entry(eq_token(r.eq)).or_default() += 1;
        }
        prop_assert_eq!(counts.into_iter().map(|c| (c.value, c.count)).collect::<BTreeMap<_, _>>(), want.clone());
        let listed: Vec<EqToken> = eq_values.iter().map(|v| eq_token(*v)).collect();
        let query = Query::CountByValue { column: EQ, values: Some(listed.clone()) };
        let QueryOutput::Counts(counts) = store.query(&OWNER, &TABLE, &query).unwrap() else { panic!() };
        let want_listed: BTreeMap<EqToken, u64> = listed.iter().map(|t| (*t, want.get(t).copied().unwrap_or(0))).collect();
        prop_assert_eq!(counts.into_iter().map(|c| (c.value, c.count)).collect::<BTreeMap<_, _>>(), want_listed);

        // Ranges with bounds, direction and limit.
        for case in &ranges {
            let (column, key): (ColumnId, KeyFn) = if case.int {
                (INT, |v| u64_from_i64(v.0))
            } else {
                (FLOAT, |v| u64_from_f64(v.1))
            };
            let query = Query::Range {
                column,
                lower: map_bound(&case.lo, |v| ope(key(v))),
                upper: map_bound(&case.hi, |v| ope(key(v))),
                order: if case.desc { Order::Desc } else { Order::Asc },
                limit: case.limit,
            };
            let got = rows(store.query(&OWNER, &TABLE, &query).unwrap());
            let mut want: Vec<(u64, RowId)> = model
                .iter()
                .map(|(i, r)| (key(&(r.int, r.float)), row_id(*i)))
                .filter(|(k, _)| in_bounds(k, &map_bound(&case.lo, key), &map_bound(&case.hi, key), |a, b| a.cmp(b)))
                .collect();
            want.sort();
            if case.desc {
                want.reverse();
            }
            want.truncate(case.limit.unwrap_or(usize::MAX));
            prop_assert_eq!(got, want.into_iter().map(|(_, r)| r).collect::<Vec<_>>(), "{:?}", case);
        }

        // Full-text boolean expressions.
        for expr in &exprs {
            let got = rows(store.query(&OWNER, &TABLE, &Query::Text { column: TEXT, expr: expr.clone(), limit: 100, order: TextOrder::Score }).unwrap());
            let want = sorted(model.iter().filter(|(_, r)| eval_text(expr, r)).map(|(i, _)| row_id(*i)).collect());
            prop_assert_eq!(sorted(got), want.clone(), "{:?}", expr);
            // Every match again, in row-id pages of 3: each row once, in order.
            let (mut paged, mut after) = (Vec::new(), None);
            loop {
                let order = TextOrder::Rows { after };
                let page = rows(store.query(&OWNER, &TABLE, &Query::Text { column: TEXT, expr: expr.clone(), limit: 3, order }).unwrap());
                paged.extend_from_slice(&page);
                match page.last() {
                    Some(last) if page.len() == 3 => after = Some(*last),
                    _ => break,
                }
            }
            prop_assert_eq!(paged, want, "pages of {:?}", expr);
        }
    }
}

fn sorted_pairs(mut v: Vec<(RowId, u64)>) -> Vec<(RowId, u64)> {
    v.sort();
    v
}

/// Opens the store in `dir` again after a close. sled lets go of its file lock when its
/// flusher thread ends, a moment after the database is dropped: the open is retried while
/// the lock is held, for 10 s at most.
fn reopen(dir: &std::path::Path) -> LocalIndexStore {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match LocalIndexStore::open(dir) {
            Ok(store) => return store,
            Err(e) if e.to_string().contains("lock") && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("reopening {}: {e}", dir.display()),
        }
    }
}

fn store_with_rows() -> (tempfile::TempDir, LocalIndexStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalIndexStore::open(dir.path()).unwrap();
    store.create_table(&OWNER, &TABLE, &schema()).unwrap();
    let ops = (0..5u8)
        .map(|i| {
            let r = Row {
                eq: i % 2,
                int: i64::from(i) * 10 - 20,
                float: f64::from(i),
                words: vec![usize::from(i), 0],
            };
            RowOp::Put(entries(i, 1, &r))
        })
        .collect();
    store.apply(&OWNER, &TABLE, &Batch { ops }).unwrap();
    (dir, store)
}

fn everything(store: &LocalIndexStore, owner: &OwnerId) -> Vec<RowId> {
    rows(
        store
            .query(
                owner,
                &TABLE,
                &Query::Range {
                    column: INT,
                    lower: Bound::Unbounded,
                    upper: Bound::Unbounded,
                    order: Order::Asc,
                    limit: None,
                },
            )
            .unwrap(),
    )
}

#[test]
fn catalogs_are_per_owner_and_versioned() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalIndexStore::open(dir.path()).unwrap();
    let other = OwnerId([9; 32]);
    assert_eq!(store.catalog(&OWNER).unwrap(), CatalogBlob::default());
    assert_eq!(store.put_catalog(&OWNER, 0, b"first").unwrap(), 1);
    assert_eq!(store.put_catalog(&OWNER, 1, b"second").unwrap(), 2);

    // A writer that read version 1 lost the race: refused, the catalog unchanged.
    let err = store.put_catalog(&OWNER, 1, b"stale").unwrap_err();
    assert!(
        matches!(
            err,
            IndexError::CatalogConflict {
                expected: 1,
                stored: 2
            }
        ),
        "{err}"
    );
    let too_big = vec![0; wwt_index::MAX_CATALOG + 1];
    assert!(matches!(
        store.put_catalog(&OWNER, 2, &too_big),
        Err(IndexError::InvalidRequest(_))
    ));
    assert_eq!(store.catalog(&other).unwrap(), CatalogBlob::default());
    // Closed, as the other reopen here: close flushes sled, so its background log writes are
    // done before the reopen. After a bare drop one of them (on sled's own thread pool, with
    // the database file) still held its lock once: "could not acquire lock".
    store.close().unwrap();

    let store = LocalIndexStore::open(dir.path()).unwrap();
    let got = store.catalog(&OWNER).unwrap();
    assert_eq!((got.version, got.blob.as_slice()), (2, &b"second"[..]));
}

#[test]
fn scan_limits_are_bounded() {
    let (_dir, store) = store_with_rows();
    for limit in [0, wwt_index::MAX_LIMIT + 1] {
        let err = store
            .query(&OWNER, &TABLE, &Query::Scan { after: None, limit })
            .unwrap_err();
        assert!(matches!(err, IndexError::InvalidRequest(_)), "{err}");
    }
    let all = rows(
        store
            .query(
                &OWNER,
                &TABLE,
                &Query::Scan {
                    after: None,
                    limit: 100,
                },
            )
            .unwrap(),
    );
    assert_eq!(all, sorted((0..5).map(row_id).collect()));
}

#[test]
fn min_max_and_order_by_limit() {
    let (_dir, store) = store_with_rows();
    let q = |order, limit| Query::Range {
        column: INT,
        lower: Bound::Unbounded,
        upper: Bound::Unbounded,
        order,
        limit,
    };
    assert_eq!(
        rows(
            store
                .query(&OWNER, &TABLE, &q(Order::Asc, Some(1)))
                .unwrap()
        ),
        [row_id(0)]
    );
    assert_eq!(
        rows(
            store
                .query(&OWNER, &TABLE, &q(Order::Desc, Some(1)))
                .unwrap()
        ),
        [row_id(4)]
    );
    assert_eq!(
        rows(
            store
                .query(&OWNER, &TABLE, &q(Order::Desc, Some(3)))
                .unwrap()
        ),
        [row_id(4), row_id(3), row_id(2)]
    );
}

#[test]
fn bm25_ranks_more_occurrences_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalIndexStore::open(dir.path()).unwrap();
    store.create_table(&OWNER, &TABLE, &schema()).unwrap();
    let text = |i: u8, s: &str| RowEntries {
        row: row_id(i),
        version: 1,
        locator: vec![i],
        equality: vec![],
        range: vec![],
        text: vec![(TEXT, tokens().text_tokens(s, &TextOptions::default()))],
    };
    let ops = vec![
        RowOp::Put(text(0, "apple berry cherry date")),
        RowOp::Put(text(1, "apple apple apple berry")),
        RowOp::Put(text(2, "fig fig fig fig")),
    ];
    store.apply(&OWNER, &TABLE, &Batch { ops }).unwrap();
    let out = store
        .query(
            &OWNER,
            &TABLE,
            &Query::Text {
                column: TEXT,
                expr: TextExpr::Term(word("APPLE")),
                limit: 10,
                order: TextOrder::Score,
            },
        )
        .unwrap();
    let QueryOutput::Rows(hits) = out else {
        panic!()
    };
    assert_eq!(
        hits.iter().map(|h| h.row).collect::<Vec<_>>(),
        [row_id(1), row_id(0)]
    );
    assert!(hits[0].score > hits[1].score);
    assert_eq!(hits[0].locator, [1]);
}

#[test]
fn updates_move_entries_and_survive_reopen() {
    let (dir, store) = store_with_rows();
    let moved = Row {
        eq: 3,
        int: 1000,
        float: -1.0,
        words: vec![5],
    };
    let update = Batch {
        ops: vec![
            RowOp::Put(entries(0, 2, &moved)),
            RowOp::Delete {
                row: row_id(1),
                version: 2,
            },
        ],
    };
    let receipt = store.apply(&OWNER, &TABLE, &update).unwrap();
    assert_eq!((receipt.put, receipt.deleted, receipt.unchanged), (1, 1, 0));
    // A retried batch is a no-op.
    let receipt = store.apply(&OWNER, &TABLE, &update).unwrap();
    assert_eq!((receipt.put, receipt.deleted, receipt.unchanged), (0, 0, 2));
    store.close().unwrap();
    let store = reopen(dir.path());
    let eq = |v| {
        rows(
            store
                .query(
                    &OWNER,
                    &TABLE,
                    &Query::Equal {
                        column: EQ,
                        values: vec![eq_token(v)],
                    },
                )
                .unwrap(),
        )
    };
    assert_eq!(eq(3), [row_id(0)]);
    assert_eq!(sorted(eq(0)), sorted(vec![row_id(2), row_id(4)]));
    assert_eq!(eq(1), [row_id(3)]);
    assert_eq!(*everything(&store, &OWNER).last().unwrap(), row_id(0));
    let text = |w| {
        sorted(rows(
            store
                .query(
                    &OWNER,
                    &TABLE,
                    &Query::Text {
                        column: TEXT,
                        expr: TextExpr::Term(word(w)),
                        limit: 10,
                        order: TextOrder::Score,
                    },
                )
                .unwrap(),
        ))
    };
    assert_eq!(text("apple"), sorted(vec![row_id(2), row_id(3), row_id(4)]));
    assert_eq!(text("fig"), [row_id(0)]);
}

#[test]
fn another_owners_table_reads_and_changes_nothing() {
    let (_dir, store) = store_with_rows();
    let mallory = OwnerId([9; 32]);
    assert!(matches!(
        store.query(
            &mallory,
            &TABLE,
            &Query::Get {
                rows: vec![row_id(0)]
            }
        ),
        Err(IndexError::UnknownTable { .. })
    ));
    let del = Batch {
        ops: vec![RowOp::Delete {
            row: row_id(0),
            version: 9,
        }],
    };
    assert!(matches!(
        store.apply(&mallory, &TABLE, &del),
        Err(IndexError::UnknownTable { .. })
    ));
    // Mallory's own table of the same id is a separate namespace.
    store.create_table(&mallory, &TABLE, &schema()).unwrap();
    assert!(everything(&store, &mallory).is_empty());
    store.apply(&mallory, &TABLE, &del).unwrap();
    assert_eq!(everything(&store, &OWNER).len(), 5);
    assert!(matches!(
        store.create_table(&OWNER, &TABLE, &schema()),
        Err(IndexError::TableExists { .. })
    ));
}

#[test]
fn bad_requests_are_refused_and_change_nothing() {
    let (_dir, store) = store_with_rows();
    let before = everything(&store, &OWNER);
    let r = Row {
        eq: 0,
        int: 5,
        float: 0.0,
        words: vec![],
    };

    // A query on a column without the needed index.
    let err = store
        .query(
            &OWNER,
            &TABLE,
            &Query::Equal {
                column: INT,
                values: vec![eq_token(0)],
            },
        )
        .unwrap_err();
    assert!(matches!(
        err,
        IndexError::MissingIndex {
            column: INT,
            kind: IndexKind::Equality
        }
    ));
    assert!(err.to_string().contains("no equality (hash) index"));
    let err = store
        .query(
            &OWNER,
            &TABLE,
            &Query::Text {
                column: EQ,
                expr: TextExpr::And(vec![]),
                limit: 1,
                order: TextOrder::Score,
            },
        )
        .unwrap_err();
    assert!(matches!(
        err,
        IndexError::MissingIndex {
            kind: IndexKind::FullText,
            ..
        }
    ));
    assert!(matches!(
        store.query(
            &OWNER,
            &TABLE,
            &Query::Text {
                column: TEXT,
                expr: TextExpr::And(vec![]),
                limit: 0,
                order: TextOrder::Score
            }
        ),
        Err(IndexError::InvalidRequest(_))
    ));

    // A batch whose last row writes to an unindexed column: the good rows before it are not applied.
    let mut bad = entries(7, 1, &r);
    bad.range.push((ColumnId(99), ope(1)));
    let batch = Batch {
        ops: vec![
            RowOp::Put(entries(6, 1, &r)),
            RowOp::Delete {
                row: row_id(0),
                version: 5,
            },
            RowOp::Put(bad),
        ],
    };
    assert!(matches!(
        store.apply(&OWNER, &TABLE, &batch),
        Err(IndexError::MissingIndex {
            column: ColumnId(99),
            ..
        })
    ));

    // Stale versions and duplicate rows.
    let stale = Batch {
        ops: vec![RowOp::Put(entries(6, 1, &r)), RowOp::Put(entries(1, 1, &r))],
    };
    assert!(matches!(
        store.apply(&OWNER, &TABLE, &stale),
        Err(IndexError::StaleVersion {
            stored: 1,
            got: 1,
            ..
        })
    ));
    let dup = Batch {
        ops: vec![
            RowOp::Put(entries(6, 1, &r)),
            RowOp::Delete {
                row: row_id(6),
                version: 2,
            },
        ],
    };
    assert!(matches!(
        store.apply(&OWNER, &TABLE, &dup),
        Err(IndexError::InvalidRequest(_))
    ));
    let mut two = entries(6, 1, &r);
    two.equality.push((EQ, eq_token(1)));
    assert!(matches!(
        store.apply(
            &OWNER,
            &TABLE,
            &Batch {
                ops: vec![RowOp::Put(two)]
            }
        ),
        Err(IndexError::InvalidRequest(_))
    ));

    // Malformed tokens and ciphertexts from the wire.
    assert!(matches!(
        EqToken::try_from(&[0u8; 3][..]),
        Err(IndexError::MalformedToken { .. })
    ));
    assert!(matches!(
        Token::from_term("not a token"),
        Err(IndexError::MalformedToken { .. })
    ));
    assert!(matches!(
        OpeCiphertext::try_from(&[0u8; 16][..]),
        Err(IndexError::MalformedToken { .. })
    ));
    assert!(matches!(
        RowId::try_from(&[0u8; 32][..]),
        Err(IndexError::MalformedToken { .. })
    ));

    assert_eq!(everything(&store, &OWNER), before);
    let got = rows(
        store
            .query(
                &OWNER,
                &TABLE,
                &Query::Get {
                    rows: vec![row_id(0), row_id(6)],
                },
            )
            .unwrap(),
    );
    assert_eq!(got, [row_id(0)]);
}

#[test]
fn idle_namespaces_are_closed_and_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        max_open_namespaces: 1,
        ..StoreOptions::default()
    };
    let store = LocalIndexStore::open_with(dir.path(), options).unwrap();
    let owners = [OWNER, OwnerId([5; 32]), OwnerId([6; 32])];
    for owner in &owners {
        store.create_table(owner, &TABLE, &schema()).unwrap();
    }
    let r = |words| Row {
        eq: 0,
        int: 1,
        float: 1.0,
        words,
    };
    for round in 0..3u8 {
        for (k, owner) in owners.iter().enumerate() {
            let row = entries(round, 1, &r(vec![k]));
            let batch = Batch {
                ops: vec![RowOp::Put(row)],
            };
            store.apply(owner, &TABLE, &batch).unwrap();
            assert_eq!(store.open_namespaces(), 1);
        }
    }
    for (k, owner) in owners.iter().enumerate() {
        let query = Query::Text {
            column: TEXT,
            expr: TextExpr::Term(word(VOCAB[k])),
            limit: 10,
            order: TextOrder::Score,
        };
        let got = sorted(rows(store.query(owner, &TABLE, &query).unwrap()));
        assert_eq!(got, sorted((0..3).map(row_id).collect()));
        assert_eq!(everything(&store, owner).len(), 3);
    }
}

#[test]
fn dropped_tables_are_gone_and_can_be_recreated_empty() {
    let (_dir, store) = store_with_rows();
    let other = OwnerId([7; 32]);
    store.create_table(&other, &TABLE, &schema()).unwrap();
    assert!(matches!(
        store.drop_table(&OwnerId([8; 32]), &TABLE),
        Err(IndexError::UnknownTable { .. })
    ));
    store.drop_table(&OWNER, &TABLE).unwrap();
    assert!(matches!(
        store.query(
            &OWNER,
            &TABLE,
            &Query::Get {
                rows: vec![row_id(0)]
            }
        ),
        Err(IndexError::UnknownTable { .. })
    ));
    assert!(matches!(
        store.drop_table(&OWNER, &TABLE),
        Err(IndexError::UnknownTable { .. })
    ));
    // The other owner's table of the same id is untouched.
    assert_eq!(store.schema(&other, &TABLE).unwrap(), schema());
    store.create_table(&OWNER, &TABLE, &schema()).unwrap();
    assert!(everything(&store, &OWNER).is_empty());
    let query = Query::Text {
        column: TEXT,
        expr: TextExpr::Term(word("apple")),
        limit: 10,
        order: TextOrder::Score,
    };
    assert!(rows(store.query(&OWNER, &TABLE, &query).unwrap()).is_empty());
}

#[test]
fn concurrent_writers_and_readers_agree() {
    let (_dir, store) = store_with_rows();
    let other = OwnerId([7; 32]);
    store.create_table(&other, &TABLE, &schema()).unwrap();
    let row = Row {
        eq: 2,
        int: 7,
        float: 7.0,
        words: vec![1],
    };
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let (store, row) = (&store, &row);
            s.spawn(move || {
                let owner = if t % 2 == 0 { OWNER } else { other };
                for i in 0..5u8 {
                    let id = 100 + t * 10 + i;
                    let batch = Batch {
                        ops: vec![RowOp::Put(entries(id, 1, row))],
                    };
                    store.apply(&owner, &TABLE, &batch).unwrap();
                    let query = Query::Equal {
                        column: EQ,
                        values: vec![eq_token(2)],
                    };
                    assert!(
                        rows(store.query(&owner, &TABLE, &query).unwrap()).contains(&row_id(id))
                    );
                }
            });
        }
    });
    assert_eq!(everything(&store, &OWNER).len(), 5 + 10);
    assert_eq!(everything(&store, &other).len(), 10);
}
