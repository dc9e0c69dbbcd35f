//! The wwt home folder: `$WWT_HOME`, or `~/.wwt`.

use std::path::{Path, PathBuf};

use wwt_engine::{Keystore, Result};

/// The home folder named by `WWT_HOME`, else `~/.wwt`, else `./.wwt`.
pub fn default_home() -> PathBuf {
    if let Some(home) = std::env::var_os("WWT_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".wwt"))
        .unwrap_or_else(|| PathBuf::from(".wwt"))
}

/// Creates a new keystore in `home` and returns its path; refuses to replace one.
pub fn init(home: &Path) -> Result<(PathBuf, Keystore)> {
    let path = Keystore::path_in(home);
    let keystore = Keystore::generate();
    keystore.create(&path)?;
    Ok((path, keystore))
}

/// Loads the keystore of `home`.
pub fn load(home: &Path) -> Result<Keystore> {
    Keystore::load(&Keystore::path_in(home))
}
