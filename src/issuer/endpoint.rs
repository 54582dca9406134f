//! `POST /oauth2/token`: the client credentials grant (RFC 6749 §4.4) with client secrets
//! (§2.3.1) or client assertions (RFC 7523 §2.2), as one pure async function over the request's
//! parts. No socket: the listener reads the body (at most [`MAX_BODY_BYTES`]) and sends what
//! this returns.
//!
//! ```text
//! limit      the peer over its failure budget                              -> 429
//! request    POST, no query, one form-urlencoded media type, body decodes,
//!            no parameter twice, grant_type=client_credentials             -> 405 / 400
//! method     exactly one of Basic, client_secret, client_assertion         -> 400 / 401
//! client     configured, not over its failure budget, for this method      -> 401 / 429
//! proof      secret hash (constant time) | assertion through the bearer
//!            Verifier, then sub exact, jti once                            -> 401 / 503
//! grant      not_before passed; scope a subset of the client's             -> 400
//! issue      RFC 9068 token, signed by the first key                       -> 200
//! ```

use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, Method};
use serde_json::Value;

use super::Issuer;
use super::answer::Refusal;
pub use super::answer::{TokenOutcome, TokenResponse};
use super::audit::Audit;
pub use super::audit::AuthMethod;
use super::config::client::{is_scope_token, is_vschar};
use super::config::{ClientAuth, ClientConfig, SecretHash};
pub use super::form::MAX_BODY_BYTES;
use super::form::{self, Authorization, Form, FormError};
use super::limit::ReplayError;
use super::token::{self, Minted};
use crate::auth::bearer::MAX_TOKEN_BYTES;
use crate::auth::{AuthError, TokenRejection};
use crate::strict_json::parse_object;
use crate::text::loggable;

/// RFC 7523 §2.2.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The parts of a token request the endpoint judges.
#[derive(Debug, Clone, Copy)]
pub struct TokenRequest<'r> {
    pub method: &'r Method,
    /// The request target's query. Token requests carry none: credentials in a URL end up in
    /// access logs (RFC 6749 §2.3.1, §3.2).
    pub query: Option<&'r str>,
    pub headers: &'r HeaderMap,
    pub body: &'r [u8],
    pub peer: IpAddr,
    /// Unix seconds: `iat` of the token, and the clock of the limits.
    pub now: u64,
}

/// How the request says the client proves itself.
enum Credentials<'f> {
    Secret {
        id: String,
        secret: String,
        method: AuthMethod,
    },
    Assertion {
        client_id: Option<&'f str>,
        assertion: &'f str,
    },
}

impl Issuer {
    /// Answers one token request, writes its audit line, and counts a failure against the
    /// peer (and the client, for a failed authentication). The response's `outcome` is what
    /// the listener counts in `scimgate_token_requests_total`.
    pub async fn token_endpoint(&self, request: TokenRequest<'_>) -> TokenResponse {
        let mut audit = Audit::default();
        match self.exchange(&request, &mut audit).await {
            Ok(minted) => {
                audit.emit(request.peer, Ok(&minted));
                TokenResponse::issued(&minted)
            }
            Err(refusal) => {
                if refusal.is_failure() {
                    let client = audit
                        .known_client
                        .as_deref()
                        .filter(|_| refusal.is_failed_authentication());
                    self.limiter.failed(request.peer, client, request.now);
                }
                audit.emit(request.peer, Err(&refusal));
                refusal.response()
            }
        }
    }

    async fn exchange(&self, req: &TokenRequest<'_>, audit: &mut Audit) -> Result<Minted, Refusal> {
        self.limiter
            .check_peer(req.peer, req.now)
            .map_err(Refusal::RateLimited)?;
        if req.method != Method::POST {
            return Err(Refusal::MethodNotAllowed);
        }
        if req.query.is_some_and(|q| !q.is_empty()) {
            return Err(Refusal::QueryParameters);
        }
        if !form::is_form_content(req.headers) {
            return Err(Refusal::UnsupportedMediaType);
        }
        if req.body.len() > MAX_BODY_BYTES {
            return Err(Refusal::BodyTooLarge);
        }
        let form = Form::parse(req.body).map_err(|e| match e {
            FormError::Malformed => Refusal::MalformedBody,
            FormError::Duplicate => Refusal::DuplicateParameter,
        })?;
        let grant = form.get("grant_type").ok_or(Refusal::MissingGrantType)?;
        audit.grant = Some(loggable(grant));
        // Values are case-sensitive (RFC 6749 §3.1): `Client_Credentials` is another grant.
        if grant != "client_credentials" {
            return Err(Refusal::UnsupportedGrantType);
        }
        let credentials = credentials(req.headers, &form, audit)?;
        let client = self.authenticate(credentials, req.now, audit).await?;
        if client.not_before.is_some_and(|nb| req.now < nb) {
            return Err(Refusal::NotYetActive);
        }
        let scope = granted_scope(client, form.get("scope"))?;
        token::mint(
            &self.keys,
            &self.config,
            client,
            &scope,
            req.now,
            self.config.token_lifetime,
        )
        .map_err(Refusal::Mint)
    }

    /// The configured client the credentials prove, or why they do not.
    async fn authenticate(
        &self,
        credentials: Credentials<'_>,
        now: u64,
        audit: &mut Audit,
    ) -> Result<&ClientConfig, Refusal> {
        match credentials {
            Credentials::Secret { id, secret, method } => {
                audit.method = Some(method);
                audit.client = Some(loggable(&id));
                let Some(client) = self.config.client(&id) else {
                    // The same hashing work as for a known client: the time does not say
                    // whether the id exists.
                    let _ = SecretHash::decoy().matches(secret.as_bytes());
                    return Err(Refusal::UnknownClient);
                };
                audit.known_client = Some(client.client_id.clone());
                self.limiter
                    .check_client(&client.client_id, now)
                    .map_err(Refusal::RateLimited)?;
                match &client.auth {
                    ClientAuth::Secret(hash) if hash.matches(secret.as_bytes()) => Ok(client),
                    ClientAuth::Secret(_) => Err(Refusal::BadSecret),
                    ClientAuth::Assertion(_) | ClientAuth::MintOnly => Err(Refusal::WrongMethod),
                }
            }
            Credentials::Assertion {
                client_id,
                assertion,
            } => {
                audit.method = Some(AuthMethod::PrivateKeyJwt);
                self.authenticate_assertion(client_id, assertion, now, audit)
                    .await
            }
        }
    }

    async fn authenticate_assertion(
        &self,
        client_id: Option<&str>,
        assertion: &str,
        now: u64,
        audit: &mut Audit,
    ) -> Result<&ClientConfig, Refusal> {
        if assertion.len() > MAX_TOKEN_BYTES {
            return Err(Refusal::AssertionRejected(TokenRejection::TooLarge));
        }
        // The compact JWS alphabet (RFC 7515 §7.1), checked before anything is decoded, as
        // `bearer_token` checks a bearer token's syntax before the Verifier sees it.
        let compact = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
        if !assertion.bytes().all(compact) {
            return Err(Refusal::AssertionRejected(TokenRejection::Malformed));
        }
        let unverified = peek_iss_sub(assertion);
        if let Some((iss, sub)) = &unverified {
            audit.assertion_iss = Some(loggable(iss));
            audit.assertion_sub = Some(loggable(sub));
        }
        // With a client_id, that client; without one (RFC 7523 §3's self-signed form, as
        // authlib sends it), the one client configured for the assertion's issuer and subject.
        // Either way the Verifier then checks iss, aud and the signature under that client's
        // settings, so an unverified claim only picks which checks run.
        let index = match client_id {
            Some(id) => {
                audit.client = Some(loggable(id));
                self.config.clients.iter().position(|c| c.client_id == id)
            }
            None => unverified.as_ref().and_then(|(iss, sub)| {
                self.config.clients.iter().position(|c| {
                    matches!(&c.auth, ClientAuth::Assertion(a) if &a.issuer == iss && &a.subject == sub)
                })
            }),
        };
        let Some(index) = index else {
            return Err(Refusal::UnknownClient);
        };
        let client = &self.config.clients[index];
        audit.client = Some(loggable(&client.client_id));
        audit.known_client = Some(client.client_id.clone());
        self.limiter
            .check_client(&client.client_id, now)
            .map_err(Refusal::RateLimited)?;
        let (ClientAuth::Assertion(expected), Some(verifier)) = (
            &client.auth,
            self.verifiers.get(index).and_then(Option::as_ref),
        ) else {
            return Err(Refusal::WrongMethod);
        };
        let verified = verifier.verify(assertion).await.map_err(|e| match e {
            AuthError::InvalidToken(r) => Refusal::AssertionRejected(r),
            AuthError::KeysUnavailable => Refusal::AssertionKeysUnavailable,
            AuthError::MissingToken
            | AuthError::DuplicateAuthorization
            | AuthError::NoMatchingRule
            | AuthError::OperationDenied => Refusal::AssertionRejected(TokenRejection::Malformed),
        })?;
        let claims = &verified.claims;
        if claims.get("sub").and_then(Value::as_str) != Some(expected.subject.as_str()) {
            return Err(Refusal::WrongSubject);
        }
        audit.assertion_iss = Some(loggable(&expected.issuer));
        audit.assertion_sub = Some(loggable(&expected.subject));
        match claims.get("jti") {
            None => Ok(client),
            Some(Value::String(jti)) => {
                // Remembered until the assertion could no longer pass `exp` with leeway.
                let exp = claims.get("exp").and_then(Value::as_f64).unwrap_or(0.0);
                let until = (exp.max(0.0) as u64).saturating_add(ASSERTION_LEEWAY);
                self.replay
                    .admit(&client.client_id, jti, until, now)
                    .map(|()| client)
                    .map_err(|e| match e {
                        ReplayError::Replayed => Refusal::AssertionReplayed,
                        ReplayError::Full => Refusal::ReplayMemoryFull,
                    })
            }
            Some(_) => Err(Refusal::AssertionRejected(TokenRejection::Malformed)),
        }
    }
}

/// The leeway `Assertion::jwt_config` gives the Verifier, in seconds.
const ASSERTION_LEEWAY: u64 = 30;

/// Which one client-authentication method the request uses (RFC 6749 §2.3: not more than one).
fn credentials<'f>(
    headers: &HeaderMap,
    form: &'f Form,
    audit: &mut Audit,
) -> Result<Credentials<'f>, Refusal> {
    let authorization = form::authorization(headers);
    let body_id = form.get("client_id");
    let body_secret = form.get("client_secret");
    let assertion = form.get("client_assertion");
    let assertion_type = form.get("client_assertion_type");
    if let Some(id) = body_id {
        audit.client = Some(loggable(id));
    }
    if body_id.is_some_and(|id| !is_vschar(id)) || body_secret.is_some_and(|s| !is_vschar(s)) {
        return Err(Refusal::MalformedClientParameter);
    }
    let header_tried = match authorization {
        Authorization::Several => return Err(Refusal::DuplicateAuthorization),
        Authorization::None => false,
        Authorization::Basic { .. } | Authorization::Unusable => true,
    };
    let assertion_tried = assertion.is_some() || assertion_type.is_some();
    let tried = [header_tried, body_secret.is_some(), assertion_tried];
    match tried.iter().filter(|&&t| t).count() {
        0 => return Err(Refusal::NoClientAuthentication),
        1 => {}
        _ => return Err(Refusal::SeveralAuthMethods),
    }
    match (authorization, body_secret, assertion, assertion_type) {
        (Authorization::Basic { id, secret }, None, None, None) => {
            audit.method = Some(AuthMethod::ClientSecretBasic);
            audit.client = Some(loggable(&id));
            if !is_vschar(&id) || !is_vschar(&secret) || id.is_empty() {
                return Err(Refusal::UnusableAuthorization);
            }
            if body_id.is_some_and(|b| b != id) {
                return Err(Refusal::ClientIdMismatch);
            }
            Ok(Credentials::Secret {
                id,
                secret,
                method: AuthMethod::ClientSecretBasic,
            })
        }
        (Authorization::None, Some(secret), None, None) => {
            audit.method = Some(AuthMethod::ClientSecretPost);
            let id = body_id.ok_or(Refusal::MissingClientId)?;
            Ok(Credentials::Secret {
                id: id.to_owned(),
                secret: secret.to_owned(),
                method: AuthMethod::ClientSecretPost,
            })
        }
        (Authorization::None, None, Some(assertion), Some(kind)) => {
            audit.method = Some(AuthMethod::PrivateKeyJwt);
            if kind != JWT_BEARER {
                return Err(Refusal::UnsupportedAssertionType);
            }
            Ok(Credentials::Assertion {
                client_id: body_id,
                assertion,
            })
        }
        (Authorization::None, None, Some(_), None) | (Authorization::None, None, None, Some(_)) => {
            Err(Refusal::IncompleteAssertion)
        }
        // Exactly one method was tried and none of the forms above matched it: an
        // Authorization header that is no usable Basic credential.
        (
            Authorization::Unusable
            | Authorization::Basic { .. }
            | Authorization::None
            | Authorization::Several,
            _,
            _,
            _,
        ) => Err(Refusal::UnusableAuthorization),
    }
}

/// RFC 6749 §3.3: the requested space-delimited scopes, each granted to the client; absent
/// (or empty, which §3.2 makes the same) means every scope the client has. The answer lists
/// them in the client's configured order, once each.
fn granted_scope(client: &ClientConfig, requested: Option<&str>) -> Result<String, Refusal> {
    let Some(requested) = requested else {
        return Ok(client.scope.join(" "));
    };
    let mut wanted = Vec::new();
    // `split(' ')`, not `split_whitespace`: the grammar is single spaces between tokens, so
    // a tab, a leading or trailing space or two spaces in a row is malformed.
    for token in requested.split(' ') {
        if !is_scope_token(token) || !client.scope.iter().any(|s| s == token) {
            return Err(Refusal::InvalidScope);
        }
        wanted.push(token);
    }
    let granted: Vec<&str> = client
        .scope
        .iter()
        .map(String::as_str)
        .filter(|s| wanted.contains(s))
        .collect();
    Ok(granted.join(" "))
}

/// The assertion's `iss` and `sub` before verification: for choosing the client when no
/// `client_id` is sent, and for the audit line. Trusted for nothing else.
fn peek_iss_sub(assertion: &str) -> Option<(String, String)> {
    let payload = assertion.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims = parse_object(&bytes)?;
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
    Some((text("iss")?, text("sub")?))
}

#[cfg(test)]
mod tests;
