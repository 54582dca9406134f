//! Failure limits and the audit line.

use super::*;

#[tokio::test]
async fn failed_attempts_are_limited_per_client_and_per_peer() {
    let f = fixture_limited(3).await;
    let grant = "grant_type=client_credentials";
    for _ in 0..3 {
        assert_invalid_client(&f.basic("script", "guess", grant).await, "guess");
    }
    let locked = f.basic("script", SECRET, grant).await;
    assert_refused(
        &locked,
        StatusCode::TOO_MANY_REQUESTS,
        "temporarily_unavailable",
        "client over its limit",
    );
    assert_eq!(locked.response.outcome, TokenOutcome::RateLimited);
    let retry: u64 = locked.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        f.entra(&f.entra_with(|_| {})).await.response.status,
        StatusCode::OK,
        "other clients unaffected"
    );

    let peer = fresh_peer();
    let headers = [("content-type", FORM)];
    for i in 0..5 {
        let body = format!("{grant}&client_id=nobody{i}&client_secret=x");
        assert_invalid_client(
            &f.send(Method::POST, &headers, &body, peer).await,
            "unknown ids",
        );
    }
    let auth = basic("entra-wif", "x");
    let from_peer = f
        .send(
            Method::POST,
            &[("content-type", FORM), ("authorization", &auth)],
            grant,
            peer,
        )
        .await;
    assert_refused(
        &from_peer,
        StatusCode::TOO_MANY_REQUESTS,
        "temporarily_unavailable",
        "peer over its limit",
    );
    let good = format!("{grant}&client_id=okta&client_secret=x");
    let elsewhere = f.send(Method::POST, &headers, &good, fresh_peer()).await;
    assert_invalid_client(&elsewhere, "another peer is still heard");
}

/// A `Write` into a shared buffer, for reading the audit lines back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn every_issuance_and_refusal_is_audited_without_credentials() {
    let f = fixture().await;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // tracing caches each callsite's interest process-wide; a test thread that registers one of
    // these callsites while this subscriber is being installed can leave it cached as "never"
    // (a race of the test harness's many scoped subscribers, not of a process with one global
    // subscriber). So the exchange is retried, with the cache rebuilt, until every line arrives.
    let mut attempt = 0;
    let (issued, via_assertion, assertion, wrong_sub, text, lines) = loop {
        attempt += 1;
        tracing::callsite::rebuild_interest_cache();
        captured.0.lock().unwrap().clear();
        let issued = f
            .basic("script", SECRET, "grant_type=client_credentials")
            .await;
        let assertion = f.entra_with(|_| {});
        let via_assertion = f.entra(&assertion).await;
        let wrong_sub = f.entra_with(|c| {
            c.insert("sub".into(), json!("intruder\n{\"forged\":1}"));
        });
        f.entra(&wrong_sub).await;
        f.basic("script", "wrong-secret", "grant_type=client_credentials")
            .await;
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|l| l["target"] == "scimgate::token")
            .collect();
        if lines.len() == 4 || attempt == 3 {
            assert_eq!(lines.len(), 4, "{text}");
            break (issued, via_assertion, assertion, wrong_sub, text, lines);
        }
    };
    assert!(lines.iter().all(|l| l["target"] == "scimgate::token"));
    let fields: Vec<&Value> = lines.iter().map(|l| &l["fields"]).collect();
    assert_eq!(fields[0]["outcome"], "issued");
    assert_eq!(fields[0]["client"], "script");
    assert_eq!(fields[0]["method"], "client_secret_basic");
    assert_eq!(fields[0]["grant"], "client_credentials");
    let claims = f.verify_issued(&issued).await;
    assert_eq!(fields[0]["jti"], claims["jti"]);
    assert_eq!(fields[1]["method"], "private_key_jwt");
    assert_eq!(fields[1]["assertion_iss"], ENTRA_ISS);
    assert_eq!(fields[1]["assertion_sub"], OID);
    assert_eq!(fields[2]["outcome"], "invalid_client");
    assert_eq!(fields[2]["reason"], "wrong_subject");
    assert_eq!(
        fields[2]["assertion_sub"], "intruder?{\"forged\":1}",
        "made printable"
    );
    assert_eq!(fields[3]["reason"], "bad_secret");
    for secret in [
        SECRET,
        "wrong-secret",
        &assertion,
        &wrong_sub,
        issued.json["access_token"].as_str().unwrap(),
        via_assertion.json["access_token"].as_str().unwrap(),
    ] {
        assert!(!text.contains(secret), "a credential in the audit log");
    }
    // The signature part alone would do as much harm: no third of a JWS either.
    assert!(!text.contains(assertion.rsplit('.').next().unwrap()));
}
