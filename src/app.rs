//! Wiring: builds every component from the validated config and runs the listeners.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::admin::{self, Admin};
use crate::auth::jwks::Jwks;
use crate::auth::verify::Verifier;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::server;
use crate::tls::{self, TlsError};
use crate::upstream::Upstream;

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
}

/// A built gateway, ready to bind and run.
pub struct App {
    config: Arc<Config>,
    proxy: Arc<Proxy>,
    jwks: Arc<Jwks>,
    metrics: Arc<Metrics>,
    tls: Option<TlsAcceptor>,
}

/// Bound sockets, so callers learn the real ports before serving (port 0 in tests).
pub struct Listeners {
    pub proxy: TcpListener,
    pub admin: TcpListener,
}

impl App {
    pub fn build(config: Config) -> Result<Self, StartError> {
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::new()?);
        let jwks = Arc::new(Jwks::new(&config.jwt, Arc::clone(&metrics))?);
        let verifier = Verifier::new(&config.jwt, Arc::clone(&jwks));
        let upstream = Upstream::new(&config.upstream)?;
        let tls = match &config.server.tls {
            Some(files) => Some(TlsAcceptor::from(tls::server_config(
                &files.cert,
                &files.key,
            )?)),
            None => None,
        };
        let proxy = Arc::new(Proxy::new(
            Arc::clone(&config),
            verifier,
            upstream,
            Arc::clone(&metrics),
        ));
        Ok(Self {
            config,
            proxy,
            jwks,
            metrics,
            tls,
        })
    }

    /// Binds the proxy and admin addresses from the config.
    pub async fn bind(&self) -> Result<Listeners, StartError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        Ok(Listeners {
            proxy: bind(self.config.server.listen).await?,
            admin: bind(self.config.admin.listen).await?,
        })
    }

    /// Runs until `shutdown` flips to true and in-flight requests have drained.
    pub async fn run(self, listeners: Listeners, shutdown: watch::Receiver<bool>) {
        let refresher = tokio::spawn(Arc::clone(&self.jwks).run());
        let admin = Arc::new(Admin {
            jwks: Arc::clone(&self.jwks),
            metrics: Arc::clone(&self.metrics),
        });
        let admin_task = tokio::spawn(admin::serve(listeners.admin, admin, shutdown.clone()));
        server::serve(
            listeners.proxy,
            self.tls,
            self.proxy,
            &self.config.server,
            shutdown,
        )
        .await;
        refresher.abort();
        admin_task.abort();
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
