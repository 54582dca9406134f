//! The request pipeline, steps 1–6 in one place (see the crate docs for the diagram).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::auth::verify::Verifier;
use crate::auth::{bearer, policy};
use crate::config::Config;
use crate::error::{ProxyError, RequestError};
use crate::headers::{self, Forwarding, HeaderPolicy};
use crate::metrics::{Decision, Metrics, Outcome};
use crate::telemetry::AccessRecord;
use crate::upstream::{ProxyBody, Upstream};

/// What the listener knows about the connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub https: bool,
}

/// The gateway: everything a request needs, built once from the validated config.
pub struct Proxy {
    config: Arc<Config>,
    verifier: Verifier,
    upstream: Upstream,
    header_policy: HeaderPolicy,
    metrics: Arc<Metrics>,
}

impl Proxy {
    pub fn new(
        config: Arc<Config>,
        verifier: Verifier,
        upstream: Upstream,
        metrics: Arc<Metrics>,
    ) -> Self {
        let header_policy = HeaderPolicy::new(config.service_accounts.iter().map(AsRef::as_ref));
        Self {
            config,
            verifier,
            upstream,
            header_policy,
            metrics,
        }
    }

    /// Runs one request through the pipeline and always produces a response (step 6 here:
    /// metrics and the access line are written once, where the outcome is known).
    pub async fn handle(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<ProxyBody> {
        let started = Instant::now();
        let request_id = headers::request_id(req.headers());
        let mut record = AccessRecord::new(&req, &request_id, conn.peer);
        let work = self.authorize_and_forward(req, conn, &request_id, &mut record);
        let result = match tokio::time::timeout(self.config.server.request_timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(ProxyError::RequestTimeout),
        };
        let (outcome, mut response) = match result {
            Ok(response) => (Outcome::Forwarded, response),
            Err(error) => {
                record.error = Some(error.to_string());
                (error.outcome(), error.into_response())
            }
        };
        response
            .headers_mut()
            .insert(headers::REQUEST_ID, request_id);
        let elapsed = started.elapsed();
        self.metrics.request(outcome, elapsed.as_secs_f64());
        record.finish(outcome, response.status(), elapsed);
        response
    }

    /// Steps 1–5. Each `?` ends the request with the step's error.
    async fn authorize_and_forward(
        &self,
        req: Request<Incoming>,
        conn: ConnInfo,
        request_id: &HeaderValue,
        record: &mut AccessRecord,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let target = self.check_request(&req)?;
        let decision = self.authorize(&req, record).await;
        let account = match decision {
            Ok(rule) => {
                self.metrics.auth_decision(Decision::Allow, "ok");
                self.metrics.rule_match(&rule.name);
                Arc::clone(&rule.account)
            }
            Err(e) => {
                self.metrics.auth_decision(Decision::Deny, e.reason());
                record.reason = Some(e.reason());
                return Err(e.into());
            }
        };
        let (mut parts, body) = req.into_parts();
        let forwarding = Forwarding {
            peer_ip: conn.peer.ip(),
            https: conn.https,
            host: headers::caller_host(&parts.uri, &parts.headers),
            request_id: request_id.clone(),
        };
        self.header_policy.strip_request(&mut parts.headers);
        headers::set_upstream_headers(&mut parts.headers, &account, &forwarding);
        parts.uri = target;
        let body = Limited::new(body, self.max_body())
            .map_err(Into::into)
            .boxed();
        let (mut response, upstream_seconds) = self
            .upstream
            .forward(Request::from_parts(parts, body))
            .await?;
        self.metrics.upstream(upstream_seconds);
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(ProxyError::UpstreamRejectedCredential);
        }
        headers::strip_response(response.headers_mut());
        Ok(response.map(|b| b.map_err(Into::into).boxed()))
    }

    /// Steps 1–3: bearer token, verification, rule. Records who the caller is for the audit line.
    async fn authorize(
        &self,
        req: &Request<Incoming>,
        record: &mut AccessRecord,
    ) -> Result<&crate::config::Rule, crate::auth::AuthError> {
        let token = bearer::bearer_token(req.headers())?;
        let verified = self.verifier.verify(token).await?;
        record.identify(&verified, token);
        let rule = policy::authorize(&self.config.rules, &verified.claims)?;
        record.rule = Some(rule.name.clone());
        record.account = Some(rule.account.name.clone());
        Ok(rule)
    }

    /// Refusals that need no token: tunnels, bad targets, declared bodies over the limit.
    fn check_request(&self, req: &Request<Incoming>) -> Result<http::Uri, RequestError> {
        if req.method() == Method::CONNECT || req.method() == Method::TRACE {
            return Err(RequestError::MethodNotAllowed);
        }
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.config.server.max_body_bytes) {
            return Err(RequestError::PayloadTooLarge);
        }
        self.upstream
            .target(req.uri())
            .ok_or(RequestError::BadTarget)
    }

    fn max_body(&self) -> usize {
        usize::try_from(self.config.server.max_body_bytes).unwrap_or(usize::MAX)
    }
}
