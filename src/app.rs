//! Wiring: builds every component from the validated config, runs the listeners, and hands
//! reloads to the [`Reloader`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::admin::{self, Admin};
use crate::auth::discovery::DiscoveryError;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::reload::{ReloadError, Reloader};
use crate::runtime::{Runtime, jwks_urls};
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
    #[error(transparent)]
    Build(#[from] crate::runtime::BuildError),
}

/// A built gateway, ready to bind and run.
pub struct App {
    proxy: Arc<Proxy>,
    metrics: Arc<Metrics>,
    cert: Option<Arc<ServerCert>>,
    reloader: Arc<Reloader>,
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
        let runtime = Runtime::build(config, jwks_urls, None, &metrics)?;
        metrics.config_loaded();
        let proxy = Arc::new(Proxy::new(runtime, Arc::clone(&metrics)));
        let reloader = Reloader::new(
            Arc::clone(&proxy),
            Arc::clone(&metrics),
            cert.clone(),
            source,
        );
        Ok(Self {
            proxy,
            metrics,
            cert,
            reloader: Arc::new(reloader),
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
        self.reloader.ensure_refreshers();
        let admin = Arc::new(Admin {
            proxy: Arc::clone(&self.proxy),
            metrics: Arc::clone(&self.metrics),
        });
        let admin_task = tokio::spawn(admin::serve(listeners.admin, admin, shutdown.clone()));
        let reload_task = tokio::spawn(Arc::clone(&self.reloader).watch());
        let tls = self
            .cert
            .as_ref()
            .map(|c| TlsAcceptor::from(c.server_config()));
        let config = self.proxy.runtime().config.server.clone();
        server::serve(
            listeners.proxy,
            tls,
            Arc::clone(&self.proxy),
            Arc::clone(&self.metrics),
            &config,
            shutdown,
        )
        .await;
        reload_task.abort();
        admin_task.abort();
        self.reloader.stop_refreshers();
    }

    /// Re-reads the config and swaps it in, or changes nothing (see [`Reloader::reload`]).
    pub async fn reload(&self) -> Result<(), ReloadError> {
        self.reloader.reload().await
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.proxy.runtime().config)
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
