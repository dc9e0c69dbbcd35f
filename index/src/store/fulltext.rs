//! One tantivy index per namespace with full-text columns: a field per column holding the
//! row's PRF terms (whitespace-separated), a `row` field to find and delete the row's
//! document, and a `cols` field naming the text columns the row has (the universe of `NOT`).
//!
//! A match is answered two ways: its best rows by BM25 ([`TextIndex::search`]), or every
//! matching row in row-id order, a page at a time ([`TextIndex::page`]). Pages walk the `row`
//! field's term dictionary, which is sorted by row id, and test each row's document against
//! the query: a page costs the rows it walks past, never the matches before it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use tantivy::collector::TopDocs;
use tantivy::directory::MmapDirectory;
use tantivy::query::{
    BooleanQuery, EmptyQuery, EnableScoring, Occur, Query as TQuery, TermQuery, Weight,
};
use tantivy::schema::{
    Field, INDEXED, IndexRecordOption, STORED, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::tokenizer::WhitespaceTokenizer;
use tantivy::{
    DocId, DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, SegmentReader, TantivyDocument,
    Term,
};

use crate::error::IndexError;
use crate::token::Token;
use crate::types::{ColumnId, RowEntries, RowId, TextExpr};

const TOKENIZER: &str = "wwt_whitespace";

/// Most rows a page walks before testing them against the query at once; the first batch is
/// the page's limit, each next one twice the last (sparse matches walk further).
const MAX_WALK_BATCH: usize = 1 << 16;

pub(crate) struct TextIndex {
    index: Index,
    reader: IndexReader,
    /// Created on the first write, so namespaces that are only read hold no writer.
    writer: Mutex<Option<IndexWriter<TantivyDocument>>>,
    writer_budget: usize,
    row: Field,
    cols: Field,
    fields: HashMap<ColumnId, Field>,
}

fn field_name(c: ColumnId) -> String {
    format!("c{}", c.0)
}

impl TextIndex {
    /// Opens (or creates) the index of a namespace whose text columns are `columns`.
    pub fn open(
        dir: &Path,
        columns: &[ColumnId],
        writer_budget: usize,
    ) -> Result<Self, IndexError> {
        let mut sb = Schema::builder();
        let row = sb.add_bytes_field("row", INDEXED | STORED);
        let cols = sb.add_u64_field("cols", INDEXED);
        let text_options = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(TOKENIZER)
                .set_index_option(IndexRecordOption::WithFreqs),
        );
        let mut fields = HashMap::new();
        for &c in columns {
            fields.insert(c, sb.add_text_field(&field_name(c), text_options.clone()));
        }
        std::fs::create_dir_all(dir).map_err(IndexError::Io)?;
        let directory = MmapDirectory::open(dir).map_err(tantivy::TantivyError::from)?;
        let index = Index::open_or_create(directory, sb.build())?;
        index
            .tokenizers()
            .register(TOKENIZER, WhitespaceTokenizer::default());
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            index,
            reader,
            writer: Mutex::new(None),
            writer_budget,
            row,
            cols,
            fields,
        })
    }

    /// Waits for the writer's background merges to finish.
    pub fn close(self) -> Result<(), IndexError> {
        let writer = self
            .writer
            .into_inner()
            .map_err(|_| IndexError::Corrupt("full-text writer poisoned by a panic"))?;
        if let Some(writer) = writer {
            writer.wait_merging_threads()?;
        }
        Ok(())
    }

    fn field(&self, c: ColumnId) -> Result<Field, IndexError> {
        self.fields.get(&c).copied().ok_or(IndexError::Corrupt(
            "text column missing from the full-text schema",
        ))
    }

    /// Removes the documents of `removed` rows and adds the text of `added` entries, then
    /// commits: durable when this returns.
    pub fn apply(&self, removed: &[RowId], added: &[&RowEntries]) -> Result<(), IndexError> {
        let mut guard = self
            .writer
            .lock()
            .map_err(|_| IndexError::Corrupt("full-text writer poisoned by a panic"))?;
        let writer = match &mut *guard {
            Some(w) => w,
            empty => empty.insert(self.index.writer_with_num_threads(1, self.writer_budget)?),
        };
        let staged = self
            .stage(writer, removed, added)
            .and_then(|()| writer.commit().map(drop).map_err(IndexError::from));
        if let Err(e) = staged {
            // Discard what was staged, so that a later batch does not commit half of this one.
            // A failed rollback leaves the writer unusable; the next write reports that.
            let _ = writer.rollback();
            return Err(e);
        }
        self.reader.reload()?;
        Ok(())
    }

    /// Queues the deletes and documents of one batch on `writer`.
    fn stage(
        &self,
        writer: &mut IndexWriter<TantivyDocument>,
        removed: &[RowId],
        added: &[&RowEntries],
    ) -> Result<(), IndexError> {
        for r in removed {
            writer.delete_term(Term::from_field_bytes(self.row, &r.0));
        }
        let mut text = String::new();
        for e in added {
            let mut doc = TantivyDocument::default();
            doc.add_bytes(self.row, &e.row.0);
            for (c, tokens) in &e.text {
                text.clear();
                for t in tokens {
                    if !text.is_empty() {
                        text.push(' ');
                    }
                    text.push_str(&t.to_term());
                }
                doc.add_u64(self.cols, u64::from(c.0));
                doc.add_text(self.field(*c)?, &text);
            }
            writer.add_document(doc)?;
        }
        Ok(())
    }

    fn build(&self, field: Field, universe: &Term, expr: &TextExpr) -> Box<dyn TQuery> {
        let term = |t: &Token| -> Box<dyn TQuery> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, &t.to_term()),
                IndexRecordOption::WithFreqs,
            ))
        };
        let all = || -> Box<dyn TQuery> {
            Box::new(TermQuery::new(universe.clone(), IndexRecordOption::Basic))
        };
        match expr {
            TextExpr::Term(t) => term(t),
            TextExpr::And(xs) => {
                let mut clauses = Vec::with_capacity(xs.len() + 1);
                for x in xs {
                    match x {
                        TextExpr::Not(inner) => {
                            clauses.push((Occur::MustNot, self.build(field, universe, inner)));
                        }
                        _ => clauses.push((Occur::Must, self.build(field, universe, x))),
                    }
                }
                if !clauses.iter().any(|(o, _)| *o == Occur::Must) {
                    clauses.push((Occur::Must, all()));
                }
                Box::new(BooleanQuery::new(clauses))
            }
            TextExpr::Or(xs) if xs.is_empty() => Box::new(EmptyQuery),
            TextExpr::Or(xs) => Box::new(BooleanQuery::new(
                xs.iter()
                    .map(|x| (Occur::Should, self.build(field, universe, x)))
                    .collect(),
            )),
            TextExpr::Not(inner) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, all()),
                (Occur::MustNot, self.build(field, universe, inner)),
            ])),
        }
    }

    /// Builds the query for `expr` on `column`.
    fn query(&self, column: ColumnId, expr: &TextExpr) -> Result<Box<dyn TQuery>, IndexError> {
        let field = self.field(column)?;
        let universe = Term::from_field_u64(self.cols, u64::from(column.0));
        Ok(self.build(field, &universe, expr))
    }

    /// Up to `limit` rows matching `expr` on `column`, in row-id order, the first ones after
    /// `after` (from the first row when `None`).
    pub fn page(
        &self,
        column: ColumnId,
        expr: &TextExpr,
        after: Option<RowId>,
        limit: usize,
    ) -> Result<Vec<RowId>, IndexError> {
        let query = self.query(column, expr)?;
        let searcher = self.reader.searcher();
        let weight = query.weight(EnableScoring::disabled_from_searcher(&searcher))?;
        // Each segment's first `limit` rows; the page is the first `limit` of them all.
        let mut rows = Vec::new();
        for segment in searcher.segment_readers() {
            rows.extend(self.segment_page(segment, weight.as_ref(), after, limit)?);
        }
        rows.sort_unstable();
        rows.dedup();
        rows.truncate(limit);
        Ok(rows)
    }

    /// The first `limit` rows of one segment after `after` that `weight` matches, in row-id
    /// order: walks the segment's live rows in that order, a batch at a time, and tests each
    /// batch in document order (a scorer only moves forward).
    fn segment_page(
        &self,
        segment: &SegmentReader,
        weight: &dyn Weight,
        after: Option<RowId>,
        limit: usize,
    ) -> Result<Vec<RowId>, IndexError> {
        let inverted = segment.inverted_index(self.row)?;
        let mut terms = inverted.terms().range();
        if let Some(after) = after {
            terms = terms.gt(after.0);
        }
        let mut terms = terms.into_stream().map_err(IndexError::Io)?;
        let mut found = Vec::new();
        let mut batch: Vec<(DocId, RowId)> = Vec::new();
        let mut size = limit.clamp(1, MAX_WALK_BATCH);
        while found.len() < limit {
            batch.clear();
            while batch.len() < size && terms.advance() {
                let row = RowId::try_from(terms.key())
                    .map_err(|_| IndexError::Corrupt("full-text row id of the wrong length"))?;
                let mut postings = inverted
                    .read_block_postings_from_terminfo(terms.value(), IndexRecordOption::Basic)
                    .map_err(IndexError::Io)?;
                // One live document per row; deleted ones stay until their segment merges.
                while !postings.docs().is_empty() {
                    for &doc in postings.docs() {
                        if !segment.is_deleted(doc) {
                            batch.push((doc, row));
                        }
                    }
                    postings.advance();
                }
            }
            if batch.is_empty() {
                break;
            }
            batch.sort_unstable_by_key(|&(doc, _)| doc);
            let mut scorer = weight.scorer(segment, 1.0)?;
            let start = found.len();
            for &(doc, row) in &batch {
                let at = match scorer.doc() {
                    d if d < doc => scorer.seek(doc),
                    d => d,
                };
                if at == doc {
                    found.push(row);
                }
            }
            // The batch's rows all come after the earlier batches' rows.
            found[start..].sort_unstable();
            size = (size * 2).min(MAX_WALK_BATCH);
        }
        found.truncate(limit);
        Ok(found)
    }

    /// The `limit` best rows for `expr` on `column`, by decreasing BM25 score.
    pub fn search(
        &self,
        column: ColumnId,
        expr: &TextExpr,
        limit: usize,
    ) -> Result<Vec<(RowId, f32)>, IndexError> {
        let query = self.query(column, expr)?;
        let searcher = self.reader.searcher();
        let top = searcher.search(&query, &TopDocs::with_limit(limit.max(1)).order_by_score())?;
        let mut out = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let doc: TantivyDocument = searcher.doc(addr)?;
            let row = doc
                .get_first(self.row)
                .and_then(|v| v.as_bytes())
                .and_then(|b| RowId::try_from(b).ok())
                .ok_or(IndexError::Corrupt("full-text document without a row id"))?;
            out.push((row, score));
        }
        Ok(out)
    }
}
