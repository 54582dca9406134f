//! `[[issuer.clients]]`: who may get tokens, how each proves itself, what its tokens say.

use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest::{SHA256, digest};
use http::Uri;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::{RESERVED_CLAIMS, RawAssertion, RawClient, Sink, Tenancy, claims_object, secure_url};
use crate::config::JwtConfig;

/// Signature algorithms an assertion may use. Asymmetric only: the keys come from a public
/// JWKS, so an HMAC "key" would be public (RFC 8725 §3.1). Entra signs RS256.
pub const ASSERTION_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];
/// Entra's assertions live about 65 minutes (`exp - iat` = 3,900 s in Microsoft's example);
/// two hours admits them with room, and refuses the long-lived tokens an assertion must not be.
pub const MAX_ASSERTION_LIFETIME: Duration = Duration::from_secs(2 * 3600);
/// RFC 6749 Appendix A.1 puts no bound on a client id; config-file ids beyond this are mistakes.
const MAX_CLIENT_ID_BYTES: usize = 255;

/// One validated client.
#[derive(Debug)]
pub struct ClientConfig {
    /// `sub` and `client_id` of its tokens; VSCHAR only (RFC 6749 Appendix A.1).
    pub client_id: String,
    /// Scopes it may ask for, in configured order; at least one.
    pub scope: Vec<String>,
    /// Stamped into every token it gets; never a registered claim.
    pub claims: Map<String, Value>,
    pub auth: ClientAuth,
    /// Tokens issued to it before this (Unix seconds) are refused; the endpoint refuses it
    /// tokens until then.
    pub not_before: Option<u64>,
    /// With `[[tenants]]`: the one tenant its tokens are for.
    pub tenant: Option<String>,
}

/// How a client proves itself at the token endpoint.
#[derive(Debug)]
pub enum ClientAuth {
    /// `client_secret_basic` or `client_secret_post` (RFC 6749 §2.3.1), against this hash.
    Secret(SecretHash),
    /// `client_assertion` (RFC 7523 §2.2): a JWT from another issuer.
    Assertion(Assertion),
    /// Neither configured: the client never authenticates at the endpoint; its tokens come
    /// only from `scimgate token mint` (Okta, static-token clients).
    MintOnly,
}

/// SHA-256 of a client secret. The secret itself is never in the config.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHash([u8; 32]);

/// Who signs a client's assertions and what they must say.
#[derive(Debug, Clone)]
pub struct Assertion {
    /// `iss`, exactly (Entra: `https://login.microsoftonline.com/<tid>/v2.0`).
    pub issuer: String,
    pub jwks_url: Uri,
    /// `sub`, exactly (Entra: the workload identity's object id).
    pub subject: String,
    /// `aud`, exactly (Entra: `api://<appid>`).
    pub audience: String,
}

// === impl SecretHash ===

impl SecretHash {
    /// Whether `secret` hashes to this value. Both sides are 32 bytes by then, compared in
    /// constant time, so neither the length nor a prefix of the secret shows in the timing.
    pub fn matches(&self, secret: &[u8]) -> bool {
        verify_slices_are_equal(digest(&SHA256, secret).as_ref(), &self.0).is_ok()
    }

    /// A hash no secret is known to match, to spend the same work on an unknown client id.
    pub(crate) fn decoy() -> Self {
        Self([0; 32])
    }

    /// From 64 hex digits (either case).
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            let digit = |c: u8| char::from(c).to_digit(16);
            *byte = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
        }
        Some(Self(out))
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(<redacted>)")
    }
}

// === impl Assertion ===

impl Assertion {
    /// The `[jwt]`-shaped settings under which the bearer-token `Verifier` checks this
    /// client's assertions: keys from `jwks_url`, asymmetric algorithms, `exp` required, `iss`
    /// and `aud` exact, a lifetime that admits Entra's. No validated-token cache: every
    /// assertion is verified in full (and its `jti` remembered), never served from a cache.
    pub fn jwt_config(&self) -> JwtConfig {
        JwtConfig {
            jwks_url: Some(self.jwks_url.clone()),
            ca_file: None,
            issuer: Some(self.issuer.clone()),
            audience: vec![self.audience.clone()],
            algorithms: ASSERTION_ALGORITHMS.to_vec(),
            leeway: Duration::from_secs(30),
            max_lifetime: MAX_ASSERTION_LIFETIME,
            refresh_interval: Duration::from_secs(300),
            min_refresh_interval: Duration::from_secs(60),
            refetch_cooldown: Duration::from_secs(30),
            max_stale: Duration::from_secs(24 * 3600),
            token_cache_size: 0,
        }
    }
}

/// RFC 6749 Appendix A: VSCHAR = %x20-7E.
pub(crate) fn is_vschar(text: &str) -> bool {
    text.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// RFC 6749 §3.3: scope-token = 1*NQCHAR, NQCHAR = %x21 / %x23-5B / %x5D-7E.
pub(crate) fn is_scope_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// Every `[[issuer.clients]]` entry; `url` is the issuer's own (an assertion must not name it).
pub(super) fn clients(
    s: &mut Sink<'_>,
    raw: &[RawClient],
    url: Option<&str>,
    tenancy: Tenancy<'_>,
) -> Vec<ClientConfig> {
    if raw.is_empty() {
        s.warn("no [[issuer.clients]]: the token endpoint refuses every request");
    }
    let mut out: Vec<ClientConfig> = Vec::new();
    for (i, c) in raw.iter().enumerate() {
        let path = format!("clients[{i}]");
        let Some(client) = client(s, &path, c, url, tenancy) else {
            continue;
        };
        if out.iter().any(|o| o.client_id == client.client_id) {
            s.problem(
                format!("{path}.client_id"),
                format!("duplicate client_id {:?}", client.client_id),
            );
        }
        if let ClientAuth::Assertion(a) = &client.auth
            && out.iter().any(|o| {
                matches!(&o.auth, ClientAuth::Assertion(b) if b.issuer == a.issuer && b.subject == a.subject)
            })
        {
            // An assertion without client_id is matched to its client by (iss, sub): one pair,
            // one client.
            s.problem(
                format!("{path}.assertion"),
                "another client already accepts assertions with this issuer and subject",
            );
        }
        out.push(client);
    }
    out
}

fn client(
    s: &mut Sink<'_>,
    path: &str,
    raw: &RawClient,
    url: Option<&str>,
    tenancy: Tenancy<'_>,
) -> Option<ClientConfig> {
    let client_id = match raw.client_id.as_deref() {
        None | Some("") => {
            s.problem(format!("{path}.client_id"), "required");
            None
        }
        Some(id) if !is_vschar(id) || id.len() > MAX_CLIENT_ID_BYTES => {
            s.problem(
                format!("{path}.client_id"),
                "printable ASCII only (RFC 6749 Appendix A.1), at most 255 characters",
            );
            None
        }
        Some(id) => Some(id.to_owned()),
    };
    let scope = scopes(s, path, &raw.scope);
    claims(s, path, raw);
    let auth = match (&raw.secret_sha256, &raw.assertion) {
        (Some(_), Some(_)) => {
            s.problem(
                path,
                "set one of secret_sha256 and assertion, not both (one authentication method per client)",
            );
            None
        }
        (Some(hex), None) => {
            let hash = SecretHash::from_hex(hex);
            if hash.is_none() {
                s.problem(
                    format!("{path}.secret_sha256"),
                    "must be 64 hex digits: the SHA-256 of the secret (printf %s \"$SECRET\" | sha256sum)",
                );
            }
            hash.map(ClientAuth::Secret)
        }
        (None, Some(a)) => {
            assertion(s, &format!("{path}.assertion"), a, url).map(ClientAuth::Assertion)
        }
        (None, None) => Some(ClientAuth::MintOnly),
    };
    let not_before = raw.not_before.as_deref().and_then(|text| {
        let parsed = humantime::parse_rfc3339(text)
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok());
        if parsed.is_none() {
            s.problem(
                format!("{path}.not_before"),
                format!("{text:?} is not an RFC 3339 UTC time like \"2026-12-01T00:00:00Z\""),
            );
        }
        parsed.map(|d| d.as_secs())
    });
    let tenant = tenant(s, path, raw.tenant.as_deref(), tenancy);
    Some(ClientConfig {
        client_id: client_id?,
        scope,
        claims: claims_object(&raw.claims),
        auth: auth?,
        not_before,
        tenant,
    })
}

fn scopes(s: &mut Sink<'_>, path: &str, raw: &[String]) -> Vec<String> {
    if raw.is_empty() {
        s.problem(
            format!("{path}.scope"),
            "list at least one scope the client may ask for (e.g. [\"scim\"])",
        );
    }
    let mut out: Vec<String> = Vec::new();
    for (i, scope) in raw.iter().enumerate() {
        if !is_scope_token(scope) {
            s.problem(
                format!("{path}.scope[{i}]"),
                format!("{scope:?} is not an OAuth scope token (printable ASCII without space, \" or \\)"),
            );
        } else if out.contains(scope) {
            s.problem(
                format!("{path}.scope[{i}]"),
                format!("duplicate scope {scope:?}"),
            );
        } else {
            out.push(scope.clone());
        }
    }
    out
}

fn claims(s: &mut Sink<'_>, path: &str, raw: &RawClient) {
    for (name, value) in &raw.claims {
        let key = format!("{path}.claims.{name}");
        if name.is_empty() {
            s.problem(key, "claim names must not be empty");
        } else if RESERVED_CLAIMS.contains(&name.as_str()) {
            s.problem(
                key,
                format!("{name:?} is set by the issuer itself (or carries meaning beyond a rule match) and cannot be configured"),
            );
        } else if contains_null(value) {
            s.problem(key, "a value JSON cannot carry (null, NaN or infinity)");
        }
    }
}

fn contains_null(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.iter().any(contains_null),
        Value::Object(members) => members.values().any(contains_null),
        Value::Bool(_) | Value::Number(_) | Value::String(_) => false,
    }
}

fn assertion(
    s: &mut Sink<'_>,
    path: &str,
    raw: &RawAssertion,
    url: Option<&str>,
) -> Option<Assertion> {
    let mut required = |name: &str, value: &Option<String>| match value.as_deref() {
        None | Some("") => {
            s.problem(format!("{path}.{name}"), "required");
            None
        }
        Some(v) => Some(v.to_owned()),
    };
    let issuer = required("issuer", &raw.issuer);
    let subject = required("subject", &raw.subject);
    let audience = required("audience", &raw.audience);
    let jwks = required("jwks_url", &raw.jwks_url);
    let jwks_url = jwks.and_then(|text| secure_url(s, &format!("{path}.jwks_url"), &text));
    if let (Some(iss), Some(own)) = (&issuer, url)
        && iss.trim_end_matches('/') == own.trim_end_matches('/')
    {
        // Otherwise a token scimgate issued would buy the next one, forever.
        s.problem(
            format!("{path}.issuer"),
            "must not be issuer.url: scimgate's own tokens are no client assertion",
        );
        return None;
    }
    Some(Assertion {
        issuer: issuer?,
        jwks_url: jwks_url?,
        subject: subject?,
        audience: audience?,
    })
}

fn tenant(s: &mut Sink<'_>, path: &str, raw: Option<&str>, tenancy: Tenancy<'_>) -> Option<String> {
    let key = format!("{path}.tenant");
    match (tenancy, raw) {
        (Tenancy::Single, None) => None,
        (Tenancy::Single, Some(_)) => {
            s.problem(key, "only with [[tenants]]: this config has one tenant");
            None
        }
        (Tenancy::Named(_), None) => {
            s.problem(
                key,
                "required with [[tenants]]: the one tenant this client's tokens are for",
            );
            None
        }
        (Tenancy::Named(names), Some(name)) if names.iter().any(|n| n == name) => {
            Some(name.to_owned())
        }
        (Tenancy::Named(names), Some(name)) => {
            s.problem(
                key,
                format!("no tenant named {name:?} (tenants: {})", names.join(", ")),
            );
            None
        }
    }
}
