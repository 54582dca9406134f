//! The request, the client secret methods and the scope: each way around them refused.

use super::*;

#[tokio::test]
async fn client_secret_basic_and_post_get_tokens() {
    let f = fixture().await;
    let sent = f
        .basic("script", SECRET, "grant_type=client_credentials")
        .await;
    assert_eq!(sent.response.status, StatusCode::OK, "{}", sent.json);
    assert_eq!(sent.response.outcome, TokenOutcome::Issued);
    assert_eq!(sent.json["token_type"], "Bearer");
    assert_eq!(sent.json["expires_in"], 3600);
    assert_eq!(
        sent.json["scope"], "scim scim.read",
        "no scope asked: the client's full list"
    );
    let claims = f.verify_issued(&sent).await;
    assert_eq!(claims["sub"], "script");
    assert_eq!(claims["client_id"], "script");
    assert_eq!(claims["aud"], "https://s.example");

    let post = f
        .post(
            &[],
            &format!(
                "grant_type=client_credentials&client_id=script&client_secret={SECRET}&scope=scim"
            ),
        )
        .await;
    assert_eq!(post.response.status, StatusCode::OK, "{}", post.json);
    assert_eq!(post.json["scope"], "scim");
    assert_ne!(
        post.json["access_token"], sent.json["access_token"],
        "a fresh jti each time"
    );

    // Equivalent spellings of the same id are the same id; the Basic id may be repeated in
    // the body.
    let encoded = f
        .basic(
            "scr%69pt",
            SECRET,
            "grant_type=client_credentials&client_id=script",
        )
        .await;
    assert_eq!(encoded.response.status, StatusCode::OK, "{}", encoded.json);
}

#[tokio::test]
async fn secrets_are_compared_exactly() {
    let f = fixture().await;
    let mut near = SECRET.as_bytes().to_vec();
    *near.last_mut().unwrap() ^= 1;
    let near = String::from_utf8(near).unwrap();
    let grant = "grant_type=client_credentials";
    for (id, secret, expected, what) in [
        ("script", near.as_str(), Refusal::BadSecret, "one byte off"),
        (
            "script",
            &SECRET[..SECRET.len() - 1],
            Refusal::BadSecret,
            "a prefix",
        ),
        (
            "script",
            &format!("{SECRET}x"),
            Refusal::BadSecret,
            "an extension",
        ),
        ("script", "", Refusal::BadSecret, "empty"),
        (
            "Script",
            SECRET,
            Refusal::UnknownClient,
            "the id in another case",
        ),
        (
            "script+",
            SECRET,
            Refusal::UnknownClient,
            "the id with a trailing space",
        ),
        (
            "nobody",
            SECRET,
            Refusal::UnknownClient,
            "an unknown client",
        ),
        ("okta", SECRET, Refusal::WrongMethod, "a mint-only client"),
        (
            "entra-wif",
            SECRET,
            Refusal::WrongMethod,
            "an assertion client",
        ),
    ] {
        assert_invalid_client(&f.basic(id, secret, grant).await, what);
        let post = format!("{grant}&client_id={id}&client_secret={secret}");
        let sent = f.post(&[], &post).await;
        if secret.is_empty() {
            // RFC 6749 §3.2: an empty client_secret is no client_secret.
            assert_invalid_client(&sent, "post without a secret");
        } else {
            assert_invalid_client(&sent, what);
            assert_eq!(f.refusal(&post).await, expected, "{what}");
        }
    }
    // A NUL or other control byte in the id is no client id at all.
    for id in ["script%00", "script%0a", "scr%C3%AFpt", "%FFscript"] {
        let sent = f
            .post(
                &[],
                &format!("{grant}&client_id={id}&client_secret={SECRET}"),
            )
            .await;
        assert_eq!(
            sent.response.status,
            StatusCode::BAD_REQUEST,
            "{id}: {}",
            sent.json
        );
    }
    assert_invalid_client(
        &f.basic("script%00", SECRET, grant).await,
        "NUL in the Basic id",
    );
}

/// RFC 6749 §2.3: one authentication method per request.
#[tokio::test]
async fn exactly_one_authentication_method() {
    let f = fixture().await;
    let grant = "grant_type=client_credentials";
    let assertion = f.selfsigned_assertion("j-both");
    let jwt_bearer = format!(
        "client_assertion_type={}&client_assertion={assertion}",
        JWT_BEARER.replace(':', "%3A")
    );
    let cases = [
        (
            Some(basic("script", SECRET)),
            format!("{grant}&client_secret={SECRET}"),
            "Basic and client_secret",
        ),
        (
            Some(basic("script", SECRET)),
            format!("{grant}&client_id=script&client_secret={SECRET}"),
            "Basic and post",
        ),
        (
            Some(basic("script", SECRET)),
            format!("{grant}&{jwt_bearer}"),
            "Basic and an assertion",
        ),
        (
            None,
            format!("{grant}&client_id=script&client_secret={SECRET}&{jwt_bearer}"),
            "post and an assertion",
        ),
        (
            Some("Bearer abc".to_owned()),
            format!("{grant}&client_id=script&client_secret={SECRET}"),
            "another scheme and post",
        ),
    ];
    for (authorization, body, what) in cases {
        let headers: Vec<(&str, &str)> = authorization
            .iter()
            .map(|a| ("authorization", a.as_str()))
            .collect();
        let sent = f.post(&headers, &body).await;
        assert_refused(&sent, StatusCode::BAD_REQUEST, "invalid_request", what);
        assert_eq!(
            sent.json["error_description"],
            "use exactly one client authentication method"
        );
    }
    let mismatch = f
        .basic("script", SECRET, &format!("{grant}&client_id=entra-wif"))
        .await;
    assert_refused(
        &mismatch,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "client_id names another client",
    );
    let two = f
        .post(
            &[
                ("authorization", &basic("script", SECRET)),
                ("authorization", &basic("script", SECRET)),
            ],
            grant,
        )
        .await;
    assert_refused(
        &two,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "two Authorization headers",
    );
    assert_invalid_client(&f.post(&[], grant).await, "no authentication");
    assert_invalid_client(
        &f.post(&[], &format!("{grant}&client_id=script")).await,
        "an id alone",
    );
    assert_invalid_client(
        &f.post(&[("authorization", "Bearer abc")], grant).await,
        "a bearer token",
    );
    assert_invalid_client(
        &f.post(&[("authorization", "Basic !!")], grant).await,
        "bad base64",
    );
    let no_id = f
        .post(&[], &format!("{grant}&client_secret={SECRET}"))
        .await;
    assert_refused(
        &no_id,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "a secret without an id",
    );
}

#[tokio::test]
async fn the_request_itself() {
    let f = fixture().await;
    let auth = basic("script", SECRET);
    let get = f
        .send(Method::GET, &[("authorization", &auth)], "", fresh_peer())
        .await;
    assert_refused(
        &get,
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        "GET",
    );
    assert_eq!(get.header("allow"), Some("POST"));
    for (content_type, what) in [
        (None, "no media type"),
        (Some("application/json"), "JSON"),
        (Some("multipart/form-data; boundary=x"), "multipart"),
        (
            Some("application/x-www-form-urlencoded; charset=iso-8859-1"),
            "another charset",
        ),
    ] {
        let mut headers = vec![("authorization", auth.as_str())];
        headers.extend(content_type.map(|c| ("content-type", c)));
        let sent = f
            .send(
                Method::POST,
                &headers,
                "grant_type=client_credentials",
                fresh_peer(),
            )
            .await;
        assert_refused(&sent, StatusCode::BAD_REQUEST, "invalid_request", what);
    }
    for (body, error, what) in [
        (
            "grant_type=client_credentials&grant_type=client_credentials",
            "invalid_request",
            "grant_type twice",
        ),
        (
            "grant_type=password&grant%5Ftype=client_credentials",
            "invalid_request",
            "grant_type twice, once escaped",
        ),
        (
            "grant_type=client_credentials&scope=scim&scope=scim.read",
            "invalid_request",
            "scope twice",
        ),
        (
            "grant_type=client_credentials&client_id=script&client_id=other",
            "invalid_request",
            "client_id twice",
        ),
        (
            "grant_type=client_credentials&x=%zz",
            "invalid_request",
            "a bad escape",
        ),
        ("", "invalid_request", "no grant_type"),
        ("grant_type=", "invalid_request", "an empty grant_type"),
        (
            "grant_type=Client_Credentials",
            "unsupported_grant_type",
            "the grant type in another case",
        ),
        (
            "grant_type=client_credentials%20",
            "unsupported_grant_type",
            "a trailing space",
        ),
        (
            "grant_type=password&username=a&password=b",
            "unsupported_grant_type",
            "the password grant",
        ),
        (
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer",
            "unsupported_grant_type",
            "RFC 7523 §2.1",
        ),
    ] {
        let sent = f.basic("script", SECRET, body).await;
        assert_refused(&sent, StatusCode::BAD_REQUEST, error, what);
    }
    let big = format!(
        "grant_type=client_credentials&pad={}",
        "a".repeat(MAX_BODY_BYTES)
    );
    assert_refused(
        &f.basic("script", SECRET, &big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request",
        "too large",
    );
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(FORM));
    headers.insert(AUTHORIZATION, HeaderValue::from_str(&auth).unwrap());
    let with_query = f
        .issuer
        .token_endpoint(TokenRequest {
            method: &Method::POST,
            query: Some("client_secret=x"),
            headers: &headers,
            body: b"grant_type=client_credentials",
            peer: fresh_peer(),
            now: now(),
        })
        .await;
    assert_eq!(with_query.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn scope_is_a_subset_of_the_clients() {
    let f = fixture().await;
    let with = |scope: &str| format!("grant_type=client_credentials&scope={scope}");
    for (scope, granted) in [
        ("scim", "scim"),
        ("scim.read+scim", "scim scim.read"),
        ("scim%20scim", "scim"),
        ("", "scim scim.read"),
    ] {
        let sent = f.basic("script", SECRET, &with(scope)).await;
        assert_eq!(
            sent.response.status,
            StatusCode::OK,
            "{scope}: {}",
            sent.json
        );
        assert_eq!(sent.json["scope"], granted, "{scope}");
        let claims = f.verify_issued(&sent).await;
        assert_eq!(claims["scope"], granted);
    }
    for scope in [
        "admin",
        "scim+admin",
        "SCIM",
        "%20",
        "+scim",
        "scim+",
        "scim++scim.read",
        "scim%09scim.read",
        "scim%22",
    ] {
        let sent = f.basic("script", SECRET, &with(scope)).await;
        assert_refused(&sent, StatusCode::BAD_REQUEST, "invalid_scope", scope);
        assert_eq!(sent.response.outcome, TokenOutcome::InvalidScope);
    }
    let unauthenticated = f
        .post(
            &[],
            "grant_type=client_credentials&client_id=okta&scope=admin",
        )
        .await;
    assert_invalid_client(&unauthenticated, "authentication comes before scope");
}

#[tokio::test]
async fn not_before_ahead_refuses_an_authenticated_client() {
    let f = fixture().await;
    let sent = f
        .basic("later", SECRET, "grant_type=client_credentials")
        .await;
    assert_refused(
        &sent,
        StatusCode::BAD_REQUEST,
        "unauthorized_client",
        "not_before ahead",
    );
    assert_eq!(sent.response.outcome, TokenOutcome::UnauthorizedClient);
    let wrong = f
        .basic("later", "wrong", "grant_type=client_credentials")
        .await;
    assert_invalid_client(&wrong, "authentication first: no oracle for not_before");
}
