//! The tracker daemon: places pieces on providers, audits them and repairs what is lost.
//!
//! Not built yet: see issues 3 and 6.
