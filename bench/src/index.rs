//! `wwt bench-index`: the encrypted index against plain tantivy + sled on the same synthetic
//! data, in one run.
//!
//! Data: word-like text from a Zipf-distributed vocabulary (10–40 words per row), a
//! timestamp in seconds (Poisson arrivals, mean gap 2 s), a retail-like price in cents and
//! an age. Indexes: full-text on the text, equality on the age, range on the timestamp and
//! the price. The plain side has the same layout with plaintext values in place of tokens
//! and OPE ciphertexts (its primary record, too, keeps a copy of the row's entries, as an
//! engine that supports updates needs). Both sides commit and flush after every batch, wait
//! for background merges before sizes are measured, are reopened cold before queries (one
//! untimed pass, then one timed pass), and look up the primary map for each hit. Prints
//! ingest rows/s, index bytes per row, keyword and range query p50/p99, the encrypted/plain
//! ratios, and OPE values/s (one core, and batched on every core) per kind of data.
//!
//! A failure of the stores it measures is a broken benchmark, not an input to handle: it
//! panics with the cause.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;
use std::time::{Duration, Instant};

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query as TQuery, TermQuery};
use tantivy::schema::{
    Field, INDEXED, IndexRecordOption, STORED, Schema, TextFieldIndexing, TextOptions as TOptions,
    Value,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};
use wwt_index::ope::{u64_from_i64, u64_from_timestamp_micros};
use wwt_index::{
    Batch, ColumnId, IndexKind, IndexStore, LocalIndexStore, OpeEncoder, OpeKey, Order, OwnerId,
    Query, QueryOutput, RowEntries, RowId, RowOp, TableId, TableSchema, TextExpr, TextOptions,
    TextOrder, TokenKey,
};

const TEXT: ColumnId = ColumnId(1);
const AGE: ColumnId = ColumnId(2);
const TS: ColumnId = ColumnId(3);
const PRICE: ColumnId = ColumnId(4);

/// splitmix64: a small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit().max(1e-12), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

struct Data {
    vocab: Vec<String>,
    cdf: Vec<f64>,
    text: Vec<String>,
    ts: Vec<u64>,
    price: Vec<u64>,
    age: Vec<u8>,
}

fn zipf_rank(rng: &mut Rng, cdf: &[f64]) -> usize {
    let u = rng.unit() * cdf[cdf.len() - 1];
    cdf.partition_point(|&c| c < u).min(cdf.len() - 1)
}

fn generate(rows: usize, seed: u64) -> Data {
    let mut rng = Rng(seed);
    const SYL: [&str; 24] = [
        "ka", "to", "ri", "men", "sa", "lo", "ve", "dan", "po", "li", "nu", "ter", "ba", "shi",
        "gor", "el", "qua", "mi", "ran", "tu", "fe", "ox", "by", "zen",
    ];
    let mut vocab = Vec::new();
    let mut seen = std::collections::HashSet::new();
    while vocab.len() < 50_000 {
        let n = 1 + rng.below(4) as usize;
        let w: String = (0..n)
            .map(|_| SYL[rng.below(SYL.len() as u64) as usize])
            .collect();
        if seen.insert(w.clone()) {
            vocab.push(w);
        }
    }
    let mut cdf = Vec::with_capacity(vocab.len());
    let mut acc = 0.0;
    for r in 1..=vocab.len() {
        acc += 1.0 / (r as f64).powf(1.07);
        cdf.push(acc);
    }
    let mut data = Data {
        vocab,
        cdf,
        text: vec![],
        ts: vec![],
        price: vec![],
        age: vec![],
    };
    let mut t = 1_700_000_000u64;
    for _ in 0..rows {
        let n = 10 + rng.below(31) as usize;
        let words: Vec<&str> = (0..n)
            .map(|_| data.vocab[zipf_rank(&mut rng, &data.cdf)].as_str())
            .collect();
        data.text.push(words.join(" "));
        t += (-(rng.unit().max(1e-12)).ln() * 2.0) as u64;
        data.ts.push(t);
        let dollars = (3.0 + 1.2 * rng.normal()).exp().round().max(1.0) as u64;
        let cents = [0, 49, 95, 99, 99, 99][rng.below(6) as usize];
        data.price.push(dollars * 100 + cents);
        data.age.push(18 + rng.below(73) as u8);
    }
    data
}

fn row_id(i: usize) -> RowId {
    RowId(
        *blake3::hash(&(i as u64).to_le_bytes())
            .as_bytes()
            .first_chunk()
            .unwrap(),
    )
}

fn locator(i: usize) -> Vec<u8> {
    // segment id (16) ‖ offset (8) ‖ length (4) ‖ version (8): a plausible locator size.
    let mut l = vec![0u8; 36];
    l[..8].copy_from_slice(&(i as u64 / 1000).to_be_bytes());
    l[16..24].copy_from_slice(&(i as u64 % 1000 * 120).to_be_bytes());
    l
}

fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            dir_bytes(&e.path())
        } else {
            m.len()
        };
    }
    total
}

/// Sum of key and value lengths over every tree of a sled database.
fn logical_bytes(db: &sled::Db) -> u64 {
    let mut total = 0;
    for name in db.tree_names() {
        for kv in db.open_tree(name).unwrap().iter() {
            let (k, v) = kv.unwrap();
            total += (k.len() + v.len()) as u64;
        }
    }
    total
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e6
}

/// The plaintext engine: the same layout as the encrypted store, with plain values.
struct Plain {
    db: sled::Db,
    primary: sled::Tree,
    eq: sled::Tree,
    range: sled::Tree,
    writer: Option<IndexWriter<TantivyDocument>>,
    reader: IndexReader,
    row: Field,
    text: Field,
}

impl Plain {
    fn open(dir: &Path) -> Plain {
        let db = sled::open(dir.join("sled")).unwrap();
        let mut sb = Schema::builder();
        let row = sb.add_bytes_field("row", INDEXED | STORED);
        let text = sb.add_text_field(
            "text",
            TOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer("default")
                    .set_index_option(IndexRecordOption::WithFreqs),
            ),
        );
        std::fs::create_dir_all(dir.join("text")).unwrap();
        let index = Index::create_in_dir(dir.join("text"), sb.build()).unwrap();
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .unwrap();
        let writer = index.writer_with_num_threads(1, 32_000_000).unwrap();
        Plain {
            primary: db.open_tree("p").unwrap(),
            eq: db.open_tree("e").unwrap(),
            range: db.open_tree("r").unwrap(),
            db,
            writer: Some(writer),
            reader,
            row,
            text,
        }
    }

    fn key(col: ColumnId, v: &[u8], row: &RowId) -> Vec<u8> {
        [&col.0.to_be_bytes()[..], v, &row.0].concat()
    }

    /// Opens the plain engine again, read-only.
    fn reopen(dir: &Path) -> Plain {
        let db = sled::open(dir.join("sled")).unwrap();
        let index = Index::open_in_dir(dir.join("text")).unwrap();
        let schema = index.schema();
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .unwrap();
        Plain {
            primary: db.open_tree("p").unwrap(),
            eq: db.open_tree("e").unwrap(),
            range: db.open_tree("r").unwrap(),
            db,
            writer: None,
            reader,
            row: schema.get_field("row").unwrap(),
            text: schema.get_field("text").unwrap(),
        }
    }

    /// Waits for background merges, like the encrypted store's `close`.
    fn close_writer(&mut self) {
        self.writer.take().unwrap().wait_merging_threads().unwrap();
        self.reader.reload().unwrap();
        self.db.flush().unwrap();
    }

    fn ingest(&mut self, data: &Data, range: std::ops::Range<usize>) {
        let writer = self.writer.as_mut().unwrap();
        let (mut p, mut e, mut r) = (
            sled::Batch::default(),
            sled::Batch::default(),
            sled::Batch::default(),
        );
        for i in range {
            let id = row_id(i);
            let _old = self.primary.get(id.0).unwrap();
            let mut doc = TantivyDocument::default();
            doc.add_bytes(self.row, &id.0);
            doc.add_text(self.text, &data.text[i]);
            writer.add_document(doc).unwrap();
            e.insert(Self::key(AGE, &[data.age[i]], &id), &[][..]);
            r.insert(Self::key(TS, &data.ts[i].to_be_bytes(), &id), &[][..]);
            r.insert(Self::key(PRICE, &data.price[i].to_be_bytes(), &id), &[][..]);
            // Like the encrypted store's record: version, locator, and a copy of the row's
            // secondary entries (here plaintext) so that an update could remove them.
            let record = [
                &1u64.to_be_bytes()[..],
                &locator(i),
                &AGE.0.to_be_bytes(),
                &[data.age[i]],
                &TS.0.to_be_bytes(),
                &data.ts[i].to_be_bytes(),
                &PRICE.0.to_be_bytes(),
                &data.price[i].to_be_bytes(),
            ]
            .concat();
            p.insert(&id.0[..], record);
        }
        // As the encrypted store does: tantivy beside the secondary trees, then the primary.
        std::thread::scope(|s| {
            s.spawn(|| writer.commit().unwrap());
            self.eq.apply_batch(e).unwrap();
            self.range.apply_batch(r).unwrap();
        });
        self.reader.reload().unwrap();
        self.primary.apply_batch(p).unwrap();
        self.db.flush().unwrap();
    }

    /// BM25 scores of the top 10 rows (that exist in the primary map).
    fn keyword(&self, words: &[&str]) -> Vec<f32> {
        let clauses: Vec<(Occur, Box<dyn TQuery>)> = words
            .iter()
            .map(|w| {
                let q: Box<dyn TQuery> = Box::new(TermQuery::new(
                    Term::from_field_text(self.text, w),
                    IndexRecordOption::WithFreqs,
                ));
                (Occur::Must, q)
            })
            .collect();
        let searcher = self.reader.searcher();
        let top = searcher
            .search(
                &BooleanQuery::new(clauses),
                &TopDocs::with_limit(10).order_by_score(),
            )
            .unwrap();
        let mut scores = Vec::new();
        for (score, addr) in top {
            let doc: TantivyDocument = searcher.doc(addr).unwrap();
            let row = doc
                .get_first(self.row)
                .and_then(|v| v.as_bytes())
                .unwrap()
                .to_vec();
            if self.primary.get(row).unwrap().is_some() {
                scores.push(score);
            }
        }
        scores
    }

    fn range(&self, lo: u64, hi: u64) -> usize {
        let lo = Self::key(TS, &lo.to_be_bytes(), &RowId([0; 16]));
        let hi = Self::key(TS, &hi.to_be_bytes(), &RowId([0xff; 16]));
        let mut n = 0;
        for k in self.range.range(lo..=hi).keys() {
            let k = k.unwrap();
            n += usize::from(self.primary.get(&k[k.len() - 16..]).unwrap().is_some());
        }
        n
    }
}

struct Client {
    tokens: HashMap<ColumnId, TokenKey>,
    ts: OpeEncoder,
    price: OpeEncoder,
    opts: TextOptions,
}

impl Client {
    fn new() -> Client {
        let mut tokens = HashMap::new();
        for c in [TEXT, AGE] {
            tokens.insert(
                c,
                TokenKey::new(*blake3::hash(&c.0.to_be_bytes()).as_bytes()),
            );
        }
        Client {
            tokens,
            ts: OpeEncoder::new(OpeKey::new([11; 32])).unwrap(),
            price: OpeEncoder::new(OpeKey::new([12; 32])).unwrap(),
            opts: TextOptions::default(),
        }
    }

    fn encode(&mut self, data: &Data, range: std::ops::Range<usize>) -> Batch {
        let ts = self.ts.encrypt_batch(&data.ts[range.clone()]).unwrap();
        let price = self
            .price
            .encrypt_batch(&data.price[range.clone()])
            .unwrap();
        let mut batch = Batch::default();
        for (k, i) in range.enumerate() {
            batch.ops.push(RowOp::Put(RowEntries {
                row: row_id(i),
                version: 1,
                locator: locator(i),
                equality: vec![(AGE, self.tokens[&AGE].eq_token(&[data.age[i]]))],
                range: vec![(TS, ts[k]), (PRICE, price[k])],
                text: vec![(
                    TEXT,
                    self.tokens[&TEXT].text_tokens(&data.text[i], &self.opts),
                )],
            }));
        }
        batch
    }
}

/// Values/s of a fresh encoder one value at a time (one core) and in batches of 1000 (whose
/// cache misses run on every core).
fn ope_rate(name: &str, values: &[u64]) {
    let mut one = OpeEncoder::new(OpeKey::new([13; 32])).unwrap();
    let t = Instant::now();
    for &v in values {
        one.encrypt(v).unwrap();
    }
    let single = t.elapsed().as_secs_f64();
    let mut e = OpeEncoder::new(OpeKey::new([13; 32])).unwrap();
    let t = Instant::now();
    for chunk in values.chunks(1000) {
        e.encrypt_batch(chunk).unwrap();
    }
    let s = t.elapsed().as_secs_f64();
    let st = e.stats();
    println!(
        "  {name:<34} {:>9.0} values/s one core, {:>9.0} batched   {:.3} BCLO calls/value ({} values)",
        values.len() as f64 / single,
        values.len() as f64 / s,
        st.bclo_calls as f64 / values.len() as f64,
        values.len()
    );
}

/// Options of `wwt bench-index`.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Rows to index.
    #[arg(long, default_value_t = 100_000)]
    pub rows: usize,
    /// Rows per committed batch.
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    /// Queries of each kind timed.
    #[arg(long, default_value_t = 300)]
    pub queries: usize,
}

/// Runs the benchmark and prints its figures.
pub fn run(o: &Options) {
    let (rows, batch, queries) = (o.rows.max(1), o.batch.max(1), o.queries.max(1));
    let tmp = tempfile::tempdir().unwrap();
    println!("wwt-index bench: {rows} rows, batches of {batch}, {queries} queries per kind");
    let t = Instant::now();
    let data = generate(rows, 2026);
    println!(
        "generated in {:.1}s (avg {:.1} words/row)",
        t.elapsed().as_secs_f64(),
        data.text
            .iter()
            .map(|t| t.split(' ').count())
            .sum::<usize>() as f64
            / rows as f64
    );

    // Plain ingest.
    let plain_dir = tmp.path().join("plain");
    let mut plain = Plain::open(&plain_dir);
    let t = Instant::now();
    for start in (0..rows).step_by(batch) {
        plain.ingest(&data, start..(start + batch).min(rows));
    }
    let plain_ingest = t.elapsed().as_secs_f64();
    plain.close_writer();

    // Encrypted ingest: client encoding, then the store.
    let owner = OwnerId([1; 32]);
    let table = TableId([2; 16]);
    let enc_dir = tmp.path().join("enc");
    let store = LocalIndexStore::open(&enc_dir).unwrap();
    let schema = TableSchema {
        indexes: vec![
            (TEXT, IndexKind::FullText),
            (AGE, IndexKind::Equality),
            (TS, IndexKind::Range),
            (PRICE, IndexKind::Range),
        ],
    };
    store.create_table(&owner, &table, &schema).unwrap();
    let mut client = Client::new();
    let (mut encode_s, mut apply_s) = (0.0, 0.0);
    for start in (0..rows).step_by(batch) {
        let t = Instant::now();
        let b = client.encode(&data, start..(start + batch).min(rows));
        encode_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        store.apply(&owner, &table, &b).unwrap();
        apply_s += t.elapsed().as_secs_f64();
    }
    let enc_ingest = encode_s + apply_s;
    // Both sides wait for background merges before sizes and queries are measured.
    store.close().unwrap();
    let enc_logical = logical_bytes(&sled::open(enc_dir.join("sled")).unwrap());
    let plain_logical = logical_bytes(&plain.db);
    let store = LocalIndexStore::open(&enc_dir).unwrap();

    let plain_bytes = dir_bytes(&plain_dir);
    let enc_bytes = dir_bytes(&enc_dir);
    let (plain_text, enc_text) = (
        dir_bytes(&plain_dir.join("text")),
        dir_bytes(&enc_dir.join("text")),
    );

    // Reopen both sides so neither has a warmer cache from ingest; then one untimed pass.
    drop(plain);
    let plain = Plain::reopen(&plain_dir);

    // Keyword queries: mid-frequency words, half single-term, half two-term AND, top 10.
    let mut rng = Rng(7);
    let kw: Vec<Vec<&str>> = (0..queries)
        .map(|q| {
            (0..1 + q % 2)
                .map(|_| data.vocab[10 + rng.below(2000) as usize].as_str())
                .collect()
        })
        .collect();
    let key = &client.tokens[&TEXT];
    let kw_enc: Vec<Query> = kw
        .iter()
        .map(|words| Query::Text {
            column: TEXT,
            expr: TextExpr::And(
                words
                    .iter()
                    .filter_map(|w| key.query_token(w, &client.opts))
                    .map(TextExpr::Term)
                    .collect(),
            ),
            limit: 10,
            order: TextOrder::Score,
        })
        .collect();

    // Range queries of ~100 rows on the timestamp; the query client has a cold OPE cache.
    let mut sorted_ts = data.ts.clone();
    sorted_ts.sort_unstable();
    let bounds: Vec<(u64, u64)> = (0..queries)
        .map(|_| {
            let j = rng.below((rows.saturating_sub(100)).max(1) as u64) as usize;
            (sorted_ts[j], sorted_ts[(j + 99).min(rows - 1)])
        })
        .collect();
    let mut qclient = OpeEncoder::new(OpeKey::new([11; 32])).unwrap();
    let mut rc = Vec::new();
    let range_enc: Vec<Query> = bounds
        .iter()
        .map(|&(lo, hi)| {
            let t = Instant::now();
            let (clo, chi) = (qclient.encrypt(lo).unwrap(), qclient.encrypt(hi).unwrap());
            rc.push(t.elapsed());
            Query::Range {
                column: TS,
                lower: Bound::Included(clo),
                upper: Bound::Included(chi),
                order: Order::Asc,
                limit: None,
            }
        })
        .collect();

    let count = |out: QueryOutput| match out {
        QueryOutput::Rows(h) => h.len(),
        QueryOutput::Counts(_) => 0,
    };
    let scores = |out: QueryOutput| match out {
        QueryOutput::Rows(h) => h.iter().map(|h| h.score.unwrap_or(f32::NAN)).collect(),
        QueryOutput::Counts(_) => Vec::new(),
    };
    let same_scores = |a: &[f32], b: &[f32]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= 1e-4 * x.abs().max(1.0))
    };
    let mut same_ranking = 0;
    let (mut kp, mut ke, mut rp, mut re) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut hits_e, mut n_e) = (0, 0);
    for pass in 0..2 {
        for v in [&mut kp, &mut ke, &mut rp, &mut re] {
            v.clear();
        }
        let (mut hits_p, mut n_p) = (0, 0);
        (hits_e, n_e) = (0, 0);
        for (words, q) in kw.iter().zip(&kw_enc) {
            let t = Instant::now();
            let sp = plain.keyword(words);
            kp.push(t.elapsed());
            let t = Instant::now();
            let se: Vec<f32> = scores(store.query(&owner, &table, q).unwrap());
            ke.push(t.elapsed());
            (hits_p, hits_e) = (hits_p + sp.len(), hits_e + se.len());
            same_ranking += usize::from(pass == 1 && same_scores(&sp, &se));
        }
        for (&(lo, hi), q) in bounds.iter().zip(&range_enc) {
            let t = Instant::now();
            n_p += plain.range(lo, hi);
            rp.push(t.elapsed());
            let t = Instant::now();
            n_e += count(store.query(&owner, &table, q).unwrap());
            re.push(t.elapsed());
        }
        assert_eq!(hits_p, hits_e, "keyword queries disagree (pass {pass})");
        assert_eq!(n_p, n_e, "range queries disagree (pass {pass})");
    }

    let r = rows as f64;
    println!();
    println!(
        "{:<40} {:>14} {:>14} {:>9}",
        "", "plain", "encrypted", "enc/plain"
    );
    let line =
        |name: &str, p: f64, e: f64| println!("{name:<40} {p:>14.1} {e:>14.1} {:>8.2}x", e / p);
    line(
        "ingest rows/s (end to end)",
        r / plain_ingest,
        r / enc_ingest,
    );
    println!(
        "{:<40} {:>14} {:>14.1}",
        "  of which client encode rows/s",
        "-",
        r / encode_s
    );
    println!(
        "{:<40} {:>14} {:>14.1}",
        "  of which store apply rows/s",
        "-",
        r / apply_s
    );
    line(
        "index bytes/row (all)",
        plain_bytes as f64 / r,
        enc_bytes as f64 / r,
    );
    line(
        "  full-text bytes/row",
        plain_text as f64 / r,
        enc_text as f64 / r,
    );
    line(
        "  sled bytes/row",
        (plain_bytes - plain_text) as f64 / r,
        (enc_bytes - enc_text) as f64 / r,
    );
    line(
        "  sled keys+values bytes/row (logical)",
        plain_logical as f64 / r,
        enc_logical as f64 / r,
    );
    line(
        "keyword top-10 p50 µs",
        pct(&mut kp, 0.5),
        pct(&mut ke, 0.5),
    );
    line(
        "keyword top-10 p99 µs",
        pct(&mut kp, 0.99),
        pct(&mut ke, 0.99),
    );
    line(
        "range ~100 rows p50 µs (server)",
        pct(&mut rp, 0.5),
        pct(&mut re, 0.5),
    );
    line(
        "range ~100 rows p99 µs (server)",
        pct(&mut rp, 0.99),
        pct(&mut re, 0.99),
    );
    println!(
        "{:<40} {:>14} {:>14.1}",
        "  client OPE of both bounds p50 µs",
        "-",
        pct(&mut rc, 0.5)
    );
    println!(
        "(avg hits: keyword {:.1}, range {:.1}; keyword queries with the same BM25 scores on \
         both sides: {same_ranking}/{queries})",
        hits_e as f64 / queries as f64,
        n_e as f64 / queries as f64
    );

    println!();
    println!("OPE, fresh encoder: one value at a time on one core, and batches of 1000:");
    let n = rows.min(200_000);
    ope_rate("timestamps (s, mean gap 2 s)", &data.ts[..n]);
    ope_rate("prices (cents, retail-like)", &data.price[..n]);
    let ages: Vec<u64> = data.age[..n].iter().map(|&a| u64::from(a)).collect();
    ope_rate("ages (18..90)", &ages);
    let mut t = 1_700_000_000_000_000i64;
    let mut rng = Rng(9);
    let micros: Vec<u64> = (0..n.min(50_000))
        .map(|_| {
            t += 1 + rng.below(2000) as i64;
            u64_from_timestamp_micros(t)
        })
        .collect();
    ope_rate("timestamps (µs, all distinct)", &micros);
    let signed: Vec<u64> = (0..n.min(50_000))
        .map(|_| u64_from_i64(rng.below(2001) as i64 - 1000))
        .collect();
    ope_rate("small signed ints (-1000..=1000)", &signed);
    let uniform: Vec<u64> = (0..5_000).map(|_| rng.next()).collect();
    ope_rate("uniform random u64", &uniform);
}
