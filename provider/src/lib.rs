//! The provider daemon: holds coded pieces on disk, answers reads and audits, and hosts
//! encrypted indexes when indexing is on.
//!
//! Not built yet: see issue 3.
