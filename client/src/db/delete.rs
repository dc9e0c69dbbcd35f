//! Giving back what the owner no longer needs (DESIGN §13): the pieces and namespaces of a
//! dropped table, and the segments compaction rewrote.
//!
//! Every segment a table's statements store is filed twice: in `"\0segments"`, where readers
//! look its manifest up, and in the table's *segment list*, a hidden namespace
//! (`"\0segments <name>"`) with the same sealed rows. The list is how a drop or a compaction
//! finds every segment of a table, also those no live row references: old versions, deleted
//! rows, statements that failed after storing. Deleting a segment means its trackers forget it
//! (they stop auditing it and delete its pieces at the holders), then its manifest rows go.
//!
//! DROP TABLE writes the catalog with the table gone and marked as dropping, in the same entry;
//! then the segments, the segment list and the index namespace are deleted, and the mark goes
//! last. Each step is idempotent, and the mark lives in the owner's log, so a client stopped
//! midway, or any other client of the owner (it reads the mark when it connects), finishes it.
//!
//! Compaction rewrites the live rows of segments holding less than half live bytes into new
//! segments, moves their index entries to the new locators (at new versions, in entries that
//! follow the head the compaction read, so no other write lands between), and then deletes the
//! old segments. A reader holding an old locator meets a segment its tracker says was deleted;
//! its statement runs again on the moved rows.

use std::collections::{HashMap, HashSet};

use wwt_engine::{Locator, RowId as EngineRowId, SegmentId as EngineSegmentId, SegmentManifest};
use wwt_index::{MAX_LIMIT, Query, QueryOutput, RowId, RowOp, TableId};
use wwt_net::NetError;
use wwt_net::index::{DropTable, LogOp, QueryTable};
use wwt_net::types::SegmentId;
use wwt_query::{Row, TableSchema};

use super::catalog::{SEGMENTS, index_table_id, manifest_key, manifest_row};
use super::record::split_record;
use super::{Client, ClientError, Result, RowRef, State};

/// What one compaction of one table did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compaction {
    /// Segments of the table before.
    pub segments: usize,
    /// Segments under half live that were rewritten and deleted.
    pub rewritten: usize,
    /// Live rows moved to new segments.
    pub rows: usize,
    /// Bytes of live sealed rows moved.
    pub live_bytes: u64,
    /// Bytes of the deleted segments (before coding).
    pub freed_bytes: u64,
}

/// Rows moved per round of a compaction: each round reads, re-writes and re-indexes its rows.
const MOVE_ROUND_BYTES: u64 = 32 << 20;

/// The tombstone version of a manifest row (manifest rows are written at version 1).
const UNLISTED: u64 = 2;

impl Client {
    /// Table `name`'s segment list: a hidden namespace of the same sealed manifest rows as
    /// `"\0segments"`, one per segment the table's statements stored.
    pub(super) fn segment_list(&self, name: &str) -> TableId {
        index_table_id(&self.master, &format!("\0segments {name}"), 0)
    }

    /// The manifests in table `name`'s segment list, each with its row (none without a list).
    async fn listed_segments(
        &self,
        state: &mut State,
        name: &str,
    ) -> Result<Vec<(RowId, SegmentManifest)>> {
        let table = self.segment_list(name);
        let key = manifest_key(&self.master);
        let mut cipher = self.blob_cipher(SEGMENTS);
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let query = Query::Scan {
                after,
                limit: MAX_LIMIT,
            };
            let hits = match self.query_index(state, QueryTable { table, query }).await {
                Ok(QueryOutput::Rows(hits)) => hits,
                Ok(QueryOutput::Counts(_)) => {
                    return Err(ClientError::Damaged(
                        "a segment list answered with counts".into(),
                    ));
                }
                Err(ClientError::Index(NetError::NotFound(_))) => return Ok(out),
                Err(e) => return Err(e),
            };
            let full = hits.len() == MAX_LIMIT;
            after = hits.last().map(|h| h.row);
            for hit in hits {
                let bytes = cipher
                    .open(EngineRowId(hit.row.0), hit.version, &hit.locator)
                    .map_err(|e| ClientError::Damaged(format!("a listed segment manifest: {e}")))?;
                let m = SegmentManifest::from_bytes(&bytes)?;
                if manifest_row(&key, &m.segment) != hit.row {
                    return Err(ClientError::Damaged(
                        "a listed segment manifest is filed under another segment".into(),
                    ));
                }
                out.push((hit.row, m));
            }
            if !full {
                return Ok(out);
            }
        }
    }

    /// Deletes segments of table `name`: their manifest rows leave `"\0segments"` (an entry
    /// after the head this client read, so a statement of another device that meanwhile filed
    /// rows into one of them must run again, into new segments), then their trackers forget
    /// them (and delete their pieces), then they leave the table's list, which is how a retry
    /// finds them. Idempotent.
    async fn delete_segments(
        &self,
        state: &mut State,
        name: &str,
        segments: &[(RowId, SegmentManifest)],
    ) -> Result<()> {
        if segments.is_empty() {
            return Ok(());
        }
        let unlist = |chunk: &[(RowId, SegmentManifest)]| -> Vec<RowOp> {
            chunk
                .iter()
                .map(|(row, _)| RowOp::Delete {
                    row: *row,
                    version: UNLISTED,
                })
                .collect()
        };
        for chunk in segments.chunks(MAX_LIMIT) {
            self.put_manifests(state, self.segments_table(), unlist(chunk))
                .await?;
        }
        let ids: Vec<SegmentId> = segments
            .iter()
            .map(|(_, m)| SegmentId(m.segment.0))
            .collect();
        self.storage.forget(&ids).await?;
        for chunk in segments.chunks(MAX_LIMIT) {
            self.put_manifests(state, self.segment_list(name), unlist(chunk))
                .await?;
        }
        for (_, m) in segments {
            state.manifests.remove(&m.segment);
            state.cache.remove(&m.segment);
        }
        Ok(())
    }

    /// Drops the hidden or index namespace `table`, if it exists.
    pub(super) async fn drop_namespace(&self, state: &mut State, table: TableId) -> Result<()> {
        match self
            .append(state, LogOp::DropTable(DropTable { table }))
            .await
        {
            Ok(()) | Err(ClientError::Index(NetError::NotFound(_))) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Finishes every drop the catalog marks as unfinished: deletes the table's segments, its
    /// segment list and its index namespace, then removes the mark.
    pub(super) async fn finish_drops(&self, state: &mut State) -> Result<()> {
        while let Some((name, generation)) = state.dropping.first().cloned() {
            let segments = self.listed_segments(state, &name).await?;
            self.delete_segments(state, &name, &segments).await?;
            self.drop_index_table(state, &name, generation).await?;
            self.drop_namespace(state, self.segment_list(&name)).await?;
            let rest = state.dropping[1..].to_vec();
            let catalog = state.catalog.clone();
            self.save_catalog(state, catalog, &[], rest).await?;
            tracing::info!(segments = segments.len(), "dropped table deleted");
        }
        Ok(())
    }

    /// DROP TABLE: the table leaves the catalog, marked as dropping, in one entry; then its
    /// data is deleted ([`Client::finish_drops`]). A deletion that cannot finish now (a
    /// tracker down) is finished by the next statement that needs it, or the next connect.
    pub(super) async fn drop_table(&self, state: &mut State, name: &str) -> Result<()> {
        let mut next = state.catalog.clone();
        next.remove_table(name)?;
        // A table never opened has generation 0 (as `table` would set up).
        let generation = state.tables.get(name).map_or(0, |t| t.generation);
        let mut dropping = state.dropping.clone();
        dropping.push((name.to_string(), generation));
        self.save_catalog(state, next, &[], dropping).await?;
        state.tables.remove(name);
        if let Err(e) = self.finish_drops(state).await {
            tracing::warn!("table dropped; deleting its data is unfinished and resumes later: {e}");
        }
        Ok(())
    }

    /// Before CREATE TABLE `name`: a drop of a table of that name must be finished, since the
    /// new table's segment list takes the same namespace.
    pub(super) async fn finish_drop_of(&self, state: &mut State, name: &str) -> Result<()> {
        if !state.dropping.iter().any(|(n, _)| n == name) {
            return Ok(());
        }
        match self.finish_drops(state).await {
            Err(e) if !super::stale_catalog(&e) => Err(ClientError::Setup(format!(
                "table `{name}` was dropped and its data is still being deleted ({e}); \
                 retry once its trackers answer"
            ))),
            other => other,
        }
    }

    /// Notes the row versions a statement killed, by their locators as it read them.
    pub(super) fn note_killed<'r>(
        &self,
        state: &mut State,
        schema: &TableSchema,
        locators: impl IntoIterator<Item = &'r [u8]>,
    ) -> Result<()> {
        let t = self.table(state, schema)?;
        for bytes in locators {
            for e in Locator::from_bytes(bytes)?.extents {
                t.killed.0 += e.len;
                t.killed.1.insert(e.segment);
            }
        }
        Ok(())
    }

    /// After a DELETE or UPDATE: compacts the table once the versions killed since its last
    /// compaction make up half the bytes of the segments they were in, and a segment's worth
    /// at least (a compaction scans the whole table, and ends the history of the versions it
    /// deletes). The statement has landed by then, so a compaction that fails is only logged
    /// (the next statement that kills rows tries again).
    pub(super) async fn compact_if_sparse(&self, state: &mut State, schema: &TableSchema) {
        let Some(t) = state.tables.get_mut(&schema.name) else {
            return;
        };
        let held: u64 = (t.killed.1.iter())
            .filter_map(|s| state.manifests.get(s))
            .map(|m| m.segment_len)
            .sum();
        let enough = t.killed.0 >= self.config.segment_size as u64 && t.killed.0 * 2 >= held;
        if !self.config.auto_compact || !enough {
            return;
        }
        match self.compact_table(state, schema).await {
            Ok(c) => {
                if let Some(t) = state.tables.get_mut(&schema.name) {
                    t.killed = (0, HashSet::new());
                }
                tracing::info!(
                    rewritten = c.rewritten,
                    rows = c.rows,
                    freed = c.freed_bytes,
                    "table compacted"
                );
            }
            Err(e) => tracing::warn!("compaction after a statement failed (retried later): {e}"),
        }
    }

    /// Compacts table `schema` (see the module docs).
    pub(super) async fn compact_table(
        &self,
        state: &mut State,
        schema: &TableSchema,
    ) -> Result<Compaction> {
        let listed = self.listed_segments(state, &schema.name).await?;
        let mut report = Compaction {
            segments: listed.len(),
            ..Compaction::default()
        };
        if listed.is_empty() {
            return Ok(report);
        }
        // Live bytes per segment, from every live row's locator.
        let refs = self.scan(state, schema).await?;
        let mut locators = Vec::with_capacity(refs.len());
        let mut live: HashMap<EngineSegmentId, u64> = HashMap::new();
        for r in &refs {
            let l = self.open_locator(state, schema, r.row, r.version, &r.locator)?;
            for e in &l.extents {
                *live.entry(e.segment).or_default() += e.len;
            }
            locators.push(l);
        }
        let sparse: Vec<(RowId, SegmentManifest)> = listed
            .into_iter()
            .filter(|(_, m)| live.get(&m.segment).copied().unwrap_or(0) * 2 < m.segment_len)
            .collect();
        if sparse.is_empty() {
            return Ok(report);
        }
        let doomed: HashSet<EngineSegmentId> = sparse.iter().map(|(_, m)| m.segment).collect();
        let moving: Vec<(&RowRef, &Locator)> = refs
            .iter()
            .zip(&locators)
            .filter(|(_, l)| l.extents.iter().any(|e| doomed.contains(&e.segment)))
            .collect();
        let mut round: Vec<(&RowRef, &Locator)> = Vec::new();
        let mut round_bytes = 0;
        for (i, (r, l)) in moving.iter().enumerate() {
            round.push((r, l));
            round_bytes += l.extents.iter().map(|e| e.len).sum::<u64>();
            if round_bytes >= MOVE_ROUND_BYTES || round.len() == MAX_LIMIT || i + 1 == moving.len()
            {
                report.rows += round.len();
                report.live_bytes += round_bytes;
                self.move_rows(state, schema, &round).await?;
                round.clear();
                round_bytes = 0;
            }
        }
        report.rewritten = sparse.len();
        report.freed_bytes = sparse.iter().map(|(_, m)| m.segment_len).sum();
        self.delete_segments(state, &schema.name, &sparse).await?;
        Ok(report)
    }

    /// Re-writes rows, their records unchanged, into new segments at new versions, and moves
    /// their index entries there.
    async fn move_rows(
        &self,
        state: &mut State,
        schema: &TableSchema,
        rows: &[(&RowRef, &Locator)],
    ) -> Result<()> {
        let locators: Vec<Locator> = rows.iter().map(|(_, l)| (*l).clone()).collect();
        let records = self.read_records(state, schema, &locators).await?;
        let mut values: Vec<Row> = Vec::with_capacity(rows.len());
        for record in &records {
            let (_, row) = split_record(record)?;
            values.push(wwt_query::decode_row(schema, row)?);
        }
        let versions: Vec<u64> = rows
            .iter()
            .map(|(r, _)| self.next_version(state, r.version))
            .collect();
        let ids: Vec<(RowId, &Row)> = rows.iter().map(|(r, _)| r.row).zip(&values).collect();
        self.write_records(state, schema, &ids, &records, &versions)
            .await?;
        Ok(())
    }

    /// The segments table `name`'s statements stored and not deleted since, from its segment
    /// list: what the table takes on the providers (each piece is a manifest entry).
    pub async fn segments(&self, name: &str) -> Result<Vec<SegmentManifest>> {
        let mut state = self.state.lock().await;
        let name = state.catalog.table(name)?.name.clone();
        let listed = self.listed_segments(&mut state, &name).await?;
        Ok(listed.into_iter().map(|(_, m)| m).collect())
    }

    /// Compacts one table, or every table: rewrites the live rows of segments that hold less
    /// than half live bytes and deletes those segments. Queries answer the same before,
    /// during and after.
    pub async fn compact(&self, table: Option<&str>) -> Result<Vec<(String, Compaction)>> {
        let mut state = self.state.lock().await;
        let names: Vec<String> = match table {
            Some(t) => vec![state.catalog.table(t)?.name.clone()],
            None => state.catalog.tables().map(|t| t.name.clone()).collect(),
        };
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let mut tries = 0;
            let compaction = loop {
                let schema = state.catalog.table(&name)?.clone();
                match self.compact_table(&mut state, &schema).await {
                    Err(e) if self.reread_after(&mut state, &e, &mut tries).await? => {}
                    other => break other?,
                }
            };
            out.push((name, compaction));
        }
        Ok(out)
    }
}
