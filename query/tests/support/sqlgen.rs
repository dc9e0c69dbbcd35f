//! The SQL generator both oracle tests share (the evaluator's in `wwt-query`, the networked
//! client's in `wwt-tests`): random data for two tables, generated SELECTs and changes, and
//! the comparison with SQLite.
#![allow(dead_code)]

use proptest::prelude::*;
use rusqlite::types::ValueRef;
use wwt_query::{Outcome, Value};

pub const SCHEMA: &str =
    "CREATE TABLE t (id BIGINT PRIMARY KEY, a INT, b INT NOT NULL, x DOUBLE, s TEXT, f BOOL);
CREATE TABLE u (k INT PRIMARY KEY, a INT, name TEXT);";
pub const INDEXES: &str = "CREATE INDEX ON t USING hash (a);
CREATE INDEX ON t USING btree (b);
CREATE INDEX ON t USING btree (x);
CREATE INDEX ON t USING hash (s);
CREATE INDEX ON u USING hash (name);
CREATE INDEX ON u USING btree (a);";
pub const SQLITE_SCHEMA: &str = "PRAGMA case_sensitive_like = ON;
CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER, b INTEGER NOT NULL, x REAL, s TEXT, f INTEGER);
CREATE TABLE u (k INTEGER PRIMARY KEY, a INTEGER, name TEXT);";

pub const WORDS: [&str; 7] = ["a", "ab", "abc", "b", "ba", "", "c a"];
pub const PATTERNS: [&str; 7] = ["a%", "%b", "_", "%", "a_c", "%a%", "b_"];

pub fn opt<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    prop_oneof![1 => Just(None), 4 => s.prop_map(Some)].boxed()
}

pub fn sql_opt<T>(v: &Option<T>, f: impl Fn(&T) -> String) -> String {
    v.as_ref().map_or("NULL".into(), f)
}

pub type TRow = (Option<i64>, i64, Option<i64>, Option<usize>, Option<bool>);
pub type URow = (Option<i64>, Option<usize>);
pub type Data = (Vec<TRow>, Vec<URow>);

pub fn data() -> impl Strategy<Value = Data> {
    let trow = (
        opt(-3i64..4),
        -5i64..6,
        opt(-8i64..9),
        opt(0..WORDS.len()),
        opt(any::<bool>()),
    );
    let urow = (opt(-3i64..4), opt(0..3usize));
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
        .map(|(i, (a, b, x, s, f))| {
            format!(
                "({}, {}, {b}, {}, {}, {})",
                i as i64 * 3 - 20,
                sql_opt(a, |v| v.to_string()),
                sql_opt(x, |v| format!("{}", *v as f64 / 4.0)),
                sql_opt(s, |v| format!("'{}'", WORDS[*v])),
                sql_opt(f, |v| if *v { "TRUE".into() } else { "FALSE".into() }),
            )
        })
        .collect();
    if !trows.is_empty() {
        out.push(format!(
            "INSERT INTO t (id, a, b, x, s, f) VALUES {}",
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
                sql_opt(n, |v| format!("'n{v}'")),
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

/// A WHERE predicate over `t`'s columns, qualified with `p` (`""` or `"t."`).
pub fn predicate(p: &'static str) -> BoxedStrategy<String> {
    let num_col = prop::sample::select(vec!["id", "a", "b", "x"]);
    let op = prop::sample::select(vec!["=", "<>", "<", "<=", ">", ">="]);
    let lit = prop_oneof![
        (-6i64..7).prop_map(|v| v.to_string()),
        Just("0.5".to_string()),
        Just("-1.25".to_string())
    ];
    let word = prop::sample::select(WORDS.to_vec());
    let leaf = prop_oneof![
        (num_col.clone(), op.clone(), lit.clone())
            .prop_map(move |(c, o, l)| format!("{p}{c} {o} {l}")),
        (lit.clone(), op, num_col.clone()).prop_map(move |(l, o, c)| format!("{l} {o} {p}{c}")),
        (
            prop::sample::select(vec!["=", "<>", "<", ">="]),
            word.clone()
        )
            .prop_map(move |(o, w)| format!("{p}s {o} '{w}'")),
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
                    "{p}{c} {}IN ({})",
                    if neg { "NOT " } else { "" },
                    items.join(", ")
                )
            }),
        (proptest::collection::vec(word.clone(), 1..3)).prop_map(move |ws| format!(
            "{p}s IN ({})",
            ws.iter()
                .map(|w| format!("'{w}'"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        (num_col.clone(), any::<bool>(), -5i64..3, 0i64..5).prop_map(move |(c, neg, lo, w)| {
            format!(
                "{p}{c} {}BETWEEN {lo} AND {}",
                if neg { "NOT " } else { "" },
                lo + w
            )
        }),
        (
            prop::sample::select(vec!["a", "x", "s", "f"]),
            any::<bool>()
        )
            .prop_map(move |(c, neg)| format!("{p}{c} IS {}NULL", if neg { "NOT " } else { "" })),
        (prop::sample::select(PATTERNS.to_vec()), any::<bool>()).prop_map(
            move |(pat, neg)| format!("{p}s {}LIKE '{pat}'", if neg { "NOT " } else { "" })
        ),
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
        ],
        0..3,
    );
    let limit = opt((0u32..8, 0u32..4)).prop_map(|l| match l {
        Some((n, 0)) => format!(" LIMIT {n}"),
        Some((n, o)) => format!(" LIMIT {n} OFFSET {o}"),
        None => String::new(),
    });
    let group = prop::sample::select(vec!["a", "f", "s", "b % 3", "x"]);
    prop_oneof![
        4 => (projection, where_.clone(), order, limit.clone()).prop_map(|(p, w, o, l)| {
            let mut keys: Vec<&str> = o;
            keys.push("id");
            format!("SELECT {p} FROM t{w} ORDER BY {}{l}", keys.join(", "))
        }),
        2 => where_.clone().prop_map(|w| format!(
            "SELECT count(*), count(a), sum(a), sum(x), avg(b), min(s), max(x), count(DISTINCT a), min(f) FROM t{w}"
        )),
        3 => (group, where_.clone(), opt(0i64..3)).prop_map(|(g, w, h)| {
            let having = h.map_or(String::new(), |k| format!(" HAVING count(*) > {k}"));
            format!("SELECT {g}, count(*), sum(b), min(x), max(s), avg(x) FROM t{w} GROUP BY {g}{having} ORDER BY {g}")
        }),
        2 => (opt(predicate("t.")), opt(0..3usize)).prop_map(|(w, n)| {
            let mut conds: Vec<String> = w.into_iter().map(|w| format!("({w})")).collect();
            if let Some(n) = n {
                conds.push(format!("u.name = 'n{n}'"));
            }
            let w = if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) };
            format!("SELECT t.id, u.k, u.name, t.b + u.a FROM t JOIN u ON t.a = u.a{w} ORDER BY t.id, u.k")
        }),
        1 => where_.clone().prop_map(|w| format!("SELECT DISTINCT a, f FROM t{w} ORDER BY a DESC, f")),
        1 => ((-5i64..6), any::<bool>(), 0u32..6).prop_map(|(k, desc, n)| format!(
            "SELECT b FROM t WHERE b >= {k} ORDER BY b{} LIMIT {n}", if desc { " DESC" } else { "" }
        )),
        1 => (prop::sample::select(vec!["min", "max"]), prop::sample::select(vec!["b", "x"]), opt(-4i64..5)).prop_map(
            |(f, c, k)| format!("SELECT {f}({c}) FROM t{}", k.map_or(String::new(), |k| format!(" WHERE {c} < {k}")))
        ),
        1 => ((0u32..6), any::<bool>()).prop_map(|(n, desc)| format!(
            "SELECT b FROM t ORDER BY b{} LIMIT {n}", if desc { " DESC" } else { "" }
        )),
        1 => (prop::sample::select(vec!["a", "b", "x"]), where_).prop_map(|(c, w)| format!(
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
        ],
        1..4,
    )
    .prop_map(|v| v.join(", "));
    let select = prop_oneof![
        3 => projection.prop_map(|p| format!("SELECT {p} FROM t")),
        1 => Just("SELECT DISTINCT a, f FROM t".to_string()),
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

pub fn normalize(v: Value) -> Value {
    match v {
        Value::Bool(b) => Value::Int(i64::from(b)),
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
    rows.map(|r| r.unwrap()).collect()
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
