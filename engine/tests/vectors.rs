//! Known-answer vectors for what the engine stores: derived keys, row ids, sealed rows and
//! locators, the locator and manifest encodings, packed segments, whitened pieces with their
//! sentinels, repairs, chunk proofs and the keystore file.
//!
//! Every input is a constant and every expected value was printed by this code when it was
//! committed. Stored tables are read back by later builds, so a vector that fails means data
//! written before the change no longer reads: keep the old format readable (give the new one a
//! version), never just paste the new value.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::fs;
use std::io::Cursor;
use std::os::unix::fs::PermissionsExt;

use ed25519_dalek::SigningKey;
use wwt_engine::codec::Rebuilt;
use wwt_engine::piece::{answer_challenge, sentinel_count};
use wwt_engine::segment::SegmentPacker;
use wwt_engine::{
    Codec, CodingParams, Extent, Keystore, Locator, MasterKey, PieceHash, PieceView, RowCipher,
    RowId, Segment, SegmentId, SegmentManifest, TableKeys, proof,
};

#[path = "../../tests/support/pin.rs"]
#[macro_use]
mod pin;

/// The master key of every vector: bytes 0, 1, …, 31.
fn master() -> MasterKey {
    MasterKey::from_bytes(std::array::from_fn(|i| i as u8))
}

fn users() -> TableKeys {
    master().table("users")
}

/// The seed of the fixed nonce source of every sealed vector.
const NONCE_SEED: [u8; 32] = [0x5e; 32];

/// `wwt_query::encode_key(&Value::Int(42))`: the primary key whose row id the vectors use.
const PK_42: [u8; 9] = [0x01, 0x80, 0, 0, 0, 0, 0, 0, 42];

fn row_42() -> RowId {
    users().row_id.row_id(&PK_42)
}

/// Segment bytes that depend on no library: a multiplicative hash of the index.
fn segment_bytes(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

fn segment_id() -> SegmentId {
    SegmentId(std::array::from_fn(|i| 0xa0 + i as u8))
}

// `users` table id: BLAKE3 derive-key "wwt 2026-11 table id" of master ‖ len ‖ name.
const TABLE_ID: &str = "fd2b43215112a07ed33b27f139bfff48";
// Table id of a name that is not ASCII (the name's UTF-8 bytes are hashed).
const TABLE_ID_UNICODE: &str = "3a94a2091c651b12ef6621081fca4865";
// The `users` row key (AES-256-SIV, 64 bytes).
const ROW_KEY: &str = concat!(
    "dbae0333c104ae4a08d0aa462927895320e8b0d7019617a8a0f7ab1720d2237c",
    "001a63d740c8b23d22ccf1f1c16c754dd218e9163b312e69e3d331eedbeee27e",
);
// The `users` row-id key.
const ROW_ID_KEY: &str = "e9c45a3a456d7f0f4e5dce0c573e8535bb8afc82a41af4359cd74c7fa2e67d42";
// The `users` audit key (whitening, sentinels, sentinel order).
const AUDIT_KEY: &str = "1111443a704d99a4e6c9527e416d8ef2a876ebfdfb14655f650ee23509ac616a";
// The token key of column `email` of `users` (full-text and equality tokens).
const TOKEN_KEY: &str = "cfe5bd0412316322579fae568073db23980d084597647c4bd50ee992d00f564e";
// The OPE key of column `age` of `users`.
const OPE_KEY: &str = "b3529448132ecde75b0a74388af9f5fb7a156fc4ae1bd0d70c9defc21fa400dd";

#[test]
fn derived_keys() {
    let m = master();
    let keys = users();
    pin!(TABLE_ID, keys.id.0);
    pin!(TABLE_ID_UNICODE, m.table_id("Ünïcödé 表").0);
    pin!(ROW_KEY, keys.row.as_bytes());
    pin!(ROW_ID_KEY, keys.row_id.as_bytes());
    pin!(AUDIT_KEY, keys.audit.as_bytes());
    pin!(TOKEN_KEY, m.token_key(keys.id, "email").as_bytes());
    pin!(OPE_KEY, m.ope_key(keys.id, "age").as_bytes());
}

// Row id of primary key BIGINT 42 (keyed BLAKE3 under the row-id key, first 16 bytes).
const ROW_ID_INT: &str = "ec9c9ea3f6f4f955f498d92de74be72c";
// Row id of primary key TEXT 'alice' (`0x03 ‖ UTF-8`).
const ROW_ID_TEXT: &str = "6f25c64dec3603c7ecc6618828ab1935";
// Row id of the empty key bytes.
const ROW_ID_EMPTY: &str = "b73d8c1a3dcb23747922899bc8026d0f";

#[test]
fn row_ids() {
    let key = users().row_id;
    pin!(ROW_ID_INT, key.row_id(&PK_42).0);
    pin!(ROW_ID_TEXT, key.row_id(b"\x03alice").0);
    pin!(ROW_ID_EMPTY, key.row_id(b"").0);
}

// Row 42 version 1 sealed: nonce (first 16 bytes of the seed's stream) ‖ SIV tag ‖ ciphertext.
const SEALED_ROW_V1: &str = concat!(
    "a1e38d62076b58c3df1277011234aa6f7e4fcc19534c639e56c5d5e23ae1b9f0",
    "dced6a4a96aa7c87b0c99b9deb8493751e01b80682dc05",
);
// The same plaintext at version 2, with the stream's second nonce.
const SEALED_ROW_V2: &str = concat!(
    "14221002c33de17e9b077c1882c5365516694828166b8466b016d40018845a6f",
    "fe079ca738c0d3289cf3776ed6075668e94234c63e4243",
);
// An empty plaintext at version 3 (nonce and tag only).
const SEALED_ROW_EMPTY: &str = "43fb382db870d2016832c19079612914935769883ef5f983ac24536a762e9c32";

const ROW_PLAINTEXT: &[u8] = b"\x01\x01alice@example.com \xe2\x9c\x93";

#[test]
fn sealed_rows_are_pinned_and_still_open() {
    let keys = users();
    let row = row_42();
    let mut cipher = RowCipher::with_nonce_seed(&keys.row, keys.id, NONCE_SEED);
    pin!(SEALED_ROW_V1, cipher.seal(row, 1, ROW_PLAINTEXT));
    pin!(SEALED_ROW_V2, cipher.seal(row, 2, ROW_PLAINTEXT));
    pin!(SEALED_ROW_EMPTY, cipher.seal(row, 3, b""));

    // A cipher with random nonces (as every writer has) opens the committed bytes.
    let mut reader = RowCipher::new(&keys.row, keys.id);
    for (version, sealed, plain) in [
        (1, SEALED_ROW_V1, ROW_PLAINTEXT),
        (2, SEALED_ROW_V2, ROW_PLAINTEXT),
        (3, SEALED_ROW_EMPTY, b""),
    ] {
        let sealed = pin::unhex(sealed);
        assert_eq!(reader.open(row, version, &sealed).unwrap(), plain);
        assert!(reader.open(row, version + 1, &sealed).is_err());
    }
}

fn locator() -> Locator {
    Locator {
        row: RowId([0x11; 16]),
        version: 7,
        extents: vec![
            Extent {
                segment: SegmentId([0x22; 32]),
                offset: 4096,
                len: 1000,
            },
            Extent {
                segment: SegmentId([0x33; 32]),
                offset: 0,
                len: 65_536,
            },
        ],
    }
}

// A two-extent locator: row ‖ version ‖ count ‖ (segment ‖ offset ‖ length)*, little-endian.
const LOCATOR: &str = concat!(
    "1111111111111111111111111111111107000000000000000200000022222222",
    "2222222222222222222222222222222222222222222222222222222200100000",
    "00000000e8030000000000003333333333333333333333333333333333333333",
    "33333333333333333333333300000000000000000000010000000000",
);
// That locator sealed as the client files it: under the row key of `\0locators users`, bound to
// its row and version.
const SEALED_LOCATOR: &str = concat!(
    "a1e38d62076b58c3df1277011234aa6fb799668f5db592f87fcd0fbc73db7b4f",
    "4ca60fb73412e982ecacba3b7bfd14e3fb77a5eb50d74c5c8232a13b98c7cccb",
    "cf85eb1e04b1a87cccd21f99a47c562a5b043d5cfde01d39693e58023a3107bb",
    "d572f5611de1513f927e97ae42a6598a721bba580f8c0261283794cc94bcc159",
    "5dc8bf5ccb2a6dad152614cb24592013a300a923f62f6234a24e4036",
);

#[test]
fn locators_and_sealed_locators() {
    let l = locator();
    pin!(LOCATOR, l.to_bytes());
    assert_eq!(Locator::from_bytes(&pin::unhex(LOCATOR)).unwrap(), l);

    let keys = master().table("\0locators users");
    let mut cipher = RowCipher::with_nonce_seed(&keys.row, keys.id, NONCE_SEED);
    pin!(SEALED_LOCATOR, cipher.seal(l.row, l.version, &l.to_bytes()));
    let mut reader = RowCipher::new(&keys.row, keys.id);
    let opened = reader
        .open(l.row, l.version, &pin::unhex(SEALED_LOCATOR))
        .unwrap();
    assert_eq!(Locator::from_bytes(&opened).unwrap(), l);
}

// Where nine rows went in 4 KiB segments (two large, one over two segments of its own; the
// last small one opens a new segment): per locator, its extents as segment number (in `finish`
// order: the ids are random) @ offset + length.
const PACKED_EXTENTS: &str = concat!(
    "3@0+42 3@42+932 3@974+932 3@1906+932 3@2838+932 0@0+3032 3@3770+32 1@0+4096,2@0+936 ",
    "4@0+932",
);
// Per packed segment: its length and the BLAKE3 of its bytes.
const PACKED_SEGMENTS: &str = concat!(
    "3032:a9209a20c6e82d195735c88e15747c84a6eb285337db5984fb671b867067a82f ",
    "4096:8af7ca1d9c3e058ca6c9fdd4b4f3764ebc3d67590f874036151e69281b500e2e ",
    "936:0ad0c7300ba44d144dbe3c084a98ba89430bebaf17f3b0e64c276dda6a908229 ",
    "3802:a8053c20b508c8e62c8b1bbb423139f6fa6ec3e5e329eaa8c5d4dd27e29555fa ",
    "932:ae2981ebdb2c1fc5b5841e230f760085d4ca62cfa3b8bbb098f234a761314274",
);

#[test]
fn packed_segments() {
    let keys = users();
    let mut cipher = RowCipher::with_nonce_seed(&keys.row, keys.id, NONCE_SEED);
    let mut packer = SegmentPacker::new(4096);
    let rows: Vec<Vec<u8>> = [10, 900, 900, 900, 900, 3000, 0, 5000, 900]
        .into_iter()
        .map(segment_bytes)
        .collect();
    let locators: Vec<Locator> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| packer.push(&mut cipher, RowId([i as u8; 16]), 1, r))
        .collect();
    let segments = packer.finish();
    let number: HashMap<SegmentId, usize> = segments
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id, i))
        .collect();
    let extents: Vec<String> = locators
        .iter()
        .map(|l| {
            l.extents
                .iter()
                .map(|e| format!("{}@{}+{}", number[&e.segment], e.offset, e.len))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    pin_str!(PACKED_EXTENTS, extents.join(" "));
    let described: Vec<String> = segments
        .iter()
        .map(|s| format!("{}:{}", s.bytes.len(), blake3::hash(&s.bytes).to_hex()))
        .collect();
    pin_str!(PACKED_SEGMENTS, described.join(" "));

    let by_id: HashMap<SegmentId, &[u8]> = segments
        .iter()
        .map(|s| (s.id, s.bytes.as_slice()))
        .collect();
    for (l, plain) in locators.iter().zip(&rows) {
        let mut sealed = Vec::new();
        for e in &l.extents {
            sealed.extend_from_slice(
                &by_id[&e.segment][e.offset as usize..(e.offset + e.len) as usize],
            );
        }
        assert_eq!(&cipher.open(l.row, l.version, &sealed).unwrap(), plain);
    }
}

/// The 100,000-byte segment coded 4 + 2 that the piece, repair and proof vectors share.
fn encoded() -> (Codec, wwt_engine::EncodedSegment) {
    let codec = Codec::new(CodingParams::default()).unwrap();
    let segment = Segment {
        id: segment_id(),
        bytes: segment_bytes(100_000),
    };
    let enc = codec.encode(&users().audit, &segment);
    (codec, enc)
}

// Manifest of the 100,000-byte segment coded 4 + 2: segment ‖ k ‖ m ‖ length ‖ shard length ‖
// sentinels ‖ (piece hash ‖ generation)*. The piece hashes pin RS coding, whitening and
// sentinels of every piece.
const MANIFEST: &str = concat!(
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf",
    "04000200a086010000000000a861000000000000610000003731ab25dd11628e",
    "390715a12f584b63522edc1e29f4b173e6241b5edf4d1f770000000000000000",
    "b2d36235f66615311c54ccb25ddc6fb5c94e90c6b7859eb4aa324fa4a4759a38",
    "000000000000000088bb31200ceabfe681e7dee28c5472d7511d73ea7d505f3a",
    "6f18fa77e610dca200000000000000006a16d5b8a47f10b5f13180e923c3400a",
    "7bcaf5b7c2165e2b8b2ce461e185994f0000000000000000ed0086c8c62d264b",
    "ca9adec1e8f7795b1f793af5d7450f586417caa89af6aeb70000000000000000",
    "e8c5624e114cbfacd759e1a88a2e02731655431ed066ee9bf162f93d729fd270",
    "0000000000000000",
);
// Per piece: length, first and last 8 bytes (for reading a failure; the hashes are above).
const PIECE_ENDS: &str = concat!(
    "25097:16bc58882fb286fd..611da1431b7d73c9 25097:fd7e0d5ada1ca154..1d4beab4e6b498d9 ",
    "25097:1984d9c1ecd5f295..8d661fe93b4c4ac0 25097:2d5dc27758669951..7a71de32dbcda076 ",
    "25097:2b3c82d29e6f924a..4c688408f29d97c4 25097:a31253569d863c56..67d082fb4656510d",
);

#[test]
fn coded_pieces_and_their_manifest() {
    let (codec, enc) = encoded();
    pin!(MANIFEST, enc.manifest.to_bytes());
    let ends: Vec<String> = enc
        .pieces
        .iter()
        .map(|p| {
            let n = p.len();
            format!("{n}:{}..{}", hex::encode(&p[..8]), hex::encode(&p[n - 8..]))
        })
        .collect();
    pin_str!(PIECE_ENDS, ends.join(" "));
    for (p, info) in enc.pieces.iter().zip(&enc.manifest.pieces) {
        assert_eq!(PieceHash(*blake3::hash(p).as_bytes()), info.hash);
    }

    // The committed manifest decodes, and the segment reads back from parity-heavy pieces.
    let manifest = SegmentManifest::from_bytes(&pin::unhex(MANIFEST)).unwrap();
    assert_eq!(manifest, enc.manifest);
    let given: Vec<Option<&[u8]>> = enc
        .pieces
        .iter()
        .enumerate()
        .map(|(i, p)| (i >= 2).then_some(p.as_slice()))
        .collect();
    assert_eq!(
        codec.decode(&users().audit, &manifest, &given).unwrap(),
        segment_bytes(100_000)
    );
}

// A 100-byte segment coded 3 + 1: its manifest (34-byte shards, the minimum 32 sentinels).
const SMALL_MANIFEST: &str = concat!(
    "4444444444444444444444444444444444444444444444444444444444444444",
    "03000100640000000000000022000000000000002000000069e252e9bbfbb51e",
    "6b584ed510e5f85e4c3a55cde68c1a1409c8baa18bbdd2020000000000000000",
    "0665f5aa5b2564cd92f33952bf4be3d06919bed37577d8956bec561e92dca4e5",
    "000000000000000019a2c9f962256fdbe2b7faa1be87f17d2bfed9f9daf52906",
    "494f25d10892e7c900000000000000007eceea6e672ce8b6339b5a9e4956b3a2",
    "6f99c036bcd7a7a658ec210cf55a6c0b0000000000000000",
);
// Its piece 0 in full: 34 whitened shard bytes with 32 sentinel bytes among them.
const SMALL_PIECE_0: &str = concat!(
    "527edffb58c137ab9606dd3bca506043deb518dd6ce7f195d2acdd83f89fb02c",
    "390e2566c9d172de4cd57aaa0a8f62af2e674b51822ee7af45eac254e0004029",
    "8c72",
);
// That manifest sealed as the client files it: under the row key of `\0segments`, as the row
// named by the segment id's first 16 bytes, version 1.
const SEALED_MANIFEST: &str = concat!(
    "a1e38d62076b58c3df1277011234aa6f1f5d57cae3319d856ed64b3991b6e001",
    "569496f899f22b75f9f7ce4fd79163ffb1640853fc1c2237aa20ebf1a4aa704d",
    "de450843d2887a00c59111000d5475a3e209703401b56064dd963b404d0e45d5",
    "541c00b7b7188a02eea5e6ac26b8ee9d72ac334dfca18666411b032e0cc58be7",
    "c118015795ae42fed0a47d96b2cba5d2a2ac77ed782a5b885cfc616935af23ae",
    "2be84ba36aecf3393f496c14479d2f4004480a3b099be529f389a239a91e62a6",
    "7be21d2a560a4e9aa83fb183458426546e2d2914a0cd2b996ce79e7b3803dc4f",
    "a5b2a7045f02780334f6b3d863b69936bb59cd77b43b7087",
);

#[test]
fn a_small_segment_byte_for_byte() {
    let codec = Codec::new(CodingParams::new(3, 1).unwrap()).unwrap();
    let segment = Segment {
        id: SegmentId([0x44; 32]),
        bytes: segment_bytes(100),
    };
    let enc = codec.encode(&users().audit, &segment);
    pin!(SMALL_MANIFEST, enc.manifest.to_bytes());
    pin!(SMALL_PIECE_0, &enc.pieces[0]);
    let committed = pin::unhex(SMALL_PIECE_0);
    let given: Vec<Option<&[u8]>> = vec![
        Some(&committed),
        None,
        Some(&enc.pieces[2]),
        Some(&enc.pieces[3]),
    ];
    assert_eq!(
        codec.decode(&users().audit, &enc.manifest, &given).unwrap(),
        segment_bytes(100)
    );

    let keys = master().table("\0segments");
    let row = RowId(std::array::from_fn(|i| segment.id.0[i]));
    let mut cipher = RowCipher::with_nonce_seed(&keys.row, keys.id, NONCE_SEED);
    pin!(
        SEALED_MANIFEST,
        cipher.seal(row, 1, &enc.manifest.to_bytes())
    );
    let mut reader = RowCipher::new(&keys.row, keys.id);
    let opened = reader.open(row, 1, &pin::unhex(SEALED_MANIFEST)).unwrap();
    assert_eq!(SegmentManifest::from_bytes(&opened).unwrap(), enc.manifest);
}

// A 64-byte zero shard as piece 2 of the fixed segment in generation 5: its bytes are the
// whitening keystream with the 32 sentinels inserted.
const WHITENED_ZEROS: &str = concat!(
    "6cf700cedef4ef157aa9d51649390287d43765b6c091901d67f4cdd6c91b3531",
    "4e527680f99d04007071a8a57027efddc01c2868404e2227da7bb6ea8cb58b10",
    "1d0ca56e796857b97003963792c9d7394d2fe0135f90b5f3d9ffd19549e34a23",
);
// That piece's sentinel positions, in order.
const SENTINEL_POSITIONS: &str = concat!(
    "0,2,4,5,6,9,13,19,20,24,35,42,46,49,51,56,57,59,64,67,70,72,74,",
    "75,78,81,85,88,90,91,94,95",
);
// The order an auditor asks piece 0's 97 sentinels in (the first 16).
const SENTINEL_ORDER_HEAD: &str = "42,72,63,13,84,69,95,54,19,62,83,74,71,30,9,90";

#[test]
fn whitening_sentinels_and_their_order() {
    let audit = users().audit;
    let view = PieceView::new(&audit, segment_id(), 2, 5, 64, sentinel_count(64));
    let piece = view.build(&[0; 64]);
    pin!(WHITENED_ZEROS, &piece);
    let positions: Vec<String> = (0..view.sentinel_count())
        .map(|i| view.sentinel_position(i).to_string())
        .collect();
    pin_str!(SENTINEL_POSITIONS, positions.join(","));
    let all: Vec<u32> = (0..view.sentinel_count() as u32).collect();
    let answer = answer_challenge(&piece, &view.challenge(&all)).unwrap();
    assert!(view.verify(&all, &answer));
    assert_eq!(view.open(&piece).unwrap(), [0; 64]);

    let (_, enc) = encoded();
    let order = audit.sentinel_order(&enc.manifest.pieces[0].hash, enc.manifest.sentinels);
    let head: Vec<String> = order[..16].iter().map(u32::to_string).collect();
    pin_str!(SENTINEL_ORDER_HEAD, head.join(","));
}

// Pieces 1 and 4 rebuilt by repair in generation 1: their hashes.
const REBUILT_HASHES: &str = concat!(
    "e59610f34c32dbd4e4ec7061e2e080e2a73c323f9d432b024f8114ed970bd3fc ",
    "3aeb656092cf1643e645c1677c41cb0bea0c29b3e5d443a2762ba1e40b828e2b",
);

#[test]
fn repaired_pieces() {
    let (codec, enc) = encoded();
    let survivors: Vec<Option<&[u8]>> = enc
        .pieces
        .iter()
        .enumerate()
        .map(|(i, p)| (i != 1 && i != 4).then_some(p.as_slice()))
        .collect();
    let Rebuilt { manifest, pieces } = codec
        .rebuild(&users().audit, &enc.manifest, &survivors, &[1, 4])
        .unwrap();
    let hashes: Vec<String> = [1, 4]
        .iter()
        .map(|&i| hex::encode(manifest.pieces[i].hash.0))
        .collect();
    pin_str!(REBUILT_HASHES, hashes.join(" "));
    assert_eq!(manifest.pieces[1].generation, 1);
    for (i, p) in &pieces {
        assert_eq!(PieceHash::of(p), manifest.pieces[*i].hash);
    }
}

// The chaining values of piece 0's 16 KiB groups (what a provider keeps to prove ranges).
const GROUPS: &str = concat!(
    "0ac9cd1918af8c429b2442f4585ffff209e0b68d95b66f37ca542bafd9f97b4c",
    "4ec0027b9580e61975b1d22ff57cc8fc0c0a6f0ed0be49d076926e6f285f6af6",
);
// Length and BLAKE3 of the Bao slice proving bytes 16,000..17,500 of piece 0 (across groups).
const PROOF_ACROSS_GROUPS: &str = concat!(
    "3656:27df404cd85e3f60466e33ec43fb2fcf33775ca002457d30b46c8762f7c",
    "13bf5",
);
// The Bao slice proving byte 0 of piece 0, in full.
const PROOF_FIRST_BYTE: &str = concat!(
    "09620000000000000ac9cd1918af8c429b2442f4585ffff209e0b68d95b66f37",
    "ca542bafd9f97b4c4ec0027b9580e61975b1d22ff57cc8fc0c0a6f0ed0be49d0",
    "76926e6f285f6af69c952fac0f59972fe2e191479ce623d19473f02034555cbd",
    "7e151c90700350fa517d2a767bf0a935d433cdb532e9c7df8c20dd2c3c3f23d8",
    "82170b3227b5d176b892b85a4e8f0b76736bcb3592f1f0f522c6b8874798e003",
    "063ef1ee1775871da72943d69b43c760b68ef6a620cb9ff63ab76850f640a546",
    "b5ba99afa0609cb265d07808f4542a872f8d7ccdcfde8c52be71b4e0c88ef31b",
    "3de32324f43ddf7c6b851f55ca58f638373cfe80e60199a096421103b432e287",
    "132aab6319a747f7d680d5f3709f5ceff321088b6d311b3c16fb30aa1decaf27",
    "83d1fc2b8117f1691df0d077b5a926785425e758333900f4c77fd7121d0f9915",
    "3fe7c96dfa9af06f16bc58882fb286fdcafdc0eb630ae146138cbb8d4d0a4761",
    "1c401f76f0eb8c6528e58c5bc73725bf121e3f2a2a76b959bbca2c62b01a09e8",
    "6377cb3416603b31ac34ec9641eaca254c694a21623ba8194cbd5c0e738e9c92",
    "aad0f389ec876563f1b68939cadaa96f645122943080d4c37164898a828e0327",
    "4e1c70733009f9a79c6e186948b713c18521d5ab23e3acc8bb44f19bd1691ee8",
    "15bb1ac6ee7a1a5fd5b4e210e280b4db1671ce32e1933be03d12ed85d5bdd27f",
    "7438dfd285df7c907bba56ec6beaeaf8a9e84a5e63e9f3d52c2bebc446f21022",
    "65e374922bc82e15242868672912a2a33d0e0d4e4fa63921892bf74ea7b52ac6",
    "9c7b8c33e4d8d72fd83d8af00b984c6856d225ba820a137661432aff56733aa5",
    "af2cf1bfad04eb2fda837451a02c0cfcd5a3de9b8ef933a385ca5714a68ca76c",
    "ac72c89249c43ef476ddbe24798ddebdba14fa4e1451bde082289850f999134f",
    "b8c98de2487c6092eb2e897b77a618d89767c9c2efb4015bd7219ed94bcd67ce",
    "b504420d7063975d3adb0a795a04488259e8bdfa95f3a31b0cfa041b49679b69",
    "c40c2501d71b7c60c0ebf95eadf0b20af9a9011b9c71e18b1c1122f36b99771b",
    "c6c367e9219f89f75567595dd8201dcb732d46650507c9a32cd576386ff3d25e",
    "5c6330e6d193d934aa37e483a448d0a29d60c9056a5e5c9f31e27eb9fe834f25",
    "26dc955b6d20bccdb47d94edc915206fbfec7f25170e88f47d503d44013feba1",
    "287711929f655ed0153e5095c06bf093863d1962d5a3ceb35691ff795e582a8c",
    "6771b2ef58a6e7548608a3924034cbef053d70dbb5fb54f23ecc125b8a7fc2a9",
    "cd19496e0f6204e36f6504b349f626c5ce5043df5ed11301dba305688ef08ae4",
    "9ccb7f6bc2e139132555ef5a610e51bba44864cce83aa46f059c2856e5a1df36",
    "d63ee854848e2f8fe035d6001a54e78ff2cbc808d1a1a8f4a322fc52842c6049",
    "bdbbc4961ef4f1ed6c8d3b89b29e954546b08582c9bcd1e7a3a7afcafbcbbab2",
    "a8201a4e83f483e0d76fa989c9639e0bb22a858b400c6a03ea8d6441b625cedb",
    "72ebccf2c1d4a016f778ae2cdad2ce3f87970a9dbaa5adc5a64dce7312ed6874",
    "554846d9d1ea05d47df95e1da5d3e828a49963aa3552cd393eb90fcb2a508075",
    "a92014fc74bf693ca726f34702a5231ad5e5d5b8b95ac94292c9517026dd2cbf",
    "b050d47fac8d847b101b78388e178668fd53fd96d9e142fc2e64696eb689846a",
    "9bd3c1ec2e870c45be374ed1b46105b487568d094516069db631d9f98b667bd8",
    "0c4bf858bd6a6e82310565fcf41dbf8eea14b56091c89c341088c19590869e3b",
    "90b99a2920ffbf65e23021c0dbf603ea29759cdb522fd596bf8439d556fe0426",
    "1c0082463cfd20f2e0e550229bd7094f5cf53ac0dc291ce4252e16a0fd01344c",
    "1018723b53767417",
);

#[test]
fn chunk_proofs() {
    let (_, enc) = encoded();
    let piece = &enc.pieces[0];
    let hash = enc.manifest.pieces[0].hash;
    let (groups, whole) = proof::groups(piece);
    assert_eq!(whole, hash);
    pin!(GROUPS, &groups);
    let size = piece.len() as u64;
    let across = proof::prove(Cursor::new(piece), size, &groups, 16_000, 1500).unwrap();
    pin_str!(
        PROOF_ACROSS_GROUPS,
        format!("{}:{}", across.len(), blake3::hash(&across).to_hex())
    );
    let first = proof::prove(Cursor::new(piece), size, &groups, 0, 1).unwrap();
    pin!(PROOF_FIRST_BYTE, &first);
    assert_eq!(
        proof::verify(&hash, 16_000, 1500, &across).unwrap(),
        piece[16_000..17_500]
    );
    let committed = pin::unhex(PROOF_FIRST_BYTE);
    assert_eq!(proof::verify(&hash, 0, 1, &committed).unwrap(), piece[..1]);
}

/// The identity secret of the keystore vectors.
const IDENTITY_SECRET: [u8; 32] = [0x1d; 32];

// The keystore file of `master()` and `IDENTITY_SECRET`: magic ‖ version ‖ master ‖ secret ‖
// BLAKE3 of what precedes. The same bytes are committed as `tests/vectors/keystore`.
const KEYSTORE: &str = concat!(
    "7777742d6b657973746f726501000102030405060708090a0b0c0d0e0f101112",
    "131415161718191a1b1c1d1e1f1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d",
    "1d1d1d1d1d1d1d1d1d1d1d1d1de009ad3d841e5292406748dc0446cd28e777dc",
    "04866b89c7f0d2f7636f070cb5",
);
// The public key (node id) of `IDENTITY_SECRET`.
const IDENTITY_PUBLIC: &str = "e8da63a40ca687c87cfce05cb24a786c7e75cc49c70db5573f026f1c6a86ceaa";

/// The committed keystore file.
const KEYSTORE_FILE: &[u8] = include_bytes!("vectors/keystore");

#[test]
fn keystore_file() {
    let dir = tempfile::tempdir().unwrap();
    let written = dir.path().join("written");
    let keystore = Keystore {
        master: master(),
        identity: SigningKey::from_bytes(&IDENTITY_SECRET),
    };
    keystore.create(&written).unwrap();
    pin!(KEYSTORE, fs::read(&written).unwrap());
    pin!(
        IDENTITY_PUBLIC,
        keystore.identity.verifying_key().as_bytes()
    );

    // The committed file loads to the same secrets (git keeps no 0600 mode: set it).
    assert_eq!(hex::encode(KEYSTORE_FILE), KEYSTORE);
    let committed = dir.path().join("committed");
    fs::write(&committed, KEYSTORE_FILE).unwrap();
    fs::set_permissions(&committed, fs::Permissions::from_mode(0o600)).unwrap();
    let loaded = Keystore::load(&committed).unwrap();
    assert_eq!(loaded.master, master());
    assert_eq!(loaded.identity.to_bytes(), IDENTITY_SECRET);
    pin!(IDENTITY_PUBLIC, loaded.identity.verifying_key().as_bytes());
}
