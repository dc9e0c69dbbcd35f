//! The SQL generator both oracle tests share (the evaluator's in `wwt-query`, the networked
//! client's in `wwt-tests`): random data for two tables, generated SELECTs and changes, and
//! the comparison with SQLite.
//!
//! The data is what users store, not only lowercase ASCII: text in mixed case, with quotes
//! (`''` escaped), accents (composed and decomposed), Greek, Cyrillic, CJK and emoji;
//! TIMESTAMP and BLOB columns; integers at `i64::MIN`, `i64::MAX` and around ±2^53, doubles
//! at ±2^53 and beyond `i64`. Identifiers are written in mixed case (unquoted names fold to
//! lowercase in both systems) and one column has a quoted mixed-case name, `"Tag"`.
//!
//! Where wwt's documented semantics differ from SQLite's defaults, SQLite is set up to follow
//! wwt's, not the other way round (see [`sqlite`]):
//! - LIKE is case-sensitive (`PRAGMA case_sensitive_like = ON`);
//! - `lower` and `upper` map all of Unicode (SQLite's built-ins only map ASCII), so the
//!   oracle registers the Unicode default case mapping under those names;
//! - a TIMESTAMP is stored in SQLite as its canonical text `YYYY-MM-DD HH:MM:SS[.ffffff]`,
//!   whose byte order is time order, and wwt's timestamps are compared as that text
//!   ([`normalize`]). The generator writes timestamps in that form only.
#![allow(dead_code)]

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed, TestRunner};
use rusqlite::functions::FunctionFlags;
use rusqlite::types::ValueRef;
use wwt_query::{Outcome, Value};

pub const SCHEMA: &str =
    "CREATE TABLE t (id BIGINT PRIMARY KEY, a INT, b INT NOT NULL, x DOUBLE, s TEXT, f BOOL,
    ts TIMESTAMP, bl BLOB, big BIGINT, y DOUBLE, \"Tag\" TEXT);
CREATE TABLE U (K INT PRIMARY KEY, A INT, Name TEXT);";
pub const INDEXES: &str = "CREATE INDEX ON t USING hash (a);
CREATE INDEX ON t USING btree (b);
CREATE INDEX ON t USING btree (x);
CREATE INDEX ON t USING hash (s);
CREATE INDEX ON t USING btree (ts);
CREATE INDEX ON t USING hash (bl);
CREATE INDEX ON t USING btree (big);
CREATE INDEX ON t USING hash (big);
CREATE INDEX ON t USING btree (y);
CREATE INDEX ON t USING hash (y);
CREATE INDEX ON t USING hash (f);
CREATE INDEX ON t USING btree (\"Tag\");
CREATE INDEX ON u USING hash (name);
CREATE INDEX ON u USING btree (a);";
pub const SQLITE_SCHEMA: &str = "PRAGMA case_sensitive_like = ON;
CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER, b INTEGER NOT NULL, x REAL, s TEXT, f INTEGER,
    ts TEXT, bl BLOB, big INTEGER, y REAL, \"Tag\" TEXT);
CREATE TABLE u (k INTEGER PRIMARY KEY, a INTEGER, name TEXT);";

/// Every column of `t`, in order, for comparing whole tables after a change.
pub const ALL_T: &str = "SELECT id, a, b, x, s, f, ts, bl, big, y, \"Tag\" FROM t ORDER BY id";

/// Texts for `s` and `"Tag"`: the first seven are the old lowercase ASCII words.
pub const WORDS: [&str; 28] = [
    "a",
    "ab",
    "abc",
    "b",
    "ba",
    "",
    "c a",
    "A",
    "Ab",
    "ABC",
    "aB",
    "it's",
    "say \"hi\"",
    "''",
    "é",
    "É",
    "café",
    "CAFÉ",
    "cafe\u{301}",
    "straße",
    "STRASSE",
    "ΟΔΟΣ",
    "οδος",
    "İz",
    "日本",
    "🎉",
    "a🎉",
    "100%",
];

/// LIKE patterns: case-sensitive ones, multi-byte characters under `_`, quotes.
pub const PATTERNS: [&str; 24] = [
    "a%", "%b", "_", "%", "a_c", "%a%", "b_", "A%", "%B%", "_b", "%é%", "%É", "caf_", "caf__",
    "%'%", "%\"%", "ΟΔ%", "%ς", "_🎉", "%🎉", "%SS%", "%ß%", "__", "",
];

/// Values of `u.name`.
pub const NAMES: [&str; 3] = ["n0", "N0", "ñ"];

/// Timestamps in their canonical form: before and after the epoch, leap days, the first and
/// last representable microseconds.
pub const TIMESTAMPS: [&str; 11] = [
    "1970-01-01 00:00:00",
    "1969-12-31 23:59:59.999999",
    "1970-01-01 00:00:00.000001",
    "2000-02-29 12:00:00",
    "1900-03-01 00:00:00",
    "0000-01-01 00:00:00",
    "0001-01-01 00:00:00",
    "9999-12-31 23:59:59.999999",
    "2024-06-30 23:59:59",
    "2024-07-01 00:00:00",
    "2024-06-30 23:59:59.500000",
];

/// Blobs, as hex digits: empty, zero bytes, prefixes of each other, high bytes.
pub const BLOBS: [&str; 10] = [
    "", "00", "0000", "00ff", "01", "61", "ff", "ffff", "deadbeef", "7f80",
];

/// Integers at the ends of `i64` and around ±2^53 (where doubles stop being exact).
pub const BIGS: [i64; 13] = [
    i64::MIN,
    i64::MIN + 1,
    -(1 << 53) - 1,
    -(1 << 53),
    -(1 << 53) + 1,
    -1,
    0,
    1,
    (1 << 53) - 1,
    1 << 53,
    (1 << 53) + 1,
    i64::MAX - 1,
    i64::MAX,
];

/// Numeric literals compared with `big` and `y`: the integers above, integers past `i64`
/// (which both systems read as doubles) and doubles that round.
pub const BIG_LITERALS: [&str; 21] = [
    "-9223372036854775808",
    "-9223372036854775807",
    "-9007199254740993",
    "-9007199254740992",
    "-9007199254740991",
    "-1",
    "0",
    "1",
    "9007199254740991",
    "9007199254740992",
    "9007199254740993",
    "9223372036854775806",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "9007199254740992.0",
    "9007199254740993.0",
    "-9.2233720368547758e18",
    "9.2233720368547758e18",
    "0.5",
    "-0.0",
];

/// Values of the DOUBLE column `y`, as literals: ±2^53 and its neighbours, ±2^63, huge and
/// tiny magnitudes, both zeros. Never summed or averaged: a floating-point sum of such values
/// depends on the order of the rows and on the summation algorithm (SQLite compensates),
/// neither of which SQL fixes.
pub const DOUBLES: [&str; 12] = [
    "0.0",
    "-0.0",
    "9007199254740992.0",
    "9007199254740994.0",
    "-9007199254740992.0",
    "4503599627370495.5",
    "9.223372036854775807e18",
    "-9.223372036854775808e18",
    "1e300",
    "-1e300",
    "0.1",
    "5e-324",
];

pub fn opt<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    prop_oneof![1 => Just(None), 4 => s.prop_map(Some)].boxed()
}

pub fn sql_opt<T>(v: &Option<T>, f: impl Fn(&T) -> String) -> String {
    v.as_ref().map_or("NULL".into(), f)
}

/// `text` as an SQL string literal (`'` doubled).
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// One row of `t`: the generated choices (indexes into the constant tables above).
#[derive(Clone, Debug)]
pub struct TRow {
    pub a: Option<i64>,
    pub b: i64,
    pub x: Option<i64>,
    pub s: Option<usize>,
    pub f: Option<bool>,
    pub ts: Option<usize>,
    pub bl: Option<usize>,
    pub big: Option<usize>,
    pub y: Option<usize>,
    pub tag: Option<usize>,
}

pub type URow = (Option<i64>, Option<usize>);
pub type Data = (Vec<TRow>, Vec<URow>);

pub fn data() -> impl Strategy<Value = Data> {
    let trow = (
        (
            opt(-3i64..4),
            -5i64..6,
            opt(-8i64..9),
            opt(0..WORDS.len()),
            opt(any::<bool>()),
        ),
        (
            opt(0..TIMESTAMPS.len()),
            opt(0..BLOBS.len()),
            opt(0..BIGS.len()),
            opt(0..DOUBLES.len()),
            opt(0..WORDS.len()),
        ),
    )
        .prop_map(|((a, b, x, s, f), (ts, bl, big, y, tag))| TRow {
            a,
            b,
            x,
            s,
            f,
            ts,
            bl,
            big,
            y,
            tag,
        });
    let urow = (opt(-3i64..4), opt(0..NAMES.len()));
    (
        proptest::collection::vec(trow, 0..30),
        proptest::collection::vec(urow, 0..8),
    )
}

/// The data as one multi-row INSERT per non-empty table.
pub fn inserts((t, u): &Data) -> Vec<String> {
    let mut out = Vec::new();
    let trows: Vec<String> = t
        .iter()
        .enumerate()
        .map(|(i, r)| {
            format!(
                "({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
                i as i64 * 3 - 20,
                sql_opt(&r.a, |v| v.to_string()),
                r.b,
                sql_opt(&r.x, |v| format!("{}", *v as f64 / 4.0)),
                sql_opt(&r.s, |v| quote(WORDS[*v])),
                sql_opt(&r.f, |v| if *v { "TRUE".into() } else { "FALSE".into() }),
                sql_opt(&r.ts, |v| quote(TIMESTAMPS[*v])),
                sql_opt(&r.bl, |v| format!("X'{}'", BLOBS[*v])),
                sql_opt(&r.big, |v| BIGS[*v].to_string()),
                sql_opt(&r.y, |v| DOUBLES[*v].to_string()),
                sql_opt(&r.tag, |v| quote(WORDS[*v])),
            )
        })
        .collect();
    if !trows.is_empty() {
        out.push(format!(
            "INSERT INTO t (id, a, b, x, s, f, ts, bl, big, y, \"Tag\") VALUES {}",
            trows.join(", ")
        ));
    }
    let urows: Vec<String> = u
        .iter()
        .enumerate()
        .map(|(k, (a, n))| {
            format!(
                "({k}, {}, {})",
                sql_opt(a, |v| v.to_string()),
                sql_opt(n, |v| quote(NAMES[*v])),
            )
        })
        .collect();
    if !urows.is_empty() {
        out.push(format!(
            "INSERT INTO u (k, a, name) VALUES {}",
            urows.join(", ")
        ));
    }
    out
}

/// The column `c` qualified with `p`, in lowercase, uppercase or capitalized: unquoted names
/// fold to lowercase in wwt and are case-insensitive in SQLite.
fn name(p: &'static str, c: &'static str) -> BoxedStrategy<String> {
    let capital = |s: &str| {
        let mut cs = s.chars();
        cs.next()
            .map_or(String::new(), |f| f.to_uppercase().chain(cs).collect())
    };
    let (upper, cap) = (
        format!("{}{}", p.to_uppercase(), c.to_uppercase()),
        format!("{}{}", capital(p), capital(c)),
    );
    prop_oneof![3 => Just(format!("{p}{c}")), 1 => Just(upper), 1 => Just(cap)].boxed()
}

fn one_of(names: &[&'static str]) -> impl Strategy<Value = &'static str> + use<> {
    prop::sample::select(names.to_vec())
}

fn word() -> impl Strategy<Value = String> {
    one_of(&WORDS).prop_map(quote)
}

fn timestamp() -> impl Strategy<Value = String> {
    one_of(&TIMESTAMPS).prop_map(quote)
}

fn blob() -> impl Strategy<Value = String> {
    one_of(&BLOBS).prop_map(|h| format!("X'{h}'"))
}

/// A comparison operator.
fn cmp() -> impl Strategy<Value = &'static str> {
    one_of(&["=", "<>", "<", "<=", ">", ">="])
}

/// A list of 1 to 3 literals from `lit`, sometimes with NULL, for IN.
fn in_list(lit: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    (proptest::collection::vec(lit, 1..4), any::<bool>()).prop_map(|(mut items, null)| {
        if null {
            items.push("NULL".into());
        }
        items.join(", ")
    })
}

/// Predicates over the columns beyond the first six: timestamps, blobs, integers and doubles
/// at the edges of their ranges, mixed-case and Unicode text, `lower`/`upper`, LIKE.
fn edge_predicate(p: &'static str) -> BoxedStrategy<String> {
    let text_col = prop_oneof![
        name(p, "s"),
        Just(format!("{p}\"Tag\"")),
        name(p, "s").prop_map(|c| format!("lower({c})")),
        name(p, "s").prop_map(|c| format!("upper({c})")),
        Just(format!("lower({p}\"Tag\")")),
        Just(format!("UPPER({p}\"Tag\")")),
    ]
    .boxed();
    let number = one_of(&BIG_LITERALS).prop_map(String::from).boxed();
    let not = || any::<bool>().prop_map(|n| if n { "NOT " } else { "" });
    prop_oneof![
        (text_col.clone(), cmp(), word()).prop_map(|(c, o, w)| format!("{c} {o} {w}")),
        (text_col.clone(), not(), one_of(&PATTERNS))
            .prop_map(|(c, n, pat)| format!("{c} {n}LIKE {}", quote(pat))),
        (text_col.clone(), not(), in_list(word())).prop_map(|(c, n, l)| format!("{c} {n}IN ({l})")),
        (name(p, "s"), 0i64..4).prop_map(|(c, k)| format!("length({c}) = {k}")),
        (name(p, "ts"), cmp(), timestamp()).prop_map(|(c, o, v)| format!("{c} {o} {v}")),
        (timestamp(), cmp(), name(p, "ts")).prop_map(|(v, o, c)| format!("{v} {o} {c}")),
        (name(p, "ts"), not(), timestamp(), timestamp())
            .prop_map(|(c, n, lo, hi)| format!("{c} {n}BETWEEN {lo} AND {hi}")),
        (name(p, "ts"), not(), in_list(timestamp()))
            .prop_map(|(c, n, l)| format!("{c} {n}IN ({l})")),
        (name(p, "bl"), cmp(), blob()).prop_map(|(c, o, v)| format!("{c} {o} {v}")),
        (name(p, "bl"), not(), in_list(blob())).prop_map(|(c, n, l)| format!("{c} {n}IN ({l})")),
        (name(p, "bl"), cmp(), 0i64..5).prop_map(|(c, o, k)| format!("length({c}) {o} {k}")),
        (
            prop_oneof![name(p, "big"), name(p, "y")],
            cmp(),
            number.clone()
        )
            .prop_map(|(c, o, v)| format!("{c} {o} {v}")),
        (
            number.clone(),
            cmp(),
            prop_oneof![name(p, "big"), name(p, "y")]
        )
            .prop_map(|(v, o, c)| format!("{v} {o} {c}")),
        (
            prop_oneof![name(p, "big"), name(p, "y")],
            not(),
            number.clone(),
            number.clone()
        )
            .prop_map(|(c, n, lo, hi)| format!("{c} {n}BETWEEN {lo} AND {hi}")),
        (
            prop_oneof![name(p, "big"), name(p, "y")],
            not(),
            in_list(number)
        )
            .prop_map(|(c, n, l)| format!("{c} {n}IN ({l})")),
        (name(p, "y"), cmp(), name(p, "big")).prop_map(|(y, o, b)| format!("{y} {o} {b}")),
        (
            prop_oneof![
                name(p, "ts"),
                name(p, "bl"),
                name(p, "big"),
                name(p, "y"),
                Just(format!("{p}\"Tag\""))
            ],
            not()
        )
            .prop_map(|(c, n)| format!("{c} IS {n}NULL")),
    ]
    .boxed()
}

/// A WHERE predicate over `t`'s columns, qualified with `p` (`""` or `"t."`).
pub fn predicate(p: &'static str) -> BoxedStrategy<String> {
    let num_col = prop_oneof![name(p, "id"), name(p, "a"), name(p, "b"), name(p, "x")];
    let op = cmp();
    let lit = prop_oneof![
        (-6i64..7).prop_map(|v| v.to_string()),
        Just("0.5".to_string()),
        Just("-1.25".to_string())
    ];
    let leaf = prop_oneof![
        (num_col.clone(), op, lit.clone()).prop_map(move |(c, o, l)| format!("{c} {o} {l}")),
        (lit.clone(), cmp(), num_col.clone()).prop_map(move |(l, o, c)| format!("{l} {o} {c}")),
        (one_of(&["=", "<>", "<", ">="]), word(), name(p, "s"))
            .prop_map(move |(o, w, c)| format!("{c} {o} {w}")),
        (
            num_col.clone(),
            any::<bool>(),
            proptest::collection::vec(-4i64..5, 1..4),
            any::<bool>()
        )
            .prop_map(move |(c, neg, vs, null)| {
                let mut items: Vec<String> = vs.iter().map(|v| v.to_string()).collect();
                if null {
                    items.push("NULL".into());
                }
                format!(
                    "{c} {}IN ({})",
                    if neg { "NOT " } else { "" },
                    items.join(", ")
                )
            }),
        (proptest::collection::vec(word(), 1..3))
            .prop_map(move |ws| format!("{p}s IN ({})", ws.join(", "))),
        (num_col.clone(), any::<bool>(), -5i64..3, 0i64..5).prop_map(move |(c, neg, lo, w)| {
            format!(
                "{c} {}BETWEEN {lo} AND {}",
                if neg { "NOT " } else { "" },
                lo + w
            )
        }),
        (
            prop_oneof![name(p, "a"), name(p, "x"), name(p, "s"), name(p, "f")],
            any::<bool>()
        )
            .prop_map(move |(c, neg)| format!("{c} IS {}NULL", if neg { "NOT " } else { "" })),
        (one_of(&PATTERNS), any::<bool>()).prop_map(move |(pat, neg)| format!(
            "{p}s {}LIKE {}",
            if neg { "NOT " } else { "" },
            quote(pat)
        )),
        Just(format!("{p}f")),
        Just(format!("NOT {p}f")),
        Just(format!("{p}f = TRUE")),
        (-3i64..4).prop_map(move |k| format!("{p}a + {p}b > {k}")),
        (-3i64..4).prop_map(move |k| format!("{p}b * 2 - {p}a <= {k}")),
        (-2i64..3).prop_map(move |k| format!("{p}b / {p}a = {k}")),
        (0i64..3).prop_map(move |k| format!("{p}b % 3 = {k}")),
        (-2i64..3).prop_map(move |k| format!("{p}x * 2 + {p}a < {k}")),
        Just(format!("length({p}s) = 1")),
        Just(format!("coalesce({p}a, {p}b) > 0")),
        Just(format!("({p}s || 'z') LIKE 'a%z'")),
    ];
    let leaf = prop_oneof![3 => leaf, 2 => edge_predicate(p)];
    leaf.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(l, r)| format!("({l}) AND ({r})")),
            (inner.clone(), inner.clone()).prop_map(|(l, r)| format!("({l}) OR ({r})")),
            inner.prop_map(|e| format!("NOT ({e})")),
        ]
    })
    .boxed()
}

pub fn query() -> BoxedStrategy<String> {
    let where_ =
        opt(predicate("")).prop_map(|w| w.map_or(String::new(), |w| format!(" WHERE {w}")));
    let projection = prop::sample::subsequence(
        vec![
            "id",
            "a",
            "b",
            "x",
            "s",
            "f",
            "a + b",
            "x * 2",
            "s || '!'",
            "lower(s)",
            "coalesce(a, b)",
            "abs(a)",
            "-b",
            "b / 2",
            "x / 2",
            "length(s)",
            "ts",
            "bl",
            "big",
            "y",
            "\"Tag\"",
            "UPPER(S)",
            "lower(\"Tag\")",
            "length(bl)",
            "length(\"Tag\")",
            "\"Tag\" || s",
            "Id",
        ],
        1..5,
    )
    .prop_map(|v| v.join(", "));
    let order = prop::sample::subsequence(
        vec![
            "a DESC",
            "x",
            "s DESC",
            "b",
            "f",
            "x DESC NULLS FIRST",
            "s NULLS LAST",
            "a + b",
            "TS DESC",
            "bl",
            "Big DESC",
            "y",
            "\"Tag\" NULLS LAST",
            "lower(s)",
        ],
        0..3,
    );
    let limit = opt((0u32..8, 0u32..4)).prop_map(|l| match l {
        Some((n, 0)) => format!(" LIMIT {n}"),
        Some((n, o)) => format!(" LIMIT {n} OFFSET {o}"),
        None => String::new(),
    });
    let group = one_of(&[
        "a",
        "f",
        "s",
        "b % 3",
        "x",
        "ts",
        "bl",
        "big",
        "lower(s)",
        "\"Tag\"",
        "upper(\"Tag\")",
    ]);
    let ordered_column = prop_oneof![
        one_of(&BIG_LITERALS).prop_map(|v| ("big", v.to_string())),
        one_of(&BIG_LITERALS).prop_map(|v| ("y", v.to_string())),
        timestamp().prop_map(|v| ("ts", v)),
        word().prop_map(|v| ("\"Tag\"", v)),
    ];
    prop_oneof![
        4 => (projection, where_.clone(), order, limit.clone()).prop_map(|(p, w, o, l)| {
            let mut keys: Vec<&str> = o;
            keys.push("id");
            format!("SELECT {p} FROM t{w} ORDER BY {}{l}", keys.join(", "))
        }),
        2 => where_.clone().prop_map(|w| format!(
            "SELECT count(*), count(a), sum(a), sum(x), avg(b), min(s), max(x), count(DISTINCT a), min(f) FROM t{w}"
        )),
        2 => where_.clone().prop_map(|w| format!(
            "SELECT min(ts), max(ts), min(bl), max(bl), min(big), max(big), count(DISTINCT big), min(y), max(y), count(bl), max(\"Tag\"), min(upper(s)), count(DISTINCT lower(s)), avg(big), avg(DISTINCT big) FROM T{w}"
        )),
        3 => (group, where_.clone(), opt(0i64..3)).prop_map(|(g, w, h)| {
            let having = h.map_or(String::new(), |k| format!(" HAVING count(*) > {k}"));
            format!("SELECT {g}, count(*), sum(b), min(x), max(s), avg(x) FROM t{w} GROUP BY {g}{having} ORDER BY {g}")
        }),
        2 => (opt(predicate("t.")), opt(0..NAMES.len())).prop_map(|(w, n)| {
            let mut conds: Vec<String> = w.into_iter().map(|w| format!("({w})")).collect();
            if let Some(n) = n {
                conds.push(format!("u.name = {}", quote(NAMES[n])));
            }
            let w = if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) };
            format!("SELECT t.id, u.k, U.Name, t.b + u.a, t.\"Tag\" FROM t JOIN u ON t.a = u.a{w} ORDER BY t.id, u.k")
        }),
        1 => where_.clone().prop_map(|w| format!("SELECT DISTINCT a, f FROM t{w} ORDER BY a DESC, f")),
        1 => where_.clone().prop_map(|w| format!("SELECT DISTINCT lower(s), bl FROM t{w} ORDER BY 1, 2")),
        1 => ((-5i64..6), any::<bool>(), 0u32..6).prop_map(|(k, desc, n)| format!(
            "SELECT b FROM t WHERE b >= {k} ORDER BY b{} LIMIT {n}", if desc { " DESC" } else { "" }
        )),
        2 => (ordered_column, cmp(), any::<bool>(), 0u32..6).prop_map(|((c, v), o, desc, n)| format!(
            "SELECT {c} FROM t WHERE {c} {o} {v} ORDER BY {c}{} LIMIT {n}", if desc { " DESC" } else { "" }
        )),
        1 => (one_of(&["min", "max"]), one_of(&["b", "x"]), opt(-4i64..5)).prop_map(
            |(f, c, k)| format!("SELECT {f}({c}) FROM t{}", k.map_or(String::new(), |k| format!(" WHERE {c} < {k}")))
        ),
        1 => (one_of(&["min", "max"]), one_of(&["big", "y", "ts"]), opt(0..BIGS.len())).prop_map(
            |(f, c, k)| {
                let w = match (c, k) {
                    (_, None) => String::new(),
                    ("ts", Some(k)) => format!(" WHERE ts < {}", quote(TIMESTAMPS[k % TIMESTAMPS.len()])),
                    (c, Some(k)) => format!(" WHERE {c} < {}", BIG_LITERALS[k]),
                };
                format!("SELECT {f}({c}) FROM t{w}")
            }
        ),
        1 => ((0u32..6), any::<bool>()).prop_map(|(n, desc)| format!(
            "SELECT b FROM t ORDER BY b{} LIMIT {n}", if desc { " DESC" } else { "" }
        )),
        1 => (one_of(&["a", "b", "x", "ts", "bl", "big", "\"Tag\""]), where_).prop_map(|(c, w)| format!(
            "SELECT {c}, count(*) AS n FROM t{w} GROUP BY {c} ORDER BY n DESC, {c}"
        )),
    ]
    .boxed()
}

/// `LIMIT n OFFSET o` as `(n, o)`.
pub type Window = Option<(u32, u32)>;

/// A SELECT without ORDER BY, which streams: rows come in any order, so a LIMIT may take any
/// of them. Returns the statement, the same statement without LIMIT/OFFSET, and its window.
pub fn unordered_query() -> BoxedStrategy<(String, String, Window)> {
    let projection = prop::sample::subsequence(
        vec![
            "id",
            "a",
            "b",
            "x",
            "s",
            "f",
            "a + b",
            "lower(s)",
            "coalesce(a, b)",
            "ts",
            "bl",
            "big",
            "y",
            "\"Tag\"",
            "upper(\"Tag\")",
        ],
        1..4,
    )
    .prop_map(|v| v.join(", "));
    let select = prop_oneof![
        3 => projection.prop_map(|p| format!("SELECT {p} FROM t")),
        1 => Just("SELECT DISTINCT a, f FROM t".to_string()),
        1 => Just("SELECT DISTINCT ts, \"Tag\" FROM t".to_string()),
    ];
    let where_ =
        opt(predicate("")).prop_map(|w| w.map_or(String::new(), |w| format!(" WHERE {w}")));
    (select, where_, opt((0u32..8, 0u32..4)))
        .prop_map(|(s, w, window)| {
            let all = format!("{s}{w}");
            let sql = match window {
                Some((n, o)) => format!("{all} LIMIT {n} OFFSET {o}"),
                None => all.clone(),
            };
            (sql, all, window)
        })
        .boxed()
}

/// UPDATEs and DELETEs over `t` that touch every kind of column.
pub fn change() -> BoxedStrategy<String> {
    prop_oneof![
        (predicate(""), -3i64..4)
            .prop_map(|(w, k)| format!("UPDATE t SET a = b + {k}, s = 'up' WHERE {w}")),
        predicate("").prop_map(|w| format!("UPDATE t SET x = NULL, f = NOT f WHERE {w}")),
        predicate("").prop_map(|w| format!("DELETE FROM t WHERE {w}")),
        (
            predicate(""),
            opt(0..TIMESTAMPS.len()),
            opt(0..BLOBS.len()),
            opt(0..BIGS.len()),
            opt(0..WORDS.len())
        )
            .prop_map(|(w, ts, bl, big, tag)| format!(
                "UPDATE T SET TS = {}, bl = {}, Big = {}, \"Tag\" = {} WHERE {w}",
                sql_opt(&ts, |v| quote(TIMESTAMPS[*v])),
                sql_opt(&bl, |v| format!("X'{}'", BLOBS[*v])),
                sql_opt(&big, |v| BIGS[*v].to_string()),
                sql_opt(&tag, |v| quote(WORDS[*v])),
            )),
        (predicate(""), opt(0..DOUBLES.len())).prop_map(|(w, y)| format!(
            "UPDATE t SET s = upper(s), \"Tag\" = lower(s), y = {} WHERE {w}",
            sql_opt(&y, |v| DOUBLES[*v].to_string())
        )),
    ]
    .boxed()
}

/// Checks an unordered result: `got` holds as many rows as the window allows, each one taken
/// from `all` (the rows without LIMIT/OFFSET) at most once.
pub fn check_unordered(
    all: &[Vec<Value>],
    got: &[Vec<Value>],
    window: Window,
    sql: &str,
    which: &str,
) -> Result<(), TestCaseError> {
    let want = window.map_or(all.len(), |(n, o)| {
        (n as usize).min(all.len().saturating_sub(o as usize))
    });
    prop_assert_eq!(
        got.len(),
        want,
        "{} returned a wrong count on\n  {}",
        which,
        sql
    );
    let mut pool: Vec<&Vec<Value>> = all.iter().collect();
    for row in got {
        let at = pool
            .iter()
            .position(|r| r.len() == row.len() && r.iter().zip(row).all(|(x, y)| same(x, y)));
        prop_assert!(
            at.is_some(),
            "{which} returned {row:?}, not a row of\n  {sql}\nSQLite: {all:?}"
        );
        if let Some(at) = at {
            pool.swap_remove(at);
        }
    }
    Ok(())
}

/// The rows of the last result `out` of `sql`, normalized; panics naming `sql` otherwise.
pub fn result_rows<E: std::fmt::Display>(
    sql: &str,
    out: Result<Vec<Outcome>, E>,
) -> Vec<Vec<Value>> {
    match out {
        Ok(mut out) => match out.pop() {
            Some(Outcome::Rows(rs)) => rs
                .rows
                .into_iter()
                .map(|r| r.into_iter().map(normalize).collect())
                .collect(),
            other => panic!("{sql}: {other:?}"),
        },
        Err(e) => panic!("{sql}: {e}"),
    }
}

/// A wwt value as SQLite holds it: booleans as 0/1, timestamps as their canonical text.
pub fn normalize(v: Value) -> Value {
    match v {
        Value::Bool(b) => Value::Int(i64::from(b)),
        Value::Timestamp(t) => Value::Text(wwt_query::value::format_timestamp(t)),
        v => v,
    }
}

pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Double(x), Value::Double(y)) => {
            (x - y).abs() <= 1e-9 * (1.0 + x.abs().max(y.abs()))
        }
        _ => a == b,
    }
}

/// An in-memory SQLite set up with wwt's semantics and holding [`SQLITE_SCHEMA`]: LIKE
/// case-sensitive, `lower` and `upper` over all of Unicode (Rust's `str::to_lowercase` and
/// `str::to_uppercase`, the Unicode default case mapping that wwt documents).
pub fn sqlite() -> rusqlite::Connection {
    let conn = rusqlite::Connection::open_in_memory().expect("SQLite opens in memory");
    for (name, map) in [
        ("lower", str::to_lowercase as fn(&str) -> String),
        ("upper", str::to_uppercase),
    ] {
        conn.create_scalar_function(
            name,
            1,
            FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
            move |ctx| {
                Ok(match ctx.get_raw(0) {
                    ValueRef::Text(t) => Some(map(std::str::from_utf8(t)
                        .map_err(|e| rusqlite::Error::UserFunctionError(Box::new(e)))?)),
                    ValueRef::Null => None,
                    other => {
                        return Err(rusqlite::Error::UserFunctionError(
                            format!("{name} of {other:?}").into(),
                        ));
                    }
                })
            },
        )
        .expect("the case functions register");
    }
    conn.execute_batch(SQLITE_SCHEMA)
        .expect("SQLite takes the schema");
    // The oracle really is case-sensitive and Unicode-aware, or every comparison is moot.
    let probe: (bool, String) = conn
        .query_row("SELECT 'A' LIKE 'a', upper('é')", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("the probe runs");
    assert_eq!(probe, (false, "É".to_string()), "SQLite is not set up");
    conn
}

pub fn sqlite_rows(conn: &rusqlite::Connection, sql: &str) -> Vec<Vec<Value>> {
    let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let n = stmt.column_count();
    let rows = stmt
        .query_map([], |r| {
            (0..n)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        ValueRef::Null => Value::Null,
                        ValueRef::Integer(i) => Value::Int(i),
                        ValueRef::Real(d) => Value::Double(d),
                        ValueRef::Text(t) => Value::Text(String::from_utf8(t.to_vec()).unwrap()),
                        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                    })
                })
                .collect::<rusqlite::Result<Vec<Value>>>()
        })
        .unwrap();
    rows.map(|r| r.unwrap_or_else(|e| panic!("{sql}: {e}")))
        .collect()
}

pub fn check(
    expected: &[Vec<Value>],
    got: &[Vec<Value>],
    sql: &str,
    which: &str,
) -> Result<(), TestCaseError> {
    let equal = expected.len() == got.len()
        && expected
            .iter()
            .zip(got)
            .all(|(a, b)| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y)));
    prop_assert!(
        equal,
        "{which} differs from SQLite on\n  {sql}\nSQLite: {expected:?}\n{which}: {got:?}"
    );
    Ok(())
}

/// The seed a test runs with: `PROPTEST_RNG_SEED` if set, else `default`, else a fresh one.
/// It is printed (cargo shows it when the test fails) so that a failure replays.
pub fn seed(default: Option<u64>) -> u64 {
    use std::hash::{BuildHasher, RandomState};
    let seed = match Config::default().rng_seed {
        RngSeed::Fixed(s) => s,
        RngSeed::Random => default.unwrap_or_else(|| RandomState::new().hash_one("wwt")),
    };
    println!("seed {seed}: replay with PROPTEST_RNG_SEED={seed}");
    seed
}

/// A runner of `cases` cases whose seed is printed ([`seed`]) and whose failures persist in
/// `<test>.proptest-regressions` beside `source_file` (pass `file!()`), replayed first on
/// every later run.
pub fn runner(cases: u32, source_file: &'static str, default_seed: Option<u64>) -> TestRunner {
    TestRunner::new(Config {
        cases,
        source_file: Some(source_file),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        rng_seed: RngSeed::Fixed(seed(default_seed)),
        ..Config::default()
    })
}

/// A runner for drawing values with `new_tree` from `seed` (a whole-network test takes
/// its seed from `wwt_tests::seed`, which prints it).
pub fn fixed_runner(seed: u64) -> TestRunner {
    TestRunner::new(Config {
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    })
}
