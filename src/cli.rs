//! Command-line interface (design.md §3).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Authenticating reverse proxy for SCIM 2.0: bearer JWT in, service-account API key out.
#[derive(Debug, Parser)]
#[command(name = "scimgate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve {
        /// TOML config file; may be omitted when SCIMGATE_* variables configure everything.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a config: print a summary without secrets, or every problem (exit 1).
    Check {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Also fail when an API key file or variable cannot be read here.
        #[arg(long)]
        strict: bool,
    },
    /// Start a loopback-only demo: token issuer, echo upstream and gateway; prints curl lines.
    Demo,
}
