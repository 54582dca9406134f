//! Where the keys are: `jwt.jwks_url`, or the `jwks_uri` of the issuer's discovery document.
//!
//! OpenID Connect Discovery 1.0 §4 (`<issuer>/.well-known/openid-configuration`), falling back to
//! RFC 8414 §3 (`/.well-known/oauth-authorization-server` inserted before the issuer's path). The
//! document's `issuer` must equal the configured one exactly (OIDC Discovery §4.3), so a
//! discovery response cannot point us at another issuer's keys.

use http::Uri;
use serde_json::Value;

use super::fetch::{self, FetchError};
use crate::config::{JwtConfig, is_loopback};
use crate::tls::TlsError;

const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// Why the key location could not be determined.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("discovery for issuer {issuer} failed: {reason}")]
    Failed { issuer: String, reason: String },
}

/// The JWKS URL to use: configured, or discovered from the issuer.
pub async fn jwks_url(config: &JwtConfig) -> Result<Uri, DiscoveryError> {
    if let Some(url) = &config.jwks_url {
        return Ok(url.clone());
    }
    let issuer = config.issuer.as_deref().unwrap_or_default();
    let fail = |reason: String| DiscoveryError::Failed {
        issuer: issuer.to_owned(),
        reason,
    };
    // Building the client reads `ca_file`: off the runtime, which may be serving requests.
    let ca_file = config.ca_file.clone();
    let client = tokio::task::spawn_blocking(move || fetch::client(ca_file.as_deref()))
        .await
        .map_err(|e| fail(format!("building the client failed: {e}")))??;
    let mut reasons = Vec::new();
    for url in document_urls(issuer) {
        let Ok(uri) = url.parse::<Uri>() else {
            return Err(fail(format!(
                "cannot build a discovery URL from {issuer:?}"
            )));
        };
        match fetch::get(&client, &uri, "application/json", None, MAX_DOCUMENT_BYTES).await {
            Ok(doc) if doc.status == http::StatusCode::OK => {
                let found =
                    jwks_uri_from(&doc.body, issuer).map_err(|e| fail(format!("{url}: {e}")))?;
                tracing::info!(issuer, jwks_url = %found, document = %url, "JWKS URL discovered");
                return Ok(found);
            }
            Ok(doc) => reasons.push(format!("{url}: HTTP {}", doc.status.as_u16())),
            Err(e) => reasons.push(format!("{url}: {e}")),
        }
    }
    Err(fail(reasons.join("; ")))
}

/// The OIDC location first, then the RFC 8414 one.
fn document_urls(issuer: &str) -> Vec<String> {
    let trimmed = issuer.trim_end_matches('/');
    let oidc = format!("{trimmed}/.well-known/openid-configuration");
    let oauth = match trimmed.find("://").map(|i| i + 3) {
        Some(start) => match trimmed[start..].find('/') {
            Some(slash) => {
                let (origin, path) = trimmed.split_at(start + slash);
                format!("{origin}/.well-known/oauth-authorization-server{path}")
            }
            None => format!("{trimmed}/.well-known/oauth-authorization-server"),
        },
        None => return vec![oidc],
    };
    vec![oidc, oauth]
}

fn jwks_uri_from(body: &[u8], issuer: &str) -> Result<Uri, FetchError> {
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| FetchError::Invalid(e.to_string()))?;
    match doc.get("issuer").and_then(Value::as_str) {
        Some(found) if found == issuer => {}
        Some(found) => {
            return Err(FetchError::Invalid(format!(
                "document names issuer {found:?}, expected {issuer:?}"
            )));
        }
        None => return Err(FetchError::Invalid("no issuer in the document".into())),
    }
    let text = doc
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or(FetchError::Invalid("no jwks_uri".into()))?;
    let uri: Uri = text
        .parse()
        .map_err(|_| FetchError::Invalid(format!("jwks_uri {text:?} is not a URL")))?;
    let secure = uri.scheme_str() == Some("https")
        || (uri.scheme_str() == Some("http") && uri.host().is_some_and(is_loopback));
    if !secure {
        return Err(FetchError::Invalid(format!(
            "jwks_uri {text:?} must use https"
        )));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_document_locations() {
        assert_eq!(
            document_urls("https://idp.example.com"),
            vec![
                "https://idp.example.com/.well-known/openid-configuration",
                "https://idp.example.com/.well-known/oauth-authorization-server"
            ]
        );
        assert_eq!(
            document_urls("https://idp.example.com/tenant/v2/"),
            vec![
                "https://idp.example.com/tenant/v2/.well-known/openid-configuration",
                "https://idp.example.com/.well-known/oauth-authorization-server/tenant/v2"
            ]
        );
    }

    #[test]
    fn document_must_name_our_issuer_and_an_https_jwks_uri() {
        let doc = |iss: &str, jwks: &str| format!(r#"{{"issuer":"{iss}","jwks_uri":"{jwks}"}}"#);
        let ok = jwks_uri_from(doc("https://a", "https://a/keys").as_bytes(), "https://a").unwrap();
        assert_eq!(ok.to_string(), "https://a/keys");
        assert!(
            jwks_uri_from(
                doc("https://evil", "https://a/keys").as_bytes(),
                "https://a"
            )
            .is_err()
        );
        assert!(
            jwks_uri_from(doc("https://a/", "https://a/keys").as_bytes(), "https://a").is_err()
        );
        assert!(jwks_uri_from(doc("https://a", "http://a/keys").as_bytes(), "https://a").is_err());
        assert!(jwks_uri_from(br#"{"issuer":"https://a"}"#, "https://a").is_err());
    }
}
