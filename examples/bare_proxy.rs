//! The benchmark's framework floor: `cargo run --release --example bare_proxy -- PORT UPSTREAM`.
//!
//! The least an HTTP/1.1 proxy on scimgate's stack (tokio current-thread runtime, hyper's server,
//! a keep-alive list of hyper client connections) does per request: no authentication, no
//! header hygiene, no timeouts, no metrics. `bench/run.sh` measures it next to nginx and scimgate,
//! so the gap between this row and scimgate's is what scimgate's own pipeline costs.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

type Sender = http1::SendRequest<Incoming>;
type Body = BoxBody<Bytes, hyper::Error>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, port, upstream] = args.as_slice() else {
        return Err("usage: bare_proxy PORT UPSTREAM_HOST:PORT".into());
    };
    let port: u16 = port.parse()?;
    let upstream = upstream.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let idle: Arc<Mutex<Vec<Sender>>> = Arc::default();
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let (idle, upstream) = (Arc::clone(&idle), upstream.clone());
            let service = service_fn(move |req: Request<Incoming>| {
                let (idle, upstream) = (Arc::clone(&idle), upstream.clone());
                async move {
                    let response = forward(&idle, &upstream, req).await.unwrap_or_else(|_| {
                        let mut r = Response::new(Empty::new().map_err(|n| match n {}).boxed());
                        *r.status_mut() = StatusCode::BAD_GATEWAY;
                        r
                    });
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

async fn forward(
    idle: &Mutex<Vec<Sender>>,
    upstream: &str,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Box<dyn std::error::Error + Send + Sync>> {
    let pooled = idle.lock().map_err(|_| "pool lock")?.pop();
    let mut sender = match pooled {
        Some(sender) => sender,
        None => {
            let stream = TcpStream::connect(upstream).await?;
            stream.set_nodelay(true)?;
            let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            sender
        }
    };
    let origin = req.uri().path_and_query().cloned().ok_or("no path")?;
    *req.uri_mut() = Uri::from(origin);
    sender.ready().await?;
    let response = sender.send_request(req).await?;
    // Back in the list at once: the next user's `ready()` waits until this response has ended.
    idle.lock().map_err(|_| "pool lock")?.push(sender);
    Ok(response.map(BodyExt::boxed))
}
