//! `runwire schema`: schema tools.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::Subcommand;
use runwire_schema::generate;

/// Schema subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum SchemaCommand {
    /// Write the JSON Schemas of the current protocol types (the same as `cargo xtask schema`).
    Gen {
        /// Output directory; the version folder (e.g. `v1/`) is created inside it.
        #[arg(long, default_value = "schema")]
        out: PathBuf,
    },
}

pub(crate) fn run(cmd: SchemaCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SchemaCommand::Gen { out } => {
            let dir = out.join(runwire_protocol::SCHEMA_MAJOR);
            let written = generate::write_dir(&dir, runwire_protocol::SCHEMA_MAJOR)
                .with_context(|| format!("writing schemas to {}", dir.display()))?;
            println!("wrote {} files to {}", written.len(), dir.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
