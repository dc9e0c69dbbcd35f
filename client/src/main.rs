//! The `wwt` command-line tool.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use wwt_client::{bench, demo, home};

/// wwt, the World Wide Table: an encrypted, decentralized table store.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Folder of the keystore and local state.
    #[arg(long, env = "WWT_HOME", global = true)]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a keystore (master key and identity) in the home folder.
    Init,
    /// Show the identity of the keystore in the home folder.
    Whoami,
    /// Measure the storage engine against raw AES-SIV on this machine.
    Bench(bench::Options),
    /// Write sample rows through the storage engine onto local provider folders, lose two
    /// providers, and read every row back.
    Demo(demo::Options),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let home = cli.home.unwrap_or_else(home::default_home);
    match cli.command {
        Command::Init => {
            let (path, keystore) = home::init(&home)?;
            println!("created keystore {}", path.display());
            println!(
                "identity {}",
                wwt_engine::hex(keystore.identity.verifying_key().as_bytes())
            );
            println!("back this file up: it is the only way to read your tables");
        }
        Command::Whoami => {
            let keystore = home::load(&home)?;
            println!(
                "{}",
                wwt_engine::hex(keystore.identity.verifying_key().as_bytes())
            );
        }
        Command::Bench(options) => bench::run(&options)?,
        Command::Demo(options) => demo::run(&options)?,
    }
    Ok(())
}
