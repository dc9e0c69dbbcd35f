//! Full-text queries: the words of a text, and the boolean query language of `MATCH`.
//!
//! `MATCH(column, 'query')` is true when the column's text satisfies the query:
//!
//! ```text
//! query   := or
//! or      := and ( "OR" and )*
//! and     := unary ( ["AND"] unary )*        adjacent words are ANDed
//! unary   := ("NOT" | "-") unary | "(" or ")" | word
//! ```
//!
//! `AND`, `OR` and `NOT` are operators only in capitals; any other run of characters is cut
//! into words by [`tokenize`] (the index encoder's Unicode words, lowercased), so `'e-mail'` means
//! `e AND mail`. Words are those of Unicode's word boundaries (UAX #29): `l'été`, `3.14` and
//! `a_b` are one word each, each Han character is a word of its own; lowercasing is Unicode's,
//! so `'CAFÉ'` finds `café` and `'ΟΔΟΣ'` finds `οδος`. (The tests compare MATCH with SQLite
//! FTS5, whose `unicode61` tokenizer splits at every punctuation mark instead.) A query must ask for at least one word in each branch (`NOT a` alone, or
//! `a OR NOT b`, is refused: an index cannot answer a pure negation without listing every
//! row). Phrases in double quotes are not supported.

use std::collections::HashSet;
use std::fmt;

use crate::error::{Error, Result};

/// The words of `text`, as the full-text index stores them: the index encoder's own
/// normalization (Unicode words, lowercased), so that the client's re-check after decryption
/// sees exactly the words the index provider was sent tokens for.
pub fn tokenize(text: &str) -> Vec<String> {
    wwt_index::TextOptions::default().words(text)
}

/// A parsed full-text query over words (already tokenized).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FtQuery {
    /// Rows containing this word.
    Word(String),
    /// Rows satisfying every part.
    And(Vec<FtQuery>),
    /// Rows satisfying at least one part.
    Or(Vec<FtQuery>),
    /// Rows not satisfying the part (only beside a positive part of an AND).
    Not(Box<FtQuery>),
}

impl FtQuery {
    /// Parses the query language described in the module doc.
    pub fn parse(text: &str) -> Result<FtQuery> {
        let mut p = Parser {
            tokens: lex(text)?,
            pos: 0,
            text,
        };
        let q = p.or()?;
        if p.pos != p.tokens.len() {
            return Err(p.error("unexpected `)`"));
        }
        if !q.is_positive() {
            return Err(Error::unsupported(
                format!("the full-text query '{text}' asks only for the absence of words"),
                "name at least one word every row must contain, e.g. 'rust NOT java'",
            ));
        }
        Ok(q)
    }

    /// Whether a text made of `words` (from [`tokenize`]) satisfies the query.
    pub fn matches(&self, words: &HashSet<String>) -> bool {
        match self {
            FtQuery::Word(w) => words.contains(w),
            FtQuery::And(qs) => qs.iter().all(|q| q.matches(words)),
            FtQuery::Or(qs) => qs.iter().any(|q| q.matches(words)),
            FtQuery::Not(q) => !q.matches(words),
        }
    }

    /// The distinct words the query names, in order of first appearance.
    pub fn words(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        self.collect_words(&mut out);
        out
    }

    fn collect_words<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            FtQuery::Word(w) if !out.contains(&w.as_str()) => out.push(w),
            FtQuery::Word(_) => {}
            FtQuery::And(qs) | FtQuery::Or(qs) => qs.iter().for_each(|q| q.collect_words(out)),
            FtQuery::Not(q) => q.collect_words(out),
        }
    }

    /// Whether the query can be answered from the words present (without listing all rows).
    fn is_positive(&self) -> bool {
        match self {
            FtQuery::Word(_) => true,
            FtQuery::And(qs) => qs.iter().any(FtQuery::is_positive),
            FtQuery::Or(qs) => qs.iter().all(FtQuery::is_positive),
            FtQuery::Not(_) => false,
        }
    }
}

impl fmt::Display for FtQuery {
    /// The query in its own syntax; parsing the output gives the same query.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |f: &mut fmt::Formatter<'_>, qs: &[FtQuery], sep: &str| {
            for (i, q) in qs.iter().enumerate() {
                if i > 0 {
                    f.write_str(sep)?;
                }
                match q {
                    FtQuery::And(_) | FtQuery::Or(_) => write!(f, "({q})")?,
                    _ => write!(f, "{q}")?,
                }
            }
            Ok(())
        };
        match self {
            FtQuery::Word(w) => f.write_str(w),
            FtQuery::And(qs) => join(f, qs, " AND "),
            FtQuery::Or(qs) => join(f, qs, " OR "),
            FtQuery::Not(q) => match q.as_ref() {
                FtQuery::And(_) | FtQuery::Or(_) => write!(f, "NOT ({q})"),
                _ => write!(f, "NOT {q}"),
            },
        }
    }
}

#[derive(Debug, PartialEq)]
enum Token {
    Open,
    Close,
    And,
    Or,
    Not,
    Minus,
    Words(Vec<String>),
}

fn lex(text: &str) -> Result<Vec<Token>> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' => {
                chars.next();
                out.push(if c == '(' { Token::Open } else { Token::Close });
            }
            '"' => {
                return Err(Error::unsupported(
                    format!("phrase search in the full-text query '{text}'"),
                    "drop the double quotes: the words are then all required, in any order",
                ));
            }
            '-' => {
                chars.next();
                out.push(Token::Minus);
            }
            _ => {
                let mut run = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || c == '(' || c == ')' || c == '"' {
                        break;
                    }
                    run.push(c);
                    chars.next();
                }
                out.push(match run.as_str() {
                    "AND" => Token::And,
                    "OR" => Token::Or,
                    "NOT" => Token::Not,
                    _ => Token::Words(tokenize(&run)),
                });
            }
        }
    }
    Ok(out)
}

struct Parser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    text: &'a str,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> Error {
        Error::TypeMismatch(format!(
            "bad full-text query '{}': {what}; write words joined by AND, OR, NOT and parentheses",
            self.text
        ))
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn or(&mut self) -> Result<FtQuery> {
        let mut parts = vec![self.and()?];
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            parts.push(self.and()?);
        }
        Ok(flatten(parts, FtQuery::Or))
    }

    fn and(&mut self) -> Result<FtQuery> {
        let mut parts = vec![self.unary()?];
        loop {
            match self.peek() {
                Some(Token::And) => {
                    self.pos += 1;
                    parts.push(self.unary()?);
                }
                None | Some(Token::Or) | Some(Token::Close) => break,
                Some(_) => parts.push(self.unary()?),
            }
        }
        Ok(flatten(parts, FtQuery::And))
    }

    fn unary(&mut self) -> Result<FtQuery> {
        let token = self.tokens.get(self.pos);
        self.pos += 1;
        match token {
            Some(Token::Not) | Some(Token::Minus) => Ok(FtQuery::Not(Box::new(self.unary()?))),
            Some(Token::Open) => {
                let q = self.or()?;
                if self.peek() != Some(&Token::Close) {
                    return Err(self.error("missing `)`"));
                }
                self.pos += 1;
                Ok(q)
            }
            Some(Token::Words(words)) if !words.is_empty() => Ok(flatten(
                words.iter().cloned().map(FtQuery::Word).collect(),
                FtQuery::And,
            )),
            Some(Token::Words(_)) => Err(self.error("a term without letters or digits")),
            None => Err(self.error("a word is missing at the end")),
            Some(_) => Err(self.error("an operator where a word belongs")),
        }
    }
}

/// One part stays itself; nested nodes of the same kind merge into one.
fn flatten(parts: Vec<FtQuery>, make: fn(Vec<FtQuery>) -> FtQuery) -> FtQuery {
    if parts.len() == 1 {
        return parts.into_iter().next().unwrap_or(FtQuery::And(vec![]));
    }
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        match (make(vec![]), p) {
            (FtQuery::And(_), FtQuery::And(inner)) | (FtQuery::Or(_), FtQuery::Or(inner)) => {
                out.extend(inner)
            }
            (_, p) => out.push(p),
        }
    }
    make(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn words(text: &str) -> HashSet<String> {
        tokenize(text).into_iter().collect()
    }

    #[test]
    fn tokenizes_unicode_words() {
        assert_eq!(
            tokenize("Héllo, WORLD! e-mail 42"),
            ["héllo", "world", "e", "mail", "42"]
        );
    }

    #[test]
    fn parses_and_evaluates_queries() {
        let doc = words("The quick brown fox");
        let cases = [
            ("quick fox", true),
            ("quick AND cat", false),
            ("cat OR fox", true),
            ("fox NOT brown", false),
            ("fox -cat", true),
            ("(cat OR dog) fox", false),
            ("QUICK", true),
            ("quick and", false),
        ];
        for (q, expected) in cases {
            let parsed = FtQuery::parse(q).unwrap();
            assert_eq!(parsed.matches(&doc), expected, "{q}");
            assert_eq!(FtQuery::parse(&parsed.to_string()).unwrap(), parsed, "{q}");
        }
        assert_eq!(
            FtQuery::parse("a b OR c").unwrap().to_string(),
            "(a AND b) OR c"
        );
        assert_eq!(
            FtQuery::parse("a (b c) a").unwrap().words(),
            ["a", "b", "c"]
        );
    }

    #[test]
    fn refuses_what_an_index_cannot_answer() {
        for q in [
            "",
            "NOT a",
            "a OR NOT b",
            "(a",
            "a)",
            "\"a b\"",
            "!!",
            "a AND",
        ] {
            assert!(FtQuery::parse(q).is_err(), "{q}");
        }
    }
}
