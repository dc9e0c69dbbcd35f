//! The index provider's side: the [`IndexStore`] trait and [`LocalIndexStore`], its
//! implementation over one `sled` database and one `tantivy` index per namespace.
//!
//! A namespace is (owner, table). The network layer authenticates the owner's signature and
//! passes the owner in; every tree and directory is named by (owner, table), so a request
//! signed by one owner cannot name, read or change another owner's data: it gets
//! [`IndexError::UnknownTable`].
//!
//! Layout: the `catalog` tree maps owner ‖ table to the table's schema; the `owners` tree maps
//! owner to its catalog blob (version ‖ bytes, opaque: the client encrypts it); per namespace, the
//! trees `p`, `e` and `r` (suffixed owner ‖ table) hold the primary map (row → record), the
//! equality index (column ‖ token ‖ row) and the range index (column ‖ OPE ‖ row); the
//! full-text index lives in `text/<owner>/<table>/`.
//!
//! A batch is validated in full before anything is written. It is then written in the order
//! full-text and secondary trees (side by side, on two threads), then the primary map, and
//! flushed before `apply` returns. The primary
//! record of a row lists its secondary entries, so a batch interrupted by a crash is repaired
//! by sending it again: operations that landed (same version, same entries) are skipped and
//! counted as `unchanged`; the others remove whatever the old record lists, and the row's
//! full-text document, and write their entries again.

mod codec;
mod fulltext;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, RwLock};

use crate::error::IndexError;
use crate::ope::OpeCiphertext;
use crate::token::{EqToken, TOKEN_LEN};
use crate::types::{
    ApplyReceipt, Batch, CatalogBlob, ColumnId, IndexKind, Order, OwnerId, Query, QueryOutput,
    ROW_LEN, RowEntries, RowHit, RowId, RowOp, TableId, TableSchema, TextOrder, ValueCount,
};
use codec::{PrimaryRecord, eq_key, range_key, row_of_key};
use fulltext::TextIndex;

/// Largest `limit` of a full-text query or a page of a scan.
pub const MAX_LIMIT: usize = 10_000;

/// Largest locator accepted, in bytes.
pub const MAX_LOCATOR: usize = 1024;

/// Largest catalog blob accepted, in bytes.
pub const MAX_CATALOG: usize = 4 << 20;

/// What an index provider offers its clients: create tables, apply batches, answer queries.
///
/// `owner` is the public key whose signature the caller has verified. Implementations are
/// synchronous; an async server wraps calls in `spawn_blocking`.
pub trait IndexStore: Send + Sync {
    /// Creates a table with the given indexes in `owner`'s namespace.
    fn create_table(
        &self,
        owner: &OwnerId,
        table: &TableId,
        schema: &TableSchema,
    ) -> Result<(), IndexError>;

    /// Deletes one of `owner`'s tables and every index entry in it.
    fn drop_table(&self, owner: &OwnerId, table: &TableId) -> Result<(), IndexError>;

    /// The schema of one of `owner`'s tables.
    fn schema(&self, owner: &OwnerId, table: &TableId) -> Result<TableSchema, IndexError>;

    /// Applies a batch of row operations; durable when it returns `Ok`.
    fn apply(
        &self,
        owner: &OwnerId,
        table: &TableId,
        batch: &Batch,
    ) -> Result<ApplyReceipt, IndexError>;

    /// Answers a query; reads nothing outside (`owner`, `table`).
    fn query(
        &self,
        owner: &OwnerId,
        table: &TableId,
        query: &Query,
    ) -> Result<QueryOutput, IndexError>;

    /// `owner`'s catalog blob (version 0 and no bytes if it never wrote one).
    fn catalog(&self, owner: &OwnerId) -> Result<CatalogBlob, IndexError>;

    /// Replaces `owner`'s catalog blob if its stored version is `expected`; returns the new
    /// version (`expected + 1`). Durable when it returns.
    fn put_catalog(&self, owner: &OwnerId, expected: u64, blob: &[u8]) -> Result<u64, IndexError>;
}

struct Namespace {
    schema: TableSchema,
    primary: sled::Tree,
    equality: sled::Tree,
    range: sled::Tree,
    text: Option<TextIndex>,
    /// Serializes writers of the namespace so version checks and writes are atomic.
    write: Mutex<()>,
    /// Tick of the last request, for closing the least recently used namespace.
    last_used: AtomicU64,
}

/// Tuning of a [`LocalIndexStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// Namespaces kept open at once (each may hold a full-text writer); beyond this, the least
    /// recently used idle namespace is closed. Default 64.
    pub max_open_namespaces: usize,
    /// Memory budget in bytes of a namespace's full-text writer (tantivy's minimum is 15 MB).
    /// Default 32 MB.
    pub writer_budget: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_open_namespaces: 64,
            writer_budget: 32_000_000,
        }
    }
}

/// An [`IndexStore`] on local disk: `sled` for the primary map, equality and range indexes,
/// `tantivy` for full-text.
pub struct LocalIndexStore {
    db: sled::Db,
    catalog: sled::Tree,
    owners: sled::Tree,
    root: PathBuf,
    open: RwLock<HashMap<(OwnerId, TableId), Arc<Namespace>>>,
    options: StoreOptions,
    tick: AtomicU64,
}

impl std::fmt::Debug for LocalIndexStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalIndexStore")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

fn ns_name(kind: u8, owner: &OwnerId, table: &TableId) -> Vec<u8> {
    let mut n = Vec::with_capacity(1 + 32 + 16);
    n.push(kind);
    n.extend_from_slice(&owner.0);
    n.extend_from_slice(&table.0);
    n
}

fn catalog_key(owner: &OwnerId, table: &TableId) -> Vec<u8> {
    ns_name(b'c', owner, table)[1..].to_vec()
}

fn invalid(msg: impl Into<String>) -> IndexError {
    IndexError::InvalidRequest(msg.into())
}

fn check_unique_columns<T>(entries: &[(ColumnId, T)], what: &str) -> Result<(), IndexError> {
    let mut seen = HashSet::with_capacity(entries.len());
    for (c, _) in entries {
        if !seen.insert(*c) {
            return Err(invalid(format!(
                "column {c} has two {what} entries in one row"
            )));
        }
    }
    Ok(())
}

fn validate_entries(schema: &TableSchema, e: &RowEntries) -> Result<(), IndexError> {
    if e.locator.len() > MAX_LOCATOR {
        return Err(invalid(format!(
            "row {}: locator of {} bytes exceeds {MAX_LOCATOR}",
            e.row,
            e.locator.len()
        )));
    }
    for (c, _) in &e.equality {
        schema.require(*c, IndexKind::Equality)?;
    }
    for (c, _) in &e.range {
        schema.require(*c, IndexKind::Range)?;
    }
    for (c, _) in &e.text {
        schema.require(*c, IndexKind::FullText)?;
    }
    check_unique_columns(&e.equality, "equality")?;
    check_unique_columns(&e.range, "range")?;
    check_unique_columns(&e.text, "full-text")
}

fn range_bounds(
    column: ColumnId,
    lower: &Bound<OpeCiphertext>,
    upper: &Bound<OpeCiphertext>,
) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let min_row = RowId([0; ROW_LEN]);
    let max_row = RowId([0xff; ROW_LEN]);
    let col = column.0.to_be_bytes().to_vec();
    let lo = match lower {
        Bound::Included(c) => Bound::Included(range_key(column, c, &min_row).to_vec()),
        Bound::Excluded(c) => Bound::Excluded(range_key(column, c, &max_row).to_vec()),
        Bound::Unbounded => Bound::Included(col.clone()),
    };
    let hi = match upper {
        Bound::Included(c) => Bound::Included(range_key(column, c, &max_row).to_vec()),
        Bound::Excluded(c) => Bound::Excluded(range_key(column, c, &min_row).to_vec()),
        Bound::Unbounded => match column.0.checked_add(1) {
            Some(next) => Bound::Excluded(next.to_be_bytes().to_vec()),
            None => Bound::Unbounded,
        },
    };
    (lo, hi)
}

/// Whether a key range selects nothing (sled, like `BTreeMap`, refuses such ranges).
fn range_is_empty(lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>) -> bool {
    match (lo, hi) {
        (Bound::Included(l), Bound::Included(h)) => l > h,
        (Bound::Included(l) | Bound::Excluded(l), Bound::Included(h) | Bound::Excluded(h)) => {
            l >= h
        }
        _ => false,
    }
}

impl LocalIndexStore {
    /// Opens (or creates) a store in directory `root` with default options.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, IndexError> {
        Self::open_with(root, StoreOptions::default())
    }

    /// Opens (or creates) a store in directory `root`.
    pub fn open_with(root: impl AsRef<Path>, options: StoreOptions) -> Result<Self, IndexError> {
        let root = root.as_ref().to_path_buf();
        std::fs::create_dir_all(&root).map_err(IndexError::Io)?;
        let db = sled::open(root.join("sled"))?;
        let catalog = db.open_tree("catalog")?;
        let owners = db.open_tree("owners")?;
        Ok(Self {
            db,
            catalog,
            owners,
            root,
            open: RwLock::new(HashMap::new()),
            options,
            tick: AtomicU64::new(0),
        })
    }

    /// How many namespaces are open now.
    pub fn open_namespaces(&self) -> usize {
        self.open.read().map(|o| o.len()).unwrap_or(0)
    }

    /// Closes the store: waits for the full-text indexes' background merges and flushes
    /// sled. Call it on shutdown; merged segments make later queries faster.
    pub fn close(self) -> Result<(), IndexError> {
        let open = self
            .open
            .into_inner()
            .map_err(|_| IndexError::Corrupt("namespace table poisoned by a panic"))?;
        for (_, ns) in open {
            // No call is in flight (they borrow the store), so each namespace is ours alone.
            if let Some(text) = Arc::into_inner(ns).and_then(|ns| ns.text) {
                text.close()?;
            }
        }
        self.db.flush()?;
        Ok(())
    }

    fn text_dir(&self, owner: &OwnerId, table: &TableId) -> PathBuf {
        self.root
            .join("text")
            .join(owner.to_string())
            .join(table.to_string())
    }

    fn namespace(&self, owner: &OwnerId, table: &TableId) -> Result<Arc<Namespace>, IndexError> {
        let key = (*owner, *table);
        if let Some(ns) = self
            .open
            .read()
            .map_err(|_| IndexError::Corrupt("namespace table poisoned by a panic"))?
            .get(&key)
        {
            ns.last_used
                .store(self.next_tick(), AtomicOrdering::Relaxed);
            return Ok(ns.clone());
        }
        let mut open = self
            .open
            .write()
            .map_err(|_| IndexError::Corrupt("namespace table poisoned by a panic"))?;
        if let Some(ns) = open.get(&key) {
            return Ok(ns.clone());
        }
        let schema = self.schema(owner, table)?;
        let text_columns: Vec<ColumnId> = schema.text_columns().collect();
        let text = if text_columns.is_empty() {
            None
        } else {
            Some(TextIndex::open(
                &self.text_dir(owner, table),
                &text_columns,
                self.options.writer_budget,
            )?)
        };
        let ns = Arc::new(Namespace {
            primary: self.db.open_tree(ns_name(b'p', owner, table))?,
            equality: self.db.open_tree(ns_name(b'e', owner, table))?,
            range: self.db.open_tree(ns_name(b'r', owner, table))?,
            schema,
            text,
            write: Mutex::new(()),
            last_used: AtomicU64::new(self.next_tick()),
        });
        Self::evict(
            &mut open,
            self.options.max_open_namespaces.saturating_sub(1),
        );
        open.insert(key, ns.clone());
        Ok(ns)
    }

    /// Removes a namespace's trees and full-text directory (the catalog entry is the caller's).
    fn remove_data(&self, owner: &OwnerId, table: &TableId) -> Result<(), IndexError> {
        for kind in [b'p', b'e', b'r'] {
            self.db.drop_tree(ns_name(kind, owner, table))?;
        }
        let dir = self.text_dir(owner, table);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(IndexError::Io)?;
        }
        self.db.flush()?;
        Ok(())
    }

    fn next_tick(&self) -> u64 {
        self.tick.fetch_add(1, AtomicOrdering::Relaxed)
    }

    /// Closes least recently used namespaces until at most `keep` are open. A namespace in
    /// use by a request (its `Arc` is shared) is never closed: two open copies of one
    /// namespace would break the write lock and tantivy's single-writer rule.
    fn evict(open: &mut HashMap<(OwnerId, TableId), Arc<Namespace>>, keep: usize) {
        while open.len() > keep {
            let idle = open
                .iter()
                .filter(|(_, ns)| Arc::strong_count(ns) == 1)
                .min_by_key(|(_, ns)| ns.last_used.load(AtomicOrdering::Relaxed))
                .map(|(k, _)| *k);
            match idle {
                // Dropping the namespace drops its writer, cancelling merges in progress.
                Some(k) => drop(open.remove(&k)),
                None => break,
            }
        }
    }

    fn hit(ns: &Namespace, row: RowId, score: Option<f32>) -> Result<Option<RowHit>, IndexError> {
        let Some(bytes) = ns.primary.get(row.0)? else {
            return Ok(None);
        };
        let rec = PrimaryRecord::decode(&bytes)?;
        if rec.deleted {
            return Ok(None);
        }
        Ok(Some(RowHit {
            row,
            version: rec.version,
            locator: rec.locator,
            score,
        }))
    }

    fn hits(
        ns: &Namespace,
        rows: impl IntoIterator<Item = RowId>,
    ) -> Result<QueryOutput, IndexError> {
        let mut out = Vec::new();
        for row in rows {
            out.extend(Self::hit(ns, row, None)?);
        }
        Ok(QueryOutput::Rows(out))
    }

    fn eq_rows(
        ns: &Namespace,
        column: ColumnId,
        token: &EqToken,
    ) -> Result<Vec<RowId>, IndexError> {
        let mut prefix = [0u8; 4 + TOKEN_LEN];
        prefix[..4].copy_from_slice(&column.0.to_be_bytes());
        prefix[4..].copy_from_slice(&token.0);
        ns.equality
            .scan_prefix(prefix)
            .keys()
            .map(|k| row_of_key(&k?))
            .collect()
    }
}

impl IndexStore for LocalIndexStore {
    fn create_table(
        &self,
        owner: &OwnerId,
        table: &TableId,
        schema: &TableSchema,
    ) -> Result<(), IndexError> {
        let mut seen = HashSet::new();
        for pair in &schema.indexes {
            if !seen.insert(*pair) {
                return Err(invalid(format!(
                    "column {} declares its {} index twice",
                    pair.0, pair.1
                )));
            }
        }
        let _guard = self
            .open
            .write()
            .map_err(|_| IndexError::Corrupt("namespace table poisoned by a panic"))?;
        if self.catalog.contains_key(catalog_key(owner, table))? {
            return Err(IndexError::TableExists { table: *table });
        }
        // Leftovers of a drop cut short by a crash must not reappear in the new table.
        self.remove_data(owner, table)?;
        let created = self.catalog.compare_and_swap(
            catalog_key(owner, table),
            None as Option<&[u8]>,
            Some(codec::encode_schema(schema)),
        )?;
        if created.is_err() {
            return Err(IndexError::TableExists { table: *table });
        }
        self.db.flush()?;
        Ok(())
    }

    fn drop_table(&self, owner: &OwnerId, table: &TableId) -> Result<(), IndexError> {
        let mut open = self
            .open
            .write()
            .map_err(|_| IndexError::Corrupt("namespace table poisoned by a panic"))?;
        let key = (*owner, *table);
        if open.get(&key).is_some_and(|ns| Arc::strong_count(ns) > 1) {
            return Err(IndexError::Busy { table: *table });
        }
        // Closing the namespace drops its full-text writer and releases its lock.
        drop(open.remove(&key));
        if self.catalog.remove(catalog_key(owner, table))?.is_none() {
            return Err(IndexError::UnknownTable { table: *table });
        }
        self.db.flush()?;
        self.remove_data(owner, table)
    }

    fn schema(&self, owner: &OwnerId, table: &TableId) -> Result<TableSchema, IndexError> {
        // From the catalog: a metadata call does not open the namespace's indexes.
        match self.catalog.get(catalog_key(owner, table))? {
            Some(bytes) => codec::decode_schema(&bytes),
            None => Err(IndexError::UnknownTable { table: *table }),
        }
    }

    fn apply(
        &self,
        owner: &OwnerId,
        table: &TableId,
        batch: &Batch,
    ) -> Result<ApplyReceipt, IndexError> {
        let ns = self.namespace(owner, table)?;
        let _guard = ns
            .write
            .lock()
            .map_err(|_| IndexError::Corrupt("namespace lock poisoned by a panic"))?;

        // 1. Validate everything and read the records being replaced.
        let mut seen = HashSet::with_capacity(batch.ops.len());
        let mut receipt = ApplyReceipt::default();
        let mut plans: Vec<(&RowOp, Option<PrimaryRecord>, PrimaryRecord)> =
            Vec::with_capacity(batch.ops.len());
        for op in &batch.ops {
            let (row, new) = match op {
                RowOp::Put(e) => {
                    validate_entries(&ns.schema, e)?;
                    let rec = PrimaryRecord {
                        version: e.version,
                        deleted: false,
                        locator: e.locator.clone(),
                        equality: e.equality.clone(),
                        range: e.range.clone(),
                        has_text: !e.text.is_empty(),
                    };
                    (e.row, rec)
                }
                RowOp::Delete { row, version } => {
                    let rec = PrimaryRecord {
                        version: *version,
                        deleted: true,
                        locator: Vec::new(),
                        equality: Vec::new(),
                        range: Vec::new(),
                        has_text: false,
                    };
                    (*row, rec)
                }
            };
            if !seen.insert(row) {
                return Err(invalid(format!("row {row} appears twice in one batch")));
            }
            let old = ns
                .primary
                .get(row.0)?
                .map(|b| PrimaryRecord::decode(&b))
                .transpose()?;
            match &old {
                // A retry of a write that already landed: nothing to do.
                Some(o) if *o == new => {
                    receipt.unchanged += 1;
                    continue;
                }
                Some(o) if new.version <= o.version => {
                    return Err(IndexError::StaleVersion {
                        row,
                        stored: o.version,
                        got: new.version,
                    });
                }
                _ => plans.push((op, old, new)),
            }
        }

        // 2. Build the writes.
        let mut text_removed = Vec::new();
        let mut text_added = Vec::new();
        let mut eq_batch = sled::Batch::default();
        let mut range_batch = sled::Batch::default();
        let mut primary_batch = sled::Batch::default();
        for (op, old, new) in &plans {
            let row = match op {
                RowOp::Put(e) => e.row,
                RowOp::Delete { row, .. } => *row,
            };
            if let Some(old) = old {
                for (c, t) in &old.equality {
                    eq_batch.remove(&eq_key(*c, t, &row)[..]);
                }
                for (c, o) in &old.range {
                    range_batch.remove(&range_key(*c, o, &row)[..]);
                }
            }
            match op {
                RowOp::Put(e) => {
                    receipt.put += 1;
                    for (c, t) in &e.equality {
                        eq_batch.insert(&eq_key(*c, t, &row)[..], &[][..]);
                    }
                    for (c, o) in &e.range {
                        range_batch.insert(&range_key(*c, o, &row)[..], &[][..]);
                    }
                    // Always delete first: a document left by an interrupted earlier attempt
                    // (full-text committed, primary map not) must not be doubled.
                    if ns.text.is_some() {
                        text_removed.push(row);
                    }
                    if !e.text.is_empty() {
                        text_added.push(e);
                    }
                }
                RowOp::Delete { .. } => {
                    if old.as_ref().is_some_and(|r| r.has_text) {
                        text_removed.push(row);
                    }
                    if old.as_ref().is_some_and(|r| !r.deleted) {
                        receipt.deleted += 1;
                    }
                }
            }
            primary_batch.insert(&row.0[..], new.encode());
        }

        // 3. Write: full-text beside the secondary trees (two cores), then the primary map
        // that makes the rows visible; then flush.
        std::thread::scope(|s| {
            let text = ns
                .text
                .as_ref()
                .filter(|_| !text_removed.is_empty() || !text_added.is_empty())
                .map(|text| s.spawn(|| text.apply(&text_removed, &text_added)));
            ns.equality.apply_batch(eq_batch)?;
            ns.range.apply_batch(range_batch)?;
            match text.map(|t| t.join()) {
                Some(Err(_)) => Err(IndexError::Corrupt("the full-text writer panicked")),
                Some(Ok(r)) => r,
                None => Ok(()),
            }
        })?;
        ns.primary.apply_batch(primary_batch)?;
        self.db.flush()?;
        Ok(receipt)
    }

    fn query(
        &self,
        owner: &OwnerId,
        table: &TableId,
        query: &Query,
    ) -> Result<QueryOutput, IndexError> {
        let ns = self.namespace(owner, table)?;
        match query {
            Query::Get { rows } => Self::hits(&ns, rows.iter().copied()),
            Query::Equal { column, values } => {
                ns.schema.require(*column, IndexKind::Equality)?;
                let mut rows = Vec::new();
                let distinct: HashSet<&EqToken> = values.iter().collect();
                for token in distinct {
                    rows.extend(Self::eq_rows(&ns, *column, token)?);
                }
                rows.sort_unstable();
                Self::hits(&ns, rows)
            }
            Query::CountByValue { column, values } => {
                ns.schema.require(*column, IndexKind::Equality)?;
                let mut counts: BTreeMap<EqToken, u64> = BTreeMap::new();
                match values {
                    Some(values) => {
                        for token in values {
                            let n = Self::eq_rows(&ns, *column, token)?.len() as u64;
                            counts.insert(*token, n);
                        }
                    }
                    None => {
                        for key in ns.equality.scan_prefix(column.0.to_be_bytes()).keys() {
                            let key = key?;
                            let token = key
                                .get(4..4 + TOKEN_LEN)
                                .ok_or(IndexError::Corrupt("short equality key"))
                                .and_then(EqToken::try_from)?;
                            *counts.entry(token).or_default() += 1;
                        }
                    }
                }
                Ok(QueryOutput::Counts(
                    counts
                        .into_iter()
                        .map(|(value, count)| ValueCount { value, count })
                        .collect(),
                ))
            }
            Query::Range {
                column,
                lower,
                upper,
                order,
                limit,
            } => {
                ns.schema.require(*column, IndexKind::Range)?;
                let limit = limit.unwrap_or(usize::MAX);
                let (lo, hi) = range_bounds(*column, lower, upper);
                if range_is_empty(&lo, &hi) {
                    return Ok(QueryOutput::Rows(Vec::new()));
                }
                let iter = ns.range.range::<Vec<u8>, _>((lo, hi)).keys();
                let mut out = Vec::new();
                let mut push = |key: sled::Result<sled::IVec>| -> Result<bool, IndexError> {
                    if out.len() >= limit {
                        return Ok(false);
                    }
                    let row = row_of_key(&key?)?;
                    out.extend(Self::hit(&ns, row, None)?);
                    Ok(true)
                };
                match order {
                    Order::Asc => {
                        for key in iter {
                            if !push(key)? {
                                break;
                            }
                        }
                    }
                    Order::Desc => {
                        for key in iter.rev() {
                            if !push(key)? {
                                break;
                            }
                        }
                    }
                }
                Ok(QueryOutput::Rows(out))
            }
            Query::Text {
                column,
                expr,
                limit,
                order,
            } => {
                ns.schema.require(*column, IndexKind::FullText)?;
                if *limit == 0 || *limit > MAX_LIMIT {
                    return Err(invalid(format!(
                        "full-text limit {limit} is outside 1..={MAX_LIMIT}"
                    )));
                }
                let Some(text) = &ns.text else {
                    return Err(IndexError::MissingIndex {
                        column: *column,
                        kind: IndexKind::FullText,
                    });
                };
                let mut out = Vec::new();
                match order {
                    TextOrder::Score => {
                        for (row, score) in text.search(*column, expr, *limit)? {
                            out.extend(Self::hit(&ns, row, Some(score))?);
                        }
                    }
                    // A document whose row the primary map does not hold is skipped: read on
                    // until the page is full, since a short page tells the client it is done.
                    TextOrder::Rows { after } => {
                        let mut after = *after;
                        loop {
                            let rows = text.page(*column, expr, after, *limit - out.len())?;
                            let full = rows.len() == *limit - out.len();
                            after = rows.last().copied();
                            for row in rows {
                                out.extend(Self::hit(&ns, row, None)?);
                            }
                            if !full || out.len() == *limit {
                                break;
                            }
                        }
                    }
                }
                Ok(QueryOutput::Rows(out))
            }
            Query::Scan { after, limit } => {
                if *limit == 0 || *limit > MAX_LIMIT {
                    return Err(invalid(format!(
                        "scan limit {limit} is outside 1..={MAX_LIMIT}"
                    )));
                }
                let from = after.map_or(Bound::Unbounded, |r| Bound::Excluded(r.0.to_vec()));
                let mut out = Vec::new();
                for entry in ns.primary.range::<Vec<u8>, _>((from, Bound::Unbounded)) {
                    if out.len() >= *limit {
                        break;
                    }
                    let (key, bytes) = entry?;
                    let rec = PrimaryRecord::decode(&bytes)?;
                    if !rec.deleted {
                        out.push(RowHit {
                            row: row_of_key(&key)?,
                            version: rec.version,
                            locator: rec.locator,
                            score: None,
                        });
                    }
                }
                Ok(QueryOutput::Rows(out))
            }
        }
    }

    fn catalog(&self, owner: &OwnerId) -> Result<CatalogBlob, IndexError> {
        match self.owners.get(owner.0)? {
            None => Ok(CatalogBlob::default()),
            Some(bytes) => {
                let (version, blob) = bytes
                    .split_first_chunk::<8>()
                    .ok_or(IndexError::Corrupt("short catalog record"))?;
                Ok(CatalogBlob {
                    version: u64::from_be_bytes(*version),
                    blob: blob.to_vec(),
                })
            }
        }
    }

    fn put_catalog(&self, owner: &OwnerId, expected: u64, blob: &[u8]) -> Result<u64, IndexError> {
        if blob.len() > MAX_CATALOG {
            return Err(invalid(format!(
                "catalog of {} bytes exceeds {MAX_CATALOG}",
                blob.len()
            )));
        }
        let current = self.owners.get(owner.0)?;
        let stored = match &current {
            None => 0,
            Some(bytes) => bytes
                .first_chunk::<8>()
                .map(|v| u64::from_be_bytes(*v))
                .ok_or(IndexError::Corrupt("short catalog record"))?,
        };
        if stored != expected {
            return Err(IndexError::CatalogConflict { expected, stored });
        }
        let version = expected + 1;
        let mut record = Vec::with_capacity(8 + blob.len());
        record.extend_from_slice(&version.to_be_bytes());
        record.extend_from_slice(blob);
        if self
            .owners
            .compare_and_swap(owner.0, current, Some(record))?
            .is_err()
        {
            let stored = self.catalog(owner)?.version;
            return Err(IndexError::CatalogConflict { expected, stored });
        }
        self.db.flush()?;
        Ok(version)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::token::{TextOptions, TokenKey};
    use crate::types::{TextExpr, TextOrder};

    /// A crash after the full-text commit but before the primary map was written leaves a
    /// document behind; the retried batch must not double it.
    #[test]
    fn retry_after_a_partial_write_does_not_double_text() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalIndexStore::open(dir.path()).unwrap();
        let (owner, table, col) = (OwnerId([1; 32]), TableId([2; 16]), ColumnId(7));
        let schema = TableSchema {
            indexes: vec![(col, IndexKind::FullText)],
        };
        store.create_table(&owner, &table, &schema).unwrap();
        let key = TokenKey::new([3; 32]);
        let entries = RowEntries {
            row: RowId([4; 16]),
            version: 1,
            locator: vec![1],
            equality: vec![],
            range: vec![],
            text: vec![(col, key.text_tokens("hello world", &TextOptions::default()))],
        };
        let ns = store.namespace(&owner, &table).unwrap();
        ns.text.as_ref().unwrap().apply(&[], &[&entries]).unwrap();
        let batch = Batch {
            ops: vec![RowOp::Put(entries)],
        };
        assert_eq!(store.apply(&owner, &table, &batch).unwrap().put, 1);
        assert_eq!(store.apply(&owner, &table, &batch).unwrap().unchanged, 1);
        let word = key.query_token("hello", &TextOptions::default()).unwrap();
        let query = Query::Text {
            column: col,
            expr: TextExpr::Term(word),
            limit: 10,
            order: TextOrder::Score,
        };
        let QueryOutput::Rows(hits) = store.query(&owner, &table, &query).unwrap() else {
            panic!("expected rows");
        };
        assert_eq!(hits.len(), 1);
    }

    /// Every row matching `word`, read in pages of `limit` in row-id order.
    fn pages(
        store: &LocalIndexStore,
        (owner, table, col): (OwnerId, TableId, ColumnId),
        word: crate::token::Token,
        limit: usize,
    ) -> Vec<RowId> {
        let (mut out, mut after) = (Vec::new(), None);
        loop {
            let query = Query::Text {
                column: col,
                expr: TextExpr::Term(word),
                limit,
                order: TextOrder::Rows { after },
            };
            let QueryOutput::Rows(hits) = store.query(&owner, &table, &query).unwrap() else {
                panic!("expected rows");
            };
            assert!(hits.len() <= limit);
            out.extend(hits.iter().map(|h| h.row));
            match hits.last() {
                Some(last) if hits.len() == limit => after = Some(last.row),
                _ => return out,
            }
        }
    }

    /// A match of more rows than one answer holds, written in several commits (several
    /// segments) with rows updated and deleted since, comes back whole in row-id pages: each
    /// live matching row exactly once.
    #[test]
    fn text_pages_return_every_match_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalIndexStore::open(dir.path()).unwrap();
        let ns = (OwnerId([1; 32]), TableId([2; 16]), ColumnId(7));
        let (owner, table, col) = ns;
        let schema = TableSchema {
            indexes: vec![(col, IndexKind::FullText)],
        };
        store.create_table(&owner, &table, &schema).unwrap();
        let key = TokenKey::new([3; 32]);
        let opts = TextOptions::default();
        let row = |i: u32| {
            RowId(
                *blake3::hash(&i.to_le_bytes())
                    .as_bytes()
                    .first_chunk()
                    .unwrap(),
            )
        };
        let put = |i: u32, version: u64, text: &str| {
            RowOp::Put(RowEntries {
                row: row(i),
                version,
                locator: i.to_le_bytes().to_vec(),
                equality: vec![],
                range: vec![],
                text: vec![(col, key.text_tokens(text, &opts))],
            })
        };
        let n = MAX_LIMIT as u32 + 4_000;
        for part in (0..n).collect::<Vec<_>>().chunks(4_000) {
            let ops = part
                .iter()
                .map(|&i| {
                    put(
                        i,
                        1,
                        if i.is_multiple_of(2) {
                            "common even"
                        } else {
                            "common odd"
                        },
                    )
                })
                .collect();
            store.apply(&owner, &table, &Batch { ops }).unwrap();
        }
        // Every tenth row deleted, every seventh no longer "common".
        let ops = (0..n)
            .filter(|i| i.is_multiple_of(10) || i.is_multiple_of(7))
            .map(|i| match i % 10 {
                0 => RowOp::Delete {
                    row: row(i),
                    version: 2,
                },
                _ => put(i, 2, "rare"),
            })
            .collect();
        store.apply(&owner, &table, &Batch { ops }).unwrap();

        let word = |w: &str| key.query_token(w, &opts).unwrap();
        let live = |i: &u32| !i.is_multiple_of(10) && !i.is_multiple_of(7);
        let mut common: Vec<RowId> = (0..n).filter(live).map(row).collect();
        common.sort_unstable();
        assert!(common.len() > MAX_LIMIT);
        assert_eq!(pages(&store, ns, word("common"), MAX_LIMIT), common);
        let mut even: Vec<RowId> = (0..n)
            .filter(|i| live(i) && i.is_multiple_of(2))
            .map(row)
            .collect();
        even.sort_unstable();
        assert_eq!(pages(&store, ns, word("even"), 777), even);
        assert!(pages(&store, ns, word("absent"), 5).is_empty());

        // A cursor past the last row ends the match; pages are as bounded as answers by score.
        let last = Query::Text {
            column: col,
            expr: TextExpr::Term(word("common")),
            limit: 10,
            order: TextOrder::Rows {
                after: Some(RowId([0xff; 16])),
            },
        };
        assert_eq!(
            store.query(&owner, &table, &last).unwrap(),
            QueryOutput::Rows(vec![])
        );
        for limit in [0, MAX_LIMIT + 1] {
            let query = Query::Text {
                column: col,
                expr: TextExpr::Term(word("common")),
                limit,
                order: TextOrder::Rows { after: None },
            };
            assert!(matches!(
                store.query(&owner, &table, &query),
                Err(IndexError::InvalidRequest(_))
            ));
        }
    }
}
