//! Talking to the gateway: one request per fresh HTTP/1.1 connection with hyper's client, and
//! the response with assertions for the SCIM error contract.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use super::wire::{self, RawResponse};

/// Bound on one client exchange.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A response from the gateway.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// Every value of `name` (case-insensitive).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        wire::header_all(&self.headers, name)
    }

    /// The first value of `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics with the body text otherwise.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {:?}", self.text()))
    }

    /// Asserts none of `secrets` occurs in a header or the body.
    pub fn assert_free_of(&self, secrets: &[String]) {
        let text = self.text();
        for secret in secrets {
            assert!(
                !text.contains(secret.as_str()),
                "secret leaked in response body: {text}"
            );
            for (name, value) in &self.headers {
                assert!(
                    !value.contains(secret.as_str()),
                    "secret leaked in response header {name}"
                );
            }
        }
    }

    /// Asserts a SCIM error response (design.md §5): status, `application/scim+json`, the
    /// Error schema, `status` as a string, a string `detail`.
    pub fn assert_scim_error(&self, status: u16) {
        assert_eq!(self.status, status, "status; body: {}", self.text());
        let ct = self.header("content-type").unwrap_or("");
        assert!(
            ct.starts_with("application/scim+json"),
            "content-type {ct:?}, expected application/scim+json"
        );
        let body = self.json();
        assert_eq!(
            body["schemas"],
            serde_json::json!(["urn:ietf:params:scim:api:messages:2.0:Error"]),
            "schemas in {body}"
        );
        assert_eq!(
            body["status"],
            serde_json::json!(status.to_string()),
            "status in {body}"
        );
        assert!(body["detail"].is_string(), "detail in {body}");
    }

    /// Asserts a 401 with `error="invalid_token"` in `WWW-Authenticate`.
    pub fn assert_invalid_token(&self) {
        self.assert_scim_error(401);
        assert_eq!(
            self.header_all("www-authenticate"),
            vec![r#"Bearer realm="scimgate", error="invalid_token""#],
            "WWW-Authenticate"
        );
    }

    /// Asserts a 403 with `error="insufficient_scope"`.
    pub fn assert_insufficient_scope(&self) {
        self.assert_scim_error(403);
        assert_eq!(
            self.header_all("www-authenticate"),
            vec![r#"Bearer realm="scimgate", error="insufficient_scope""#],
            "WWW-Authenticate"
        );
    }
}

impl From<RawResponse> for Response {
    fn from(raw: RawResponse) -> Self {
        Self {
            status: raw.status,
            headers: raw.head.headers,
            body: raw.body.bytes,
        }
    }
}

/// One request on a fresh HTTP/1.1 connection with hyper's client. Adds `Host` unless given.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Response, String> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        let mut builder = http::Request::builder().method(method).uri(path);
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
            builder = builder.header(http::header::HOST, addr.to_string());
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| format!("build request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("read body: {e}"))?
            .to_bytes();
        Ok(Response {
            status: parts.status.as_u16(),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: body.to_vec(),
        })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{method} {path}: no response within {REQUEST_TIMEOUT:?}"))?
}
