//! Client-side keyed tokens: full-text terms and equality values as BLAKE3 PRF outputs.
//!
//! Text is normalized on the client (Unicode word segmentation, lowercase, optional stemming
//! per column) and each word becomes `keyed_hash(token key, 0x01 ‖ word)` truncated to
//! [`TOKEN_LEN`] bytes; an equality value becomes `keyed_hash(token key, 0x02 ‖ value)`,
//! truncated likewise. The provider sees only these tokens.

use std::fmt;

use rust_stemmers::{Algorithm, Stemmer};
use unicode_segmentation::UnicodeSegmentation;

use crate::error::IndexError;
use crate::types::fixed;

/// Length in bytes of a PRF token.
pub const TOKEN_LEN: usize = 16;

/// Length in characters of a token encoded as a full-text term (unpadded base64url).
pub const TERM_LEN: usize = 22;

const TEXT_DOMAIN: u8 = 1;
const EQ_DOMAIN: u8 = 2;

/// A column's 32-byte token key (derived from the master key by the engine).
#[derive(Clone)]
pub struct TokenKey([u8; 32]);

impl TokenKey {
    /// Wraps a raw key.
    pub fn new(key: [u8; 32]) -> Self {
        Self(key)
    }

    fn prf(&self, domain: u8, data: &[u8]) -> [u8; TOKEN_LEN] {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        hasher.update(&[domain]);
        hasher.update(data);
        let mut out = [0u8; TOKEN_LEN];
        out.copy_from_slice(&hasher.finalize().as_bytes()[..TOKEN_LEN]);
        out
    }

    /// The token of one already-normalized word.
    pub fn word_token(&self, word: &str) -> Token {
        Token(self.prf(TEXT_DOMAIN, word.as_bytes()))
    }

    /// Normalizes `text` with `options` and returns the token of each word, repeats kept
    /// (BM25 needs term frequencies) but sorted by token: a bag of words, so that word order
    /// never leaves the client.
    pub fn text_tokens(&self, text: &str, options: &TextOptions) -> Vec<Token> {
        let mut out = Vec::new();
        options.for_each_word(text, |w| out.push(self.word_token(w)));
        out.sort_unstable();
        out
    }

    /// The token of one query word, normalized like indexed text; `None` if `word` holds no word.
    pub fn query_token(&self, word: &str, options: &TextOptions) -> Option<Token> {
        let mut first = None;
        options.for_each_word(word, |w| {
            if first.is_none() {
                first = Some(self.word_token(w));
            }
        });
        first
    }

    /// The equality token of a value's canonical bytes (the engine's encoding of the value).
    pub fn eq_token(&self, value: &[u8]) -> EqToken {
        EqToken(self.prf(EQ_DOMAIN, value))
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// Per-column text normalization options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TextOptions {
    /// Stem words with this Snowball algorithm after lowercasing, if set.
    pub stemmer: Option<Algorithm>,
}

impl TextOptions {
    /// Calls `f` with each normalized word of `text`.
    fn for_each_word(&self, text: &str, mut f: impl FnMut(&str)) {
        let stemmer = self.stemmer.map(Stemmer::create);
        for word in text.unicode_words() {
            let lower = word.to_lowercase();
            match &stemmer {
                Some(s) => f(&s.stem(&lower)),
                None => f(&lower),
            }
        }
    }

    /// The normalized words of `text` (lowercase, Unicode words, stemmed if configured).
    pub fn words(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.for_each_word(text, |w| out.push(w.to_owned()));
        out
    }
}

/// A full-text PRF token.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token(pub [u8; TOKEN_LEN]);

/// An equality PRF token.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EqToken(pub [u8; TOKEN_LEN]);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({})", self.to_term())
    }
}

impl fmt::Debug for EqToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EqToken({})", encode_term(&self.0))
    }
}

impl TryFrom<&[u8]> for Token {
    type Error = IndexError;
    fn try_from(bytes: &[u8]) -> Result<Self, IndexError> {
        fixed("full-text token", bytes).map(Self)
    }
}

impl TryFrom<&[u8]> for EqToken {
    type Error = IndexError;
    fn try_from(bytes: &[u8]) -> Result<Self, IndexError> {
        fixed("equality token", bytes).map(Self)
    }
}

impl Token {
    /// The token as a short full-text term ([`TERM_LEN`] base64url characters, no whitespace).
    pub fn to_term(&self) -> String {
        encode_term(&self.0)
    }

    /// Parses a term made by [`Token::to_term`].
    pub fn from_term(term: &str) -> Result<Self, IndexError> {
        decode_term(term).map(Token)
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn encode_term(bytes: &[u8; TOKEN_LEN]) -> String {
    let mut out = String::with_capacity(TERM_LEN);
    for chunk in bytes.chunks(3) {
        let mut buf = [0u8; 3];
        buf[..chunk.len()].copy_from_slice(chunk);
        let n = u32::from(buf[0]) << 16 | u32::from(buf[1]) << 8 | u32::from(buf[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let idx = (n >> (18 - 6 * i)) & 63;
            out.push(char::from(ALPHABET[idx as usize]));
        }
    }
    out
}

fn decode_term(term: &str) -> Result<[u8; TOKEN_LEN], IndexError> {
    let malformed = || IndexError::MalformedToken {
        what: "full-text term",
        expected: TERM_LEN,
        got: term.len(),
    };
    if term.len() != TERM_LEN {
        return Err(malformed());
    }
    let mut out = [0u8; TOKEN_LEN];
    for (i, chunk) in term.as_bytes().chunks(4).enumerate() {
        let mut n = 0u32;
        for (j, c) in chunk.iter().enumerate() {
            let v = ALPHABET.iter().position(|a| a == c).ok_or_else(malformed)?;
            n |= (v as u32) << (18 - 6 * j);
        }
        let bytes = n.to_be_bytes();
        let take = chunk.len() - 1;
        out[i * 3..i * 3 + take].copy_from_slice(&bytes[1..1 + take]);
    }
    // Canonical form only: the unused low bits of the last character must be zero.
    if encode_term(&out) != term {
        return Err(malformed());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn key() -> TokenKey {
        TokenKey::new([7u8; 32])
    }

    #[test]
    fn words_are_lowercase_unicode_words() {
        let o = TextOptions::default();
        assert_eq!(
            o.words("Hello, WORLD! Grüße—naïve café"),
            ["hello", "world", "grüße", "naïve", "café"]
        );
    }

    #[test]
    fn stemming_is_per_column_option() {
        let o = TextOptions {
            stemmer: Some(Algorithm::English),
        };
        assert_eq!(o.words("Running runs"), ["run", "run"]);
        let k = key();
        assert_eq!(k.query_token("RUNNING", &o), k.query_token("runs", &o));
        assert_ne!(
            k.query_token("running", &TextOptions::default()),
            k.query_token("runs", &TextOptions::default())
        );
    }

    #[test]
    fn tokens_depend_on_key_and_domain() {
        let a = key();
        let b = TokenKey::new([8u8; 32]);
        assert_ne!(a.word_token("x"), b.word_token("x"));
        assert_ne!(a.word_token("x").0, a.eq_token(b"x").0);
        assert_eq!(a.text_tokens("x X", &TextOptions::default()).len(), 2);
        let opts = TextOptions::default();
        assert_eq!(
            a.text_tokens("one two three", &opts),
            a.text_tokens("three one two", &opts)
        );
        assert_eq!(a.query_token("  ,; ", &TextOptions::default()), None);
    }

    #[test]
    fn malformed_terms_and_tokens_are_refused() {
        assert!(matches!(
            Token::from_term("short"),
            Err(IndexError::MalformedToken { .. })
        ));
        assert!(Token::from_term("AAAAAAAAAAAAAAAAAAAAA!").is_err());
        // Non-canonical: last character carries nonzero padding bits.
        assert!(Token::from_term("AAAAAAAAAAAAAAAAAAAAAB").is_err());
        assert!(Token::try_from(&[0u8; 15][..]).is_err());
        assert!(EqToken::try_from(&[0u8; 17][..]).is_err());
    }

    proptest! {
        #[test]
        fn term_round_trips(bytes in any::<[u8; TOKEN_LEN]>()) {
            let t = Token(bytes);
            let term = t.to_term();
            prop_assert_eq!(term.len(), TERM_LEN);
            prop_assert!(!term.chars().any(char::is_whitespace));
            prop_assert_eq!(Token::from_term(&term).unwrap(), t);
        }
    }
}
