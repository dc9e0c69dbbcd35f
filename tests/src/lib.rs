//! Whole-system tests: a network of providers, trackers and clients in one process, and
//! tests that spawn the real `wwt` binary.

use std::sync::Arc;

use wwt_client::store::{Storage, StorageConfig};
use wwt_devnet::LocalNet;
use wwt_engine::Table;
use wwt_engine::table::{RowWrite, WriteBatch};
use wwt_net::{Connector, Identity};

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

/// Writes `rows` into `table` as the first versions of rows 0, 1, 2, …
pub fn write_rows(table: &mut Table, rows: &[Vec<u8>]) -> WriteBatch {
    let row_ids = table.keys().row_id.clone();
    table.write(rows.iter().enumerate().map(|(i, r)| RowWrite {
        row: row_ids.row_id(&(i as u64).to_le_bytes()),
        version: 1,
        plaintext: r,
    }))
}

/// `owner`'s storage path through `net`'s trackers as listed now.
pub fn storage(net: &LocalNet, owner: &Identity) -> Storage {
    storage_with(net, owner, net.connector(), StorageConfig::default())
}

/// `owner`'s storage path through `net`'s trackers as listed now, over `connector`.
pub fn storage_with(
    net: &LocalNet,
    owner: &Identity,
    connector: Arc<dyn Connector>,
    config: StorageConfig,
) -> Storage {
    let trackers = net
        .endpoints
        .tracker_list()
        .expect("the network's trackers");
    Storage::new(owner.clone(), &trackers, connector, config).expect("a storage path")
}
