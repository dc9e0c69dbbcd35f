//! Whole-system tests: a network of providers, trackers and clients in one process, and
//! tests that spawn the real `wwt` binary.

/// The seed of a whole-network test: `WWT_TEST_SEED` (hex `0x…` or decimal) when set, to
/// replay a failure, else `default`. Printed, so every run names the seed that replays it.
/// Devnet node keys, placement and audit draws, faults and choices all derive from it.
pub fn seed(default: u64) -> u64 {
    let seed = match std::env::var("WWT_TEST_SEED") {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
                None => text.replace('_', "").parse(),
            };
            parsed.unwrap_or_else(|_| {
                panic!("WWT_TEST_SEED={text} is not a u64 (hex 0x… or decimal)")
            })
        }
        Err(_) => default,
    };
    println!("seed {seed:#x} (replay: WWT_TEST_SEED={seed:#x})");
    seed
}
