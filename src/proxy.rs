//! The request pipeline, steps 1–6 in one place (see the crate docs for the diagram).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use arc_swap::ArcSwap;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use tokio::time::Instant;

use bytes::Bytes;

use crate::auth::{AuthError, bearer, policy};
use crate::body::{RequestBody, ResponseBody};
use crate::config::{PrefixMatch, Rule, ServiceAccount, Tenant};
use crate::error::{ProxyError, RequestError};
use crate::headers::{self, Forwarding};
use crate::metrics::{Decision, Metrics, Outcome};
use crate::runtime::{Runtime, TenantRuntime};
use crate::scim::{self, Operation, Resource};
use crate::screen::{self, ScreenedBody, Withheld};
use crate::telemetry::AccessRecord;
use crate::upstream::{UpstreamBody, UpstreamError};

/// What the listener knows about the connection a request came in on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub https: bool,
    /// `X-Forwarded-For` for every request on this connection.
    pub forwarded_for: HeaderValue,
}

/// The gateway: the current runtime generation plus the process-wide metrics.
pub struct Proxy {
    runtime: ArcSwap<Runtime>,
    metrics: Arc<Metrics>,
}

impl Proxy {
    pub fn new(runtime: Runtime, metrics: Arc<Metrics>) -> Self {
        Self {
            runtime: ArcSwap::from_pointee(runtime),
            metrics,
        }
    }

    /// The generation new requests will use.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Installs a new generation; requests already running keep the one they loaded.
    pub fn swap(&self, runtime: Runtime) {
        self.runtime.store(Arc::new(runtime));
    }

    /// Ready when the current generation's signing keys are loaded and fresh.
    pub fn is_ready(&self) -> bool {
        self.runtime.load().is_ready()
    }

    /// Runs one request through the pipeline and always produces a response (step 6 here:
    /// metrics and the access line are written once, where the outcome is known). Never fails:
    /// the `Result` is hyper's service contract. The future owns its `Arc` so the listener can
    /// hand it to hyper as built, without an enclosing future to copy it into.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: ConnInfo,
    ) -> Result<Response<ResponseBody>, Infallible> {
        let started = Instant::now();
        let rt = self.runtime.load_full();
        let request_id = headers::request_id(req.headers());
        let mut record = AccessRecord::new(&req, &request_id, conn.peer);
        // `server.request_timeout` bounds the pipeline up to the response head. Only the steps
        // that can wait are timed against it (see `within`), so a request that never waits
        // arms one timer, the upstream's.
        let deadline = started + rt.config.server.request_timeout;
        let result = self
            .authorize_and_forward(&rt, req, conn, &request_id, &mut record, deadline)
            .await;
        let (outcome, mut response) = match result {
            Ok(response) => (Outcome::Forwarded, response),
            Err(error) => {
                record.fail(&error);
                (error.outcome(), error.into_response())
            }
        };
        response
            .headers_mut()
            .insert(headers::REQUEST_ID, request_id);
        let elapsed = started.elapsed();
        self.metrics.request(outcome, elapsed.as_secs_f64());
        record.finish(outcome, response.status(), elapsed);
        Ok(response)
    }

    /// Steps 1–5. Each `?` ends the request with the step's error.
    async fn authorize_and_forward(
        &self,
        rt: &Runtime,
        req: Request<Incoming>,
        conn: ConnInfo,
        request_id: &HeaderValue,
        record: &mut AccessRecord,
        deadline: Instant,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let route = rt
            .route(req.uri().path())
            .ok_or(RequestError::UnknownTenant)?;
        let (tenant, trt) = (route.tenant, route.runtime);
        // What is forwarded is what the grammar parsed: refused here, before any token is read.
        let (request, target) = check_request(rt, trt, &req, &route.matched)?;
        record.classify(&request);
        let (mut parts, body) = req.into_parts();
        let (account, body) = match self
            .authorize(rt, tenant, trt, &parts, &request, body, record, deadline)
            .await
        {
            Ok((rule, body)) => {
                self.metrics.auth_decision(Decision::Allow, "ok");
                trt.rule_matched(tenant, rule);
                (Arc::clone(&rule.account), body)
            }
            Err(Refused::Auth(e)) => {
                self.metrics.auth_decision(Decision::Deny, e.reason());
                record.reason = Some(e.reason());
                return Err(e.into());
            }
            Err(Refused::Request(e)) => return Err(e.into()),
            Err(Refused::Timeout) => return Err(ProxyError::RequestTimeout),
        };
        let forwarding = Forwarding {
            forwarded_for: conn.forwarded_for,
            https: conn.https,
            host: headers::caller_host(&parts.uri, &parts.headers),
            request_id: request_id.clone(),
        };
        let mut dropped = record.wants_dropped_headers().then(Vec::new);
        rt.header_policy
            .strip_request(&mut parts.headers, dropped.as_mut());
        if let Some(dropped) = dropped {
            record.dropped_headers(&dropped);
        }
        headers::set_upstream_headers(&mut parts.headers, &account, &forwarding);
        parts.uri = target;
        // The caller may have spoken HTTP/2; the upstream connection's protocol is the pool's
        // business (ALPN), and hyper refuses an HTTP/2-versioned request on HTTP/1.1.
        parts.version = http::Version::HTTP_11;
        let upstream_request = Request::from_parts(parts, body);
        // One timer bounds the exchange: `upstream.timeout`, or the request's deadline when that
        // falls first (a short request_timeout, or a slow request body).
        let sent = Instant::now();
        let upstream_deadline = sent + trt.upstream.timeout();
        let exchange = tokio::time::timeout_at(
            deadline.min(upstream_deadline),
            trt.upstream.forward(upstream_request, sent),
        );
        let mut response = match exchange.await {
            Ok(response) => response?,
            Err(_) if deadline < upstream_deadline => return Err(ProxyError::RequestTimeout),
            Err(_) => return Err(UpstreamError::Timeout.into()),
        };
        self.metrics.upstream(sent.elapsed().as_secs_f64());
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(ProxyError::UpstreamRejectedCredential);
        }
        headers::strip_response(response.headers_mut());
        account.screen.strip_headers(response.headers_mut());
        // The body-reading steps are boxed: they are rare, and inline their futures would
        // enlarge every request's future, whose space hyper holds for every open
        // connection.
        let status = response.status();
        if request.resource == Resource::ServiceProviderConfig && status == StatusCode::OK {
            return within(deadline, Box::pin(advertise_bearer(response, &account)))
                .await
                .unwrap_or(Err(ProxyError::RequestTimeout));
        }
        if screen::must_read(status, response.headers()) {
            return within(deadline, Box::pin(screen_whole_body(response, &account)))
                .await
                .unwrap_or(Err(ProxyError::RequestTimeout));
        }
        let screen = Arc::clone(&account.screen);
        Ok(response.map(|body| ResponseBody::Upstream(ScreenedBody::new(body, screen))))
    }

    /// Steps 1–3: bearer token, verification, rule. The body is only read for `/Bulk` (after the
    /// token verified), whose operations each need permission; otherwise it streams untouched.
    #[allow(clippy::too_many_arguments)]
    async fn authorize<'rt>(
        &self,
        rt: &'rt Runtime,
        tenant: &'rt Tenant,
        trt: &'rt TenantRuntime,
        parts: &http::request::Parts,
        request: &scim::Classified,
        body: Incoming,
        record: &mut AccessRecord,
        deadline: Instant,
    ) -> Result<(&'rt Rule, RequestBody), Refused> {
        let credential = bearer::bearer_credential(&parts.headers)?;
        let verified = match trt.verifier.lookup(credential) {
            Ok(hit) => hit,
            // A miss checks a signature and may wait for keys: timed, and boxed because it is
            // large and rare next to the hits.
            Err(miss) => {
                Box::pin(within(deadline, trt.verifier.verify(credential, miss))).await??
            }
        };
        record.identify(&verified);
        let limit = usize::try_from(rt.config.server.max_body_bytes).unwrap_or(usize::MAX);
        let (body, bulk) = if request.operation == Operation::Bulk {
            if !judgeable_json(&parts.headers) {
                return Err(RequestError::UnsupportedMediaType.into());
            }
            let collect = Box::pin(Limited::new(body, limit).collect());
            let bytes = match within(deadline, collect).await? {
                Ok(collected) => collected.to_bytes(),
                Err(e) if e.is::<LengthLimitError>() => {
                    return Err(RequestError::PayloadTooLarge.into());
                }
                Err(_) => return Err(RequestError::InvalidBulk.into()),
            };
            let ops =
                scim::bulk_operations(&bytes, &tenant.upstream.resource_types).map_err(|e| {
                    tracing::debug!(error = %e, "bulk request refused");
                    RequestError::InvalidBulk
                })?;
            (RequestBody::read(bytes), ops)
        } else {
            (RequestBody::Streamed(Limited::new(body, limit)), Vec::new())
        };
        let rule = policy::authorize(&tenant.rules, &verified.claims, request, &bulk)?;
        record.allow(&rule.name, &rule.account.name);
        Ok((rule, body))
    }
}

/// Rewrites a ServiceProviderConfig response to advertise the bearer scheme scimgate enforces.
/// A body that is not a JSON object passes through as it was (screened); one over 1 MiB or that
/// fails mid-read is a 502.
async fn advertise_bearer(
    response: Response<UpstreamBody>,
    account: &ServiceAccount,
) -> Result<Response<ResponseBody>, ProxyError> {
    const MAX: usize = 1024 * 1024;
    let (mut parts, body) = response.into_parts();
    let bytes = read_bounded(body, MAX).await?;
    let bytes = screen::screen_whole(&mut parts.headers, bytes, MAX, &account.screen)?;
    let out = scim::rewrite_service_provider_config(&bytes).unwrap_or(bytes);
    Ok(Response::from_parts(parts, ResponseBody::full(out)))
}

/// A body scimgate must read before relaying (not 2xx, or not in the identity coding): read
/// bounded, decoded, and withheld when it holds the service account's key.
async fn screen_whole_body(
    response: Response<UpstreamBody>,
    account: &ServiceAccount,
) -> Result<Response<ResponseBody>, ProxyError> {
    /// Error documents and redirects are small; a 2xx that ignored `Accept-Encoding: identity`
    /// gets the same bound, decoded.
    const MAX: usize = 1024 * 1024;
    let (mut parts, body) = response.into_parts();
    let bytes = read_bounded(body, MAX).await?;
    let bytes = screen::screen_whole(&mut parts.headers, bytes, MAX, &account.screen).inspect_err(
        |e| tracing::warn!(status = parts.status.as_u16(), error = %e, "upstream response withheld"),
    )?;
    Ok(Response::from_parts(parts, ResponseBody::full(bytes)))
}

/// Reads an upstream body to its end, at most `max` bytes; trailers are dropped.
async fn read_bounded(body: UpstreamBody, max: usize) -> Result<Bytes, ProxyError> {
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(Withheld::TooLarge(max).into()),
        Err(e) => Err(UpstreamError::Unavailable(format!("response body: {e}")).into()),
    }
}

/// Whether a body scimgate must judge is declared as something it reads with certainty: SCIM
/// or plain JSON, in UTF-8 if a charset is named (RFC 7644 §3.1, RFC 8259 §8.1). A charset such
/// as UTF-7 would make the backend read other members than the ones we checked.
fn judgeable_json(headers: &http::HeaderMap) -> bool {
    let mut values = headers.get_all(http::header::CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let Ok(text) = value.to_str() else {
        return false;
    };
    let mut params = text.split(';').map(str::trim);
    let media = params.next().unwrap_or("");
    let json = media.eq_ignore_ascii_case(scim::CONTENT_TYPE)
        || media.eq_ignore_ascii_case("application/json");
    json && params.all(|p| {
        let (name, value) = p.split_once('=').unwrap_or((p, ""));
        !name.trim().eq_ignore_ascii_case("charset")
            || value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
    })
}

/// Why `authorize` refused: an authorization decision, a request we cannot authorize, or the
/// request's deadline passing while it waited (for keys, or for a `/Bulk` body).
enum Refused {
    Auth(AuthError),
    Request(RequestError),
    Timeout,
}

impl From<Elapsed> for Refused {
    fn from(_: Elapsed) -> Self {
        Self::Timeout
    }
}

/// The request deadline passed.
struct Elapsed;

/// `fut`, failed with [`Elapsed`] if it is still pending at `deadline`. Unlike
/// `tokio::time::timeout_at`, the timer is only created once `fut` has to wait: the steps
/// this guards (a signature check with the keys at hand, a small error body) usually finish on
/// their first poll, and then cost no timer registration at all.
async fn within<F: Future>(deadline: Instant, fut: F) -> Result<F::Output, Elapsed> {
    let mut fut = std::pin::pin!(fut);
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        timer.as_mut().poll(cx).map(|()| Err(Elapsed))
    })
    .await
}

impl From<AuthError> for Refused {
    fn from(e: AuthError) -> Self {
        Self::Auth(e)
    }
}

impl From<RequestError> for Refused {
    fn from(e: RequestError) -> Self {
        Self::Request(e)
    }
}

/// Refusals that need no token: the request grammar (RFC 7644 §3), method overrides, request
/// content-codings, declared bodies over the limit. Returns the classified request and the
/// upstream URI: the tenant's base with its `{account}` filled in, plus the rest of the path.
fn check_request(
    rt: &Runtime,
    trt: &TenantRuntime,
    req: &Request<Incoming>,
    matched: &PrefixMatch<'_>,
) -> Result<(scim::Classified, http::Uri), RequestError> {
    // Tunnels and loops are refused as methods whatever their target says.
    if req.method() == http::Method::CONNECT || req.method() == http::Method::TRACE {
        return Err(RequestError::MethodNotAllowed);
    }
    let custom = trt.upstream.resource_types();
    let request = scim::parse_request(req.method(), matched.rest, custom).map_err(|e| match e {
        scim::PathError::Ambiguous => RequestError::AmbiguousPath,
        scim::PathError::NotFound => RequestError::NotFound,
        scim::PathError::Method => RequestError::MethodNotAllowed,
    })?;
    if req.uri().query().is_some_and(overrides_method) {
        return Err(RequestError::MethodOverride);
    }
    // A coded request body is one scimgate cannot read with certainty; SCIM clients send none.
    if req
        .headers()
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity"))
    {
        return Err(RequestError::UnsupportedMediaType);
    }
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > rt.config.server.max_body_bytes) {
        return Err(RequestError::PayloadTooLarge);
    }
    let target = trt
        .upstream
        .target(matched.rest, req.uri().query(), matched.account)
        .ok_or(RequestError::BadTarget)?;
    Ok((request, target))
}

/// Query parameters that web frameworks read as the method to run (Rails, Laravel, Symfony,
/// Express's method-override, OData tunnelling): the method the backend runs is the method
/// scimgate authorized, so a query naming one is refused. Names are compared as a framework
/// would read them: `+` and percent-decoded, case-insensitively, and with PHP's folding of
/// leading spaces and of ` `, `.` and `[` into `_` (`.method` is `_method` to PHP).
fn overrides_method(query: &str) -> bool {
    const NAMES: [&str; 5] = [
        "_method",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "$method",
    ];
    let named = |name: &str| {
        let name = name.trim_start();
        name.len() >= 7
            && NAMES.iter().any(|n| {
                n.len() == name.len()
                    && n.bytes().zip(name.bytes()).all(|(n, b)| {
                        let b = if matches!(b, b' ' | b'.' | b'[') {
                            b'_'
                        } else {
                            b
                        };
                        n == b.to_ascii_lowercase()
                    })
            })
    };
    query.split(['&', ';']).any(|pair| {
        let raw = pair.split('=').next().unwrap_or("");
        if !raw.contains(['%', '+']) {
            return named(raw);
        }
        // An undecodable name cannot be judged: refuse it too.
        scim::percent_decode(&raw.replace('+', " ")).is_none_or(|name| named(&name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn within_passes_results_and_times_out_only_what_waits() {
        let passed = Instant::now() - Duration::from_millis(1);
        let later = Instant::now() + Duration::from_secs(60);
        // Ready on the first poll: a result even when the deadline has passed (no timer).
        assert!(matches!(within(passed, async { 7 }).await, Ok(7)));
        // Has to wait, and the deadline has passed: timed out.
        let waits = within(passed, std::future::pending::<()>());
        assert!(waits.await.is_err());
        // Waits once, then finishes well before its deadline.
        let yields = within(later, async {
            tokio::task::yield_now().await;
            8
        });
        assert!(matches!(yields.await, Ok(8)));
    }
}
