//! The write path: INSERT, UPDATE and DELETE seal each row version, pack and code them into
//! segments, upload the pieces, append the sealed segment manifests to the owner's log, and
//! only then the rows' index entries in one entry, so a statement that fails before that entry
//! leaves nothing visible.

use std::collections::HashSet;

use futures::stream::{self, StreamExt};
use wwt_engine::RowId as EngineRowId;
use wwt_engine::table::RowWrite;
use wwt_index::{
    Batch, MAX_LIMIT, Query, RowEntries, RowId, RowOp, TableId, TableSchema as StoreSchema,
};
use wwt_net::NetError;
use wwt_net::index::{ApplyBatch, CreateTable, LogOp};
use wwt_query::plan::{DeletePlan, InsertPlan, UpdatePlan};
use wwt_query::{Row, TableSchema, encode_row, execute_delete, execute_update};

use super::catalog::{SEGMENTS, manifest_key, manifest_row};
use super::read::unread;
use super::record::{Parent, make_record};
use super::{Client, ClientError, Result, State};
use crate::store::SEGMENTS_IN_FLIGHT;

/// One row version to write: row id, parent, values.
type Write<'r> = (RowId, Parent, &'r Row);

impl Client {
    /// Inserts rows (one value per column, in column order) into `table` without SQL text:
    /// the fast path for bulk loads.
    pub async fn insert_rows(&self, table: &str, rows: Vec<Row>) -> Result<usize> {
        let mut state = self.state.lock().await;
        let schema = state.catalog.table(table)?.clone();
        let mut coerced = Vec::with_capacity(rows.len());
        for row in rows {
            if row.len() != schema.columns.len() {
                return Err(wwt_query::Error::Constraint(format!(
                    "table `{table}` has {} columns but a row has {} values",
                    schema.columns.len(),
                    row.len()
                ))
                .into());
            }
            coerced.push(
                row.into_iter()
                    .zip(&schema.columns)
                    .map(|(v, c)| v.coerce_to(c.ty))
                    .collect::<wwt_query::Result<Row>>()?,
            );
        }
        let plan = InsertPlan {
            table: schema,
            rows: coerced,
        };
        self.insert(&mut state, &plan).await
    }

    pub(super) async fn insert(&self, state: &mut State, plan: &InsertPlan) -> Result<usize> {
        let schema = &plan.table;
        let mut ids = Vec::with_capacity(plan.rows.len());
        let mut seen = HashSet::new();
        for row in &plan.rows {
            let id = self.row_id(state, schema, &row[schema.primary_key])?;
            if !seen.insert(id) {
                return Err(wwt_query::Error::Constraint(format!(
                    "the statement inserts the primary key {} twice",
                    row[schema.primary_key].to_sql()
                ))
                .into());
            }
            ids.push(id);
        }
        for chunk in ids.chunks(MAX_LIMIT) {
            let existing = self
                .index_query(
                    state,
                    schema,
                    Query::Get {
                        rows: chunk.to_vec(),
                    },
                )
                .await?;
            if let Some(hit) = existing.first() {
                let i = ids.iter().position(|r| *r == hit.row).unwrap_or(0);
                return Err(wwt_query::Error::Constraint(format!(
                    "`{}` already has a row with primary key {}; UPDATE it or DELETE it first",
                    schema.name,
                    plan.rows[i][schema.primary_key].to_sql()
                ))
                .into());
            }
        }
        let writes: Vec<Write<'_>> = ids
            .iter()
            .zip(&plan.rows)
            .map(|(id, row)| (*id, None, row))
            .collect();
        self.write_versions(state, schema, &writes, &[]).await
    }

    pub(super) async fn update(&self, state: &mut State, plan: &UpdatePlan) -> Result<usize> {
        let schema = &plan.access.table;
        let (changes, reads) = self.with_source(state, true, |s| execute_update(plan, s))?;
        // Each changed row's version as the statement read it is the new version's parent.
        let mut writes: Vec<Write<'_>> = Vec::with_capacity(changes.len());
        let mut previous = Vec::with_capacity(changes.len());
        for (old, new) in &changes {
            let id = self.row_id(state, schema, &old[schema.primary_key])?;
            let read = reads.get(&id).ok_or_else(|| unread(id))?;
            writes.push((id, Some((read.locator.clone(), read.hash)), new));
            previous.push(read.version);
        }
        if writes.is_empty() {
            return Ok(0);
        }
        let n = self
            .write_versions(state, schema, &writes, &previous)
            .await?;
        let killed = writes.iter().filter_map(|(_, p, _)| p.as_ref());
        self.note_killed(state, schema, killed.map(|(l, _)| l.as_slice()))?;
        Ok(n)
    }

    pub(super) async fn delete(&self, state: &mut State, plan: &DeletePlan) -> Result<usize> {
        let schema = &plan.access.table;
        let (gone, reads) = self.with_source(state, true, |s| execute_delete(plan, s))?;
        if gone.is_empty() {
            return Ok(0);
        }
        let mut ops = Vec::with_capacity(gone.len());
        for row in &gone {
            let id = self.row_id(state, schema, &row[schema.primary_key])?;
            let previous = reads.get(&id).ok_or_else(|| unread(id))?.version;
            let version = self.next_version(state, previous);
            ops.push(RowOp::Delete { row: id, version });
        }
        let n = ops.len();
        self.apply_batch(state, schema, ops).await?;
        self.note_killed(state, schema, reads.values().map(|r| r.locator.as_slice()))?;
        Ok(n)
    }

    /// Seals, codes and uploads one version of each row, then sends their index entries in
    /// one batch. `previous[i]` is the version being replaced (none for inserts).
    async fn write_versions(
        &self,
        state: &mut State,
        schema: &TableSchema,
        writes: &[Write<'_>],
        previous: &[u64],
    ) -> Result<usize> {
        let mut records = Vec::with_capacity(writes.len());
        let mut versions = Vec::with_capacity(writes.len());
        for (i, (_, parent, row)) in writes.iter().enumerate() {
            let encoded = encode_row(schema, row)?;
            records.push(make_record(parent.as_ref(), &encoded));
            versions.push(self.next_version(state, previous.get(i).copied().unwrap_or(0)));
        }
        let rows: Vec<(RowId, &Row)> = writes.iter().map(|(id, _, row)| (*id, *row)).collect();
        self.write_records(state, schema, &rows, &records, &versions)
            .await
    }

    /// Seals each row's record at its version, packs, codes and uploads them, files the
    /// segments' manifests, then sends the rows' index entries in one batch.
    pub(super) async fn write_records(
        &self,
        state: &mut State,
        schema: &TableSchema,
        rows: &[(RowId, &Row)],
        records: &[Vec<u8>],
        versions: &[u64],
    ) -> Result<usize> {
        let batch = {
            let t = self.table(state, schema)?;
            t.engine.write(rows.iter().zip(records).zip(versions).map(
                |(((id, _), record), version)| RowWrite {
                    row: EngineRowId(id.0),
                    version: *version,
                    plaintext: record,
                },
            ))
        };
        // Pieces first, then manifests (sealed, in the hidden segments table), then rows:
        // until the row entries land, nothing of this statement is visible. A failed upload
        // returns before any manifest is written, leaving at most unreferenced pieces.
        let mut manifest_ops = Vec::with_capacity(batch.segments.len());
        // Each segment is entrusted to its tracker for audits and repair (audit key only).
        let audit = self.table(state, schema)?.engine.keys().audit.clone();
        // Made before they are streamed: a stream holding the closure over borrowed segments
        // leaves the statement's future not `Send` (rustc cannot prove it for every lifetime).
        let puts: Vec<_> = batch
            .segments
            .iter()
            .map(|s| self.storage.put_audited(s, &audit))
            .collect();
        let mut puts = stream::iter(puts).buffer_unordered(SEGMENTS_IN_FLIGHT);
        while let Some(put) = puts.next().await {
            put?;
        }
        let mut manifest_cipher = self.blob_cipher(SEGMENTS);
        let manifest_key = manifest_key(&self.master);
        for seg in &batch.segments {
            let id = manifest_row(&manifest_key, &seg.manifest.segment);
            let sealed = manifest_cipher.seal(EngineRowId(id.0), 1, &seg.manifest.to_bytes());
            manifest_ops.push(RowOp::Put(RowEntries {
                row: id,
                version: 1,
                locator: sealed,
                equality: Vec::new(),
                range: Vec::new(),
                text: Vec::new(),
            }));
            state
                .manifests
                .insert(seg.manifest.segment, seg.manifest.clone());
        }
        // Filed twice: where readers look a segment up, and in the table's segment list, where
        // a drop or a compaction finds it (the list goes first: a segment is never unlisted).
        self.put_manifests(state, self.segment_list(&schema.name), manifest_ops.clone())
            .await?;
        self.put_manifests(state, self.segments_table(), manifest_ops)
            .await?;
        let locators = &mut self.table(state, schema)?.locators;
        let mut versions = Vec::with_capacity(rows.len());
        for ((id, row), locator) in rows.iter().zip(&batch.locators) {
            let sealed = locators.seal(locator.row, locator.version, &locator.to_bytes());
            versions.push((*id, locator.version, sealed, row.as_slice()));
        }
        let ops: Vec<RowOp> = self
            .entries(state, schema, versions)?
            .into_iter()
            .map(RowOp::Put)
            .collect();
        let n = ops.len();
        self.apply_batch(state, schema, ops).await?;
        Ok(n)
    }

    /// Applies manifest rows to the hidden namespace `table`, creating it at first use.
    pub(super) async fn put_manifests(
        &self,
        state: &mut State,
        table: TableId,
        ops: Vec<RowOp>,
    ) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let apply = |ops: Vec<RowOp>| {
            LogOp::Apply(ApplyBatch {
                table,
                batch: Batch { ops },
            })
        };
        match self.append(state, apply(ops.clone())).await {
            Err(ClientError::Index(NetError::NotFound(_))) => {
                let create = CreateTable {
                    table,
                    schema: StoreSchema::default(),
                };
                match self.append(state, LogOp::CreateTable(create)).await {
                    Ok(()) | Err(ClientError::Index(NetError::Conflict(_))) => {}
                    Err(e) => return Err(e),
                }
                self.append(state, apply(ops)).await
            }
            other => other,
        }
    }

    async fn apply_batch(
        &self,
        state: &mut State,
        schema: &TableSchema,
        ops: Vec<RowOp>,
    ) -> Result<()> {
        let generation = self.table(state, schema)?.generation;
        let request = ApplyBatch {
            table: self.index_table_id(&schema.name, generation),
            batch: Batch { ops },
        };
        self.append(state, LogOp::Apply(request)).await
    }
}
