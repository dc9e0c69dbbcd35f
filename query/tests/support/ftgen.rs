//! Full-text documents and queries as users write them, and SQLite FTS5 as the oracle of
//! which rows match: shared by the evaluator's test (`wwt-query`) and the networked client's
//! (`wwt-tests`).
//!
//! wwt cuts text into Unicode words (UAX #29, `unicode-segmentation`) and lowercases each
//! with Rust's `str::to_lowercase`; FTS5 is set to the closest tokenizer it has:
//! `unicode61 remove_diacritics 0 categories 'L* N* Co M*'` (letters, digits, private use and
//! combining marks are word characters, everything else separates; case is folded; accents
//! are kept). The generator stays where the two agree. They differ, by design, on what
//! [`DIFFERENCES`] lists; the tests pin those cases so that a change on either side shows.
#![allow(dead_code)]

use proptest::prelude::*;

/// Words that are one word for both tokenizers, in lowercase: accents composed and
/// decomposed, Greek (without σ/ς: wwt lowercases a final Σ to ς, FTS5 folds ς to σ),
/// Cyrillic, Armenian, Hebrew, Arabic, Devanagari, single Han characters, Hangul, Katakana,
/// digits.
pub const VOCAB: [&str; 32] = [
    "rust",
    "tokio",
    "sled",
    "go",
    "c",
    "42",
    "2024",
    "x86",
    "café",
    "naïve",
    "été",
    "über",
    "straße",
    "ñandú",
    "crème",
    "façade",
    "ångström",
    "école",
    "e\u{301}cole",
    "αθήνα",
    "ελλάδα",
    "привет",
    "мир",
    "ёлка",
    "բարեւ",
    "שלום",
    "سلام",
    "नमस्ते",
    "日",
    "本",
    "한국어",
    "カタカナ",
];

/// What goes between words: spaces, punctuation, dashes, brackets, quotes, emoji. None of it
/// joins the words around it (no bare `'`, `.`, `,`, `:`, `_` or `·`, which UAX #29 keeps
/// inside a word).
pub const SEPARATORS: [&str; 24] = [
    " ", "  ", ", ", ". ", "! ", "? ", "; ", ": ", " - ", "-", "—", " – ", "/", "+", " (", ") ",
    " \"", "\" ", " «", "» ", "\n", "\t", "🎉", " ' ",
];

/// Where wwt's words and FTS5's tokens differ, by design: (text, wwt's words, FTS5's tokens).
pub const DIFFERENCES: [(&str, &[&str], &[&str]); 7] = [
    // UAX #29 keeps an apostrophe, a period, a colon or an underscore between letters or
    // digits inside the word; unicode61 separates at every punctuation mark.
    ("l'été", &["l'été"], &["l", "été"]),
    ("3.14", &["3.14"], &["3", "14"]),
    ("a_b", &["a_b"], &["a", "b"]),
    // UAX #29 makes each Han character a word; unicode61 takes the run.
    ("日本語", &["日", "本", "語"], &["日本語"]),
    // Rust lowercases a final capital sigma to ς; FTS5 folds ς and σ alike to σ.
    ("ΟΔΟΣ", &["οδος"], &["οδοσ"]),
    // Rust lowercases İ to i + combining dot; FTS5 leaves İ as it is.
    ("İz", &["i\u{307}z"], &["İz"]),
    // Circled letters are letters to UAX #29, symbols to unicode61.
    ("Ⓐ", &["ⓐ"], &[]),
];

/// The FTS5 tokenizer closest to wwt's.
pub const FTS5_TOKENIZER: &str = "unicode61 remove_diacritics 0 categories 'L* N* Co M*'";

/// `word` with the characters whose bit in `mask` is set in uppercase, where uppercasing
/// is one character that lowercases back (`ß` stays: its uppercase is `SS`).
pub fn cased(word: &str, mask: u64) -> String {
    word.chars()
        .enumerate()
        .map(|(i, c)| {
            let mut up = c.to_uppercase();
            match (up.next(), up.next()) {
                (Some(u), None) if mask >> (i % 64) & 1 == 1 && u.to_lowercase().eq([c]) => u,
                _ => c,
            }
        })
        .collect()
}

/// A vocabulary word in a random case.
pub fn word() -> impl Strategy<Value = String> {
    (0..VOCAB.len(), any::<u64>()).prop_map(|(i, mask)| cased(VOCAB[i], mask))
}

/// A document: up to 8 words in random case between separators.
pub fn doc() -> impl Strategy<Value = String> {
    let sep = || prop::sample::select(SEPARATORS.to_vec());
    (
        prop_oneof![Just(""), sep()],
        proptest::collection::vec((word(), sep()), 0..8),
    )
        .prop_map(|(lead, words)| {
            let mut out = lead.to_string();
            for (w, s) in words {
                out.push_str(&w);
                out.push_str(s);
            }
            out
        })
}

/// A full-text query, as wwt's MATCH and as FTS5's MATCH.
#[derive(Clone, Debug)]
pub struct FtCase {
    /// For `MATCH(col, '…')`.
    pub wwt: String,
    /// For FTS5.
    pub fts5: String,
}

fn wrap(q: &FtCase, leaf: bool) -> (String, String) {
    if leaf {
        (q.wwt.clone(), q.fts5.clone())
    } else {
        (format!("({})", q.wwt), format!("({})", q.fts5))
    }
}

/// Queries of words joined by AND, OR and AND NOT, in each of the spellings wwt takes
/// (adjacent words, `AND`, `NOT`, `-word`, `NOT` first), with every branch naming a word as
/// wwt requires.
pub fn ft_query() -> impl Strategy<Value = FtCase> {
    let leaf = word().prop_map(|w| {
        (
            FtCase {
                fts5: format!("\"{w}\""),
                wwt: w,
            },
            true,
        )
    });
    leaf.prop_recursive(3, 10, 2, |inner| {
        (inner.clone(), inner, 0..7u8).prop_map(|((a, la), (b, lb), how)| {
            let ((aw, af), (bw, bf)) = (wrap(&a, la), wrap(&b, lb));
            let (wwt, fts5) = match how {
                0 => (format!("{aw} {bw}"), format!("{af} AND {bf}")),
                1 => (format!("{aw} AND {bw}"), format!("{af} AND {bf}")),
                2 | 3 => (format!("{aw} OR {bw}"), format!("{af} OR {bf}")),
                4 => (format!("{aw} NOT {bw}"), format!("{af} NOT {bf}")),
                5 => (format!("{aw} -{bw}"), format!("{af} NOT {bf}")),
                _ => (format!("NOT {bw} AND {aw}"), format!("{af} NOT {bf}")),
            };
            (FtCase { wwt, fts5 }, false)
        })
    })
    .prop_map(|(q, _)| q)
}

/// An FTS5 table `f` holding `docs`, document i as rowid i.
pub fn fts5(docs: &[String]) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open_in_memory().expect("SQLite opens in memory");
    conn.execute_batch(&format!(
        "CREATE VIRTUAL TABLE f USING fts5(body, tokenize = \"{FTS5_TOKENIZER}\");
         CREATE VIRTUAL TABLE v USING fts5vocab(f, 'instance');"
    ))
    .expect("FTS5 is built in");
    for (i, d) in docs.iter().enumerate() {
        conn.execute(
            "INSERT INTO f (rowid, body) VALUES (?1, ?2)",
            rusqlite::params![i as i64, d],
        )
        .expect("FTS5 takes the document");
    }
    conn
}

/// The rowids FTS5 matches for `query`, ascending.
pub fn fts5_ids(conn: &rusqlite::Connection, query: &str) -> Vec<i64> {
    let mut stmt = conn
        .prepare("SELECT rowid FROM f WHERE f MATCH ?1 ORDER BY rowid")
        .expect("the statement prepares");
    stmt.query_map([query], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .unwrap_or_else(|e| panic!("FTS5 refuses {query}: {e}"))
}

/// The tokens FTS5 stores for document `rowid`, in order.
pub fn fts5_tokens(conn: &rusqlite::Connection, rowid: i64) -> Vec<String> {
    let mut stmt = conn
        .prepare("SELECT term FROM v WHERE doc = ?1 ORDER BY offset")
        .expect("the statement prepares");
    stmt.query_map([rowid], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .expect("the vocabulary reads")
}
