//! Header hygiene (threats T20–T24): what the caller sends never speaks for us.

use std::net::{IpAddr, Ipv4Addr};

use http::header::AUTHORIZATION;

use super::*;
use crate::config::SecretSource;

fn account(header: &'static str, value: &'static str) -> ServiceAccount {
    ServiceAccount {
        name: "sa".into(),
        header: HeaderName::from_static(header),
        value: HeaderValue::from_static(value),
        scheme: None,
        source: SecretSource::Env("K".into()),
        key: crate::config::Secret::new("k"),
        screen: std::sync::Arc::new(crate::screen::KeyScreen::new(b"k")),
    }
}

fn request_headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn forwarding() -> Forwarding {
    Forwarding {
        forwarded_for: forwarded_for(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7))),
        https: false,
        host: Some(HeaderValue::from_static("gateway.example")),
        request_id: HeaderValue::from_static("rid-1"),
    }
}

#[test]
fn strips_credentials_in_every_spelling_then_sets_ours() {
    let key = account("x-api-key", "SENTINEL");
    let other = account("authorization", "Bearer OTHER");
    let _ = other;
    let policy = HeaderPolicy::new(&[]);
    let mut h = request_headers(&[
        ("authorization", "Bearer caller.jwt.token"),
        ("proxy-authorization", "Basic x"),
        ("x-api-key", "caller-key"),
        ("X_Api_Key", "caller-key-2"),
        ("x-forwarded-for", "6.6.6.6"),
        ("X_Forwarded_For", "6.6.6.6"),
        ("forwarded", "for=evil"),
        ("x-http-method-override", "DELETE"),
        ("connection", "close, x-custom, X_Other"),
        ("x-custom", "hop"),
        ("x-other", "hop"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
        ("upgrade", "h2c"),
        ("host", "attacker"),
        ("content-length", "5"),
        ("accept", "application/scim+json"),
        ("if-match", "W/\"1\""),
        // Other systems' identity and override headers: no list of them is complete, so the
        // allow-list drops every one it does not name.
        ("x-auth-request-user", "admin"),
        ("x-auth-request-groups", "admins"),
        ("x-remote-group", "admins"),
        ("x-webauth-user", "admin"),
        ("x-goog-iap-jwt-assertion", "x"),
        ("x-amzn-oidc-identity", "admin"),
        ("x-ms-client-principal-name", "admin"),
        ("x-scim-operation", "read"),
        ("x-original-method", "GET"),
        ("x-original-uri", "/Users"),
        ("true-client-ip", "127.0.0.1"),
        ("cookie", "session=1"),
        ("expect", "100-continue"),
        ("accept-encoding", "gzip"),
        ("content-encoding", "gzip"),
    ]);
    let mut dropped = Vec::new();
    policy.strip_request(&mut h, Some(&mut dropped));
    assert!(dropped.iter().any(|n| n == "x-webauth-user"), "{dropped:?}");
    set_upstream_headers(&mut h, &key, &forwarding());
    let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
    assert_eq!(
        h.get_all("x-api-key").iter().collect::<Vec<_>>(),
        vec!["SENTINEL"]
    );
    assert!(h.get(AUTHORIZATION).is_none(), "{names:?}");
    assert_eq!(h["x-forwarded-for"], "10.0.0.7");
    assert_eq!(h["x-forwarded-host"], "gateway.example");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-request-id"], "rid-1");
    assert_eq!(h["accept"], "application/scim+json");
    assert_eq!(h["if-match"], "W/\"1\"");
    for gone in [
        "proxy-authorization",
        "x_api_key",
        "x_forwarded_for",
        "forwarded",
        "x-http-method-override",
        "connection",
        "x-custom",
        "x-other",
        "keep-alive",
        "te",
        "upgrade",
        "host",
        "content-length",
        "x-auth-request-user",
        "x-auth-request-groups",
        "x-remote-group",
        "x-webauth-user",
        "x-goog-iap-jwt-assertion",
        "x-amzn-oidc-identity",
        "x-ms-client-principal-name",
        "x-scim-operation",
        "x-original-method",
        "x-original-uri",
        "true-client-ip",
        "cookie",
        "expect",
        "content-encoding",
    ] {
        assert!(!names.contains(&gone), "{gone} survived: {names:?}");
    }
    assert_eq!(h["accept-encoding"], "identity");
}

#[test]
fn operator_listed_headers_are_forwarded_unless_nominated() {
    let key = account("x-api-key", "SENTINEL");
    let policy = HeaderPolicy::new(&[HeaderName::from_static("x-tenant-hint")]);
    let mut h = request_headers(&[("x-tenant-hint", "eu"), ("x-other-hint", "us")]);
    policy.strip_request(&mut h, None);
    set_upstream_headers(&mut h, &key, &forwarding());
    assert_eq!(h["x-tenant-hint"], "eu");
    assert!(!h.contains_key("x-other-hint"));
    let mut h = request_headers(&[("x-tenant-hint", "eu"), ("connection", "X_Tenant_Hint")]);
    policy.strip_request(&mut h, None);
    assert!(!h.contains_key("x-tenant-hint"));
}

#[test]
fn connection_cannot_remove_our_credential() {
    let key = account("authorization", "Bearer SENTINEL");
    let policy = HeaderPolicy::new(&[]);
    let mut h = request_headers(&[("connection", "authorization, x-forwarded-for, x-request-id")]);
    policy.strip_request(&mut h, None);
    set_upstream_headers(&mut h, &key, &forwarding());
    assert_eq!(h.get_all(AUTHORIZATION).iter().count(), 1);
    assert_eq!(h[AUTHORIZATION], "Bearer SENTINEL");
    assert!(h.contains_key("x-forwarded-for") && h.contains_key("x-request-id"));
}

#[test]
fn stripping_is_idempotent() {
    let policy = HeaderPolicy::new(&[HeaderName::from_static("x-a")]);
    let mut once = request_headers(&[
        ("connection", "x-a"),
        ("x-a", "1"),
        ("accept", "2"),
        ("X_API_KEY", "k"),
    ]);
    policy.strip_request(&mut once, None);
    let mut twice = once.clone();
    policy.strip_request(&mut twice, None);
    assert_eq!(once, twice);
    assert_eq!(once.len(), 1);
}

#[test]
fn response_hop_by_hop_removed() {
    let h = request_headers(&[
        ("connection", "x-secret-hop"),
        ("x-secret-hop", "1"),
        ("transfer-encoding", "chunked"),
        ("etag", "W/\"2\""),
        ("location", "http://gateway.example/Users/1"),
    ]);
    assert_eq!(kept_by_strip_response(h), ["etag", "location"]);
}

/// The field names `strip_response` leaves, sorted.
fn kept_by_strip_response(mut h: HeaderMap) -> Vec<String> {
    strip_response(&mut h);
    let mut kept: Vec<String> = h.keys().map(|n| n.as_str().to_owned()).collect();
    kept.sort_unstable();
    kept
}

#[test]
fn request_ids_are_kept_only_when_well_formed() {
    let keep = request_headers(&[("x-request-id", "abc-123_x.y:z")]);
    assert_eq!(request_id(&keep), "abc-123_x.y:z");
    for bad in ["has space", "", &"x".repeat(129), "quote\"d"] {
        let h = request_headers(&[("x-request-id", bad)]);
        let id = request_id(&h);
        assert_ne!(id, bad);
        assert_eq!(id.len(), 32);
    }
    let two = request_headers(&[("x-request-id", "a"), ("x-request-id", "b")]);
    assert_eq!(request_id(&two).len(), 32);
}

#[test]
fn fresh_request_ids_are_unique_hex_and_share_the_process_half() {
    let ids: Vec<String> = (0..10_000)
        .map(|_| fresh_request_id().to_str().unwrap().to_owned())
        .collect();
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len());
    for id in &ids {
        assert_eq!(id.len(), 32);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(id[..16], ids[0][..16], "one random prefix per process");
    }
    // Consecutive counters do not read as consecutive ids.
    let tail = |i: usize| u64::from_str_radix(&ids[i][16..], 16).unwrap();
    assert!((1..100).all(|i| tail(i).abs_diff(tail(i - 1)) > 1));
}

#[test]
fn connection_tokens_match_whatever_their_case_and_spacing() {
    let mut h = request_headers(&[
        ("connection", "Keep-Alive ,  X_Trace"),
        ("connection", "close"),
        ("keep-alive", "timeout=5"),
        ("x-trace", "1"),
        ("x-tracer", "kept: a longer name is another field"),
        ("etag", "\"v1\""),
    ]);
    strip_response(&mut h);
    let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, vec!["etag", "x-tracer"]);
}

#[test]
fn forwarded_for_carries_the_full_peer_address() {
    let key = account("x-api-key", "SENTINEL");
    for (ip, text) in [
        (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)), "10.0.0.7"),
        (
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
                .parse()
                .unwrap(),
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ),
        ("2001:db8::1".parse().unwrap(), "2001:db8::1"),
    ] {
        let mut h = HeaderMap::new();
        let fwd = Forwarding {
            forwarded_for: forwarded_for(ip),
            ..forwarding()
        };
        set_upstream_headers(&mut h, &key, &fwd);
        assert_eq!(h["x-forwarded-for"], text);
    }
}

#[test]
fn many_doomed_fields_are_all_removed() {
    // More than fit in `Doomed`'s inline slots, from every rule at once.
    let mut pairs: Vec<(String, String)> = (0..6)
        .map(|i| (format!("x-forwarded-n{i}"), "v".to_owned()))
        .collect();
    pairs.extend((0..3).map(|i| (format!("x_user_{i}"), "v".to_owned())));
    pairs.push(("connection".into(), "x-a, X_B, keep-alive".into()));
    pairs.extend(
        [
            ("x-a", "1"),
            ("x-b", "2"),
            ("te", "trailers"),
            ("keep-alive", "5"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    pairs.push(("x-kept".into(), "yes".into()));
    pairs.push(("accept".into(), "yes".into()));
    let borrowed: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut h = request_headers(&borrowed);
    HeaderPolicy::new(&[HeaderName::from_static("x-kept")]).strip_request(&mut h, None);
    assert_eq!(
        h.keys().map(HeaderName::as_str).collect::<Vec<_>>(),
        ["accept", "x-kept"]
    );

    let mut h = request_headers(&borrowed);
    strip_response(&mut h);
    let kept: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
    for gone in ["connection", "x-a", "x-b", "te", "keep-alive"] {
        assert!(!kept.contains(&gone), "{gone} kept in {kept:?}");
    }
    assert!(kept.contains(&"x-kept") && kept.contains(&"x-forwarded-n5"));
}

#[test]
fn usual_connection_values_nominate_only_themselves() {
    let names = |connection: &str| {
        kept_by_strip_response(request_headers(&[
            ("connection", connection),
            ("keep-alive", "timeout=5"),
            ("close", "1"),
            ("x-other", "1"),
        ]))
        .join(" ")
    };
    assert_eq!(names("Keep-Alive"), "close x-other");
    assert_eq!(names("close"), "x-other");
    assert_eq!(names(" CLOSE , keep-alive "), "x-other");
    assert_eq!(names("keep-alive, X-Other"), "close");
}

#[test]
fn echoed_key_headers_are_removed_whatever_else_they_carry() {
    let key = b"sk-live-0123456789abcdef";
    let mut h = request_headers(&[
        ("x-debug-auth", "Bearer sk-live-0123456789abcdef"),
        ("x-echo", "prefix sk-live-0123456789abcdef suffix"),
        ("x-near-miss", "sk-live-0123456789abcde"),
        ("etag", "W/\"2\""),
        ("content-type", "application/scim+json"),
    ]);
    h.append("x-multi", HeaderValue::from_static("harmless"));
    h.append(
        "x-multi",
        HeaderValue::from_static("sk-live-0123456789abcdef"),
    );
    crate::screen::KeyScreen::new(key).strip_headers(&mut h);
    let mut kept: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
    kept.sort_unstable();
    assert_eq!(kept, ["content-type", "etag", "x-near-miss"]);
    // An empty key (no credential configured) removes nothing.
    let mut h = request_headers(&[("x-a", "anything")]);
    crate::screen::KeyScreen::new(b"").strip_headers(&mut h);
    assert_eq!(h.len(), 1);
}
