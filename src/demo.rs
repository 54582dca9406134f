//! `scimgate demo`: a demo issuer, an echo upstream and the gateway, all on 127.0.0.1.
//!
//! Everything is real: the gateway loads a config file written to a temp directory, fetches the
//! issuer's JWKS over HTTP and forwards to the upstream with a generated demo API key.

pub mod issuer;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::{App, Listeners};
use crate::config::Config;
use issuer::Issuer;

const DEMO_GROUP: &str = "scim-provisioners";

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo signing key: {0}")]
    Key(#[from] issuer::IssuerError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Start(#[from] crate::app::StartError),
}

/// Runs the demo until Ctrl-C or SIGTERM.
pub async fn run() -> Result<(), DemoError> {
    let issuer = Arc::new(Issuer::generate("demo-key-1")?);
    let issuer_listener = TcpListener::bind("127.0.0.1:0").await?;
    let issuer_addr = issuer_listener.local_addr()?;
    let upstream_listener = TcpListener::bind("127.0.0.1:0").await?;
    let upstream_addr = upstream_listener.local_addr()?;
    let listeners = Listeners {
        proxy: bind_or_any(8080).await?,
        admin: bind_or_any(9090).await?,
    };
    let (proxy_addr, admin_addr) = (listeners.proxy.local_addr()?, listeners.admin.local_addr()?);

    let api_key = format!("demo-api-key-{}", random_hex());
    let dir = std::env::temp_dir().join(format!("scimgate-demo-{}", std::process::id()));
    let written = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| DemoError::Write { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(written(&dir))?;
    let key_file = dir.join("provisioner.key");
    std::fs::write(&key_file, &api_key).map_err(written(&key_file))?;
    let config_file = dir.join("scimgate.toml");
    std::fs::write(
        &config_file,
        demo_config(
            proxy_addr,
            admin_addr,
            issuer_addr,
            upstream_addr,
            &key_file,
        ),
    )
    .map_err(written(&config_file))?;
    let config = Config::load(Some(&config_file))?;
    let _log = crate::telemetry::init(&config.log);

    let issuer_url = format!("http://{issuer_addr}");
    tokio::spawn(serve_fn(issuer_listener, {
        let issuer = Arc::clone(&issuer);
        move |req| issuer_route(&issuer, &issuer_url, &req)
    }));
    tokio::spawn(serve_fn(upstream_listener, |req| echo(&req)));

    let app = App::build(config, Some(config_file.clone())).await?;
    print_instructions(
        issuer_addr,
        upstream_addr,
        proxy_addr,
        admin_addr,
        &config_file,
        &api_key,
    );
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        crate::signal::terminated().await;
        let _ = tx.send(true);
    });
    app.run(listeners, rx).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn bind_or_any(port: u16) -> std::io::Result<TcpListener> {
    match TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => Ok(l),
        Err(_) => TcpListener::bind("127.0.0.1:0").await,
    }
}

fn demo_config(
    proxy: SocketAddr,
    admin: SocketAddr,
    issuer: SocketAddr,
    upstream: SocketAddr,
    key: &std::path::Path,
) -> String {
    format!(
        r#"# Written by `scimgate demo`; deleted when the demo stops.
[server]
listen = "{proxy}"

[admin]
listen = "{admin}"

[log]
format = "text"

[upstream]
url = "http://{upstream}/scim/v2"

[jwt]
jwks_url = "http://{issuer}/jwks"
issuer = "http://{issuer}"
audience = ["scimgate"]
algorithms = ["ES256"]

[[rules]]
name = "demo-provisioner"
claim = "groups"
value = "{DEMO_GROUP}"
service_account = "provisioner"

[service_accounts.provisioner]
header = "authorization"
scheme = "Bearer"
api_key_file = "{}"
"#,
        key.display()
    )
}

fn print_instructions(
    issuer: SocketAddr,
    upstream: SocketAddr,
    proxy: SocketAddr,
    admin: SocketAddr,
    config: &std::path::Path,
    api_key: &str,
) {
    let text = format!(
        "\
scimgate DEMO -- everything runs on 127.0.0.1 only; stop it with Ctrl-C.
  demo issuer    http://{issuer}   (JWKS at /jwks, tokens at /token)
  demo upstream  http://{upstream}   (a fake SCIM backend that echoes the credential it receives)
  gateway        http://{proxy}   (admin: http://{admin}/readyz, /metrics)
  config         {}
  demo API key   {api_key}   (the service account's key; callers never see it)

1. Get a token from the demo issuer (ES256, 5 minutes, groups=[\"{DEMO_GROUP}\"]):
   TOKEN=$(curl -s http://{issuer}/token)

2. Call /Users through scimgate: 200, and the upstream saw the API key, not your JWT:
   curl -s -H \"Authorization: Bearer $TOKEN\" http://{proxy}/Users

3. Without a token: 401 with a SCIM error body and a WWW-Authenticate challenge:
   curl -si http://{proxy}/Users

4. A valid token without the required group: 403 insufficient_scope:
   curl -si -H \"Authorization: Bearer $(curl -s 'http://{issuer}/token?groups=readers')\" http://{proxy}/Users

Access log lines follow.
",
        config.display()
    );
    // The demo's whole point is this text on the terminal.
    #[allow(clippy::print_stdout)]
    {
        print!("{text}");
    }
}

fn issuer_route(
    issuer: &Issuer,
    issuer_url: &str,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/jwks" => respond(StatusCode::OK, "application/json", issuer.jwks()),
        "/token" => {
            let group = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("groups=")))
                .unwrap_or(DEMO_GROUP);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let claims = json!({
                "iss": issuer_url, "aud": "scimgate", "sub": "demo-idp-connector",
                "groups": [group], "iat": now, "exp": now + 300, "jti": random_hex(),
            });
            match issuer.mint(&claims) {
                Ok(token) => respond(StatusCode::OK, "text/plain", token),
                Err(e) => respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    e.to_string(),
                ),
            }
        }
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found".into()),
    }
}

/// The fake SCIM backend: an empty ListResponse that also says what credential arrived.
fn echo(req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("(none)")
    };
    let body = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": 0,
        "Resources": [],
        "demo_upstream_saw": {
            "method": req.method().as_str(),
            "path": req.uri().path(),
            "authorization": header("authorization"),
            "x-forwarded-for": header("x-forwarded-for"),
            "x-request-id": header("x-request-id"),
        }
    });
    respond(
        StatusCode::OK,
        crate::scim::CONTENT_TYPE,
        format!("{body:#}\n"),
    )
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

async fn serve_fn<F>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    while let Ok((stream, _)) = listener.accept().await {
        let handler = Arc::clone(&handler);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let handler = Arc::clone(&handler);
                async move { Ok::<_, Infallible>(handler(req)) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    crate::text::hex(&bytes)
}
