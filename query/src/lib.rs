//! SQL over the encrypted table: parsing with sqlparser and planning into plain data
//! (what is pushed to the index provider, what runs on the client).
//!
//! Not built yet: see issue 5.
