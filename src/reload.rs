//! When to reload: on SIGHUP, and when the bytes of the config file or of any file it names
//! (API keys, TLS certificate and key) change.
//!
//! Change detection reads the files' contents every `POLL_INTERVAL` rather than using inotify:
//! Kubernetes updates ConfigMap and Secret volumes by swapping a `..data` symlink, which a file
//! watch misses after the first swap, and key files usually live in other directories than the
//! config. Reading a few small files every two seconds costs nothing and sees every kind of update.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::config::{Config, SecretSource};

const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Runs forever (the caller aborts it at shutdown).
pub async fn watch(app: Arc<App>) {
    let mut hangup = hangup_signal();
    let mut last = fingerprint(app.source(), &app.config());
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = tick.tick() => false,
            _ = next_hangup(&mut hangup) => true,
        };
        let now = fingerprint(app.source(), &app.config());
        if !forced && now == last {
            continue;
        }
        tracing::info!(
            trigger = if forced { "SIGHUP" } else { "file change" },
            "reloading configuration"
        );
        // After a failure remember the bytes seen, so a broken file is reported once rather
        // than every tick; fixing it changes them again.
        last = match app.reload().await {
            Ok(()) => fingerprint(app.source(), &app.config()),
            Err(_) => now,
        };
    }
}

/// A digest of every file the config depends on (not a security measure: change detection only).
pub fn fingerprint(source: Option<&std::path::Path>, config: &Config) -> u64 {
    let mut files: Vec<PathBuf> = source.map(|p| vec![p.to_path_buf()]).unwrap_or_default();
    for account in config.tenants.iter().flat_map(|t| &t.service_accounts) {
        if let SecretSource::File(path) = &account.source {
            files.push(path.clone());
        }
    }
    if let Some(tls) = &config.server.tls {
        files.push(tls.cert.clone());
        files.push(tls.key.clone());
    }
    let mut hasher = DefaultHasher::new();
    for file in files {
        file.hash(&mut hasher);
        std::fs::read(&file).ok().hash(&mut hasher);
    }
    hasher.finish()
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {}

#[cfg(unix)]
async fn next_hangup(signal: &mut Hangup) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangup) {
    std::future::pending().await
}
