//! Wiring: builds every component from the validated config, runs the listeners, applies reloads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::admin::{self, Admin};
use crate::auth::discovery::{self, DiscoveryError};
use crate::auth::jwks::Jwks;
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::reload;
use crate::runtime::Runtime;
use crate::server;
use crate::tls::{ServerCert, TlsError};

/// Why the gateway could not start. Reaches `main` only.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
}

/// Why a reload was refused; the previous config stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error("the new JWKS could not be loaded: {0}")]
    Jwks(#[from] crate::auth::jwks::FetchError),
    #[error("reading the files failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A built gateway, ready to bind and run.
pub struct App {
    proxy: Arc<Proxy>,
    metrics: Arc<Metrics>,
    cert: Option<Arc<ServerCert>>,
    /// Where the config came from, for reloads (`None`: environment only).
    source: Option<PathBuf>,
    /// The JWKS caches being refreshed in the background, each with its task.
    refreshers: Mutex<Vec<(Arc<Jwks>, JoinHandle<()>)>>,
    /// Serialises reloads (SIGHUP and file changes may coincide).
    reloading: tokio::sync::Mutex<u64>,
}

/// Bound sockets, so callers learn the real ports before serving (port 0 in tests).
pub struct Listeners {
    pub proxy: TcpListener,
    pub admin: TcpListener,
}

impl App {
    /// Builds generation 1 from `config`; `source` is re-read on reload.
    pub async fn build(config: Config, source: Option<PathBuf>) -> Result<Self, StartError> {
        let metrics = Arc::new(Metrics::new()?);
        let cert = match &config.server.tls {
            Some(files) => Some(ServerCert::load(&files.cert, &files.key)?),
            None => None,
        };
        let jwks_urls = jwks_urls(&config).await?;
        let runtime = Runtime::build(config, jwks_urls, None, &metrics, 1)?;
        metrics.config_loaded(None);
        Ok(Self {
            proxy: Arc::new(Proxy::new(runtime, Arc::clone(&metrics))),
            metrics,
            cert,
            source,
            refreshers: Mutex::new(Vec::new()),
            reloading: tokio::sync::Mutex::new(1),
        })
    }

    /// Binds the proxy and admin addresses from the config.
    pub async fn bind(&self) -> Result<Listeners, StartError> {
        let config = Arc::clone(&self.proxy.runtime().config);
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        Ok(Listeners {
            proxy: bind(config.server.listen).await?,
            admin: bind(config.admin.listen).await?,
        })
    }

    /// Runs until `shutdown` flips to true and in-flight requests have drained.
    pub async fn run(self, listeners: Listeners, shutdown: watch::Receiver<bool>) {
        let app = Arc::new(self);
        app.ensure_refresher();
        let admin = Arc::new(Admin {
            proxy: Arc::clone(&app.proxy),
            metrics: Arc::clone(&app.metrics),
        });
        let admin_task = tokio::spawn(admin::serve(listeners.admin, admin, shutdown.clone()));
        let reload_task = tokio::spawn(reload::watch(Arc::clone(&app)));
        let tls = app
            .cert
            .as_ref()
            .map(|c| TlsAcceptor::from(c.server_config()));
        let config = app.proxy.runtime().config.server.clone();
        server::serve(
            listeners.proxy,
            tls,
            Arc::clone(&app.proxy),
            Arc::clone(&app.metrics),
            &config,
            shutdown,
        )
        .await;
        reload_task.abort();
        admin_task.abort();
        if let Ok(mut running) = app.refreshers.lock() {
            for (_, task) in running.drain(..) {
                task.abort();
            }
        }
    }

    /// The config file this app reloads from, if any.
    pub fn source(&self) -> Option<&std::path::Path> {
        self.source.as_deref()
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.proxy.runtime().config)
    }

    /// Re-reads the config (and with it every key, certificate and CA file), validates it and
    /// swaps it in. On any error nothing changes (not the listener's certificate either) and the
    /// failure is counted. In-flight requests finish on the generation they started with.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let mut generation = self.reloading.lock().await;
        let result = self.try_reload(*generation + 1).await;
        match &result {
            Ok(()) => {
                *generation += 1;
                self.metrics.config_loaded(Some(true));
                tracing::info!(generation = *generation, "configuration reloaded");
            }
            Err(e) => {
                // Series a failed attempt created for tenants or rules not in force go again.
                self.metrics.retain(&self.config().tenants);
                self.metrics.config_loaded(Some(false));
                tracing::error!(error = %e, "configuration reload failed; keeping the running configuration");
            }
        }
        result
    }

    /// Builds everything new first; only when nothing is left that can fail does it install the
    /// certificate and the runtime. File reads run on the blocking pool, so a Secret mount that
    /// hangs holds one blocking thread, never a thread that serves requests.
    async fn try_reload(&self, generation: u64) -> Result<(), ReloadError> {
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
            Runtime::build(config, jwks_urls, Some(&previous), &metrics, generation)
        })
        .await??;
        for tenant in &runtime.tenants {
            if !current
                .tenants
                .iter()
                .any(|old| Arc::ptr_eq(&old.jwks, &tenant.jwks))
            {
                // A new key source must work before it replaces the old one.
                tenant.jwks.refresh().await?;
            }
        }
        // Nothing below can fail.
        if let (Some(cert), Some(pair)) = (&self.cert, key_pair) {
            cert.install(pair);
        }
        self.proxy.swap(runtime);
        self.ensure_refresher();
        self.metrics.retain(&self.config().tenants);
        Ok(())
    }

    /// Keeps exactly one background refresh task per JWKS cache in use, stopping the others.
    fn ensure_refresher(&self) {
        let wanted: Vec<Arc<Jwks>> = self
            .proxy
            .runtime()
            .tenants
            .iter()
            .map(|t| Arc::clone(&t.jwks))
            .collect();
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
}

/// Each tenant's JWKS URL, configured or discovered.
async fn jwks_urls(config: &Config) -> Result<Vec<http::Uri>, DiscoveryError> {
    let mut urls = Vec::with_capacity(config.tenants.len());
    for tenant in &config.tenants {
        urls.push(discovery::jwks_url(&tenant.jwt).await?);
    }
    Ok(urls)
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

impl Listeners {
    pub fn proxy_addr(&self) -> Option<SocketAddr> {
        self.proxy.local_addr().ok()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.local_addr().ok()
    }
}
