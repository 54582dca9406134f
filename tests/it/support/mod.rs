//! Black-box test harness (threats.md §6): the real binary on loopback ports, a fake JWKS
//! endpoint, a recording upstream, and a token mint, shared by every module of the one
//! integration-test binary.

pub mod attacker;
pub mod check;
pub mod client;
pub mod config;
pub mod gateway;
pub mod h2client;
pub mod heavy;
pub mod hostile;
pub mod jwks;
pub mod mint;
pub mod observe;
pub mod pieces;
pub mod procfs;
pub mod squat;
pub mod upstream;
pub mod verdict;
pub mod wire;

pub use attacker::Attacker;
pub use check::{CheckOutput, run_check, run_check_file};
pub use client::{Response, send};
pub use config::{GatewayConfig, TempDir, toml_str};
pub use gateway::Gateway;
pub use h2client::H2;
pub use jwks::{JwksMode, JwksServer};
pub use mint::{SigningKey, Token, ec_key, rsa_key};
pub use upstream::Upstream;
pub use verdict::{Expect, Table, bearer};

/// Taken by the tests whose assertions are about time under load (deadlines of a thousand
/// connections, a rate held over seconds), so that two of them never share the two cores.
pub async fn timing_sensitive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// The usual fixture: a JWKS server publishing the per-process RSA and EC keys, a recording
/// upstream, and the default gateway config pointing at both.
pub async fn fixture() -> (JwksServer, Upstream, GatewayConfig) {
    let jwks = JwksServer::start(mint::jwks(&[rsa_key(), ec_key()])).await;
    let upstream = Upstream::start().await;
    let cfg = GatewayConfig::new(&upstream.url(), &jwks.url());
    (jwks, upstream, cfg)
}
