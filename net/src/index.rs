//! The index provider's seam: [`IndexApi`], its signed request bodies, and their validated
//! conversions from the wire (`proto/index.proto`).
//!
//! The bodies carry `wwt-index`'s plain types (tokens, OPE ciphertexts, opaque locators), so
//! the same validation runs on receipt as in the store. The signer of a request is the owner
//! whose namespace it reads or writes: there is no other way to name an owner.

use std::ops::Bound;

use async_trait::async_trait;
use bytes::Bytes;
use wwt_index::{
    ApplyReceipt, Batch, CatalogBlob, ColumnId, EqToken, IndexError, IndexKind, OpeCiphertext,
    Order, Query, QueryOutput, RowEntries, RowHit, RowId, RowOp, TableId, TableSchema, TextExpr,
    Token, ValueCount,
};

use crate::auth::Signed;
use crate::{NetError, proto};

/// How deep a full-text expression may nest (a guard against stack exhaustion on receipt).
const MAX_TEXT_DEPTH: usize = 64;

/// An index provider: encrypted indexes per (owner, table), and each owner's catalog.
#[async_trait]
pub trait IndexApi: Send + Sync {
    /// Creates one of the signer's tables with its indexes.
    async fn create_table(&self, request: Signed<CreateTable>) -> Result<(), NetError>;
    /// Drops one of the signer's tables and all its entries.
    async fn drop_table(&self, request: Signed<DropTable>) -> Result<(), NetError>;
    /// Applies a statement's row operations; durable when it returns.
    async fn apply(&self, request: Signed<ApplyBatch>) -> Result<ApplyReceipt, NetError>;
    /// Answers a query on one of the signer's tables.
    async fn query(&self, request: Signed<QueryTable>) -> Result<QueryOutput, NetError>;
    /// The signer's encrypted catalog.
    async fn catalog(&self, request: Signed<GetCatalog>) -> Result<CatalogBlob, NetError>;
    /// Replaces the signer's catalog if it is still at the expected version; the new version.
    async fn put_catalog(&self, request: Signed<PutCatalog>) -> Result<u64, NetError>;
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

/// Write the signer's catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutCatalog {
    /// The version the writer read.
    pub expected_version: u64,
    /// The encrypted catalog.
    pub blob: Vec<u8>,
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

impl From<proto::ApplyResponse> for ApplyReceipt {
    fn from(w: proto::ApplyResponse) -> Self {
        let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        ApplyReceipt {
            put: count(w.put),
            deleted: count(w.deleted),
            unchanged: count(w.unchanged),
        }
    }
}

impl From<ApplyReceipt> for proto::ApplyResponse {
    fn from(r: ApplyReceipt) -> Self {
        proto::ApplyResponse {
            put: r.put as u64,
            deleted: r.deleted as u64,
            unchanged: r.unchanged as u64,
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
            } => Q::Text(proto::TextQuery {
                column: column.0,
                expr: Some(text_to(&expr)),
                limit: limit as u64,
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

impl TryFrom<proto::QueryResponse> for QueryOutput {
    type Error = NetError;
    fn try_from(w: proto::QueryResponse) -> Result<Self, NetError> {
        match w.output {
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
        }
    }
}

impl From<QueryOutput> for proto::QueryResponse {
    fn from(o: QueryOutput) -> Self {
        let output = match o {
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

impl TryFrom<proto::PutCatalogRequest> for PutCatalog {
    type Error = NetError;
    fn try_from(w: proto::PutCatalogRequest) -> Result<Self, NetError> {
        Ok(PutCatalog {
            expected_version: w.expected_version,
            blob: w.blob.to_vec(),
        })
    }
}

impl From<PutCatalog> for proto::PutCatalogRequest {
    fn from(p: PutCatalog) -> Self {
        proto::PutCatalogRequest {
            expected_version: p.expected_version,
            blob: Bytes::from(p.blob),
        }
    }
}

impl From<CatalogBlob> for proto::CatalogResponse {
    fn from(c: CatalogBlob) -> Self {
        proto::CatalogResponse {
            version: c.version,
            blob: Bytes::from(c.blob),
        }
    }
}

impl From<proto::CatalogResponse> for CatalogBlob {
    fn from(w: proto::CatalogResponse) -> Self {
        CatalogBlob {
            version: w.version,
            blob: w.blob.to_vec(),
        }
    }
}
