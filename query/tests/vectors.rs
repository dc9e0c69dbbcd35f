//! Known-answer vectors for what the query layer serializes: the row encoding the engine
//! seals, the primary-key encoding that row ids and equality tokens are computed from, and the
//! DDL text a catalog is stored as.
//!
//! Every input is a constant and every expected value was printed by this code when it was
//! committed. Rows, keys and catalogs written by one build are read by later ones, so a vector
//! that fails means stored data no longer reads: keep the old encoding readable (version the
//! new one), never just paste the new value.
#![allow(clippy::unwrap_used)]

use wwt_query::{Catalog, Plan, TableSchema, Value, decode_row, encode_key, encode_row};

#[path = "../../tests/support/pin.rs"]
#[macro_use]
mod pin;

/// A table with a column of every type, a quoted name and an index of every kind.
const DDL: &str = r#"
    CREATE TABLE "Every Type" (id BIGINT PRIMARY KEY, i BIGINT NOT NULL, d DOUBLE, t TEXT,
        b BOOL, ts TIMESTAMP, bl BLOB);
    CREATE INDEX by_t ON "Every Type" USING hash (t);
    CREATE INDEX by_i ON "Every Type" USING btree (i);
    CREATE INDEX words ON "Every Type" USING fulltext (t);
"#;

/// Plans DDL statements into a catalog, as the client reads its stored catalog back.
fn catalog_of(sql: &str) -> Catalog {
    let mut catalog = Catalog::new();
    for stmt in wwt_query::parse(sql).unwrap() {
        match wwt_query::plan(&catalog, &stmt).unwrap() {
            Plan::CreateTable(t) => catalog.add_table(t).unwrap(),
            Plan::CreateIndex { table, index } => catalog.add_index(&table, index).unwrap(),
            other => panic!("not DDL: {other:?}"),
        }
    }
    catalog
}

fn schema() -> TableSchema {
    catalog_of(DDL).table("Every Type").unwrap().clone()
}

// The statements the catalog stores for the table (the client seals them, one per line).
const CATALOG_SQL: [&str; 4] = [
    concat!(
        r#"CREATE TABLE "Every Type" (id BIGINT PRIMARY KEY, i BIGINT NOT NULL, d DOUBLE, "#,
        "t TEXT, b BOOL, ts TIMESTAMP, bl BLOB)",
    ),
    r#"CREATE INDEX by_t ON "Every Type" USING hash (t)"#,
    r#"CREATE INDEX by_i ON "Every Type" USING btree (i)"#,
    r#"CREATE INDEX words ON "Every Type" USING fulltext (t)"#,
];

#[test]
fn catalog_text() {
    let schema = schema();
    let sql = schema.to_sql();
    assert_eq!(sql, CATALOG_SQL, "vector CATALOG_SQL changed");
    // The committed text plans back into the same table.
    let back = catalog_of(&CATALOG_SQL.join(";\n"));
    assert_eq!(back.table("Every Type").unwrap(), &schema);
}

/// Rows of every type: NULLs, integer and timestamp extremes, doubles (-0.0 is stored as
/// 0.0), Unicode text, multi-byte lengths, empty text and blobs.
fn rows() -> Vec<Vec<Value>> {
    vec![
        vec![
            Value::Int(1),
            Value::Int(i64::MIN),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
        ],
        vec![
            Value::Int(2),
            Value::Int(i64::MAX),
            Value::Double(-1.5),
            Value::Text("héllo wörld ✓ 東京 🦀".into()),
            Value::Bool(true),
            Value::Timestamp(1_767_225_600_000_000),
            Value::Blob(vec![0x00, 0x01, 0x02, 0xff]),
        ],
        vec![
            Value::Int(-3),
            Value::Int(0),
            Value::Double(-0.0),
            Value::Text("ab".repeat(65)),
            Value::Bool(false),
            Value::Timestamp(-1),
            Value::Blob((0..128).collect()),
        ],
        vec![
            Value::Int(4),
            Value::Int(-1),
            Value::Double(f64::MIN_POSITIVE / 4.0),
            Value::Text(String::new()),
            Value::Bool(true),
            Value::Timestamp(i64::MIN),
            Value::Blob(Vec::new()),
        ],
    ]
}

// Row 1: format byte, the two integers, five NULL cells.
const ROW_NULLS: &str = "010100000000000000010180000000000000000000000000";
// Row 2: a value in every column (BE integers and doubles, LEB128-prefixed UTF-8 and bytes).
const ROW_VALUES: &str = concat!(
    "01010000000000000002017fffffffffffffff01bff8000000000000011d68c3",
    "a96c6c6f2077c3b6726c6420e29c9320e69db1e4baac20f09fa6800101010006",
    "4748462040000104000102ff",
);
// Row 3: -0.0 stored as 0.0, 130-byte text and 128-byte blob (two-byte lengths).
const ROW_LONG: &str = concat!(
    "0101fffffffffffffffd01000000000000000001000000000000000001820161",
    "6261626162616261626162616261626162616261626162616261626162616261",
    "6261626162616261626162616261626162616261626162616261626162616261",
    "6261626162616261626162616261626162616261626162616261626162616261",
    "6261626162616261626162616261626162616261626162616261626162616261",
    "62010001ffffffffffffffff018001000102030405060708090a0b0c0d0e0f10",
    "1112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f30",
    "3132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f50",
    "5152535455565758595a5b5c5d5e5f606162636465666768696a6b6c6d6e6f70",
    "7172737475767778797a7b7c7d7e7f",
);
// Row 4: a subnormal double, empty text and blob, the smallest timestamp.
const ROW_EDGES: &str = concat!(
    "0101000000000000000401ffffffffffffffff01000400000000000001000101",
    "0180000000000000000100",
);

#[test]
fn row_encoding() {
    let schema = schema();
    let rows = rows();
    let wants = [ROW_NULLS, ROW_VALUES, ROW_LONG, ROW_EDGES];
    pin!(ROW_NULLS, encode_row(&schema, &rows[0]).unwrap());
    pin!(ROW_VALUES, encode_row(&schema, &rows[1]).unwrap());
    pin!(ROW_LONG, encode_row(&schema, &rows[2]).unwrap());
    pin!(ROW_EDGES, encode_row(&schema, &rows[3]).unwrap());
    // The committed bytes decode to the rows (in canonical form).
    for (row, want) in rows.into_iter().zip(wants) {
        let canonical: Vec<Value> = row.into_iter().map(Value::canonical).collect();
        assert_eq!(decode_row(&schema, &pin::unhex(want)).unwrap(), canonical);
    }
}

// Key encodings, in order: BIGINT 42, -1, i64::MIN, i64::MAX; TEXT 'alice', 'Ünïcödé';
// TIMESTAMP 2026-01-01T00:00:00Z; BLOB x'0001ff'; then the hash-index-only DOUBLE 1.5, -2.25,
// 0.0, -0.0 (as 0.0) and BOOL false, true.
const KEYS: &str = concat!(
    "01800000000000002a 017fffffffffffffff 010000000000000000 01ffffffffffffffff ",
    "03616c696365 03c39c6ec3af63c3b664c3a9 058006474846204000 060001ff ",
    "02bff8000000000000 023ffdffffffffffff 028000000000000000 028000000000000000 0400 0401",
);

#[test]
fn key_encoding() {
    let keys = [
        Value::Int(42),
        Value::Int(-1),
        Value::Int(i64::MIN),
        Value::Int(i64::MAX),
        Value::Text("alice".into()),
        Value::Text("Ünïcödé".into()),
        Value::Timestamp(1_767_225_600_000_000),
        Value::Blob(vec![0x00, 0x01, 0xff]),
        Value::Double(1.5),
        Value::Double(-2.25),
        Value::Double(0.0),
        Value::Double(-0.0),
        Value::Bool(false),
        Value::Bool(true),
    ];
    let encoded: Vec<String> = keys
        .iter()
        .map(|k| hex::encode(encode_key(k).unwrap()))
        .collect();
    pin_str!(KEYS, encoded.join(" "));
}
