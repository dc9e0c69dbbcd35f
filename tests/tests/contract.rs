//! The .proto files are the contract other languages are written from: their byte layouts
//! must be what the code encodes, and every rpc must say how it refuses.
//!
//! A layout table in a .proto comment reads
//! ```text
//! // layout NAME
//! //   offset  size  type   field  meaning
//! //   0       32    bytes  id     …
//! //   32+8i   8     u64    x[i]   … (repeated for i in 0..n)
//! //   total   32+8n
//! ```
//! Each test builds a layout from its table and values taken from the code's own structs, and
//! compares the bytes with what the code's encoder wrote (or, for tags, with the tags the code
//! issued over them). An rpc's refusals are the lines `CODE  when` of the comment above it.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::{BTreeSet, HashMap};

use tonic::Status;
use wwt_engine::{
    Codec, CodingParams, Extent, Locator, MasterKey, RowId, Segment, SegmentId as EngineSegmentId,
    SegmentManifest,
};
use wwt_net::types::{NodeId, OperatorCert, PieceId, Reservation, SegmentId, StoreReceipt};
use wwt_net::{Identity, NetError, PeerKeys};

const PROTOS: [(&str, &str); 2] = [
    ("wwt.proto", include_str!("../../net/proto/wwt.proto")),
    ("index.proto", include_str!("../../net/proto/index.proto")),
];

/// `base + step·var`, where var is `i` in an offset and `n` in a total.
#[derive(Debug, Clone, Copy)]
struct Linear {
    base: usize,
    step: usize,
}

impl Linear {
    fn parse(text: &str, var: char) -> Option<Linear> {
        let (base, step) = match text.split_once('+') {
            Some((base, step)) => (base, step.strip_suffix(var)?.parse().ok()?),
            None => (text, 0),
        };
        Some(Linear {
            base: base.parse().ok()?,
            step,
        })
    }

    fn at(self, x: usize) -> usize {
        self.base + self.step * x
    }
}

#[derive(Debug)]
struct Row {
    offset: Linear,
    size: usize,
    kind: String,
    field: String,
    /// For `text` rows: the string in quotes, `\0` unescaped.
    literal: Option<Vec<u8>>,
}

#[derive(Debug)]
struct Layout {
    rows: Vec<Row>,
    total: Linear,
}

/// The text of a comment line, or `None` for other lines.
fn comment(line: &str) -> Option<&str> {
    line.trim_start().strip_prefix("//").map(str::trim)
}

/// Every layout table of the .proto files, by name.
fn layouts() -> HashMap<String, Layout> {
    let mut out = HashMap::new();
    for (file, text) in PROTOS {
        let mut lines = text.lines().map(comment);
        while let Some(line) = lines.next() {
            let name = line.and_then(|l| l.strip_prefix("layout "));
            let Some(name) = name.filter(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            else {
                continue;
            };
            let header = lines.next().flatten().unwrap_or_default();
            assert!(
                header
                    .split_whitespace()
                    .eq(["offset", "size", "type", "field", "meaning"]),
                "{file}: layout {name}: the header row is `offset size type field meaning`, \
                 not {header:?}"
            );
            let mut rows = Vec::new();
            let total = loop {
                let row = lines
                    .next()
                    .flatten()
                    .unwrap_or_else(|| panic!("{file}: layout {name} ends before its `total` row"));
                let cells: Vec<&str> = row.split_whitespace().collect();
                if cells[0] == "total" {
                    break Linear::parse(cells[1], 'n')
                        .unwrap_or_else(|| panic!("{file}: layout {name}: total {row:?}"));
                }
                let bad = || {
                    format!("{file}: layout {name}: row {row:?} is not `offset size type field …`")
                };
                let [offset, size, kind, field, ..] = cells[..] else {
                    panic!("{}", bad())
                };
                let literal = (kind == "text").then(|| {
                    let quoted = row.split('"').nth(1).unwrap_or_else(|| panic!("{}", bad()));
                    quoted.replace("\\0", "\0").into_bytes()
                });
                rows.push(Row {
                    offset: Linear::parse(offset, 'i').unwrap_or_else(|| panic!("{}", bad())),
                    size: size.parse().unwrap_or_else(|_| panic!("{}", bad())),
                    kind: kind.to_string(),
                    field: field.to_string(),
                    literal,
                });
            };
            let layout = Layout { rows, total };
            assert!(
                out.insert(name.to_string(), layout).is_none(),
                "layout {name} twice"
            );
        }
    }
    out
}

/// A field's value, as the code holds it.
enum Value {
    Int(u64),
    Bytes(Vec<u8>),
}

/// Builds layout `name` for `n` repetitions, each field from `value(field, i)`, and checks
/// that its rows tile it: no byte written twice, none left out.
fn build(
    layouts: &HashMap<String, Layout>,
    name: &str,
    n: usize,
    value: &dyn Fn(&str, usize) -> Value,
) -> Vec<u8> {
    let layout = layouts
        .get(name)
        .unwrap_or_else(|| panic!("no layout {name} in the .proto files"));
    let total = layout.total.at(n);
    let mut out: Vec<Option<u8>> = vec![None; total];
    for row in &layout.rows {
        let repeats = if row.offset.step > 0 { n } else { 1 };
        for i in 0..repeats {
            let what = format!("layout {name}, field {} (i = {i})", row.field);
            let bytes = match (row.kind.as_str(), &row.literal) {
                ("text", Some(literal)) => literal.clone(),
                ("layout", _) => build(layouts, &row.field, n, value),
                (kind, _) => match (kind, value(&row.field, i)) {
                    ("u16", Value::Int(v)) => u16::try_from(v).unwrap().to_le_bytes().to_vec(),
                    ("u32", Value::Int(v)) => u32::try_from(v).unwrap().to_le_bytes().to_vec(),
                    ("u64", Value::Int(v)) => v.to_le_bytes().to_vec(),
                    ("bytes", Value::Bytes(b)) => b,
                    (kind, _) => panic!("{what}: the code's value is not of type {kind}"),
                },
            };
            assert_eq!(bytes.len(), row.size, "{what}: size");
            let at = row.offset.at(i);
            assert!(
                at + row.size <= total,
                "{what}: ends past the total {total}"
            );
            for (slot, byte) in out[at..at + row.size].iter_mut().zip(bytes) {
                assert!(slot.is_none(), "{what}: overlaps another field");
                *slot = Some(byte);
            }
        }
    }
    out.into_iter()
        .enumerate()
        .map(|(at, b)| b.unwrap_or_else(|| panic!("layout {name}: no field covers byte {at}")))
        .collect()
}

fn unknown(layout: &str, field: &str) -> ! {
    panic!("layout {layout} names field {field}, which the code does not encode")
}

/// A manifest as the engine codes it, with the generations repairs would leave.
fn manifest(params: CodingParams, len: usize) -> SegmentManifest {
    let audit = MasterKey::from_bytes([9; 32]).table("t").audit;
    let segment = Segment {
        id: EngineSegmentId([0x5e; 32]),
        bytes: (0..len).map(|b| b as u8).collect(),
    };
    let mut manifest = Codec::new(params)
        .unwrap()
        .encode(&audit, &segment)
        .manifest;
    for (i, piece) in manifest.pieces.iter_mut().enumerate() {
        piece.generation = 7 * i as u64;
    }
    manifest
}

#[test]
fn manifest_layout_is_the_engines() {
    let layouts = layouts();
    for (k, m, len) in [(4, 2, 100_000), (1, 0, 5), (10, 4, 1 << 20)] {
        let manifest = manifest(CodingParams::new(k, m).unwrap(), len);
        let value = |field: &str, i: usize| match field {
            "segment_id" => Value::Bytes(manifest.segment.0.to_vec()),
            "k" => Value::Int(manifest.params.data as u64),
            "m" => Value::Int(manifest.params.parity as u64),
            "segment_len" => Value::Int(manifest.segment_len),
            "shard_len" => Value::Int(manifest.shard_len),
            "sentinels" => Value::Int(manifest.sentinels.into()),
            "piece[i].hash" => Value::Bytes(manifest.pieces[i].hash.0.to_vec()),
            "piece[i].generation" => Value::Int(manifest.pieces[i].generation),
            other => unknown("manifest", other),
        };
        let built = build(&layouts, "manifest", k + m, &value);
        assert_eq!(built, manifest.to_bytes(), "manifest of RS {k}+{m}");
        assert_eq!(SegmentManifest::from_bytes(&built).unwrap(), manifest);
    }
}

#[test]
fn locator_layout_is_the_engines() {
    let layouts = layouts();
    for n in [0u8, 1, 3] {
        let locator = Locator {
            row: RowId([0x11; 16]),
            version: 0x0102_0304_0506_0708,
            extents: (0..n)
                .map(|e| Extent {
                    segment: EngineSegmentId([0x20 + e; 32]),
                    offset: 4096 * u64::from(e) + 1,
                    len: 1000 + u64::from(e),
                })
                .collect(),
        };
        let value = |field: &str, i: usize| match field {
            "row" => Value::Bytes(locator.row.0.to_vec()),
            "version" => Value::Int(locator.version),
            "n" => Value::Int(locator.extents.len() as u64),
            "extent[i].segment" => Value::Bytes(locator.extents[i].segment.0.to_vec()),
            "extent[i].offset" => Value::Int(locator.extents[i].offset),
            "extent[i].len" => Value::Int(locator.extents[i].len),
            other => unknown("locator", other),
        };
        let built = build(&layouts, "locator", n.into(), &value);
        assert_eq!(built, locator.to_bytes(), "locator of {n} extents");
    }
}

/// The keyed BLAKE3 of `bytes` under `key`.
fn tag(key: &[u8; 32], bytes: &[u8]) -> [u8; 32] {
    *blake3::keyed_hash(key, bytes).as_bytes()
}

#[test]
fn reservation_and_receipt_tags_cover_their_layouts() {
    let layouts = layouts();
    let (tracker, provider) = (
        Identity::from_secret([0x7a; 32]),
        Identity::from_secret([0x9d; 32]),
    );
    let (t, p) = (PeerKeys::new(&tracker), PeerKeys::new(&provider));
    let reservation = Reservation {
        piece: PieceId::of(b"piece bytes"),
        size: 0x0a0b_0c0d,
        segment: SegmentId([0x33; 32]),
        index: 0x0102_0304,
        provider: provider.node_id(),
        owner: NodeId([0xc1; 32]),
        expires_ms: 1_767_225_600_000,
        tracker: tracker.node_id(),
        tracker_tag: [0; 32],
        provider_tag: [0; 32],
    }
    .issue(&t)
    .unwrap();
    let receipt = StoreReceipt::issue(reservation.clone(), &p).unwrap();
    let r = &receipt.reservation;
    let value = |field: &str, _: usize| match field {
        "piece_id" => Value::Bytes(r.piece.0.to_vec()),
        "size" => Value::Int(r.size),
        "segment_id" => Value::Bytes(r.segment.0.to_vec()),
        "index" => Value::Int(r.index.into()),
        "provider" => Value::Bytes(r.provider.0.to_vec()),
        "owner" => Value::Bytes(r.owner.0.to_vec()),
        "expires_ms" => Value::Int(r.expires_ms),
        "tracker" => Value::Bytes(r.tracker.0.to_vec()),
        "tracker_tag" => Value::Bytes(r.tracker_tag.to_vec()),
        "provider_tag" => Value::Bytes(r.provider_tag.to_vec()),
        other => unknown("reservation_tag or receipt_tag", other),
    };
    let tagged = build(&layouts, "reservation_tag", 0, &value);
    assert_eq!(tag(t.own(), &tagged), r.tracker_tag, "tracker_tag");
    let shared = t.shared(&provider.node_id()).unwrap();
    assert_eq!(tag(&shared, &tagged), r.provider_tag, "provider_tag");
    let receipted = build(&layouts, "receipt_tag", 0, &value);
    assert_eq!(tag(&shared, &receipted), receipt.tag, "receipt tag");
}

#[test]
fn operator_certificate_layout_is_the_nets() {
    let layouts = layouts();
    let operator = Identity::from_secret([0x0e; 32]);
    let cert = OperatorCert::issue(&operator, &NodeId([0x9d; 32]));
    let value = |field: &str, _: usize| match field {
        "operator" => Value::Bytes(cert.operator.0.to_vec()),
        "signature" => Value::Bytes(cert.signature.to_vec()),
        other => unknown("operator_certificate", other),
    };
    let built = build(&layouts, "operator_certificate", 0, &value);
    assert_eq!(built, cert.to_bytes());
}

#[test]
fn every_layout_is_checked() {
    let checked = [
        "manifest",
        "locator",
        "reservation_tag",
        "receipt_tag",
        "operator_certificate",
    ];
    let documented: BTreeSet<String> = layouts().into_keys().collect();
    let checked: BTreeSet<String> = checked.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        documented, checked,
        "a layout in the .proto files needs its test here"
    );
}

/// The gRPC code names (`PERMISSION_DENIED`) the services answer with: those of `NetError`.
fn service_codes() -> BTreeSet<String> {
    let all = [
        NetError::Unauthenticated(String::new()),
        NetError::Forbidden(String::new()),
        NetError::BadRequest(String::new()),
        NetError::NotFound(String::new()),
        NetError::Conflict(String::new()),
        NetError::NoCapacity(String::new()),
        NetError::Precondition(String::new()),
        NetError::Unavailable(String::new()),
        NetError::Internal(String::new()),
    ];
    all.into_iter()
        .map(|e| {
            let camel = format!("{:?}", Status::from(e).code());
            let mut name = String::new();
            for (i, c) in camel.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    name.push('_');
                }
                name.push(c.to_ascii_uppercase());
            }
            name
        })
        .collect()
}

#[test]
fn every_rpc_lists_its_refusals() {
    let codes = service_codes();
    let mut rpcs = 0;
    for (file, text) in PROTOS {
        let lines: Vec<&str> = text.lines().collect();
        for (at, line) in lines.iter().enumerate() {
            let Some(rpc) = line.trim_start().strip_prefix("rpc ") else {
                continue;
            };
            rpcs += 1;
            let name = rpc.split('(').next().unwrap_or(rpc);
            let above = lines[..at].iter().rev().map_while(|l| comment(l));
            let mut listed = BTreeSet::new();
            for text in above {
                let word = text.split_whitespace().next().unwrap_or_default();
                if word.len() < 4 || !word.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                    continue;
                }
                assert!(
                    codes.contains(word),
                    "{file}: rpc {name} lists {word}, not a code the services answer with \
                     ({codes:?})"
                );
                assert!(listed.insert(word), "{file}: rpc {name} lists {word} twice");
            }
            assert!(
                !listed.is_empty(),
                "{file}: rpc {name} lists no refusal: add lines `CODE  when` to its comment"
            );
        }
    }
    // Provider 5, Tracker 11, Index 5.
    assert_eq!(rpcs, 21, "rpc lines found");
}
