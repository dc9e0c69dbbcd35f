//! Index-entry encoding: what the index provider is sent for a row version (row id, equality
//! tokens, word tokens, OPE ciphertexts of each indexed column) and the keys that make them.

use wwt_engine::MasterKey;
use wwt_index::ope::{u64_from_f64, u64_from_i64, u64_from_text_prefix, u64_from_timestamp_micros};
use wwt_index::{ColumnId, OpeEncoder, OpeKey, RowEntries, RowId, TextExpr, TextOptions, TokenKey};
use wwt_query::{FtQuery, IndexKind, TableSchema, Value, encode_key};

use super::{Client, ClientError, Result, State, TableState};

pub(super) fn column_id(position: usize) -> ColumnId {
    ColumnId(position as u32)
}

/// The unsigned order a btree index encrypts: exact for numbers, booleans and timestamps,
/// the first 8 bytes for text (so text ranges are widened and re-checked on the client).
pub(super) fn ordered(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => Some(u64_from_i64(*i)),
        Value::Double(d) => Some(u64_from_f64(if *d == 0.0 { 0.0 } else { *d })),
        Value::Timestamp(t) => Some(u64_from_timestamp_micros(*t)),
        Value::Bool(b) => Some(u64::from(*b)),
        Value::Text(s) => Some(u64_from_text_prefix(s)),
        Value::Blob(_) | Value::Null => None,
    }
}

pub(super) fn token_key(
    master: &MasterKey,
    t: &mut TableState,
    schema: &TableSchema,
    c: usize,
) -> TokenKey {
    let table = t.engine.keys().id;
    t.tokens
        .entry(c)
        .or_insert_with(|| {
            let name = &schema.columns[c].name;
            TokenKey::new(*master.token_key(table, name).as_bytes())
        })
        .clone()
}

pub(super) fn ope_encoder<'t>(
    master: &MasterKey,
    t: &'t mut TableState,
    schema: &TableSchema,
    c: usize,
) -> Result<&'t mut OpeEncoder> {
    let table = t.engine.keys().id;
    match t.ope.entry(c) {
        std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
        std::collections::hash_map::Entry::Vacant(v) => {
            let name = &schema.columns[c].name;
            let enc = OpeEncoder::new(OpeKey::new(*master.ope_key(table, name).as_bytes()))
                .map_err(|e| ClientError::Setup(format!("order-preserving encryption: {e}")))?;
            Ok(v.insert(enc))
        }
    }
}

pub(super) fn text_expr(key: &TokenKey, q: &FtQuery) -> TextExpr {
    match q {
        FtQuery::Word(w) => match key.query_token(w, &TextOptions::default()) {
            Some(t) => TextExpr::Term(t),
            // A "word" with no letters or digits matches nothing.
            None => TextExpr::Or(Vec::new()),
        },
        FtQuery::And(parts) => TextExpr::And(parts.iter().map(|p| text_expr(key, p)).collect()),
        FtQuery::Or(parts) => TextExpr::Or(parts.iter().map(|p| text_expr(key, p)).collect()),
        FtQuery::Not(p) => TextExpr::Not(Box::new(text_expr(key, p))),
    }
}

impl Client {
    pub(super) fn row_id(
        &self,
        state: &mut State,
        schema: &TableSchema,
        key: &Value,
    ) -> Result<RowId> {
        let bytes = encode_key(key)?;
        Ok(RowId(
            self.table(state, schema)?
                .engine
                .keys()
                .row_id
                .row_id(&bytes)
                .0,
        ))
    }

    /// The index entries of row versions `(row, version, sealed locator, values)`. Each
    /// btree column's values are encrypted in one batch (its cache misses on every core).
    pub(super) fn entries<'r>(
        &self,
        state: &mut State,
        schema: &TableSchema,
        versions: impl IntoIterator<Item = (RowId, u64, Vec<u8>, &'r [Value])>,
    ) -> Result<Vec<RowEntries>> {
        let t = self.table(state, schema)?;
        let mut values = Vec::new();
        let mut out = Vec::new();
        for (row, version, locator, v) in versions {
            values.push(v);
            out.push(RowEntries {
                row,
                version,
                locator,
                equality: Vec::new(),
                range: Vec::new(),
                text: Vec::new(),
            });
        }
        for index in &schema.indexes {
            let Some(c) = schema.column_index(&index.column) else {
                continue;
            };
            let column = values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.get(c).filter(|v| !v.is_null()).map(|v| (i, v)));
            match index.kind {
                IndexKind::Hash => {
                    let key = token_key(&self.master, t, schema, c);
                    for (i, v) in column {
                        out[i]
                            .equality
                            .push((column_id(c), key.eq_token(&encode_key(v)?)));
                    }
                }
                IndexKind::FullText => {
                    let key = token_key(&self.master, t, schema, c);
                    for (i, v) in column {
                        if let Value::Text(text) = v {
                            out[i].text.push((
                                column_id(c),
                                key.text_tokens(text, &TextOptions::default()),
                            ));
                        }
                    }
                }
                IndexKind::BTree => {
                    let (at, xs): (Vec<usize>, Vec<u64>) =
                        column.filter_map(|(i, v)| Some((i, ordered(v)?))).unzip();
                    let enc = ope_encoder(&self.master, t, schema, c)?;
                    let cts = enc.encrypt_batch(&xs).map_err(|e| {
                        ClientError::Setup(format!("order-preserving encryption: {e}"))
                    })?;
                    for (i, ct) in at.into_iter().zip(cts) {
                        out[i].range.push((column_id(c), ct));
                    }
                }
            }
        }
        Ok(out)
    }
}
