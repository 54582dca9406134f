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
    /// Show the decision trace for one token and one request: every check, the rule, the
    /// service account. Exit 0 when the request would be allowed, 1 when denied, 2 when the
    /// question cannot be answered.
    Explain {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print the trace as JSON.
        #[arg(long)]
        json: bool,
        /// The tenant whose issuer and rules apply (default: the one --path routes to, or the
        /// first).
        #[arg(long)]
        tenant: Option<String>,
        /// The request's method (any case).
        #[arg(long, default_value = "GET")]
        method: String,
        /// The request's path as sent to scimgate, tenant prefix included (default: /Users
        /// under the tenant's prefix).
        #[arg(long)]
        path: Option<String>,
        /// The token, or "-" (or nothing) to read it from standard input.
        token: Option<String>,
    },
    /// scimgate's own issuer (`[issuer]`).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Start a loopback-only demo: token issuer, echo upstream and gateway; prints curl lines.
    Demo,
}

/// `scimgate token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print one signed access token for a configured `[[issuer.clients]]` entry, for clients
    /// that can only store a static value (Okta's Bearer field). Only the token goes to stdout.
    Mint {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The client's `client_id`.
        #[arg(long)]
        client: String,
        /// How long the token lives, e.g. "90d" (at most issuer.max_minted_lifetime).
        #[arg(long, default_value = "90d")]
        ttl: String,
    },
}
