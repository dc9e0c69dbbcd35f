//! One tantivy index per namespace with full-text columns: a field per column holding the
//! row's PRF terms (whitespace-separated), a `row` field to find and delete the row's
//! document, and a `cols` field naming the text columns the row has (the universe of `NOT`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use tantivy::collector::TopDocs;
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, EmptyQuery, Occur, Query as TQuery, TermQuery};
use tantivy::schema::{
    Field, INDEXED, IndexRecordOption, STORED, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::tokenizer::WhitespaceTokenizer;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::error::IndexError;
use crate::token::Token;
use crate::types::{ColumnId, RowEntries, RowId, TextExpr};

const TOKENIZER: &str = "wwt_whitespace";

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

    /// The `limit` best rows for `expr` on `column`, by decreasing BM25 score.
    pub fn search(
        &self,
        column: ColumnId,
        expr: &TextExpr,
        limit: usize,
    ) -> Result<Vec<(RowId, f32)>, IndexError> {
        let field = self.field(column)?;
        let universe = Term::from_field_u64(self.cols, u64::from(column.0));
        let query = self.build(field, &universe, expr);
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
