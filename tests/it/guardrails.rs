//! SCIM guardrails (issue 18) through the real binary: the deprovision budget in every shape
//! Okta and Entra send (also inside `/Bulk`), denied attributes in every form a SCIM server
//! resolves, protected groups, source addresses (IPv4, IPv6, trusted proxies) and the rate
//! limit; each refusal never reaches the upstream and is counted, logged and answered as SCIM.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use crate::support::config::random_hex;
use crate::support::gateway::binary;
use crate::support::observe::{access_lines, metric, replace_file, scrape, sighup};
use crate::support::{
    Gateway, GatewayConfig, JwksServer, Response, TempDir, Token, Upstream, fixture, rsa_key,
    run_check_file,
};

const GUARDED: &str = "scim-guarded";
const USER: &str = "2819c223-7f76-453a-919d-413861904646";
const ADMINS: &str = "e9e30dba-f08f-4109-8486-d5c6a331660a";

/// The default fixture plus a `guarded` rule (tokens with the `scim-guarded` group) carrying
/// `rule_keys`, and `top` (TOML sections such as `[guardrails]`) before the rules.
struct Guarded {
    gw: Gateway,
    upstream: Upstream,
    token: String,
    _jwks: JwksServer,
}

async fn guarded(top: &str, rule_keys: &str) -> Guarded {
    let (jwks, upstream, cfg) = fixture().await;
    let gw = start(cfg, top, rule_keys).await;
    let token = Token::new()
        .claim("groups", json!([GUARDED]))
        .sign(rsa_key());
    Guarded {
        gw,
        upstream,
        token,
        _jwks: jwks,
    }
}

async fn start(cfg: GatewayConfig, top: &str, rule_keys: &str) -> Gateway {
    let cfg = cfg.extra(&format!(
        "[[rules]]\nname = \"guarded\"\nclaim = \"groups\"\nvalue = \"{GUARDED}\"\n\
         service_account = \"provisioner\"\n{rule_keys}\n\n{top}\n"
    ));
    Gateway::start(cfg).await
}

async fn call(gw: &Gateway, token: &str, method: &str, path: &str, body: &Value) -> Response {
    let auth = format!("Bearer {token}");
    let body = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    gw.request(
        method,
        path,
        &[
            ("authorization", &auth),
            ("content-type", "application/scim+json"),
        ],
        body,
    )
    .await
}

fn patch(ops: Value) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops})
}

/// Every deactivation and delete shape of idp-clients.md §4, each counted once.
fn deprovisionings() -> Vec<(&'static str, &'static str, String, Value)> {
    let user = format!("/Users/{USER}");
    vec![
        (
            "okta pathless replace",
            "PATCH",
            user.clone(),
            patch(json!([{"op": "replace", "value": {"active": false}}])),
        ),
        (
            "entra Replace path active \"False\"",
            "PATCH",
            user.clone(),
            patch(json!([{"op": "Replace", "path": "active", "value": "False"}])),
        ),
        (
            "entra flagged lowercase and boolean",
            "PATCH",
            user.clone(),
            patch(json!([{"op": "replace", "path": "active", "value": false}])),
        ),
        (
            "pathless replace mixing active with other attributes",
            "PATCH",
            user.clone(),
            patch(json!([{"op": "REPLACE", "value": {"displayName": "x", "ACTIVE": "false"}}])),
        ),
        (
            "PUT with active false",
            "PUT",
            user.clone(),
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                   "userName": "bjensen", "active": false}),
        ),
        ("DELETE user", "DELETE", user.clone(), Value::Null),
        (
            "DELETE group",
            "DELETE",
            format!("/Groups/{ADMINS}"),
            Value::Null,
        ),
        (
            "URN path",
            "PATCH",
            user,
            patch(json!([{"op": "replace",
                "path": "urn:ietf:params:scim:schemas:core:2.0:User:active", "value": "FALSE"}])),
        ),
    ]
}

/// `scimgate_guardrail_trips_total` of the default tenant for `guardrail`, scraped now.
async fn trips(gw: &Gateway, guardrail: &str) -> Option<f64> {
    let series =
        format!("scimgate_guardrail_trips_total{{guardrail=\"{guardrail}\",tenant=\"default\"}}");
    metric(&scrape(gw).await, &series)
}

fn retry_after(r: &Response) -> u64 {
    r.header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("429 without a numeric Retry-After: {:?}", r.headers))
}

/// A loop of every deprovisioning shape stops at exactly `max_deprovisions`: the upstream sees
/// that many, the rest get 429 with a Retry-After inside the window, writes that deprovision
/// nothing still pass, and once the window has moved on the next one passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deprovision_budget_stops_a_runaway_loop_at_exactly_the_limit() {
    let Guarded {
        gw,
        upstream,
        token,
        ..
    } = guarded(
        "[guardrails]\nmax_deprovisions = 5\ndeprovision_window = \"3s\"",
        "",
    )
    .await;
    let text = scrape(&gw).await;
    for guardrail in [
        "deprovision_budget",
        "deny_attributes",
        "protected_groups",
        "source_ips",
        "rate_limit",
    ] {
        let series = format!(
            "scimgate_guardrail_trips_total{{guardrail=\"{guardrail}\",tenant=\"default\"}}"
        );
        assert_eq!(metric(&text, &series), Some(0.0), "{series} at startup");
    }
    assert_eq!(
        metric(
            &text,
            r#"scimgate_deprovision_budget_limit{tenant="default"}"#
        ),
        Some(5.0)
    );
    let shapes = deprovisionings();
    let mut passed = Vec::new();
    let mut refused = 0;
    for round in 0..2 {
        for (name, method, path, body) in &shapes {
            let before = upstream.hits();
            let r = call(&gw, &token, method, path, body).await;
            if r.status == 429 {
                r.assert_scim_error(429);
                let wait = retry_after(&r);
                assert!((1..=3).contains(&wait), "{name}: Retry-After {wait}");
                assert_eq!(upstream.hits(), before, "{name}: refused but forwarded");
                refused += 1;
            } else {
                assert_eq!(r.status, 200, "{name} (round {round}): {}", r.text());
                passed.push(*name);
            }
        }
    }
    assert_eq!(passed.len(), 5, "passed: {passed:?}");
    assert_eq!(refused, shapes.len() * 2 - 5);
    assert_eq!(
        upstream.requests().len(),
        5,
        "the backend saw exactly the budget"
    );
    // A body that could hide a deactivation from one reader is refused, not counted or passed.
    for body in [
        r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"active","value":true,"value":false}]}"#,
        r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"active":true,"Active":false}}]}"#,
    ] {
        let before = upstream.hits();
        let r = gw
            .request(
                "PATCH",
                &format!("/Users/{USER}"),
                &[
                    ("authorization", &format!("Bearer {token}")),
                    ("content-type", "application/scim+json"),
                ],
                Bytes::from(body),
            )
            .await;
        assert!(matches!(r.status, 400 | 429), "{body}: {}", r.status);
        assert_eq!(upstream.hits(), before, "{body}: forwarded");
    }
    // Writes that deprovision nothing are not budgeted.
    for body in [
        patch(json!([{"op": "replace", "path": "active", "value": true}])),
        patch(json!([{"op": "replace", "value": {"active": "True", "displayName": "x"}}])),
        patch(json!([{"op": "add", "path": "nickName", "value": "false"}])),
    ] {
        let r = call(&gw, &token, "PATCH", &format!("/Users/{USER}"), &body).await;
        assert_eq!(r.status, 200, "{body}: {}", r.text());
    }
    assert_eq!(trips(&gw, "deprovision_budget").await, Some(refused as f64));
    let text = scrape(&gw).await;
    assert_eq!(
        metric(
            &text,
            r#"scimgate_deprovision_budget_used{tenant="default"}"#
        ),
        Some(5.0)
    );
    assert_eq!(
        metric(&text, r#"scimgate_requests_total{outcome="guardrail"}"#),
        Some(refused as f64)
    );
    gw.flush_logs();
    let lines = access_lines(&gw);
    let tripped: Vec<&Value> = lines
        .iter()
        .filter(|l| l["guardrail"] == "deprovision_budget")
        .collect();
    assert_eq!(tripped.len(), refused, "one access line per refusal");
    assert!(
        tripped
            .iter()
            .all(|l| l["status"] == 429 && l["outcome"] == "guardrail")
    );
    // After the window: the next one passes.
    let delete = || call(&gw, &token, "DELETE", "/Users/next", &Value::Null);
    let r = delete().await;
    assert_eq!(r.status, 429);
    tokio::time::sleep(Duration::from_secs(retry_after(&r))).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = delete().await;
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the window never let one more through"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each `/Bulk` operation counts; a `/Bulk` that would pass the budget is refused whole, and
/// one that carries more than the whole budget can never pass (413).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_operations_each_count_against_the_budget() {
    let Guarded {
        gw,
        upstream,
        token,
        ..
    } = guarded(
        "[guardrails]\nmax_deprovisions = 3\ndeprovision_window = \"1h\"",
        "",
    )
    .await;
    let op = |method: &str, path: &str, data: Option<Value>| {
        let mut o = json!({"method": method, "path": path, "bulkId": random_hex(4)});
        if let Some(d) = data {
            o["data"] = d;
        }
        o
    };
    let bulk = |ops: Vec<Value>| json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": ops});
    let two = bulk(vec![
        op("DELETE", &format!("/Users/{USER}"), None),
        op(
            "PATCH",
            "/Users/b",
            Some(patch(
                json!([{"op": "Replace", "path": "Active", "value": "False"}]),
            )),
        ),
    ]);
    let r = call(&gw, &token, "POST", "/Bulk", &two).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = call(&gw, &token, "POST", "/Bulk", &two).await;
    r.assert_scim_error(429);
    assert!(r.header("retry-after").is_some());
    let four = bulk(vec![
        op("DELETE", "/Users/a", None),
        op("DELETE", "/Users/b", None),
        op("DELETE", "/Groups/c", None),
        op(
            "PUT",
            "/Users/d",
            Some(
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                        "userName": "d", "active": "false"}),
            ),
        ),
    ]);
    let r = call(&gw, &token, "POST", "/Bulk", &four).await;
    r.assert_scim_error(413);
    assert!(r.header("retry-after").is_none(), "waiting never helps");
    // One more single deprovisioning still fits (2 of 3 used).
    let r = call(&gw, &token, "DELETE", "/Users/e", &Value::Null).await;
    assert_eq!(r.status, 200);
    assert_eq!(upstream.requests().len(), 2);
}

/// A reload that raises the budget applies at once and keeps the counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_the_budget_and_keeps_the_counts() {
    let Guarded {
        gw,
        upstream: _,
        token,
        ..
    } = guarded(
        "[guardrails]\nmax_deprovisions = 2\ndeprovision_window = \"1h\"",
        "",
    )
    .await;
    for _ in 0..2 {
        let r = call(&gw, &token, "DELETE", "/Users/a", &Value::Null).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(
        call(&gw, &token, "DELETE", "/Users/a", &Value::Null)
            .await
            .status,
        429
    );
    let path = gw.dir().join("scimgate.toml");
    let config = std::fs::read_to_string(&path).expect("config");
    let raised = config.replace("max_deprovisions = 2", "max_deprovisions = 3");
    assert_ne!(raised, config);
    replace_file(&path, raised.as_bytes(), 0o644);
    sighup(&gw);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(
        &scrape(&gw).await,
        r#"scimgate_deprovision_budget_limit{tenant="default"}"#,
    ) != Some(3.0)
    {
        assert!(Instant::now() < deadline, "the reload never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The two already counted stay counted: one more passes, not three.
    let r = call(&gw, &token, "DELETE", "/Users/a", &Value::Null).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = call(&gw, &token, "DELETE", "/Users/a", &Value::Null).await;
    assert_eq!(r.status, 429);
}

/// Every form a SCIM server resolves to a denied attribute is refused with 403
/// `insufficient_scope` naming the attribute (never the value); the same request without it
/// is forwarded byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_attributes_are_refused_in_every_form() {
    let Guarded { gw, upstream, token, _jwks } = guarded(
        "",
        r#"deny_attributes = ["password", "roles", "name", "emails.value", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager"]"#,
    )
    .await;
    let user = format!("/Users/{USER}");
    let secret = "Sup3rSecretValue";
    let refused: Vec<(&str, &str, Value, &str)> = vec![
        (
            "POST member",
            "POST",
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "x", "password": secret}),
            "password",
        ),
        (
            "POST member, other case",
            "POST",
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "x", "PassWord": secret}),
            "password",
        ),
        (
            "PUT member",
            "PUT",
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "x", "roles": [{"value": secret}]}),
            "roles",
        ),
        (
            "PATCH path",
            "PATCH",
            patch(json!([{"op": "add", "path": "Roles", "value": [{"value": secret}]}])),
            "roles",
        ),
        (
            "PATCH filtered path",
            "PATCH",
            patch(
                json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": secret}]),
            ),
            "emails.value",
        ),
        (
            "PATCH pathless dotted",
            "PATCH",
            patch(json!([{"op": "replace", "value": {"name.givenName": secret}}])),
            "name",
        ),
        (
            "PATCH pathless complex",
            "PATCH",
            patch(json!([{"op": "replace", "value": {"name": {"familyName": secret}}}])),
            "name",
        ),
        (
            "PATCH sub-attribute path",
            "PATCH",
            patch(json!([{"op": "replace", "path": "name.familyName", "value": secret}])),
            "name",
        ),
        (
            "PATCH URN-prefixed core path",
            "PATCH",
            patch(
                json!([{"op": "replace", "path": "urn:ietf:params:scim:schemas:core:2.0:User:password", "value": secret}]),
            ),
            "password",
        ),
        (
            "PATCH enterprise URN path",
            "PATCH",
            patch(
                json!([{"op": "replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": {"value": secret}}]),
            ),
            "manager",
        ),
        (
            "PATCH enterprise URN pathless key",
            "PATCH",
            patch(
                json!([{"op": "replace", "value": {"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager": {"value": secret}}}]),
            ),
            "manager",
        ),
        (
            "PATCH enterprise extension object",
            "PATCH",
            patch(
                json!([{"op": "add", "value": {"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"Manager": {"value": secret}}}}]),
            ),
            "manager",
        ),
        (
            "PATCH remove",
            "PATCH",
            patch(json!([{"op": "remove", "path": "roles"}])),
            "roles",
        ),
        (
            "PATCH whole emails",
            "PATCH",
            patch(json!([{"op": "replace", "path": "emails", "value": [{"value": secret}]}])),
            "emails.value",
        ),
    ];
    for (name, method, body, attribute) in refused {
        let path = if method == "POST" { "/Users" } else { &user };
        let before = upstream.hits();
        let r = call(&gw, &token, method, path, &body).await;
        r.assert_insufficient_scope();
        let detail = r.json()["detail"].as_str().unwrap_or_default().to_owned();
        assert!(
            detail.to_ascii_lowercase().contains(attribute),
            "{name}: detail {detail:?} does not name {attribute}"
        );
        assert!(!r.text().contains(secret), "{name}: the value was echoed");
        assert_eq!(upstream.hits(), before, "{name}: forwarded");
    }
    // The same requests without the attribute pass, byte-exact.
    for (method, body) in [
        (
            "POST",
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "x"}),
        ),
        (
            "PATCH",
            patch(
                json!([{"op": "replace", "path": "emails[type eq \"work\"].type", "value": "home"}]),
            ),
        ),
        (
            "PATCH",
            patch(json!([{"op": "replace", "value": {"displayName": "x", "nickName": "y"}}])),
        ),
        (
            "PATCH",
            patch(
                json!([{"op": "replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "x"}]),
            ),
        ),
    ] {
        let path = if method == "POST" { "/Users" } else { &user };
        let r = call(&gw, &token, method, path, &body).await;
        assert_eq!(r.status, 200, "{body}: {}", r.text());
        let last = upstream.requests().pop().expect("forwarded");
        assert_eq!(last.body, body.to_string().as_bytes(), "not byte-exact");
    }
    // A body the guardrail cannot judge is refused, not guessed at.
    for (body, content_type) in [
        (
            "{\"Operations\":[{\"op\":\"replace\",\"path\":\"roles\",\"path\":\"x\"}]}",
            "application/scim+json",
        ),
        (
            "{\"schemas\":[\"urn:ietf:params:scim:api:messages:2.0:PatchOp\"],\"Operations\":[{\"op\":\"copy\",\"path\":\"x\"}]}",
            "application/scim+json",
        ),
        (
            "{\"schemas\":[\"urn:ietf:params:scim:api:messages:2.0:PatchOp\"],\"Operations\":[{\"op\":\"replace\",\"path\":\"x[\",\"value\":1}]}",
            "application/scim+json",
        ),
        (
            "{\"schemas\":[\"urn:ietf:params:scim:api:messages:2.0:PatchOp\"],\"Operations\":[]}",
            "text/plain",
        ),
        (
            "{\"schemas\":[\"urn:ietf:params:scim:api:messages:2.0:PatchOp\"],\"Operations\":[]}",
            "application/scim+json; charset=utf-7",
        ),
    ] {
        let before = upstream.hits();
        let r = gw
            .request(
                "PATCH",
                &user,
                &[
                    ("authorization", &format!("Bearer {token}")),
                    ("content-type", content_type),
                ],
                Bytes::from(body),
            )
            .await;
        assert!(
            r.status == 400 || r.status == 415,
            "{body} ({content_type}): {}",
            r.status
        );
        r.assert_scim_error(r.status);
        assert_eq!(upstream.hits(), before, "{body}: forwarded");
    }
    // A group write's member counts reach the access line, never the members.
    let members = patch(json!([
        {"op": "add", "path": "members", "value": [{"value": USER}, {"value": "u2"}]},
        {"op": "remove", "path": "members[value eq \"u3\"]"}
    ]));
    let r = call(&gw, &token, "PATCH", "/Groups/g1", &members).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The access line of a judged write names the paths it touches, never a value.
    gw.flush_logs();
    let lines = access_lines(&gw);
    let group = lines
        .iter()
        .find(|l| l["path"] == "/Groups/g1")
        .expect("access line of the group PATCH");
    assert_eq!(
        (
            &group["attributes"],
            &group["members_added"],
            &group["members_removed"]
        ),
        (&json!("members,members.value"), &json!("2"), &json!("1")),
        "{group}"
    );
    assert!(
        !group.to_string().contains(USER),
        "a member id reached the log"
    );
    let judged: Vec<&Value> = lines
        .iter()
        .filter(|l| l["attributes"].as_str().is_some_and(|a| !a.is_empty()))
        .collect();
    assert!(!judged.is_empty(), "no access line lists attributes");
    assert!(lines.iter().all(|l| !l.to_string().contains(secret)));
    assert!(
        lines
            .iter()
            .any(|l| l["guardrail"] == "deny_attributes" && l["status"] == 403)
    );
}

/// Protected groups: no PUT/PATCH/DELETE on them (any id case, padded), and no User write
/// naming them; other groups pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_groups_cannot_be_modified() {
    let Guarded {
        gw,
        upstream,
        token,
        ..
    } = guarded("", &format!("protected_groups = [\"{ADMINS}\"]")).await;
    let members = patch(json!([{"op": "add", "path": "members", "value": [{"value": USER}]}]));
    for (method, path, body) in [
        ("PATCH", format!("/Groups/{ADMINS}"), members.clone()),
        (
            "PATCH",
            format!("/Groups/{}", ADMINS.to_ascii_uppercase()),
            members.clone(),
        ),
        ("DELETE", format!("/Groups/{ADMINS}"), Value::Null),
        (
            "PUT",
            format!("/Groups/{ADMINS}"),
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "admins"}),
        ),
        (
            "POST",
            "/Users".to_owned(),
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "x", "groups": [{"value": ADMINS}]}),
        ),
        (
            "PATCH",
            format!("/Users/{USER}"),
            patch(
                json!([{"op": "add", "path": "groups", "value": [{"value": format!(" {ADMINS} ")}]}]),
            ),
        ),
    ] {
        let before = upstream.hits();
        let r = call(&gw, &token, method, &path, &body).await;
        r.assert_insufficient_scope();
        assert_eq!(upstream.hits(), before, "{method} {path}: forwarded");
    }
    let other = "0f3b2f5e-0000-4000-8000-000000000001";
    let r = call(&gw, &token, "PATCH", &format!("/Groups/{other}"), &members).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(trips(&gw, "protected_groups").await, Some(6.0));
}

/// `source_ips` is judged on the socket peer, IPv4 and IPv6; `X-Forwarded-For` is believed
/// only from a peer in `server.trusted_proxies`, and a malformed one from there is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_ips_judge_the_socket_peer_on_ipv4_and_ipv6() {
    for (listen, allowed, refused) in [
        ("127.0.0.1:0", "127.0.0.0/8", "192.0.2.0/24"),
        ("[::1]:0", "::1/128", "2001:db8::/32"),
    ] {
        for (range, want) in [(allowed, 200), (refused, 403)] {
            let (jwks, upstream, cfg) = fixture().await;
            let cfg = cfg.set("server", "listen", &format!("\"{listen}\""));
            let gw = start(cfg, "", &format!("source_ips = [\"{range}\"]")).await;
            let token = Token::new()
                .claim("groups", json!([GUARDED]))
                .sign(rsa_key());
            let auth = format!("Bearer {token}");
            // A header naming an allowed address changes nothing without trusted proxies.
            let r = gw
                .request(
                    "GET",
                    "/Users",
                    &[
                        ("authorization", &auth),
                        ("x-forwarded-for", "127.0.0.1, ::1"),
                    ],
                    Bytes::new(),
                )
                .await;
            assert_eq!(r.status, want, "{listen} in {range}: {}", r.text());
            if want == 403 {
                r.assert_insufficient_scope();
                assert_eq!(upstream.hits(), 0);
            }
            drop(jwks);
        }
    }
    // Behind a trusted proxy: the rightmost untrusted X-Forwarded-For address is the client.
    let (_jwks, upstream, cfg) = fixture().await;
    let cfg = cfg.set("server", "trusted_proxies", "[\"127.0.0.1/32\"]");
    let gw = start(cfg, "", "source_ips = [\"192.0.2.0/24\"]").await;
    let token = Token::new()
        .claim("groups", json!([GUARDED]))
        .sign(rsa_key());
    let auth = format!("Bearer {token}");
    for (xff, want) in [
        ("192.0.2.7", 200),
        ("198.51.100.1, 192.0.2.7", 200),
        ("192.0.2.7, 198.51.100.1", 403),
        ("192.0.2.7, 127.0.0.1", 200),
        ("[2001:db8::1]:443", 403),
        ("192.0.2.7:8080", 200),
        ("not-an-address", 400),
        ("192.0.2.7, ", 400),
        ("", 400),
    ] {
        let before = upstream.hits();
        let r = gw
            .request(
                "GET",
                "/Users",
                &[("authorization", &auth), ("x-forwarded-for", xff)],
                Bytes::new(),
            )
            .await;
        assert_eq!(r.status, want, "X-Forwarded-For {xff:?}: {}", r.text());
        if want != 200 {
            r.assert_scim_error(want);
            assert_eq!(upstream.hits(), before, "{xff:?}: forwarded");
        }
    }
    // Without the header the peer itself (127.0.0.1) is the client: not in the range.
    let r = gw.get("/Users", Some(&token)).await;
    r.assert_insufficient_scope();
}

/// `rate_limit` holds its rate within 10 % over 5 s of callers asking at three times the rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_holds_its_rate() {
    let _alone = crate::support::timing_sensitive().await;
    let Guarded {
        gw,
        upstream,
        token,
        _jwks,
    } = guarded("", "rate_limit = \"40/s\"").await;
    let gw = std::sync::Arc::new(gw);
    let started = Instant::now();
    let span = Duration::from_secs(5);
    let mut tasks = Vec::new();
    // Four callers at 30 requests a second each: 120/s against a limit of 40/s.
    for _ in 0..4 {
        let (gw, token) = (std::sync::Arc::clone(&gw), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(33));
            let (mut passed, mut limited) = (0u32, 0u32);
            while started.elapsed() < span {
                tick.tick().await;
                let r = gw.get("/Users", Some(&token)).await;
                match r.status {
                    200 => passed += 1,
                    429 => {
                        assert_eq!(r.header("retry-after"), Some("1"), "Retry-After");
                        limited += 1;
                    }
                    other => panic!("status {other}"),
                }
            }
            (passed, limited)
        }));
    }
    let (mut passed, mut limited) = (0, 0);
    for t in tasks {
        let (p, l) = t.await.expect("task");
        passed += p;
        limited += l;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // A burst of 10 (a quarter second), then 40 per second.
    let expected = 10.0 + 40.0 * elapsed;
    let ratio = f64::from(passed) / expected;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "{passed} passed in {elapsed:.2}s, expected about {expected:.0} (limited {limited})"
    );
    assert!(limited > 0, "the limit never applied");
    assert_eq!(upstream.requests().len(), passed as usize);
}

/// `explain` lists the guardrails that apply to the rule a token matches, and `check` refuses
/// bad CIDRs, rates and attribute names with their key paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_lists_and_check_validates_the_guardrails() {
    let (_jwks, _upstream, cfg) = fixture().await;
    let cfg = cfg
        .set("guardrails", "max_deprovisions", "50")
        .extra(&format!(
            "[[rules]]\nname = \"guarded\"\nclaim = \"groups\"\nvalue = \"{GUARDED}\"\n\
             service_account = \"provisioner\"\ndeny_attributes = [\"roles\"]\n\
             source_ips = [\"192.0.2.0/24\"]\nrate_limit = \"25/s\"\n"
        ));
    let dir = TempDir::new("guard-explain");
    let (path, _) = cfg.write_to(&dir);
    let token = Token::new()
        .claim("groups", json!([GUARDED]))
        .sign(rsa_key());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(binary())
            .arg("explain")
            .arg("--config")
            .arg(&path)
            .arg(token)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .output()
            .expect("run scimgate explain")
    })
    .await
    .expect("explain thread");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("guardrails"))
        .unwrap_or_else(|| panic!("no guardrails line:\n{stdout}"));
    for want in [
        "deny_attributes roles",
        "source_ips 192.0.2.0/24",
        "rate_limit 25/s (burst 7)",
        "tenant budget 50 deprovisionings per 1h",
    ] {
        assert!(line.contains(want), "{want:?} missing: {line}");
    }
    let bad = cfg.extra(
        "[[rules]]\nname = \"bad\"\nclaim = \"groups\"\nvalue = \"x\"\nservice_account = \"provisioner\"\n\
         deny_attributes = [\"emails[type eq\"]\nsource_ips = [\"10.0.0.1/8\", \"not-a-cidr\"]\nrate_limit = \"0/s\"\n",
    );
    let bad_dir = TempDir::new("guard-check");
    let (bad_path, _) = bad.write_to(&bad_dir);
    let checked = run_check_file(&bad_path, &[]);
    for path in [
        "rules[2].deny_attributes[0]",
        "rules[2].source_ips[0]",
        "rules[2].source_ips[1]",
        "rules[2].rate_limit",
    ] {
        assert!(
            checked.stderr.contains(path) || checked.stdout.contains(path),
            "{path} not reported:\n{}{}",
            checked.stdout,
            checked.stderr
        );
    }
    assert_ne!(checked.code, Some(0));
}
