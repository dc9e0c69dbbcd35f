//! Streamed SELECTs: a cursor over a plan's keys, or the pages of a full scan or of a full-text
//! match without LIMIT, that reads and decrypts a batch of rows at a time and stops at the
//! LIMIT, and the [`RowStream`] that hands them out.

use std::collections::VecDeque;

use wwt_index::{MAX_LIMIT, RowId};
use wwt_query::{
    AccessPath, IndexLookup, Plan, Pushdown, Row, SelectPlan, SelectStream, execute_select,
    pushdown_keys, streams,
};

use super::read::{Paged, ranked};
use super::{Client, Result, RowRef, State, stale_catalog};

/// Where a SELECT's reading stands.
pub(super) enum Cursor {
    /// Every result row, computed up front (joins, aggregates, ORDER BY); taken once.
    Ready(Option<Vec<Row>>),
    /// A streaming plan: the keys still to read and, for a paged lookup (a full scan, a
    /// full-text match without LIMIT), where its next page of keys starts (`None` for the
    /// after-row: from the first row); `pages` is `None` once there are no more.
    Streaming {
        select: Box<SelectStream>,
        keys: VecDeque<RowRef>,
        pages: Option<(Paged, Option<RowId>)>,
    },
}

/// The rows of one SELECT, read as they are consumed ([`Client::query`]).
pub struct RowStream<'c> {
    client: &'c Client,
    state: tokio::sync::MutexGuard<'c, State>,
    columns: Vec<String>,
    cursor: Cursor,
    buffered: VecDeque<Row>,
}

impl std::fmt::Debug for RowStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowStream")
            .field("columns", &self.columns)
            .finish_non_exhaustive()
    }
}

impl RowStream<'_> {
    /// The output column names.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The next batch of rows (never empty), or `None` after the last.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<Row>>> {
        if !self.buffered.is_empty() {
            return Ok(Some(self.buffered.drain(..).collect()));
        }
        self.client
            .next_batch(&mut self.state, &mut self.cursor)
            .await
    }

    /// The next row, or `None` after the last.
    pub async fn next(&mut self) -> Result<Option<Row>> {
        if self.buffered.is_empty()
            && let Some(batch) = self
                .client
                .next_batch(&mut self.state, &mut self.cursor)
                .await?
        {
            self.buffered = batch.into();
        }
        Ok(self.buffered.pop_front())
    }
}

impl Client {
    /// Runs one SELECT and returns its rows as a stream. A SELECT over one table without
    /// aggregates or ORDER BY reads and decrypts its rows a batch at a time
    /// ([`ClientConfig::stream_batch`]) and stops reading once LIMIT is reached, so memory stays
    /// bounded however many rows it returns; any other SELECT computes its rows first.
    ///
    /// The stream holds the client: other statements on this client wait until it is dropped.
    pub async fn query(&self, sql: &str) -> Result<RowStream<'_>> {
        let mut statements = wwt_query::parse(sql)?;
        match (statements.pop(), statements.is_empty()) {
            (Some(statement), true) => self.query_parsed(statement).await,
            _ => Err(wwt_query::Error::Unsupported {
                what: "query with other than one statement".into(),
                hint: "pass one SELECT to query, or use execute for scripts".into(),
            }
            .into()),
        }
    }

    /// [`Client::query`] for a statement already parsed.
    pub async fn query_parsed(&self, statement: wwt_query::Statement) -> Result<RowStream<'_>> {
        let mut state = self.state.lock().await;
        let open = |state: &mut State| -> Result<(Vec<String>, Cursor)> {
            let Plan::Select(plan) = wwt_query::plan(&state.catalog, &statement)? else {
                return Err(wwt_query::Error::Unsupported {
                    what: "query with a statement other than SELECT".into(),
                    hint: "use execute for statements that change data or schema".into(),
                }
                .into());
            };
            Ok((plan.columns.clone(), self.open_cursor(state, &plan)?))
        };
        let (columns, cursor) = match open(&mut state) {
            Err(e) if stale_catalog(&e) => {
                self.reload_catalog(&mut state).await?;
                open(&mut state)?
            }
            other => other?,
        };
        Ok(RowStream {
            client: self,
            state,
            columns,
            cursor,
            buffered: std::collections::VecDeque::new(),
        })
    }

    /// Starts reading a SELECT: a streaming plan's keys, or every result of another plan.
    pub(super) fn open_cursor(&self, state: &mut State, plan: &SelectPlan) -> Result<Cursor> {
        if !streams(plan) {
            let (rows, _) = self.with_source(state, false, |s| execute_select(plan, s))?;
            return Ok(Cursor::Ready(Some(rows.rows)));
        }
        let select = SelectStream::new(plan.clone())?;
        let (keys, pages) = match &select.access().path {
            AccessPath::FullScan => (Vec::new(), Some((Paged::Scan, None))),
            AccessPath::Index(Pushdown::Lookup(IndexLookup::FullText {
                column,
                query,
                limit,
            })) if ranked(*limit).is_none() => {
                let table = &select.access().table;
                let (column, expr) = self.text_query(state, table, column, query)?;
                (Vec::new(), Some((Paged::Text { column, expr }, None)))
            }
            AccessPath::Index(p) => {
                let table = &select.access().table;
                let (keys, _) = self.with_source(state, false, |s| pushdown_keys(s, table, p))?;
                (keys, None)
            }
        };
        Ok(Cursor::Streaming {
            select: Box::new(select),
            keys: keys.into(),
            pages,
        })
    }

    /// The next rows of `cursor`, or `None` when it is done.
    pub(super) async fn next_batch(
        &self,
        state: &mut State,
        cursor: &mut Cursor,
    ) -> Result<Option<Vec<Row>>> {
        let (select, keys, pages) = match cursor {
            Cursor::Ready(rows) => return Ok(rows.take().filter(|r| !r.is_empty())),
            Cursor::Streaming {
                select,
                keys,
                pages,
            } => (select, keys, pages),
        };
        let batch = self.config.stream_batch.clamp(1, MAX_LIMIT);
        while !select.finished() {
            if keys.is_empty()
                && let Some((paged, after)) = pages
            {
                let (page, next) = self
                    .page(state, &select.access().table, paged, *after, batch)
                    .await?;
                match next {
                    Some(row) => *after = Some(row),
                    None => *pages = None,
                }
                keys.extend(page);
            }
            if keys.is_empty() {
                break;
            }
            let chunk: Vec<RowRef> = keys.drain(..batch.min(keys.len())).collect();
            let rows = self
                .fetch_rows(state, &select.access().table, &chunk, None)
                .await?;
            let out = select.push(rows)?;
            if !out.is_empty() {
                return Ok(Some(out));
            }
        }
        Ok(None)
    }
}
