//! Whole-system tests: a network of providers, trackers and clients in one process, and
//! tests that spawn the real `wwt` binary.
