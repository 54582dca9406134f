//! Reloading: [`Reloader`] re-reads the config and swaps in a new generation, or changes
//! nothing; [`Reloader::watch`] triggers it on SIGHUP and when the bytes of the config file or
//! of any file it names (API keys, TLS certificate and key, `jwt.ca_file`, `upstream.ca_file`,
//! the issuer's signing keys) change.
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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::auth::discovery::DiscoveryError;
use crate::auth::jwks::Jwks;
use crate::config::{Config, ConfigError, SecretSource};
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::runtime::{Runtime, jwks_urls};
use crate::tls::{ServerCert, TlsError};

const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Why a reload was refused; the previous config stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Build(#[from] crate::runtime::BuildError),
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error("the new JWKS could not be loaded: {0}")]
    Jwks(#[from] crate::auth::jwks::FetchError),
    #[error("reading the files failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Applies config reloads to the running gateway, one at a time.
pub(crate) struct Reloader {
    proxy: Arc<Proxy>,
    metrics: Arc<Metrics>,
    cert: Option<Arc<ServerCert>>,
    /// Where the config came from (`None`: environment only).
    source: Option<PathBuf>,
    /// The JWKS caches being refreshed in the background, each with its task.
    refreshers: Mutex<Vec<(Arc<Jwks>, JoinHandle<()>)>>,
    /// The generation in force; the lock serialises reloads (SIGHUP and file changes may
    /// coincide).
    reloading: tokio::sync::Mutex<u64>,
}

impl Reloader {
    /// A reloader for the gateway serving generation 1 through `proxy`.
    pub(crate) fn new(
        proxy: Arc<Proxy>,
        metrics: Arc<Metrics>,
        cert: Option<Arc<ServerCert>>,
        source: Option<PathBuf>,
    ) -> Self {
        Self {
            proxy,
            metrics,
            cert,
            source,
            refreshers: Mutex::new(Vec::new()),
            reloading: tokio::sync::Mutex::new(1),
        }
    }

    /// Re-reads the config (and with it every key, certificate and CA file), validates it and
    /// swaps it in. On any error nothing changes (not the listener's certificate either) and the
    /// failure is counted. In-flight requests finish on the generation they started with.
    pub(crate) async fn reload(&self) -> Result<(), ReloadError> {
        let mut generation = self.reloading.lock().await;
        let result = self.try_reload().await;
        match &result {
            Ok(()) => {
                *generation += 1;
                self.metrics.config_reloaded();
                tracing::info!(generation = *generation, "configuration reloaded");
            }
            Err(e) => {
                // Series a failed attempt created for tenants or rules not in force go again.
                self.metrics.retain(&self.proxy.runtime().config.tenants);
                self.metrics.config_reload_failed();
                tracing::error!(error = %e, "configuration reload failed; keeping the running configuration");
            }
        }
        result
    }

    /// Builds everything new first; only when nothing is left that can fail does it install the
    /// certificate and the runtime. File reads run on the blocking pool, so a Secret mount that
    /// hangs holds one blocking thread, never a thread that serves requests.
    async fn try_reload(&self) -> Result<(), ReloadError> {
        let source = self.source.clone();
        let serves_tls = self.cert.is_some();
        let (config, key_pair) = tokio::task::spawn_blocking(move || {
            let config = Config::load(source.as_deref())?;
            let key_pair = match (&config.server.tls, serves_tls) {
                (Some(files), true) => Some(ServerCert::read(&files.cert, &files.key)?),
                _ => None,
            };
            Ok::<_, ReloadError>((config, key_pair))
        })
        .await??;
        let current = self.proxy.runtime();
        warn_about_restart_only_changes(&current.config, &config);
        let jwks_urls = jwks_urls(&config).await?;
        let (previous, metrics) = (Arc::clone(&current), Arc::clone(&self.metrics));
        let runtime = tokio::task::spawn_blocking(move || {
            Runtime::build(config, jwks_urls, Some(&previous), &metrics)
        })
        .await??;
        let in_force = current.fetched_key_sets();
        for tenant in &runtime.tenants {
            for jwks in tenant.jwks.iter().chain(&tenant.extra_jwks) {
                if !in_force.iter().any(|old| Arc::ptr_eq(old, jwks)) {
                    // A new key source must work before it replaces the old one.
                    jwks.refresh().await?;
                }
            }
        }
        // Nothing below can fail.
        if let (Some(cert), Some(pair)) = (&self.cert, key_pair) {
            cert.install(pair);
        }
        self.proxy.swap(runtime);
        self.ensure_refreshers();
        self.metrics.retain(&self.proxy.runtime().config.tenants);
        Ok(())
    }

    /// Keeps exactly one background refresh task per JWKS cache in use, stopping the others.
    pub(crate) fn ensure_refreshers(&self) {
        let wanted: Vec<Arc<Jwks>> = self.proxy.runtime().fetched_key_sets();
        let Ok(mut running) = self.refreshers.lock() else {
            return;
        };
        running.retain(|(jwks, task)| {
            let keep = wanted.iter().any(|w| Arc::ptr_eq(w, jwks));
            if !keep {
                task.abort();
                jwks.retire();
            }
            keep
        });
        for jwks in wanted {
            if !running.iter().any(|(r, _)| Arc::ptr_eq(r, &jwks)) {
                jwks.go_live();
                let task = tokio::spawn(Arc::clone(&jwks).run());
                running.push((jwks, task));
            }
        }
    }

    /// Stops every background JWKS refresh (at shutdown).
    pub(crate) fn stop_refreshers(&self) {
        if let Ok(mut running) = self.refreshers.lock() {
            for (_, task) in running.drain(..) {
                task.abort();
            }
        }
    }

    /// Reloads on SIGHUP and on file changes. Runs until the caller aborts it (at shutdown).
    pub(crate) async fn watch(self: Arc<Self>) {
        let mut hangup = hangup_signal();
        let mut last = self.fingerprint().await;
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                _ = tick.tick() => false,
                _ = next_hangup(&mut hangup) => true,
            };
            let now = self.fingerprint().await;
            if !forced && now == last {
                continue;
            }
            tracing::info!(
                trigger = if forced { "SIGHUP" } else { "file change" },
                "reloading configuration"
            );
            // After a failure remember the bytes seen, so a broken file is reported once rather
            // than every tick; fixing it changes them again.
            last = match self.reload().await {
                Ok(()) => self.fingerprint().await,
                Err(_) => now,
            };
        }
    }

    /// The fingerprint of the files the config in force depends on, read on the blocking
    /// pool. `None` only if that read could not run (the runtime is shutting down).
    async fn fingerprint(&self) -> Option<u64> {
        let files = watched_files(self.source.as_deref(), &self.proxy.runtime().config);
        tokio::task::spawn_blocking(move || digest(&files))
            .await
            .ok()
    }
}

/// Every file the config depends on: the config itself and every file it names.
pub(crate) fn watched_files(source: Option<&Path>, config: &Config) -> Vec<PathBuf> {
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
    if let Some(issuer) = &config.issuer {
        files.extend(issuer.signing_keys.iter().map(|k| k.path.clone()));
    }
    files
}

/// A digest of the files' names and bytes (not a security measure: change detection only).
/// Blocking reads.
pub(crate) fn digest(files: &[PathBuf]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for file in files {
        file.hash(&mut hasher);
        std::fs::read(file).ok().hash(&mut hasher);
    }
    hasher.finish()
}

fn warn_about_restart_only_changes(old: &Config, new: &Config) {
    let changes = [
        ("server.listen", old.server.listen != new.server.listen),
        ("admin.listen", old.admin.listen != new.admin.listen),
        (
            "server.tls_cert_file",
            old.server.tls.is_some() != new.server.tls.is_some(),
        ),
        (
            "log",
            old.log.level != new.log.level || old.log.format != new.log.format,
        ),
        ("server timeouts and limits", {
            let (a, b) = (&old.server, &new.server);
            a.header_read_timeout != b.header_read_timeout
                || a.shutdown_grace != b.shutdown_grace
                || a.max_connections != b.max_connections
        }),
    ];
    for (key, changed) in changes {
        if changed {
            tracing::warn!(key, "changed setting takes effect only after a restart");
        }
    }
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
