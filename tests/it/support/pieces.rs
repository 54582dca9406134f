//! Raw HTTP/1 exchanges shaped the way a request smuggler or a slow client shapes them: bytes
//! written in pieces of a chosen size, and the same over TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use super::wire::{Exchange, read_until_closed};

/// Writes `request` on a fresh connection in pieces of `piece` bytes (each its own segment:
/// `TCP_NODELAY`, and a yield between writes), then reads responses until the server closes
/// the connection or `timeout` passes.
pub async fn exchange_in_pieces(
    addr: SocketAddr,
    request: &[u8],
    piece: usize,
    timeout: Duration,
) -> std::io::Result<Exchange> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    exchange_on(stream, request, piece, timeout).await
}

/// `exchange_in_pieces` over TLS, trusting only `trusted`, offering `alpn`.
pub async fn tls_exchange(
    addr: SocketAddr,
    trusted: &CertificateDer<'static>,
    request: &[u8],
    timeout: Duration,
) -> std::io::Result<Exchange> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tls_connect(tcp, trusted, &[b"http/1.1"]).await?;
    exchange_on(tls, request, request.len().max(1), timeout).await
}

/// A TLS client connection trusting only `trusted`, offering the ALPN protocols `alpn`.
pub async fn tls_connect<S>(
    tcp: S,
    trusted: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(trusted.clone())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name =
        ServerName::try_from("localhost").map_err(|e| std::io::Error::other(e.to_string()))?;
    connector.connect(name, tcp).await
}

async fn exchange_on<S>(
    stream: S,
    request: &[u8],
    piece: usize,
    timeout: Duration,
) -> std::io::Result<Exchange>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, mut write) = tokio::io::split(stream);
    let request = request.to_vec();
    let writer = tokio::spawn(async move {
        for chunk in request.chunks(piece.max(1)) {
            if write.write_all(chunk).await.is_err() || write.flush().await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
        // Keep the write side open: a half-close would let the server drop pending work.
        std::future::pending::<()>().await;
    });
    let exchange = read_until_closed(&mut BufReader::new(read), timeout).await;
    writer.abort();
    Ok(exchange)
}

/// A self-signed certificate for `localhost` and 127.0.0.1: (certificate PEM, key PEM, DER).
pub fn self_signed() -> (String, String, CertificateDer<'static>) {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names).expect("generate certificate");
    let der = certified.cert.der().clone();
    (
        certified.cert.pem(),
        certified.signing_key.serialize_pem(),
        der,
    )
}
