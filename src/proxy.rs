//! The request pipeline: [`Proxy::handle`] runs the steps in order over one request's
//! [`Exchange`]; each step is a short function that returns its step's error, and the one exit
//! records the outcome (see the crate docs for the diagram).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use tokio::time::{Instant, timeout_at};

use crate::auth::{AuthError, VerifiedToken, bearer, policy};
use crate::body::RequestBody;
use crate::config::{PrefixMatch, Rule, ServiceAccount, Tenant};
use crate::error::{ProxyError, RequestError};
use crate::guard::{Check, Guards};
use crate::headers::{self, Forwarding};
use crate::metrics::{Metrics, Outcome};
use crate::response::ResponseBody;
use crate::runtime::{Runtime, TenantRuntime};
use crate::scim::{self, Classified, Operation, Resource};
use crate::screen::{self, ScreenedBody, Withheld};
use crate::telemetry::AccessRecord;
use crate::upstream::{UpstreamBody, UpstreamError};

/// What the listener knows about the connection a request came in on.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    pub peer: SocketAddr,
    pub https: bool,
    /// `X-Forwarded-For` for every request on this connection.
    pub forwarded_for: HeaderValue,
}

/// The gateway: the current runtime generation plus what outlives generations: the metrics
/// and the guardrails' counters (a reload keeps the deprovision window and the buckets).
pub(crate) struct Proxy {
    runtime: ArcSwap<Runtime>,
    metrics: Arc<Metrics>,
    guards: Guards,
}

/// One request's context as it moves through the steps: where it was routed, what it was
/// parsed as, its deadline, and the audit record the steps fill in.
struct Exchange<'a> {
    runtime: &'a Runtime,
    tenant: &'a Tenant,
    tenant_runtime: &'a TenantRuntime,
    metrics: &'a Metrics,
    guards: &'a Guards,
    conn: ConnInfo,
    /// The request as the grammar parsed it: this is what gets authorized.
    request: Classified,
    /// Where it goes: the tenant's upstream base path plus the parsed path and the query.
    target: http::Uri,
    /// `server.request_timeout` after arrival: bounds every step up to the response head.
    deadline: Instant,
    request_id: &'a HeaderValue,
    record: &'a mut AccessRecord,
}

impl Proxy {
    pub(crate) fn new(runtime: Runtime, metrics: Arc<Metrics>) -> Self {
        Self {
            runtime: ArcSwap::from_pointee(runtime),
            metrics,
            guards: Guards::default(),
        }
    }

    /// Sets each tenant's deprovision budget gauge from its window as of now (at scrape time:
    /// the window empties with time, not only with requests).
    pub(crate) fn export_budgets(&self) {
        let runtime = self.runtime.load();
        for (tenant, tenant_runtime) in runtime.config.tenants.iter().zip(&runtime.tenants) {
            tenant_runtime
                .guardrails
                .budget_used(self.guards.budget_used(tenant));
        }
    }

    /// The generation new requests will use.
    pub(crate) fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Installs a new generation; requests already running keep the one they loaded.
    pub(crate) fn swap(&self, runtime: Runtime) {
        self.runtime.store(Arc::new(runtime));
    }

    /// Ready when the current generation's signing keys are loaded and fresh.
    pub(crate) fn is_ready(&self) -> bool {
        self.runtime.load().is_ready()
    }

    /// Runs one request through the pipeline and always produces a response. Never fails: the
    /// `Result` is hyper's service contract. The future owns its `Arc` so the listener can hand
    /// it to hyper as built, without an enclosing future to copy it into.
    pub(crate) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: ConnInfo,
    ) -> Result<Response<ResponseBody>, Infallible> {
        let started = Instant::now();
        let runtime = self.runtime.load_full();
        let request_id = headers::request_id(req.headers());
        let mut record = AccessRecord::new(&req, &request_id, conn.peer);
        let deadline = started + runtime.config.server.request_timeout;
        // scimgate's own issuer answers its endpoints before any SCIM routing.
        if let Some(issuer) = &runtime.issuer
            && let Some(endpoint) = crate::issuer::serve::endpoint(issuer, req.uri().path())
        {
            // Boxed: inline, the token endpoint's future would enlarge every request's future,
            // whose space hyper holds for every open connection.
            let peer = conn.peer.ip();
            let serve =
                crate::issuer::serve::serve(issuer, endpoint, req, peer, deadline, &self.metrics);
            let mut response = Box::pin(serve).await;
            response
                .headers_mut()
                .insert(headers::REQUEST_ID, request_id);
            return Ok(response);
        }
        let result = self
            .pipeline(&runtime, req, conn, &request_id, &mut record, deadline)
            .await;
        // Record: the one exit, where the outcome is known. One metric, one access line.
        let (outcome, mut response) = match result {
            Ok(response) => (Outcome::Forwarded, response),
            Err(error) => {
                if let ProxyError::Auth(denied) = &error {
                    self.metrics.auth_denied(denied.reason());
                    record.reason = Some(denied.reason());
                }
                record.fail(&error);
                error.respond()
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

    /// The steps in order. Each `?` ends the request with that step's error.
    async fn pipeline(
        &self,
        runtime: &Runtime,
        req: Request<Incoming>,
        conn: ConnInfo,
        request_id: &HeaderValue,
        record: &mut AccessRecord,
        deadline: Instant,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        // Route: the tenant, and the request parsed by the SCIM grammar (RFC 7644 §3). What
        // is forwarded is what was parsed; anything else is refused before a token is read.
        let mut exchange =
            Exchange::route(runtime, self, &req, conn, request_id, record, deadline)?;
        let (parts, body) = req.into_parts();
        // Verify: exactly one bearer token, its signature and claims (cached when valid).
        let token = exchange.verify(&parts.headers).await?;
        // Body: read and parsed only where scimgate must judge it (`/Bulk`); otherwise it
        // streams, cut off at `server.max_body_bytes`.
        let (body, bulk) = exchange.read_body(&parts.headers, body).await?;
        // Authorize: the first rule whose claim matches and that permits every operation.
        let rule = exchange.authorize(&token, &bulk)?;
        // Guard: what the rule's guardrails and the tenant's deprovision budget still refuse
        // (the body read first where one of them must judge it).
        let body = exchange.guard(rule, &parts.headers, body).await?;
        // Rewrite: the caller's credentials and hop-by-hop headers out, the account's key in.
        let request = exchange.rewrite(parts, body, &rule.account);
        // Forward: one timer bounds the backend's answer.
        let response = exchange.forward(request).await?;
        // Screen: nothing of the key leaves in any part of the response.
        exchange.screen(response, &rule.account).await
    }
}

impl<'a> Exchange<'a> {
    /// The route step: the tenant whose prefix owns the path, and the request as its grammar
    /// parses it.
    fn route(
        runtime: &'a Runtime,
        proxy: &'a Proxy,
        req: &Request<Incoming>,
        conn: ConnInfo,
        request_id: &'a HeaderValue,
        record: &'a mut AccessRecord,
        deadline: Instant,
    ) -> Result<Self, RequestError> {
        let route = runtime
            .route(req.uri().path())
            .ok_or(RequestError::UnknownTenant)?;
        let (request, target) = check_request(runtime, route.runtime, req, &route.matched)?;
        record.classify(&request);
        Ok(Self {
            runtime,
            tenant: route.tenant,
            tenant_runtime: route.runtime,
            metrics: &proxy.metrics,
            guards: &proxy.guards,
            conn,
            request,
            target,
            deadline,
            request_id,
            record,
        })
    }

    /// The verify step: the bearer token, verified or found in the validated-token cache.
    async fn verify(&mut self, headers: &HeaderMap) -> Result<VerifiedToken, ProxyError> {
        let token = bearer::bearer_token(headers)?;
        let auth = &self.tenant_runtime.auth;
        let verified = timeout_at(self.deadline, auth.verify(token))
            .await
            .map_err(|_| ProxyError::RequestTimeout)??;
        self.record.identify(&verified);
        Ok(verified)
    }

    /// The body step. Only a `/Bulk` body is read here (after the token verified), because
    /// each of its operations needs permission; it is forwarded byte-exact as read.
    async fn read_body(
        &self,
        headers: &HeaderMap,
        body: Incoming,
    ) -> Result<(CallerBody, Vec<Classified>), ProxyError> {
        if self.request.operation != Operation::Bulk {
            return Ok((
                CallerBody::Streaming(Limited::new(body, self.body_limit())),
                Vec::new(),
            ));
        }
        let bytes = self
            .collect(headers, Limited::new(body, self.body_limit()))
            .await?;
        let custom = &self.tenant.upstream.resource_types;
        let operations = scim::bulk_operations(&bytes, custom).map_err(|e| {
            tracing::debug!(error = %e, "bulk request refused");
            RequestError::InvalidBulk
        })?;
        Ok((CallerBody::Read(bytes), operations))
    }

    fn body_limit(&self) -> usize {
        usize::try_from(self.runtime.config.server.max_body_bytes).unwrap_or(usize::MAX)
    }

    /// Reads a body scimgate must judge: declared as JSON it reads with certainty, whole,
    /// within `server.max_body_bytes` and the request's deadline.
    async fn collect(
        &self,
        headers: &HeaderMap,
        body: Limited<Incoming>,
    ) -> Result<Bytes, ProxyError> {
        if !judgeable_json(headers) {
            return Err(RequestError::UnsupportedMediaType.into());
        }
        // Boxed: rare, and inline this future would enlarge every request's future, whose
        // space hyper holds for every open connection.
        let collect = Box::pin(timeout_at(self.deadline, body.collect()));
        match collect.await.map_err(|_| ProxyError::RequestTimeout)? {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<LengthLimitError>() => Err(RequestError::PayloadTooLarge.into()),
            Err(_) => Err(RequestError::UnreadableBody.into()),
        }
    }

    /// The authorize step: the first rule that matches the token and permits the request (and
    /// every `/Bulk` operation) names the service account.
    fn authorize(
        &mut self,
        token: &VerifiedToken,
        bulk: &[Classified],
    ) -> Result<&'a Rule, AuthError> {
        let rule = policy::authorize(&self.tenant.rules, &token.claims, &self.request, bulk)?;
        self.metrics.auth_allowed();
        self.tenant_runtime.rule_matched(self.tenant, rule);
        self.record.allow(&rule.name, &rule.account.name);
        Ok(rule)
    }

    /// The guard step: the rule's guardrails and the tenant's deprovision budget judge the
    /// request, its body read first (bounded, forwarded byte-exact) when one of them must see
    /// it. A refusal counts in `scimgate_guardrail_trips_total`; nothing is forwarded.
    async fn guard(
        &mut self,
        rule: &Rule,
        headers: &HeaderMap,
        body: CallerBody,
    ) -> Result<RequestBody, ProxyError> {
        let guardrails = &self.tenant.guardrails;
        if guardrails.rules.is_empty() && guardrails.max_deprovisions == 0 {
            return Ok(body.into_request_body());
        }
        let body = match body {
            CallerBody::Streaming(streaming)
                if Guards::needs_body(self.tenant, rule, &self.request) =>
            {
                CallerBody::Read(self.collect(headers, streaming).await?)
            }
            CallerBody::Streaming(streaming) => CallerBody::Streaming(streaming),
            CallerBody::Read(bytes) => CallerBody::Read(bytes),
        };
        let check = Check {
            trusted_proxies: &self.runtime.config.server.trusted_proxies,
            tenant: self.tenant,
            rule,
            request: &self.request,
            peer: self.conn.peer.ip(),
            headers,
            body: match &body {
                CallerBody::Read(bytes) => Some(bytes),
                CallerBody::Streaming(_) => None,
            },
        };
        match self.guards.check(&check) {
            Ok(summary) => {
                if let Some(used) = summary.budget_used {
                    self.tenant_runtime.guardrails.budget_used(used);
                }
                self.record.writes(&summary);
                Ok(body.into_request_body())
            }
            Err(refused) => {
                if let Some(guardrail) = refused.guardrail() {
                    self.tenant_runtime.guardrails.trip(guardrail);
                    self.record.guardrail = Some(guardrail);
                }
                Err(refused.into())
            }
        }
    }

    /// The rewrite step: request headers by allow-list, the account's credential and the
    /// forwarding headers set, the parsed target in place of the caller's.
    fn rewrite(
        &mut self,
        mut parts: Parts,
        body: RequestBody,
        account: &ServiceAccount,
    ) -> Request<RequestBody> {
        let forwarding = Forwarding {
            forwarded_for: self.conn.forwarded_for.clone(),
            https: self.conn.https,
            host: headers::caller_host(&parts.uri, &parts.headers),
            request_id: self.request_id.clone(),
        };
        let mut dropped = self.record.wants_dropped_headers().then(Vec::new);
        self.runtime
            .header_policy
            .strip_request(&mut parts.headers, dropped.as_mut());
        if let Some(dropped) = dropped {
            self.record.dropped_headers(&dropped);
        }
        headers::set_upstream_headers(&mut parts.headers, account, &forwarding);
        parts.uri = std::mem::take(&mut self.target);
        // The caller may have spoken HTTP/2; the upstream connection's protocol is the
        // client's business (ALPN), and hyper refuses an HTTP/2-versioned request on HTTP/1.1.
        parts.version = http::Version::HTTP_11;
        Request::from_parts(parts, body)
    }

    /// The forward step: the backend's response head, within `upstream.timeout` or the
    /// request's deadline, whichever falls first (one timer).
    async fn forward(
        &self,
        request: Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        let upstream = &self.tenant_runtime.upstream;
        let sent = Instant::now();
        let upstream_deadline = sent + upstream.timeout();
        let exchange = timeout_at(
            self.deadline.min(upstream_deadline),
            upstream.forward(request, sent),
        );
        let response = match exchange.await {
            Ok(response) => response?,
            Err(_) if self.deadline < upstream_deadline => return Err(ProxyError::RequestTimeout),
            Err(_) => return Err(UpstreamError::Timeout.into()),
        };
        self.metrics.upstream(sent.elapsed().as_secs_f64());
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(ProxyError::UpstreamRejectedCredential);
        }
        Ok(response)
    }

    /// The screen step: response headers cleaned and screened for the key; a body scimgate
    /// must read (not 2xx, coded, or the ServiceProviderConfig it rewrites) is read bounded and
    /// screened whole, any other streams through the key screen.
    async fn screen(
        &self,
        mut response: Response<UpstreamBody>,
        account: &ServiceAccount,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        headers::strip_response(response.headers_mut());
        account.screen.strip_headers(response.headers_mut());
        let status = response.status();
        // The body-reading paths are boxed for the same reason as the `/Bulk` read.
        if self.request.resource == Resource::ServiceProviderConfig && status == StatusCode::OK {
            let read = Box::pin(timeout_at(
                self.deadline,
                advertise_bearer(response, account),
            ));
            return read.await.unwrap_or(Err(ProxyError::RequestTimeout));
        }
        if screen::must_read(status, response.headers()) {
            let read = Box::pin(timeout_at(
                self.deadline,
                screen_whole_body(response, account),
            ));
            return read.await.unwrap_or(Err(ProxyError::RequestTimeout));
        }
        let screen = Arc::clone(&account.screen);
        Ok(response.map(|body| ResponseBody::Upstream(ScreenedBody::new(body, screen))))
    }
}

/// A caller's body before the guard step: still streaming, or read whole to be judged.
enum CallerBody {
    Streaming(Limited<Incoming>),
    Read(Bytes),
}

impl CallerBody {
    fn into_request_body(self) -> RequestBody {
        match self {
            Self::Streaming(streaming) => RequestBody::Streamed(streaming),
            Self::Read(bytes) => RequestBody::read(bytes),
        }
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

/// Refusals that need no token: the request grammar (RFC 7644 §3), method overrides, request
/// content-codings, declared bodies over the limit. Returns the classified request and the
/// upstream URI: the tenant's base with its `{account}` filled in, plus the rest of the path.
fn check_request(
    runtime: &Runtime,
    tenant_runtime: &TenantRuntime,
    req: &Request<Incoming>,
    matched: &PrefixMatch<'_>,
) -> Result<(scim::Classified, http::Uri), RequestError> {
    // Tunnels and loops are refused as methods whatever their target says.
    if req.method() == http::Method::CONNECT || req.method() == http::Method::TRACE {
        return Err(RequestError::MethodNotAllowed);
    }
    let custom = tenant_runtime.upstream.resource_types();
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
    if declared.is_some_and(|len| len > runtime.config.server.max_body_bytes) {
        return Err(RequestError::PayloadTooLarge);
    }
    let target = tenant_runtime
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
