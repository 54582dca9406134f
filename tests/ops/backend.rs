//! A stand-in SCIM backend (and JWKS host) for the ops tests: std only, built with plain `rustc`
//! so it runs in a `FROM scratch` image next to scimgate with the same glibc libraries.
//!
//! Environment:
//!   LISTEN_ADDR        bind address (default 127.0.0.1:0); prints `listening <addr>` on stdout
//!   SCIM_BEARER_TOKEN  the API key scimgate must send as `Authorization: Bearer <key>`
//!   JWKS_FILE          served without authentication at GET /jwks.json (default /jwks.json)
//!   SLOW_MS            how long a path containing `/slow` waits before answering (default 2000)
//!
//! GET /jwks-unusable.json serves a JWK Set whose only key is symmetric (no key scimgate can use).
//!
//! Every request writes one line to stderr: `backend: <method> <target> auth=<ok|bad>`, and a
//! `/slow` request also `backend: slow request started` before it waits, so a test can see
//! that a request is in flight. A path containing `/reject` is answered 401 whatever the key,
//! as an upstream that no longer accepts the service account's key would; one containing `/echo`
//! is answered 500 with an error page that repeats the request's `Authorization` header, as a
//! backend in debug mode would (scimgate must withhold it: the header holds the key).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

fn main() {
    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:0".into());
    let listener = TcpListener::bind(&addr).unwrap_or_else(|e| fail(&format!("bind {addr}: {e}")));
    let local = listener
        .local_addr()
        .unwrap_or_else(|e| fail(&e.to_string()));
    println!("listening {local}");
    let _ = std::io::stdout().flush();
    let key = std::env::var("SCIM_BEARER_TOKEN").unwrap_or_default();
    if key.is_empty() {
        eprintln!("backend: SCIM_BEARER_TOKEN is empty: every request but /jwks.json gets 401");
    }
    for conn in listener.incoming().flatten() {
        let key = key.clone();
        std::thread::spawn(move || {
            if let Err(e) = serve(conn, &key) {
                eprintln!("backend: connection error: {e}");
            }
        });
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("backend: {msg}");
    std::process::exit(1)
}

fn serve(conn: TcpStream, key: &str) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let (mut length, mut auth) = (0usize, String::new());
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim_end().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "authorization" => auth = value.trim().to_string(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length.min(1 << 20)];
    reader.read_exact(&mut body)?;
    let path = target.split('?').next().unwrap_or("");
    let authorized = !key.is_empty() && auth == format!("Bearer {key}");
    eprintln!(
        "backend: {method} {target} auth={}",
        if authorized { "ok" } else { "bad" }
    );
    let (status, ctype, body) = if method == "GET" && path == "/jwks.json" {
        let file = std::env::var("JWKS_FILE").unwrap_or_else(|_| "/jwks.json".into());
        match std::fs::read(&file) {
            Ok(jwks) => ("200 OK", "application/jwk-set+json", jwks),
            Err(e) => (
                "404 Not Found",
                "text/plain",
                format!("{file}: {e}\n").into_bytes(),
            ),
        }
    } else if method == "GET" && path == "/jwks-unusable.json" {
        let set = r#"{"keys":[{"kty":"oct","kid":"hmac","alg":"HS256","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQ"}]}"#;
        (
            "200 OK",
            "application/jwk-set+json",
            set.as_bytes().to_vec(),
        )
    } else if path.contains("/reject") || !authorized {
        (
            "401 Unauthorized",
            "application/scim+json",
            scim_error("401", "bad credential"),
        )
    } else if path.contains("/echo") {
        (
            "500 Internal Server Error",
            "text/plain",
            format!("debug: {method} {target}\nAuthorization: {auth}\n").into_bytes(),
        )
    } else {
        if path.contains("/slow") {
            eprintln!("backend: slow request started");
            let ms = std::env::var("SLOW_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(2000);
            std::thread::sleep(Duration::from_millis(ms));
        }
        let list = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],"totalResults":0,"Resources":[]}"#;
        ("200 OK", "application/scim+json", list.as_bytes().to_vec())
    };
    let mut out = conn;
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    out.write_all(&body)?;
    out.flush()
}

fn scim_error(status: &str, detail: &str) -> Vec<u8> {
    format!(
        r#"{{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"{status}","detail":"{detail}"}}"#
    )
    .into_bytes()
}
