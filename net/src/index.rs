//! The index provider's seam: [`IndexApi`], its signed request bodies, the owner's log, and
//! their validated conversions from the wire (`proto/index.proto`).
//!
//! The bodies carry `wwt-index`'s plain types (tokens, OPE ciphertexts, opaque locators), so
//! the same validation runs on receipt as in the store. The signer of a request is the owner
//! whose namespace it reads or writes: there is no other way to name an owner.
//!
//! Every change to an owner's index state is an [`Append`]: entry `seq` of the owner's log,
//! naming the hash of entry `seq - 1` ([`entry_hash`]) and the owner's replica set, signed by
//! the owner. Entries are checked with [`open_entry`]: the signature, not the time it was
//! made, since a replica catching up checks entries signed long ago.

use std::ops::Bound;

use async_trait::async_trait;
use bytes::Bytes;
use prost::Message;
use wwt_index::{
    Batch, CatalogBlob, ColumnId, EqToken, IndexError, IndexKind, OpeCiphertext, Order, Query,
    QueryOutput, RowEntries, RowHit, RowId, RowOp, TableId, TableSchema, TextExpr, TextOrder,
    Token, ValueCount,
};

use crate::auth::{Signed, check_signature};
use crate::types::NodeId;
use crate::{NetError, proto};

/// How deep a full-text expression may nest (a guard against stack exhaustion on receipt).
const MAX_TEXT_DEPTH: usize = 64;

/// The most replicas an owner's log may name.
pub const MAX_REPLICAS: usize = 16;

/// The most entries one [`IndexApi::entries`] call returns.
pub const MAX_ENTRIES_PER_CALL: u32 = 256;

/// An index provider: a replica of its owners' logs, and the encrypted indexes and catalogs
/// those logs build.
#[async_trait]
pub trait IndexApi: Send + Sync {
    /// Appends an entry to its signer's log and applies it; durable when it returns. Refused
    /// (`Precondition`) if the replica is behind (it catches up on its own), and (`Conflict`)
    /// if the seq is taken by another entry or `prev` is not the replica's head.
    async fn append(&self, entry: Signed<Append>) -> Result<LogHead, NetError>;
    /// The last entry of an owner's log, as the owner signed it (none if the log is empty).
    async fn head(&self, request: Signed<GetHead>) -> Result<Option<Signed<Append>>, NetError>;
    /// Entries of an owner's log after a seq, in order: how a replica catches up.
    async fn entries(&self, request: Signed<GetEntries>) -> Result<Vec<Signed<Append>>, NetError>;
    /// Answers a query on one of the signer's tables.
    async fn query(&self, request: Signed<QueryTable>) -> Result<Answer<QueryOutput>, NetError>;
    /// The signer's encrypted catalog.
    async fn catalog(&self, request: Signed<GetCatalog>) -> Result<Answer<CatalogBlob>, NetError>;
}

/// A replica's answer to a read, and the seq of the owner's log it reflects (the replica's
/// last applied entry): a client that knows a later head does not believe it.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer<T> {
    /// The answer.
    pub value: T,
    /// The seq it reflects.
    pub seq: u64,
}

/// Create a table with these indexes.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateTable {
    /// The table.
    pub table: TableId,
    /// Its indexes.
    pub schema: TableSchema,
}

/// Drop a table.
#[derive(Debug, Clone, PartialEq)]
pub struct DropTable {
    /// The table.
    pub table: TableId,
}

/// Apply a batch of row operations to a table.
#[derive(Debug, Clone, PartialEq)]
pub struct ApplyBatch {
    /// The table.
    pub table: TableId,
    /// The operations.
    pub batch: Batch,
}

/// Query a table.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryTable {
    /// The table.
    pub table: TableId,
    /// The query.
    pub query: Query,
}

/// Read the signer's catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetCatalog;

/// The sealed catalog at a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutCatalog {
    /// The version it replaces (the new one is this plus one).
    pub expected_version: u64,
    /// The encrypted catalog.
    pub blob: Vec<u8>,
}

/// What one log entry changes.
#[derive(Debug, Clone, PartialEq)]
pub enum LogOp {
    /// Create a table.
    CreateTable(CreateTable),
    /// Drop a table.
    DropTable(DropTable),
    /// Apply row operations.
    Apply(ApplyBatch),
    /// Replace the catalog.
    Catalog(PutCatalog),
}

/// Entry `seq` of its signer's log.
#[derive(Debug, Clone, PartialEq)]
pub struct Append {
    /// 1 for the first entry.
    pub seq: u64,
    /// [`entry_hash`] of entry `seq - 1`; zeros for the first.
    pub prev: [u8; 32],
    /// The owner's replica set when it signed.
    pub replicas: Vec<NodeId>,
    /// The change.
    pub op: LogOp,
}

/// Where a log stands: its last seq and that entry's hash (zeros at seq 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogHead {
    /// The last seq, 0 for an empty log.
    pub seq: u64,
    /// The last entry's [`entry_hash`].
    pub hash: [u8; 32],
}

/// The head of an owner's log as the owner publishes it in the DHT: where the log stands and
/// who replicates it. Small (under [`MAX_HEAD_RECORD_BYTES`]) whatever the log holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadRecord {
    /// The head: seq (1 or more) and that entry's hash.
    pub head: LogHead,
    /// The owner's replica set at that seq.
    pub replicas: Vec<NodeId>,
    /// The newest entry of the log in pieces and its segment's manifest, sealed by the owner:
    /// where a client walks the log back from, without a tracker.
    pub archived: Option<Archived>,
}

/// Where the log in pieces ends, as a [`HeadRecord`] names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    /// The entry's seq (1 to the head's).
    pub seq: u64,
    /// Its segment's manifest, sealed by the owner.
    pub manifest: Vec<u8>,
}

impl HeadRecord {
    fn archived_seq(&self) -> u64 {
        self.archived.as_ref().map_or(0, |a| a.seq)
    }
}

/// The most bytes a signed [`HeadRecord`] may take.
pub const MAX_HEAD_RECORD_BYTES: usize = 2048;

/// The DHT key under which `owner` publishes its [`HeadRecord`]: derived from the owner id, so
/// a DHT node checks a record against the key it is stored under.
pub fn head_key(owner: &NodeId) -> [u8; 32] {
    blake3::derive_key("wwt 2026-12 head record", &owner.0)
}

/// Checks a head record as it came from the DHT: bounded, signed (whenever) by the owner whose
/// key it is stored under. Returns it signed, for passing on, and decoded.
pub fn open_head(key: &[u8], bytes: &[u8]) -> Result<(Signed<HeadRecord>, HeadRecord), NetError> {
    if bytes.len() > MAX_HEAD_RECORD_BYTES {
        return Err(NetError::BadRequest(format!(
            "a head record of {} bytes; at most {MAX_HEAD_RECORD_BYTES} are allowed",
            bytes.len()
        )));
    }
    let signed = Signed::<HeadRecord>::from_bytes(bytes)?;
    if head_key(&signed.auth().signer) != key {
        return Err(NetError::Unauthenticated(
            "a head record signed by another owner than its key names".into(),
        ));
    }
    check_signature(&signed)?;
    let record = HeadRecord::try_from(proto::HeadRecord::decode(signed.body().clone())?)?;
    Ok((signed, record))
}

/// Whether a DHT node keeps head record `new` under `key` in place of the one it `held`: `new`
/// is valid, and above `held` (or the same head again, which refreshes its expiry, with its log
/// in pieces reaching as far) unless that one is not. A replayed older record, or one of
/// another lineage at the same seq, does not displace the newest.
pub fn replaces_head(key: &[u8], new: &[u8], held: Option<&[u8]>) -> bool {
    let Ok((_, new)) = open_head(key, new) else {
        return false;
    };
    match held.and_then(|h| open_head(key, h).ok()) {
        Some((_, held)) => {
            new.head.seq > held.head.seq
                || (new.head == held.head && new.archived_seq() >= held.archived_seq())
        }
        None => true,
    }
}

/// Of head records found under `key`, the valid one with the highest seq: DHT peers may hold
/// older ones, or lie.
pub fn highest_head<'a>(
    key: &[u8],
    found: impl IntoIterator<Item = &'a [u8]>,
) -> Option<(Signed<HeadRecord>, HeadRecord)> {
    found
        .into_iter()
        .filter_map(|bytes| open_head(key, bytes).ok())
        .max_by_key(|(_, record)| (record.head.seq, record.archived_seq()))
}

/// Ask for an owner's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetHead {
    /// The owner.
    pub owner: NodeId,
}

/// Ask for an owner's entries after a seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetEntries {
    /// The owner.
    pub owner: NodeId,
    /// Entries after this seq.
    pub after: u64,
    /// At most this many.
    pub limit: u32,
}

/// The hash that names an entry: BLAKE3 over its signer, time, nonce, signature and body,
/// exactly as signed. The next entry's `prev` is this.
pub fn entry_hash(entry: &Signed<Append>) -> [u8; 32] {
    let auth = entry.auth();
    let mut h = blake3::Hasher::new_derive_key("wwt 2026-12 log entry");
    h.update(&auth.signer.0);
    h.update(&auth.timestamp_ms.to_le_bytes());
    h.update(&auth.nonce);
    h.update(&auth.signature);
    h.update(entry.body());
    *h.finalize().as_bytes()
}

/// Checks an entry's signature (whenever it was made) and decodes it: its owner and body.
pub fn open_entry(entry: &Signed<Append>) -> Result<(NodeId, Append), NetError> {
    check_signature(entry)?;
    let wire = proto::LogEntry::decode(entry.body().clone())?;
    Ok((entry.auth().signer, Append::try_from(wire)?))
}

impl From<IndexError> for NetError {
    fn from(err: IndexError) -> NetError {
        let message = err.to_string();
        match err {
            IndexError::UnknownTable { .. } => NetError::NotFound(message),
            IndexError::TableExists { .. } => NetError::Conflict(message),
            IndexError::Busy { .. } => NetError::Unavailable(message),
            IndexError::StaleVersion { .. } | IndexError::CatalogConflict { .. } => {
                NetError::Precondition(message)
            }
            IndexError::MissingIndex { .. }
            | IndexError::MalformedToken { .. }
            | IndexError::InvalidRequest(_) => NetError::BadRequest(message),
            IndexError::Ope(_)
            | IndexError::Storage(_)
            | IndexError::Io(_)
            | IndexError::FullText(_)
            | IndexError::Corrupt(_) => NetError::Internal(message),
        }
    }
}

fn table_from(bytes: &[u8]) -> Result<TableId, NetError> {
    Ok(TableId::try_from(bytes)?)
}

fn row_from(bytes: &[u8]) -> Result<RowId, NetError> {
    Ok(RowId::try_from(bytes)?)
}

fn wire(bytes: &[u8]) -> Bytes {
    Bytes::copy_from_slice(bytes)
}

fn limit_from(limit: u64) -> Result<usize, NetError> {
    usize::try_from(limit).map_err(|_| NetError::BadRequest(format!("limit {limit} is too large")))
}

fn kind_from(kind: i32) -> Result<IndexKind, NetError> {
    match proto::IndexKind::try_from(kind) {
        Ok(proto::IndexKind::Equality) => Ok(IndexKind::Equality),
        Ok(proto::IndexKind::Range) => Ok(IndexKind::Range),
        Ok(proto::IndexKind::FullText) => Ok(IndexKind::FullText),
        _ => Err(NetError::BadRequest(format!("unknown index kind {kind}"))),
    }
}

fn kind_to(kind: IndexKind) -> proto::IndexKind {
    match kind {
        IndexKind::Equality => proto::IndexKind::Equality,
        IndexKind::Range => proto::IndexKind::Range,
        IndexKind::FullText => proto::IndexKind::FullText,
    }
}

impl TryFrom<proto::CreateTableRequest> for CreateTable {
    type Error = NetError;
    fn try_from(w: proto::CreateTableRequest) -> Result<Self, NetError> {
        Ok(CreateTable {
            table: table_from(&w.table)?,
            schema: TableSchema {
                indexes: w
                    .indexes
                    .iter()
                    .map(|i| Ok((ColumnId(i.column), kind_from(i.kind)?)))
                    .collect::<Result<_, NetError>>()?,
            },
        })
    }
}

impl From<CreateTable> for proto::CreateTableRequest {
    fn from(c: CreateTable) -> Self {
        proto::CreateTableRequest {
            table: wire(&c.table.0),
            indexes: c
                .schema
                .indexes
                .iter()
                .map(|(column, kind)| proto::ColumnIndex {
                    column: column.0,
                    kind: kind_to(*kind).into(),
                })
                .collect(),
        }
    }
}

impl TryFrom<proto::DropTableRequest> for DropTable {
    type Error = NetError;
    fn try_from(w: proto::DropTableRequest) -> Result<Self, NetError> {
        Ok(DropTable {
            table: table_from(&w.table)?,
        })
    }
}

impl From<DropTable> for proto::DropTableRequest {
    fn from(d: DropTable) -> Self {
        proto::DropTableRequest {
            table: wire(&d.table.0),
        }
    }
}

fn entries_from(e: proto::RowEntries) -> Result<RowEntries, NetError> {
    Ok(RowEntries {
        row: row_from(&e.row)?,
        version: e.version,
        locator: e.locator.to_vec(),
        equality: e
            .equality
            .iter()
            .map(|x| Ok((ColumnId(x.column), EqToken::try_from(x.token.as_ref())?)))
            .collect::<Result<_, NetError>>()?,
        range: e
            .range
            .iter()
            .map(|x| {
                Ok((
                    ColumnId(x.column),
                    OpeCiphertext::try_from(x.ciphertext.as_ref())?,
                ))
            })
            .collect::<Result<_, NetError>>()?,
        text: e
            .text
            .iter()
            .map(|x| {
                let chunks = x.tokens.chunks_exact(std::mem::size_of::<Token>());
                if !chunks.remainder().is_empty() {
                    return Err(NetError::BadRequest(format!(
                        "full-text tokens of column {} are {} bytes, not a multiple of {}",
                        x.column,
                        x.tokens.len(),
                        std::mem::size_of::<Token>()
                    )));
                }
                let tokens = chunks
                    .map(Token::try_from)
                    .collect::<Result<Vec<_>, IndexError>>()?;
                Ok((ColumnId(x.column), tokens))
            })
            .collect::<Result<_, NetError>>()?,
    })
}

fn entries_to(e: RowEntries) -> proto::RowEntries {
    proto::RowEntries {
        row: wire(&e.row.0),
        version: e.version,
        locator: Bytes::from(e.locator),
        equality: e
            .equality
            .iter()
            .map(|(c, t)| proto::EqualityEntry {
                column: c.0,
                token: wire(&t.0),
            })
            .collect(),
        range: e
            .range
            .iter()
            .map(|(c, o)| proto::RangeEntry {
                column: c.0,
                ciphertext: wire(&o.0),
            })
            .collect(),
        text: e
            .text
            .iter()
            .map(|(c, tokens)| proto::TextEntry {
                column: c.0,
                tokens: Bytes::from(tokens.iter().flat_map(|t| t.0).collect::<Vec<u8>>()),
            })
            .collect(),
    }
}

impl TryFrom<proto::ApplyRequest> for ApplyBatch {
    type Error = NetError;
    fn try_from(w: proto::ApplyRequest) -> Result<Self, NetError> {
        let ops = w
            .ops
            .into_iter()
            .map(|op| match op.op {
                Some(proto::row_op::Op::Put(e)) => Ok(RowOp::Put(entries_from(e)?)),
                Some(proto::row_op::Op::Delete(d)) => Ok(RowOp::Delete {
                    row: row_from(&d.row)?,
                    version: d.version,
                }),
                None => Err(NetError::BadRequest(
                    "a row operation is neither put nor delete".into(),
                )),
            })
            .collect::<Result<_, NetError>>()?;
        Ok(ApplyBatch {
            table: table_from(&w.table)?,
            batch: Batch { ops },
        })
    }
}

impl From<ApplyBatch> for proto::ApplyRequest {
    fn from(a: ApplyBatch) -> Self {
        proto::ApplyRequest {
            table: wire(&a.table.0),
            ops: a
                .batch
                .ops
                .into_iter()
                .map(|op| proto::RowOp {
                    op: Some(match op {
                        RowOp::Put(e) => proto::row_op::Op::Put(entries_to(e)),
                        RowOp::Delete { row, version } => {
                            proto::row_op::Op::Delete(proto::RowDelete {
                                row: wire(&row.0),
                                version,
                            })
                        }
                    }),
                })
                .collect(),
        }
    }
}

fn bound_from(b: Option<proto::RangeBound>) -> Result<Bound<OpeCiphertext>, NetError> {
    Ok(match b.and_then(|b| b.bound) {
        None => Bound::Unbounded,
        Some(proto::range_bound::Bound::Included(c)) => {
            Bound::Included(OpeCiphertext::try_from(c.as_ref())?)
        }
        Some(proto::range_bound::Bound::Excluded(c)) => {
            Bound::Excluded(OpeCiphertext::try_from(c.as_ref())?)
        }
    })
}

fn bound_to(b: &Bound<OpeCiphertext>) -> Option<proto::RangeBound> {
    let bound = match b {
        Bound::Unbounded => return None,
        Bound::Included(c) => proto::range_bound::Bound::Included(wire(&c.0)),
        Bound::Excluded(c) => proto::range_bound::Bound::Excluded(wire(&c.0)),
    };
    Some(proto::RangeBound { bound: Some(bound) })
}

fn text_from(e: proto::TextExpr, depth: usize) -> Result<TextExpr, NetError> {
    if depth > MAX_TEXT_DEPTH {
        return Err(NetError::BadRequest(format!(
            "full-text expression nests deeper than {MAX_TEXT_DEPTH}"
        )));
    }
    let list = |l: proto::TextExprList| {
        l.exprs
            .into_iter()
            .map(|e| text_from(e, depth + 1))
            .collect::<Result<Vec<_>, NetError>>()
    };
    match e.expr {
        Some(proto::text_expr::Expr::Term(t)) => Ok(TextExpr::Term(Token::try_from(t.as_ref())?)),
        Some(proto::text_expr::Expr::And(l)) => Ok(TextExpr::And(list(l)?)),
        Some(proto::text_expr::Expr::Or(l)) => Ok(TextExpr::Or(list(l)?)),
        Some(proto::text_expr::Expr::Not(inner)) => {
            Ok(TextExpr::Not(Box::new(text_from(*inner, depth + 1)?)))
        }
        None => Err(NetError::BadRequest("empty full-text expression".into())),
    }
}

fn text_to(e: &TextExpr) -> proto::TextExpr {
    let list = |l: &[TextExpr]| proto::TextExprList {
        exprs: l.iter().map(text_to).collect(),
    };
    let expr = match e {
        TextExpr::Term(t) => proto::text_expr::Expr::Term(wire(&t.0)),
        TextExpr::And(l) => proto::text_expr::Expr::And(list(l)),
        TextExpr::Or(l) => proto::text_expr::Expr::Or(list(l)),
        TextExpr::Not(inner) => proto::text_expr::Expr::Not(Box::new(text_to(inner))),
    };
    proto::TextExpr { expr: Some(expr) }
}

fn eq_tokens(values: &[Bytes]) -> Result<Vec<EqToken>, NetError> {
    values
        .iter()
        .map(|v| Ok(EqToken::try_from(v.as_ref())?))
        .collect()
}

impl TryFrom<proto::QueryRequest> for QueryTable {
    type Error = NetError;
    fn try_from(w: proto::QueryRequest) -> Result<Self, NetError> {
        use proto::query_request::Query as Q;
        let query = match w.query {
            Some(Q::Get(ids)) => Query::Get {
                rows: ids
                    .rows
                    .iter()
                    .map(|r| row_from(r))
                    .collect::<Result<_, _>>()?,
            },
            Some(Q::Equal(q)) => Query::Equal {
                column: ColumnId(q.column),
                values: eq_tokens(&q.values)?,
            },
            Some(Q::CountByValue(q)) => Query::CountByValue {
                column: ColumnId(q.column),
                values: q.values.map(|t| eq_tokens(&t.tokens)).transpose()?,
            },
            Some(Q::Range(q)) => Query::Range {
                column: ColumnId(q.column),
                order: match proto::ScanOrder::try_from(q.order) {
                    Ok(proto::ScanOrder::Asc) => Order::Asc,
                    Ok(proto::ScanOrder::Desc) => Order::Desc,
                    Err(_) => {
                        return Err(NetError::BadRequest(format!(
                            "unknown scan order {}",
                            q.order
                        )));
                    }
                },
                lower: bound_from(q.lower)?,
                upper: bound_from(q.upper)?,
                limit: match q.limit {
                    0 => None,
                    n => Some(limit_from(n)?),
                },
            },
            Some(Q::Text(q)) => Query::Text {
                column: ColumnId(q.column),
                expr: text_from(
                    q.expr.ok_or_else(|| {
                        NetError::BadRequest("full-text query has no expression".into())
                    })?,
                    0,
                )?,
                limit: limit_from(q.limit)?,
                order: match q.page {
                    None => TextOrder::Score,
                    Some(page) => TextOrder::Rows {
                        after: page.after.as_deref().map(row_from).transpose()?,
                    },
                },
            },
            Some(Q::Scan(q)) => Query::Scan {
                after: q.after.as_deref().map(row_from).transpose()?,
                limit: limit_from(q.limit)?,
            },
            None => return Err(NetError::BadRequest("query is empty".into())),
        };
        Ok(QueryTable {
            table: table_from(&w.table)?,
            query,
        })
    }
}

impl From<QueryTable> for proto::QueryRequest {
    fn from(q: QueryTable) -> Self {
        use proto::query_request::Query as Q;
        let query = match q.query {
            Query::Get { rows } => Q::Get(proto::RowIds {
                rows: rows.iter().map(|r| wire(&r.0)).collect(),
            }),
            Query::Equal { column, values } => Q::Equal(proto::EqualQuery {
                column: column.0,
                values: values.iter().map(|v| wire(&v.0)).collect(),
            }),
            Query::CountByValue { column, values } => Q::CountByValue(proto::CountQuery {
                column: column.0,
                values: values.map(|v| proto::Tokens {
                    tokens: v.iter().map(|t| wire(&t.0)).collect(),
                }),
            }),
            Query::Range {
                column,
                lower,
                upper,
                order,
                limit,
            } => Q::Range(proto::RangeQuery {
                column: column.0,
                lower: bound_to(&lower),
                upper: bound_to(&upper),
                order: match order {
                    Order::Asc => proto::ScanOrder::Asc,
                    Order::Desc => proto::ScanOrder::Desc,
                }
                .into(),
                limit: limit.map_or(0, |l| l as u64),
            }),
            Query::Text {
                column,
                expr,
                limit,
                order,
            } => Q::Text(proto::TextQuery {
                column: column.0,
                expr: Some(text_to(&expr)),
                limit: limit as u64,
                page: match order {
                    TextOrder::Score => None,
                    TextOrder::Rows { after } => Some(proto::TextPage {
                        after: after.map(|r| wire(&r.0)),
                    }),
                },
            }),
            Query::Scan { after, limit } => Q::Scan(proto::ScanQuery {
                after: after.map(|r| wire(&r.0)),
                limit: limit as u64,
            }),
        };
        proto::QueryRequest {
            table: wire(&q.table.0),
            query: Some(query),
        }
    }
}

impl TryFrom<proto::QueryResponse> for Answer<QueryOutput> {
    type Error = NetError;
    fn try_from(w: proto::QueryResponse) -> Result<Self, NetError> {
        let seq = w.seq;
        let value = match w.output {
            Some(proto::query_response::Output::Rows(r)) => Ok(QueryOutput::Rows(
                r.hits
                    .into_iter()
                    .map(|h| {
                        Ok(RowHit {
                            row: row_from(&h.row)?,
                            version: h.version,
                            locator: h.locator.to_vec(),
                            score: h.score,
                        })
                    })
                    .collect::<Result<_, NetError>>()?,
            )),
            Some(proto::query_response::Output::Counts(c)) => Ok(QueryOutput::Counts(
                c.counts
                    .into_iter()
                    .map(|c| {
                        Ok(ValueCount {
                            value: EqToken::try_from(c.value.as_ref())?,
                            count: c.count,
                        })
                    })
                    .collect::<Result<_, NetError>>()?,
            )),
            None => Err(NetError::BadRequest("query answer is empty".into())),
        }?;
        Ok(Answer { value, seq })
    }
}

impl From<Answer<QueryOutput>> for proto::QueryResponse {
    fn from(a: Answer<QueryOutput>) -> Self {
        let output = match a.value {
            QueryOutput::Rows(hits) => proto::query_response::Output::Rows(proto::RowHits {
                hits: hits
                    .into_iter()
                    .map(|h| proto::RowHit {
                        row: wire(&h.row.0),
                        version: h.version,
                        locator: Bytes::from(h.locator),
                        score: h.score,
                    })
                    .collect(),
            }),
            QueryOutput::Counts(counts) => {
                proto::query_response::Output::Counts(proto::ValueCounts {
                    counts: counts
                        .into_iter()
                        .map(|c| proto::ValueCount {
                            value: wire(&c.value.0),
                            count: c.count,
                        })
                        .collect(),
                })
            }
        };
        proto::QueryResponse {
            output: Some(output),
            seq: a.seq,
        }
    }
}

impl TryFrom<proto::GetCatalogRequest> for GetCatalog {
    type Error = NetError;
    fn try_from(_: proto::GetCatalogRequest) -> Result<Self, NetError> {
        Ok(GetCatalog)
    }
}

impl From<GetCatalog> for proto::GetCatalogRequest {
    fn from(_: GetCatalog) -> Self {
        proto::GetCatalogRequest {}
    }
}

fn node_from(bytes: &[u8], what: &str) -> Result<NodeId, NetError> {
    NodeId::from_slice(bytes)
        .map_err(|_| NetError::BadRequest(format!("{what} is not a 32-byte node id")))
}

fn hash_from(bytes: &[u8], what: &str) -> Result<[u8; 32], NetError> {
    <[u8; 32]>::try_from(bytes)
        .map_err(|_| NetError::BadRequest(format!("{what} is not a 32-byte hash")))
}

impl TryFrom<proto::LogEntry> for Append {
    type Error = NetError;
    fn try_from(w: proto::LogEntry) -> Result<Self, NetError> {
        use proto::log_entry::Op;
        if w.seq == 0 {
            return Err(NetError::BadRequest("log entries start at seq 1".into()));
        }
        if w.replicas.is_empty() || w.replicas.len() > MAX_REPLICAS {
            return Err(NetError::BadRequest(format!(
                "a log entry names {} replicas; 1 to {MAX_REPLICAS} are allowed",
                w.replicas.len()
            )));
        }
        let replicas = w
            .replicas
            .iter()
            .map(|r| node_from(r, "a replica"))
            .collect::<Result<Vec<_>, _>>()?;
        let op = match w.op {
            Some(Op::CreateTable(c)) => LogOp::CreateTable(c.try_into()?),
            Some(Op::DropTable(d)) => LogOp::DropTable(d.try_into()?),
            Some(Op::Apply(a)) => LogOp::Apply(a.try_into()?),
            Some(Op::Catalog(c)) if c.version == 0 => {
                return Err(NetError::BadRequest("catalog versions start at 1".into()));
            }
            Some(Op::Catalog(c)) => LogOp::Catalog(PutCatalog {
                expected_version: c.version - 1,
                blob: c.blob.to_vec(),
            }),
            None => return Err(NetError::BadRequest("a log entry changes nothing".into())),
        };
        Ok(Append {
            seq: w.seq,
            prev: hash_from(&w.prev, "the previous entry's hash")?,
            replicas,
            op,
        })
    }
}

impl From<Append> for proto::LogEntry {
    fn from(a: Append) -> Self {
        use proto::log_entry::Op;
        proto::LogEntry {
            seq: a.seq,
            prev: wire(&a.prev),
            replicas: a.replicas.iter().map(NodeId::to_wire).collect(),
            op: Some(match a.op {
                LogOp::CreateTable(c) => Op::CreateTable(c.into()),
                LogOp::DropTable(d) => Op::DropTable(d.into()),
                LogOp::Apply(b) => Op::Apply(b.into()),
                LogOp::Catalog(c) => Op::Catalog(proto::CatalogRecord {
                    version: c.expected_version + 1,
                    blob: Bytes::from(c.blob),
                }),
            }),
        }
    }
}

impl TryFrom<proto::HeadRecord> for HeadRecord {
    type Error = NetError;
    fn try_from(w: proto::HeadRecord) -> Result<Self, NetError> {
        if w.seq == 0 {
            return Err(NetError::BadRequest("a head record names no entry".into()));
        }
        if w.replicas.is_empty() || w.replicas.len() > MAX_REPLICAS {
            return Err(NetError::BadRequest(format!(
                "a head record names {} replicas; 1 to {MAX_REPLICAS} are allowed",
                w.replicas.len()
            )));
        }
        if w.archived_seq > w.seq || (w.archived_seq == 0) != w.archived.is_empty() {
            return Err(NetError::BadRequest(format!(
                "a head record at seq {} names the log in pieces to seq {} with {} bytes of \
                 manifest: a seq from 1 to the head's comes with a manifest, 0 without",
                w.seq,
                w.archived_seq,
                w.archived.len()
            )));
        }
        Ok(HeadRecord {
            head: LogHead {
                seq: w.seq,
                hash: hash_from(&w.hash, "the head's hash")?,
            },
            archived: (w.archived_seq > 0).then(|| Archived {
                seq: w.archived_seq,
                manifest: w.archived.to_vec(),
            }),
            replicas: w
                .replicas
                .iter()
                .map(|r| node_from(r, "a replica"))
                .collect::<Result<_, _>>()?,
        })
    }
}

impl From<HeadRecord> for proto::HeadRecord {
    fn from(r: HeadRecord) -> Self {
        proto::HeadRecord {
            seq: r.head.seq,
            hash: wire(&r.head.hash),
            replicas: r.replicas.iter().map(NodeId::to_wire).collect(),
            archived_seq: r.archived.as_ref().map_or(0, |a| a.seq),
            archived: r
                .archived
                .map(|a| Bytes::from(a.manifest))
                .unwrap_or_default(),
        }
    }
}

impl TryFrom<proto::LogHead> for LogHead {
    type Error = NetError;
    fn try_from(w: proto::LogHead) -> Result<Self, NetError> {
        Ok(LogHead {
            seq: w.seq,
            hash: if w.seq == 0 {
                [0; 32]
            } else {
                hash_from(&w.hash, "the head's hash")?
            },
        })
    }
}

impl From<LogHead> for proto::LogHead {
    fn from(h: LogHead) -> Self {
        proto::LogHead {
            seq: h.seq,
            hash: if h.seq == 0 {
                Bytes::new()
            } else {
                wire(&h.hash)
            },
        }
    }
}

impl TryFrom<proto::GetHeadRequest> for GetHead {
    type Error = NetError;
    fn try_from(w: proto::GetHeadRequest) -> Result<Self, NetError> {
        Ok(GetHead {
            owner: node_from(&w.owner, "the owner")?,
        })
    }
}

impl From<GetHead> for proto::GetHeadRequest {
    fn from(g: GetHead) -> Self {
        proto::GetHeadRequest {
            owner: g.owner.to_wire(),
        }
    }
}

impl TryFrom<proto::GetEntriesRequest> for GetEntries {
    type Error = NetError;
    fn try_from(w: proto::GetEntriesRequest) -> Result<Self, NetError> {
        Ok(GetEntries {
            owner: node_from(&w.owner, "the owner")?,
            after: w.after,
            limit: w.limit.min(MAX_ENTRIES_PER_CALL),
        })
    }
}

impl From<GetEntries> for proto::GetEntriesRequest {
    fn from(g: GetEntries) -> Self {
        proto::GetEntriesRequest {
            owner: g.owner.to_wire(),
            after: g.after,
            limit: g.limit,
        }
    }
}

impl From<Answer<CatalogBlob>> for proto::CatalogResponse {
    fn from(a: Answer<CatalogBlob>) -> Self {
        proto::CatalogResponse {
            version: a.value.version,
            blob: Bytes::from(a.value.blob),
            seq: a.seq,
        }
    }
}

impl From<proto::CatalogResponse> for Answer<CatalogBlob> {
    fn from(w: proto::CatalogResponse) -> Self {
        Answer {
            value: CatalogBlob {
                version: w.version,
                blob: w.blob.to_vec(),
            },
            seq: w.seq,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn text_query(order: TextOrder) -> QueryTable {
        QueryTable {
            table: TableId([1; 16]),
            query: Query::Text {
                column: ColumnId(2),
                expr: TextExpr::Term(Token([3; 16])),
                limit: 100,
                order,
            },
        }
    }

    /// Both orders survive the wire, and a request without the page field (an older client's)
    /// asks for the best rows by score.
    #[test]
    fn text_pages_round_trip_and_default_to_score() {
        for order in [
            TextOrder::Score,
            TextOrder::Rows { after: None },
            TextOrder::Rows {
                after: Some(RowId([4; 16])),
            },
        ] {
            let q = text_query(order);
            let wire = proto::QueryRequest::from(q.clone());
            let bytes = wire.encode_to_vec();
            let back = QueryTable::try_from(proto::QueryRequest::decode(bytes.as_slice()).unwrap());
            assert_eq!(back.unwrap(), q);
        }
        let mut wire = proto::QueryRequest::from(text_query(TextOrder::Rows { after: None }));
        if let Some(proto::query_request::Query::Text(t)) = &mut wire.query {
            t.page = None;
        }
        assert_eq!(
            QueryTable::try_from(wire).unwrap(),
            text_query(TextOrder::Score)
        );
    }

    /// A cursor that is not a row id is refused on receipt.
    #[test]
    fn a_garbage_text_cursor_is_refused() {
        for garbage in [&[][..], &[7; 5], &[7; 17]] {
            let mut wire = proto::QueryRequest::from(text_query(TextOrder::Rows { after: None }));
            if let Some(proto::query_request::Query::Text(t)) = &mut wire.query {
                t.page = Some(proto::TextPage {
                    after: Some(Bytes::copy_from_slice(garbage)),
                });
            }
            let err = QueryTable::try_from(wire).unwrap_err();
            assert!(matches!(err, NetError::BadRequest(_)), "{err}");
        }
    }
}
