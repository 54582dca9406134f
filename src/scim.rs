//! SCIM protocol pieces: the error response body (RFC 7644 §3.12).

use bytes::Bytes;
use http::StatusCode;

/// Media type of every SCIM message (RFC 7644 §3.1).
pub const CONTENT_TYPE: &str = "application/scim+json";
/// Schema URI of a SCIM error message.
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// `{"schemas":[…Error],"status":"401","detail":"…"}`; `status` is a string per RFC 7644 §3.12.
pub fn error_body(status: StatusCode, detail: &str) -> Bytes {
    let body = serde_json::json!({
        "schemas": [ERROR_SCHEMA],
        "status": status.as_str(),
        "detail": detail,
    });
    Bytes::from(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_a_string() {
        let body: serde_json::Value =
            serde_json::from_slice(&error_body(StatusCode::FORBIDDEN, "no")).unwrap();
        assert_eq!(body["status"], "403");
        assert_eq!(body["schemas"][0], ERROR_SCHEMA);
        assert_eq!(body["detail"], "no");
    }
}
