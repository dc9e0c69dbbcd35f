//! Encrypted indexes that commute with encryption: client-side encoders (keyed tokens,
//! order-preserving encryption) and the stores an index provider hosts (tantivy, sled).
//!
//! Not built yet: see issue 4.
