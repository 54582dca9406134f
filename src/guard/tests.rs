//! `Guards::check` over validated configs, attacker-style: for each guardrail, the request
//! that tries to get round it. A manual clock: no sleeps.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderValue, Method};

use super::*;
use crate::config::Config;
use crate::scim::parse_request;

fn config(top: &str, rule: &str) -> Config {
    // One key file per config: tests run in parallel, and a rewrite is briefly empty.
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!("scimgate-guard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join(format!("key-{}", N.fetch_add(1, Ordering::SeqCst)));
    std::fs::write(&key, "k\n").unwrap();
    Config::from_toml(&format!(
        r#"{top}
[upstream]
url = "http://127.0.0.1:9000/scim/v2"
[jwt]
jwks_url = "https://idp.example.com/keys"
issuer = "https://idp.example.com"
audience = "scimgate"
[[rules]]
name = "r"
claim = "groups"
value = "scim"
service_account = "sa"
{rule}
[service_accounts.sa]
api_key_file = "{}"
"#,
        key.display()
    ))
    .unwrap()
}

/// A clock the test moves by hand.
struct Manual {
    start: Instant,
    nanos: Arc<AtomicU64>,
}

impl Manual {
    fn guards() -> (Guards, Self) {
        let start = Instant::now();
        let nanos = Arc::new(AtomicU64::new(0));
        let read = Arc::clone(&nanos);
        let clock: Clock =
            Arc::new(move || start + Duration::from_nanos(read.load(Ordering::SeqCst)));
        (Guards::with_clock(clock), Self { start, nanos })
    }

    fn advance(&self, by: Duration) {
        self.nanos
            .fetch_add(u64::try_from(by.as_nanos()).unwrap(), Ordering::SeqCst);
    }

    fn now(&self) -> Instant {
        self.start + Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

struct Call<'a> {
    method: &'a str,
    path: &'a str,
    body: Option<&'a str>,
    peer: &'a str,
    xff: &'a [&'a str],
}

fn call<'a>(method: &'a str, path: &'a str, body: &'a str) -> Call<'a> {
    Call {
        method,
        path,
        body: (!body.is_empty()).then_some(body),
        peer: "192.0.2.10",
        xff: &[],
    }
}

fn check(guards: &Guards, config: &Config, call: &Call<'_>) -> Result<Summary, GuardError> {
    let tenant = &config.tenants[0];
    let request = parse_request(
        &call.method.parse::<Method>().unwrap(),
        call.path,
        &tenant.upstream.resource_types,
    )
    .unwrap();
    let mut headers = HeaderMap::new();
    for v in call.xff {
        headers.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
    }
    guards.check(&Check {
        trusted_proxies: &config.server.trusted_proxies,
        tenant,
        rule: &tenant.rules[0],
        request: &request,
        peer: call.peer.parse().unwrap(),
        headers: &headers,
        body: call.body.map(str::as_bytes),
    })
}

fn patch(ops: &str) -> String {
    format!(r#"{{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":{ops}}}"#)
}

const WINDOW: Duration = Duration::from_secs(3600);

#[test]
fn the_budget_stops_at_exactly_max_and_reopens_after_the_window() {
    let config = config(
        "[guardrails]\nmax_deprovisions = 6\ndeprovision_window = \"1h\"",
        "",
    );
    let (guards, clock) = Manual::guards();
    let okta = patch(r#"[{"op":"replace","value":{"active":false}}]"#);
    let entra = patch(r#"[{"op":"Replace","path":"active","value":"False"}]"#);
    let flagged = patch(r#"[{"op":"replace","path":"ACTIVE","value":false}]"#);
    let shapes = [
        ("PATCH", "/Users/1", okta.as_str()),
        ("PATCH", "/Users/2", entra.as_str()),
        ("PATCH", "/users/3", flagged.as_str()),
        ("PUT", "/Users/4", r#"{"userName":"u","active":"false"}"#),
        ("DELETE", "/Users/5", ""),
        ("DELETE", "/Groups/6", ""),
    ];
    for (i, (method, path, body)) in shapes.iter().enumerate() {
        let s = check(&guards, &config, &call(method, path, body)).unwrap();
        assert_eq!(
            s.budget_used,
            Some(u32::try_from(i).unwrap() + 1),
            "{method} {path}"
        );
        clock.advance(Duration::from_secs(60));
    }
    // The seventh, in any shape, is refused until the first leaves the window.
    for (method, path, body) in shapes {
        let err = check(&guards, &config, &call(method, path, body)).unwrap_err();
        assert_eq!(
            err,
            GuardError::DeprovisionBudget {
                retry_after: 3600 - 360,
                used: 6,
                limit: 6
            },
            "{method} {path}"
        );
        assert_eq!(err.guardrail(), Some(Guardrail::DeprovisionBudget));
    }
    // Reads and other writes are not deprovisionings: they pass and are not counted.
    let other = patch(r#"[{"op":"replace","value":{"active":true,"displayName":"x"}}]"#);
    assert!(check(&guards, &config, &call("PATCH", "/Users/1", &other)).is_ok());
    assert!(check(&guards, &config, &call("GET", "/Users/1", "")).is_ok());
    assert_eq!(guards.budget_used(&config.tenants[0]), 6);
    clock.advance(Duration::from_secs(3600 - 360));
    assert_eq!(
        check(&guards, &config, &call("DELETE", "/Users/9", ""))
            .unwrap()
            .budget_used,
        Some(6)
    );
    assert!(check(&guards, &config, &call("DELETE", "/Users/10", "")).is_err());
}

#[test]
fn bulk_operations_each_count_all_or_nothing() {
    let config = config("[guardrails]\nmax_deprovisions = 5", "");
    let (guards, clock) = Manual::guards();
    let bulk = |n: usize| {
        let ops: Vec<String> = (0..n)
            .map(|i| match i % 3 {
                0 => format!(r#"{{"method":"DELETE","path":"/Users/{i}"}}"#),
                1 => format!(
                    r#"{{"method":"PATCH","path":"/Users/{i}","data":{{"Operations":[{{"op":"Replace","path":"active","value":"False"}}]}}}}"#
                ),
                _ => format!(r#"{{"method":"put","path":"/Users/{i}","data":{{"active":false}}}}"#),
            })
            .collect();
        format!(r#"{{"Operations":[{}]}}"#, ops.join(","))
    };
    assert_eq!(
        check(&guards, &config, &call("POST", "/Bulk", &bulk(3)))
            .unwrap()
            .deprovisions,
        3
    );
    clock.advance(Duration::from_secs(10));
    // Three more do not fit in the two left: none of them is recorded.
    assert_eq!(
        check(&guards, &config, &call("POST", "/Bulk", &bulk(3))),
        Err(GuardError::DeprovisionBudget {
            retry_after: 3590,
            used: 3,
            limit: 5
        })
    );
    assert_eq!(
        check(&guards, &config, &call("POST", "/Bulk", &bulk(2)))
            .unwrap()
            .budget_used,
        Some(5)
    );
    // More than the whole budget in one request never fits: no Retry-After to promise.
    let err = check(&guards, &config, &call("POST", "/Bulk", &bulk(6))).unwrap_err();
    assert_eq!(err, GuardError::OverBudget { count: 6, limit: 5 });
    assert_eq!(err.retry_after(), None);
    clock.advance(WINDOW);
    assert!(check(&guards, &config, &call("POST", "/Bulk", &bulk(5))).is_ok());
}

#[test]
fn a_reload_keeps_the_counts_and_takes_the_new_limit() {
    let (guards, _clock) = Manual::guards();
    let tight = config("[guardrails]\nmax_deprovisions = 2", "");
    for id in ["/Users/1", "/Users/2"] {
        check(&guards, &tight, &call("DELETE", id, "")).unwrap();
    }
    assert!(check(&guards, &tight, &call("DELETE", "/Users/3", "")).is_err());
    let raised = config("[guardrails]\nmax_deprovisions = 3", "");
    assert_eq!(
        check(&guards, &raised, &call("DELETE", "/Users/3", ""))
            .unwrap()
            .budget_used,
        Some(3)
    );
    assert!(check(&guards, &raised, &call("DELETE", "/Users/4", "")).is_err());
    let off = config("", "");
    let s = check(&guards, &off, &call("DELETE", "/Users/4", "")).unwrap();
    assert_eq!((s.deprovisions, s.budget_used), (1, None));
    // Turned back on: the counts from before are still there.
    assert!(check(&guards, &raised, &call("DELETE", "/Users/5", "")).is_err());
    assert_eq!(guards.budget_used(&raised.tenants[0]), 3);
}

#[test]
fn rate_limit_is_a_bucket_per_rule_with_retry_after() {
    let config = config("", "rate_limit = \"5/s\"");
    let (guards, clock) = Manual::guards();
    // Burst: a quarter second of 5/s, rounded up = 2.
    for _ in 0..2 {
        check(&guards, &config, &call("GET", "/Users", "")).unwrap();
    }
    let err = check(&guards, &config, &call("GET", "/Users", "")).unwrap_err();
    assert_eq!(err, GuardError::RateLimited { retry_after: 1 });
    assert_eq!(err.guardrail(), Some(Guardrail::RateLimit));
    clock.advance(Duration::from_millis(200));
    assert!(check(&guards, &config, &call("GET", "/Users", "")).is_ok());
    let mut passed = 0;
    let start = clock.now();
    while clock.now() < start + Duration::from_secs(5) {
        if check(&guards, &config, &call("GET", "/Users", "")).is_ok() {
            passed += 1;
        }
        clock.advance(Duration::from_millis(10));
    }
    // 25 at the rate, less the token the request at 200 ms took ahead of it.
    assert_eq!(passed, 24, "{passed} in 5 s at 5/s");
}

#[test]
fn denied_attributes_in_every_form() {
    let config = config(
        "",
        r#"deny_attributes = ["password", "roles", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "emails.value", "name.givenName"]
allow = ["create", "replace", "patch", "bulk", "read"]"#,
    );
    let (guards, _clock) = Manual::guards();
    let refused = [
        ("POST", "/Users", r#"{"userName":"a","password":"secret-value"}"#.to_owned(), "password"),
        ("POST", "/Users", r#"{"userName":"a","PASSWORD":"x"}"#.to_owned(), "password"),
        ("PUT", "/Users/1", r#"{"roles":[{"value":"admin"}]}"#.to_owned(), "roles"),
        ("PATCH", "/Users/1", patch(r#"[{"op":"add","path":"roles","value":[{"value":"admin"}]}]"#), "roles"),
        ("PATCH", "/Users/1", patch(r#"[{"op":"add","path":"Roles[primary eq true].value","value":"admin"}]"#), "roles"),
        ("PATCH", "/Users/1", patch(r#"[{"op":"replace","value":{"urn:ietf:params:scim:schemas:core:2.0:User:roles":"a"}}]"#), "roles"),
        ("PATCH", "/Users/1", patch(r#"[{"op":"replace","value":{"urn:acme:ext:2.0:User":{"roles":"a"}}}]"#), "roles"),
        ("PATCH", "/Users/1", patch(r#"[{"op":"replace","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager","value":"m"}]"#), "manager"),
        ("PATCH", "/Users/1", patch(r#"[{"op":"replace","value":{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"Manager":{"value":"m"}}}}]"#), "manager"),
        ("PATCH", "/Users/1", patch(r#"[{"op":"replace","path":"emails[type eq \"work\"].value","value":"a@b"}]"#), "emails.value"),
        ("PATCH", "/Users/1", patch(r#"[{"op":"remove","path":"emails[type eq \"work\"]"}]"#), "emails.value"),
        ("PATCH", "/Users/1", patch(r#"[{"op":"replace","value":{"name.givenName":"x"}}]"#), "name.givenname"),
        ("PUT", "/Users/1", r#"{"name":{"givenName":"x"}}"#.to_owned(), "name.givenname"),
        ("PATCH", "/Users/1", patch(r#"[{"op":"remove","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"}]"#), "password"),
        ("POST", "/Bulk", r#"{"Operations":[{"method":"POST","path":"/Users","data":{"userName":"a"}},{"method":"PATCH","path":"/Users/2","data":{"Operations":[{"op":"add","value":{"password":"x"}}]}}]}"#.to_owned(), "password"),
    ];
    for (method, path, body, attribute) in &refused {
        let err = check(&guards, &config, &call(method, path, body)).unwrap_err();
        assert_eq!(
            err,
            GuardError::DeniedAttribute {
                attribute: (*attribute).to_owned()
            },
            "{method} {path} {body}"
        );
        assert!(!err.to_string().contains("secret-value") && !err.to_string().contains("admin"));
    }
    // The same requests without the denied attribute pass.
    for (method, path, body) in [
        (
            "POST",
            "/Users",
            r#"{"userName":"a","name":{"familyName":"f"}}"#.to_owned(),
        ),
        (
            "PUT",
            "/Users/1",
            r#"{"userName":"a","entitlements":[{"value":"x"}]}"#.to_owned(),
        ),
        (
            "PATCH",
            "/Users/1",
            patch(r#"[{"op":"replace","path":"emails[type eq \"work\"].type","value":"home"}]"#),
        ),
        (
            "PATCH",
            "/Users/1",
            patch(r#"[{"op":"replace","value":{"name.familyName":"x","passwordHint":"h"}}]"#),
        ),
        (
            "POST",
            "/Bulk",
            r#"{"Operations":[{"method":"POST","path":"/Users","data":{"userName":"a"}}]}"#
                .to_owned(),
        ),
    ] {
        let s = check(&guards, &config, &call(method, path, &body))
            .unwrap_or_else(|e| panic!("{method} {path} {body}: {e:?}"));
        assert!(s.inspected);
    }
    // A body the guardrail cannot read is refused, not waved through as "no attributes".
    let err = check(
        &guards,
        &config,
        &call(
            "PATCH",
            "/Users/1",
            &patch(r#"[{"op":"replace","path":"roles[","value":1}]"#),
        ),
    );
    assert!(
        matches!(err, Err(GuardError::Unjudgeable(Unjudgeable::Path(_)))),
        "{err:?}"
    );
}

#[test]
fn protected_groups_by_id_in_every_route() {
    let config = config("", r#"protected_groups = ["Admins-ID"]"#);
    let (guards, _clock) = Manual::guards();
    let members = patch(r#"[{"op":"add","path":"members","value":[{"value":"u1"}]}]"#);
    for (method, path, body) in [
        ("PATCH", "/Groups/Admins-ID", members.as_str()),
        ("PATCH", "/groups/admins-id", members.as_str()),
        ("PATCH", "/Groups/ADMINS-ID%20", members.as_str()),
        ("PUT", "/Groups/admins-id", r#"{"displayName":"x"}"#),
        ("DELETE", "/Groups/admins-id", ""),
        (
            "POST",
            "/Bulk",
            r#"{"Operations":[{"method":"DELETE","path":"/Groups/Admins-ID"}]}"#,
        ),
        (
            "POST",
            "/Users",
            r#"{"userName":"a","groups":[{"value":"admins-id"}]}"#,
        ),
        (
            "PATCH",
            "/Users/1",
            &patch(r#"[{"op":"add","path":"groups","value":[{"value":"Admins-ID"}]}]"#),
        ),
        (
            "PATCH",
            "/Users/1",
            &patch(r#"[{"op":"remove","path":"groups[value eq \"x\"]"}]"#),
        ),
    ] {
        assert_eq!(
            check(&guards, &config, &call(method, path, body)),
            Err(GuardError::ProtectedGroup),
            "{method} {path} {body}"
        );
    }
    for (method, path, body) in [
        ("PATCH", "/Groups/other", members.as_str()),
        ("GET", "/Groups/Admins-ID", ""),
        ("POST", "/Groups", r#"{"displayName":"Admins-ID"}"#),
        ("PUT", "/Users/1", r#"{"userName":"a","groups":[]}"#),
        ("PATCH", "/Groups/Admins-ID-2", members.as_str()),
    ] {
        assert!(
            check(&guards, &config, &call(method, path, body)).is_ok(),
            "{method} {path}"
        );
    }
}

#[test]
fn source_ips_by_peer_and_by_trusted_forwarded_for() {
    let config = config(
        "[server]\ntrusted_proxies = [\"10.0.0.0/8\"]",
        r#"source_ips = ["192.0.2.0/24", "2001:db8::/32"]"#,
    );
    let (guards, _clock) = Manual::guards();
    let at = |peer: &'static str, xff: &'static [&'static str]| Call {
        peer,
        xff,
        ..call("GET", "/Users", "")
    };
    for ok in [
        at("192.0.2.10", &[]),
        at("::ffff:192.0.2.10", &[]),
        at("2001:db8::7", &[]),
        at("192.0.2.10", &["203.0.113.1"]),
        at("10.1.2.3", &["192.0.2.10"]),
        at("10.1.2.3", &["203.0.113.9, 192.0.2.10, 10.9.9.9"]),
    ] {
        assert!(
            check(&guards, &config, &ok).is_ok(),
            "{} {:?}",
            ok.peer,
            ok.xff
        );
    }
    for (bad, want) in [
        (at("203.0.113.1", &[]), GuardError::SourceIp),
        (at("2001:db9::7", &[]), GuardError::SourceIp),
        (at("::192.0.2.10", &[]), GuardError::SourceIp),
        // A header from an untrusted peer is not believed.
        (at("203.0.113.1", &["192.0.2.10"]), GuardError::SourceIp),
        // The client cannot prepend its way in behind a trusted proxy.
        (
            at("10.1.2.3", &["192.0.2.10, 203.0.113.1"]),
            GuardError::SourceIp,
        ),
        (at("10.1.2.3", &[]), GuardError::SourceIp),
        (
            at("10.1.2.3", &["192.0.2.10, unknown"]),
            GuardError::ForwardedFor,
        ),
    ] {
        assert_eq!(
            check(&guards, &config, &bad),
            Err(want),
            "{} {:?}",
            bad.peer,
            bad.xff
        );
    }
}

#[test]
fn bodies_are_read_only_when_a_guardrail_needs_them() {
    let table = [
        ("", "", [false, false, false, false, false]),
        (
            "[guardrails]\nmax_deprovisions = 5",
            "",
            [false, true, false, true, false],
        ),
        (
            "",
            "deny_attributes = [\"roles\"]",
            [true, true, true, true, true],
        ),
        (
            "",
            "protected_groups = [\"g\"]",
            [true, true, false, true, false],
        ),
        (
            "",
            "source_ips = [\"192.0.2.0/24\"]\nrate_limit = \"5/s\"",
            [false; 5],
        ),
    ];
    let requests = [
        ("POST", "/Users"),
        ("PATCH", "/Users/1"),
        ("PATCH", "/Groups/1"),
        ("POST", "/Bulk"),
        ("PUT", "/Devices/1"),
    ];
    for (top, rule, want) in table {
        let mut config = config(top, rule);
        config.tenants[0].upstream.resource_types = vec![Arc::from("Devices")];
        let tenant = &config.tenants[0];
        for ((method, path), want) in requests.iter().zip(want) {
            let request = parse_request(
                &method.parse().unwrap(),
                path,
                &tenant.upstream.resource_types,
            )
            .unwrap();
            assert_eq!(
                Guards::needs_body(tenant, &tenant.rules[0], &request),
                want,
                "{top} {rule}: {method} {path}"
            );
        }
        for (method, path) in [
            ("GET", "/Users/1"),
            ("DELETE", "/Users/1"),
            ("POST", "/Users/.search"),
        ] {
            let request = parse_request(&method.parse().unwrap(), path, &[]).unwrap();
            assert!(!Guards::needs_body(tenant, &tenant.rules[0], &request));
        }
    }
    // Needed but not passed: a wiring bug, refused rather than judged on the path alone.
    let config = config("[guardrails]\nmax_deprovisions = 5", "");
    let (guards, _clock) = Manual::guards();
    assert_eq!(
        check(&guards, &config, &call("PATCH", "/Users/1", "")),
        Err(GuardError::BodyNotRead)
    );
    // A body no guardrail needs is not judged: what passed before still passes.
    let s = check(&guards, &config, &call("PATCH", "/Groups/1", "not json")).unwrap();
    assert!(!s.inspected);
    let s = check(
        &guards,
        &super::tests::config("", ""),
        &call("POST", "/Bulk", "not json"),
    )
    .unwrap();
    assert!(!s.inspected);
}
