//! When to reload: on SIGHUP, and when the bytes of the config file or of any file it names
//! (API keys, TLS certificate and key, `jwt.ca_file`, `upstream.ca_file`) change.
//!
//! Change detection reads the files' contents every `POLL_INTERVAL` rather than using inotify:
//! Kubernetes updates ConfigMap and Secret volumes by swapping a `..data` symlink, which a file
//! watch misses after the first swap, and key files usually live in other directories than the
//! config. Reading a few small files every two seconds costs nothing and sees every kind of update.
//! The reads run on the blocking pool: a mount that hangs stalls the reloader, not the requests
//! (with `worker_threads = 1` the runtime has a single thread to lose).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::config::{Config, SecretSource};

const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Runs forever (the caller aborts it at shutdown).
pub async fn watch(app: Arc<App>) {
    let mut hangup = hangup_signal();
    let mut last = fingerprint(&app).await;
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = tick.tick() => false,
            _ = next_hangup(&mut hangup) => true,
        };
        let now = fingerprint(&app).await;
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
            Ok(()) => fingerprint(&app).await,
            Err(_) => now,
        };
    }
}

/// The fingerprint of the files the config in force depends on, read on the blocking pool.
/// `None` only if that read could not run (the runtime is shutting down).
async fn fingerprint(app: &App) -> Option<u64> {
    let files = watched_files(app.source(), &app.config());
    tokio::task::spawn_blocking(move || digest(&files))
        .await
        .ok()
}

/// Every file the config depends on: the config itself and every file it names.
pub fn watched_files(source: Option<&Path>, config: &Config) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = source.map(|p| vec![p.to_path_buf()]).unwrap_or_default();
    for tenant in &config.tenants {
        for account in &tenant.service_accounts {
            if let SecretSource::File(path) = &account.source {
                files.push(path.clone());
            }
        }
        files.extend(tenant.jwt.ca_file.iter().cloned());
        files.extend(tenant.upstream.ca_file.iter().cloned());
    }
    if let Some(tls) = &config.server.tls {
        files.push(tls.cert.clone());
        files.push(tls.key.clone());
    }
    files
}

/// A digest of the files' names and bytes (not a security measure: change detection only).
/// Blocking reads.
pub fn digest(files: &[PathBuf]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for file in files {
        file.hash(&mut hasher);
        std::fs::read(file).ok().hash(&mut hasher);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every named file is watched, the CA files included (the docs promise "any file it names").
    #[test]
    fn watches_every_named_file() {
        let dir = std::env::temp_dir().join(format!("scimgate-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str| {
            let path = dir.join(name);
            std::fs::write(&path, name).unwrap();
            path.display().to_string()
        };
        let (jwt_ca, upstream_ca, key) = (file("jwt-ca"), file("upstream-ca"), file("key"));
        let (cert, tls_key) = (file("tls.crt"), file("tls.key"));
        let config = Config::from_toml(&format!(
            r#"
            [server]
            tls_cert_file = "{cert}"
            tls_key_file = "{tls_key}"
            [upstream]
            url = "http://127.0.0.1:1/scim"
            ca_file = "{upstream_ca}"
            [jwt]
            jwks_url = "http://127.0.0.1:1/keys"
            ca_file = "{jwt_ca}"
            [[rules]]
            name = "r"
            claim = "groups"
            value = "x"
            service_account = "sa"
            [service_accounts.sa]
            header = "x-api-key"
            api_key_file = "{key}"
            "#
        ))
        .unwrap();
        let files = watched_files(None, &config);
        for named in [&jwt_ca, &upstream_ca, &key, &cert, &tls_key] {
            assert!(
                files.iter().any(|f| f.display().to_string() == *named),
                "{named} not watched: {files:?}"
            );
        }
        let before = digest(&files);
        std::fs::write(&upstream_ca, "rotated").unwrap();
        assert_ne!(digest(&files), before);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
