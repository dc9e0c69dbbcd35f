//! Known-answer vectors for what the index stores: word normalization, full-text and equality
//! tokens, their full-text terms, OPE ciphertexts of every mapped type, and the records the
//! local store keeps in sled.
//!
//! Every input is a constant and every expected value was printed by this code when it was
//! committed. Tokens and ciphertexts are stored by index providers and recomputed by clients at
//! query time, so a vector that fails means old indexes no longer answer: keep the old
//! derivation (version the new one), never just paste the new value.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::ops::Bound;

use rust_stemmers::Algorithm;
use wwt_index::ope::{u64_from_f64, u64_from_i64, u64_from_text_prefix, u64_from_timestamp_micros};
use wwt_index::{
    Batch, ColumnId, IndexKind, IndexStore, LocalIndexStore, OpeCiphertext, OpeEncoder, OpeKey,
    Order, OwnerId, Query, QueryOutput, RowEntries, RowId, RowOp, TableId, TableSchema,
    TextOptions, Token, TokenKey,
};

#[path = "../../tests/support/pin.rs"]
#[macro_use]
mod pin;

/// The token key of every token vector: bytes 0, 1, …, 31.
fn token_key() -> TokenKey {
    TokenKey::new(std::array::from_fn(|i| i as u8))
}

/// The OPE key of every ciphertext vector: bytes 32, 33, …, 63.
fn ope_key() -> OpeKey {
    OpeKey::new(std::array::from_fn(|i| 32 + i as u8))
}

const TEXT: &str =
    "The QUICK brown fox's café—naïve Grüße, 東京タワー 2026 e-mail: a.b@example.com";
const STEMMED: &str = "Running runners RAN easily; connections connected";
const GERMAN: &str = "Häuser häuslich Bücher";

// The normalized words of `TEXT` (Unicode word boundaries, lowercase), joined by `|`.
const WORDS: &str =
    "the|quick|brown|fox's|café|naïve|grüße|東|京|タワー|2026|e|mail|a.b|example.com";
// The words of `STEMMED` under the English Snowball stemmer.
const WORDS_ENGLISH: &str = "run|runner|ran|easili|connect|connect";
// The words of `GERMAN` under the German Snowball stemmer.
const WORDS_GERMAN: &str = "haus|hauslich|buch";

#[test]
fn word_normalization() {
    let plain = TextOptions::default();
    pin_str!(WORDS, plain.words(TEXT).join("|"));
    let english = TextOptions {
        stemmer: Some(Algorithm::English),
    };
    pin_str!(WORDS_ENGLISH, english.words(STEMMED).join("|"));
    let german = TextOptions {
        stemmer: Some(Algorithm::German),
    };
    pin_str!(WORDS_GERMAN, german.words(GERMAN).join("|"));
}

// Token of the word `café` (keyed BLAKE3 of 0x01 ‖ word, first 16 bytes).
const WORD_TOKEN: &str = "f02b65accc983d13fab692a794e455ee";
// That token as a full-text term (22 characters of unpadded base64url), as tantivy stores it.
const WORD_TERM: &str = "8CtlrMyYPRP6tpKnlORV7g";
// The tokens of `TEXT`, sorted (a bag of words), concatenated.
const TEXT_TOKENS: &str = concat!(
    "0d353241be6f9134a32870ae16c5d01b1642bf0c7be4a03bbbc06f52c9f1da57",
    "67e6b8bb046a1321ec24087420b810636c76d187ab4183d2a495e9c6976449f7",
    "7f520e7a80613dd2b3319344dd81619c9f879f56b23f5468d904f619f6edc019",
    "a7e1878503d7d65d82c6edf430c919e6afe0b67425d097ad9545108153e07f31",
    "b3da345d7fe683c62c2730f7d7862594c25627e33f9f8168f7f105e8f8e1146d",
    "cd0d2a10ef2c26fda92f270100d77bd9cde1a0486a3e75a323e6e5a0592b1078",
    "d2f184f6ba9053811b510a739768a10cd57a53760d9d9445f2d35bd36e60092b",
    "f02b65accc983d13fab692a794e455ee",
);
// The tokens of `STEMMED`, English stemming, sorted, concatenated.
const STEMMED_TOKENS: &str = concat!(
    "024640338cf9e1b77f89b87ccc7606d6024640338cf9e1b77f89b87ccc7606d6",
    "6a21601556a75464fbf0e8a8a2664178a508513d22d77ab7ab6c5690bf652e5c",
    "c1d87886160ab19b8906a6d26cb1e56af197949f605d988eab41ca32731f08b0",
);
// The query token of `CONNECTING` under English stemming (= the token of `connect`).
const QUERY_TOKEN: &str = "024640338cf9e1b77f89b87ccc7606d6";

#[test]
fn word_tokens_and_terms() {
    let key = token_key();
    let token = key.word_token("café");
    pin!(WORD_TOKEN, token.0);
    pin_str!(WORD_TERM, token.to_term());
    assert_eq!(Token::from_term(WORD_TERM).unwrap(), token);
    let plain = TextOptions::default();
    pin!(TEXT_TOKENS, joined(&key.text_tokens(TEXT, &plain)));
    let english = TextOptions {
        stemmer: Some(Algorithm::English),
    };
    pin!(STEMMED_TOKENS, joined(&key.text_tokens(STEMMED, &english)));
    let query = key.query_token("CONNECTING", &english).unwrap();
    pin!(QUERY_TOKEN, query.0);
    assert_eq!(query, key.word_token("connect"));
}

/// A token list as one byte string.
fn joined(tokens: &[Token]) -> Vec<u8> {
    tokens.iter().flat_map(|t| t.0).collect()
}

// Equality tokens (keyed BLAKE3 of 0x02 ‖ value, first 16 bytes) of the canonical key bytes
// `wwt_query::encode_key` gives, in order: BIGINT 42, BIGINT -1, BIGINT i64::MIN, TEXT
// 'alice', TEXT 'Ünïcödé', TIMESTAMP 2026-01-01T00:00:00Z, BLOB x'0001ff', empty bytes.
const EQ_TOKENS: &str = concat!(
    "5cab5d5f0ac8d29010c27d265affb71e f2164bbd0cc85ee1447a84856575bf21 ",
    "dc911e35b9734050a759575643973615 0020842a67b6951b89fc8baa26a847a5 ",
    "98aa883716df3701538e6158c21b3940 c6c59d6d9a3e0be38ccbc4cd0aa3d02e ",
    "5e4a8ba4fc92d9d5ba525484a0dce9ba a3668d08521b738ebb7be59990367a73",
);

/// The canonical bytes of the values above, as `wwt_query::encode_key` writes them (pinned
/// there too).
fn eq_values() -> Vec<Vec<u8>> {
    let int = |i: i64| [&[1u8][..], &((i as u64) ^ (1 << 63)).to_be_bytes()].concat();
    let ts = |t: i64| [&[5u8][..], &((t as u64) ^ (1 << 63)).to_be_bytes()].concat();
    vec![
        int(42),
        int(-1),
        int(i64::MIN),
        [&[3u8][..], b"alice"].concat(),
        [&[3u8][..], "Ünïcödé".as_bytes()].concat(),
        ts(1_767_225_600_000_000),
        vec![6, 0x00, 0x01, 0xff],
        Vec::new(),
    ]
}

#[test]
fn equality_tokens() {
    let key = token_key();
    let tokens: Vec<String> = eq_values()
        .iter()
        .map(|v| hex::encode(key.eq_token(v).0))
        .collect();
    pin_str!(EQ_TOKENS, tokens.join(" "));
}

/// Values of every type, mapped onto unsigned order, with their names.
fn ordered_values() -> Vec<(&'static str, u64)> {
    vec![
        ("int i64::MIN", u64_from_i64(i64::MIN)),
        ("int -1", u64_from_i64(-1)),
        ("int 0", u64_from_i64(0)),
        ("int 42", u64_from_i64(42)),
        ("int i64::MAX", u64_from_i64(i64::MAX)),
        ("double -inf", u64_from_f64(f64::NEG_INFINITY)),
        ("double -1.5", u64_from_f64(-1.5)),
        ("double 0", u64_from_f64(0.0)),
        ("double 3.25", u64_from_f64(3.25)),
        ("double 1e300", u64_from_f64(1e300)),
        ("double +inf", u64_from_f64(f64::INFINITY)),
        (
            "ts 1969-12-31T23:59:59Z",
            u64_from_timestamp_micros(-1_000_000),
        ),
        (
            "ts 2026-01-01T00:00:00Z",
            u64_from_timestamp_micros(1_767_225_600_000_000),
        ),
        ("text ''", u64_from_text_prefix("")),
        ("text 'a'", u64_from_text_prefix("a")),
        ("text 'alice'", u64_from_text_prefix("alice")),
        (
            "text 'alice@example.com'",
            u64_from_text_prefix("alice@example.com"),
        ),
        ("text 'Ünïcödé'", u64_from_text_prefix("Ünïcödé")),
        ("u64 0", 0),
        ("u64 max", u64::MAX),
    ]
}

// The unsigned order of each value above (sign flip, IEEE total order, text prefix), in hex.
const ORDERED: &str = concat!(
    "0000000000000000 7fffffffffffffff 8000000000000000 800000000000002a ffffffffffffffff ",
    "000fffffffffffff 4007ffffffffffff 8000000000000000 c00a000000000000 fe37e43c8800759c ",
    "fff0000000000000 7ffffffffff0bdc0 8006474846204000 0000000000000000 6100000000000000 ",
    "616c696365000000 616c696365406578 c39c6ec3af63c3b6 0000000000000000 ffffffffffffffff",
);
// The OPE ciphertext of each value above: five big-endian u32 limb ciphertexts.
const OPE_CIPHERTEXTS: &str = concat!(
    "00001e830001670f0000f440000022b70000979f 00066fe0801ba4b97f7b03747fd8eb908072b227 ",
    "00080fc900007e420002e3dd0002901300018dd2 00080fc900007e420002e3dd00029013002d78b3 ",
    "0015c9437fd6a0da8054b4fa7f97ccc47fee01de 00001e83007d8ba57fa65ef8806548f9801b4869 ",
    "00024ffe003bd8477f3e572780528c5e7fadc6a2 00080fc900007e420002e3dd0002901300018dd2 ",
    "00123c5b004d11390000ddfe0003a6870001332e 0015c94371d1234f10c0cd4b0ff827ae754aacb1 ",
    "0015c9437f47e20a0000e7fe000173a300004766 00066fe0801ba4b97f7b03747fbbf9b43d77eabc ",
    "00080fc9003a85ca1c76b30b0c1fcf33400c1b8c 00001e830001670f0000f440000022b70000979f ",
    "00059b4707bdc9c6000082970001df1e000074d8 00059b470b2655cc2630823a4a9a6a3600009081 ",
    "00059b470b2655cc2630823a4b1ae2f86531144c 00123c5b1cc241673b43c4225e4dd6ae4400f072 ",
    "00001e830001670f0000f440000022b70000979f 0015c9437fd6a0da8054b4fa7f97ccc47fee01de",
);
// BLAKE3 of the ciphertexts of 300 values encrypted as one batch (the path spread over cores).
const OPE_BATCH: &str = "7dcbb3dd37ec8e3b3d770a462250caeb519a8e18462f99246a41d3b67ace6861";

#[test]
fn ope_ciphertexts() {
    let values = ordered_values();
    let ordered: Vec<String> = values.iter().map(|(_, v)| format!("{v:016x}")).collect();
    pin_str!(ORDERED, ordered.join(" "));

    let mut encoder = OpeEncoder::new(ope_key()).unwrap();
    let cts: Vec<String> = values
        .iter()
        .map(|(_, v)| hex::encode(encoder.encrypt(*v).unwrap().0))
        .collect();
    pin_str!(OPE_CIPHERTEXTS, cts.join(" "));
    // An encoder with a tiny cache gives the same ciphertexts.
    let mut uncached = OpeEncoder::with_cache(ope_key(), 2).unwrap();
    for ((name, v), ct) in values.iter().zip(&cts) {
        assert_eq!(&hex::encode(uncached.encrypt(*v).unwrap().0), ct, "{name}");
    }

    let batch: Vec<u64> = (0..300u64)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (i % 50))
        .collect();
    let out = OpeEncoder::new(ope_key())
        .unwrap()
        .encrypt_batch(&batch)
        .unwrap();
    let bytes: Vec<u8> = out.iter().flat_map(|c| c.0).collect();
    pin!(OPE_BATCH, blake3::hash(&bytes).as_bytes());
}

const OWNER: OwnerId = OwnerId([0x0a; 32]);
const TABLE: TableId = TableId([0x0b; 16]);
const EQ: ColumnId = ColumnId(1);
const RANGE: ColumnId = ColumnId(2);
const TEXT_COLUMN: ColumnId = ColumnId(3);
const LIVE: RowId = RowId([0x11; 16]);
const DELETED: RowId = RowId([0x22; 16]);

fn schema() -> TableSchema {
    TableSchema {
        indexes: vec![
            (EQ, IndexKind::Equality),
            (RANGE, IndexKind::Range),
            (TEXT_COLUMN, IndexKind::FullText),
        ],
    }
}

/// The sled tree of kind `kind` (`p` primary, `e` equality, `r` range) of the namespace.
fn tree_name(kind: u8) -> Vec<u8> {
    [&[kind][..], &OWNER.0, &TABLE.0].concat()
}

// `catalog` tree: owner ‖ table → the schema, (column u32 BE ‖ kind byte)*.
const CATALOG_KEY: &str = concat!(
    "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a",
    "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
);
const CATALOG_VALUE: &str = "000000010100000002020000000303";
// `owners` tree: owner → catalog version (u64 BE) ‖ catalog blob.
const OWNER_VALUE: &str = "00000000000000017365616c656420636174616c6f67";
// Primary tree: row → version (u64 BE) ‖ flags ‖ locator (u32 BE length) ‖ equality entries ‖
// range entries (u32 BE counts, column u32 BE ‖ token or ciphertext).
const PRIMARY_LIVE: &str = concat!(
    "0000000000000003010000000e7365616c6564206c6f6361746f720000000100",
    "0000010020842a67b6951b89fc8baa26a847a5000000010000000200080fc900",
    "007e420002e3dd00029013002d78b3",
);
// A tombstone: version, deleted flag, no locator, no entries.
const PRIMARY_DELETED: &str = "000000000000000902000000000000000000000000";
// Equality tree key: column (u32 BE) ‖ token ‖ row; empty value.
const EQUALITY_KEY: &str = concat!(
    "000000010020842a67b6951b89fc8baa26a847a5111111111111111111111111",
    "11111111",
);
// Range tree key: column (u32 BE) ‖ OPE ciphertext ‖ row; empty value.
const RANGE_KEY: &str = concat!(
    "0000000200080fc900007e420002e3dd00029013002d78b31111111111111111",
    "1111111111111111",
);

#[test]
fn store_records_in_sled() {
    let key = token_key();
    let mut ope = OpeEncoder::new(ope_key()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = LocalIndexStore::open(dir.path()).unwrap();
    store.create_table(&OWNER, &TABLE, &schema()).unwrap();
    let live = RowEntries {
        row: LIVE,
        version: 3,
        locator: b"sealed locator".to_vec(),
        equality: vec![(EQ, key.eq_token(&eq_values()[3]))],
        range: vec![(RANGE, ope.encrypt(u64_from_i64(42)).unwrap())],
        text: vec![(
            TEXT_COLUMN,
            key.text_tokens("encrypted tables", &TextOptions::default()),
        )],
    };
    let ops = vec![
        RowOp::Put(live),
        RowOp::Delete {
            row: DELETED,
            version: 9,
        },
    ];
    store.apply(&OWNER, &TABLE, &Batch { ops }).unwrap();
    store.put_catalog(&OWNER, 0, b"sealed catalog").unwrap();
    store.close().unwrap();

    let db = sled::open(dir.path().join("sled")).unwrap();
    let names: BTreeSet<Vec<u8>> = db.tree_names().into_iter().map(|n| n.to_vec()).collect();
    let expected: BTreeSet<Vec<u8>> = [
        b"__sled__default".to_vec(),
        b"catalog".to_vec(),
        b"owners".to_vec(),
        tree_name(b'p'),
        tree_name(b'e'),
        tree_name(b'r'),
    ]
    .into();
    assert_eq!(names, expected);
    let only = |tree: &[u8]| {
        let entries: Vec<(Vec<u8>, Vec<u8>)> = db
            .open_tree(tree)
            .unwrap()
            .iter()
            .map(|kv| {
                let (k, v) = kv.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect();
        entries
    };
    let catalog = only(b"catalog");
    assert_eq!(catalog.len(), 1);
    pin!(CATALOG_KEY, &catalog[0].0);
    pin!(CATALOG_VALUE, &catalog[0].1);
    let owners = only(b"owners");
    pin!(OWNER_VALUE, &owners[0].1);
    assert_eq!(owners, [(OWNER.0.to_vec(), pin::unhex(OWNER_VALUE))]);
    let primary = db.open_tree(tree_name(b'p')).unwrap();
    pin!(PRIMARY_LIVE, primary.get(LIVE.0).unwrap().unwrap());
    pin!(PRIMARY_DELETED, primary.get(DELETED.0).unwrap().unwrap());
    assert_eq!(primary.len(), 2);
    let equality = only(&tree_name(b'e'));
    assert_eq!(equality.len(), 1);
    pin!(EQUALITY_KEY, &equality[0].0);
    assert!(equality[0].1.is_empty());
    let range = only(&tree_name(b'r'));
    assert_eq!(range.len(), 1);
    pin!(RANGE_KEY, &range[0].0);
    assert!(range[0].1.is_empty());
}

#[test]
fn committed_sled_records_still_answer_queries() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path().join("sled")).unwrap();
        let put = |tree: &[u8], k: &[u8], v: &[u8]| {
            db.open_tree(tree).unwrap().insert(k, v).unwrap();
        };
        put(
            b"catalog",
            &pin::unhex(CATALOG_KEY),
            &pin::unhex(CATALOG_VALUE),
        );
        put(b"owners", &OWNER.0, &pin::unhex(OWNER_VALUE));
        put(&tree_name(b'p'), &LIVE.0, &pin::unhex(PRIMARY_LIVE));
        put(&tree_name(b'p'), &DELETED.0, &pin::unhex(PRIMARY_DELETED));
        put(&tree_name(b'e'), &pin::unhex(EQUALITY_KEY), b"");
        put(&tree_name(b'r'), &pin::unhex(RANGE_KEY), b"");
        db.flush().unwrap();
    }
    let store = LocalIndexStore::open(dir.path()).unwrap();
    assert_eq!(store.schema(&OWNER, &TABLE).unwrap(), schema());
    let catalog = store.catalog(&OWNER).unwrap();
    assert_eq!(
        (catalog.version, &catalog.blob[..]),
        (1, &b"sealed catalog"[..])
    );

    let rows = |query: Query| match store.query(&OWNER, &TABLE, &query).unwrap() {
        QueryOutput::Rows(hits) => hits
            .into_iter()
            .map(|h| (h.row, h.version, h.locator))
            .collect::<Vec<_>>(),
        other => panic!("rows expected, got {other:?}"),
    };
    let live = vec![(LIVE, 3, b"sealed locator".to_vec())];
    assert_eq!(
        rows(Query::Get {
            rows: vec![LIVE, DELETED]
        }),
        live
    );
    let alice = token_key().eq_token(&eq_values()[3]);
    let equal = Query::Equal {
        column: EQ,
        values: vec![alice],
    };
    assert_eq!(rows(equal), live);
    let mut ope = OpeEncoder::new(ope_key()).unwrap();
    let at_least_40: OpeCiphertext = ope.encrypt(u64_from_i64(40)).unwrap();
    let range = Query::Range {
        column: RANGE,
        lower: Bound::Included(at_least_40),
        upper: Bound::Unbounded,
        order: Order::Asc,
        limit: None,
    };
    assert_eq!(rows(range), live);
    store.close().unwrap();
}
