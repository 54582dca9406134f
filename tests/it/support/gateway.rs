//! Launches the real `scimgate serve` on loopback ports with a temp config, captures its
//! stdout/stderr, talks to it, and checks on drop that no sentinel leaked into its logs.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::client::{REQUEST_TIMEOUT, Response, send};
use super::config::{GatewayConfig, TempDir};
use super::wire;

/// Bound on the time from spawn to the "listening" log line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on the time from "listening" to `/readyz` answering 200.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_scimgate")
}

type Lines = Arc<Mutex<Vec<String>>>;

/// A running `scimgate serve`. Killed on drop; on drop (unless the test is already panicking)
/// its captured logs are checked for every sentinel.
pub struct Gateway {
    child: Child,
    dir: TempDir,
    pub config_path: PathBuf,
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    sentinels: BTreeMap<String, String>,
    stdout: Lines,
    stderr: Lines,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Gateway {
    /// Starts the gateway and waits (bounded) until it logs "listening" and `/readyz` is 200.
    pub async fn start(cfg: GatewayConfig) -> Self {
        let gw = Self::start_unready(cfg).await;
        gw.wait_ready().await;
        gw
    }

    /// Starts the gateway and waits only for the "listening" line.
    pub async fn start_unready(cfg: GatewayConfig) -> Self {
        let dir = TempDir::new("gw");
        let (config_path, sentinels) = cfg.write_to(&dir);
        let mut command = Command::new(binary());
        command
            .args(["serve", "--config"])
            .arg(&config_path)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in cfg.env_vars() {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn scimgate");
        let stdout: Lines = Arc::default();
        let stderr: Lines = Arc::default();
        let readers = vec![
            capture(
                child.stdout.take().expect("piped stdout"),
                Arc::clone(&stdout),
            ),
            capture(
                child.stderr.take().expect("piped stderr"),
                Arc::clone(&stderr),
            ),
        ];
        let mut gw = Self {
            child,
            dir,
            config_path,
            proxy_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            sentinels,
            stdout,
            stderr,
            readers,
        };
        let (proxy, admin) = gw.wait_listening().await;
        gw.proxy_addr = proxy;
        gw.admin_addr = admin;
        gw
    }

    async fn wait_listening(&mut self) -> (SocketAddr, SocketAddr) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let found = self
                .stdout
                .lock()
                .expect("stdout lock")
                .iter()
                .find_map(|line| parse_listening(line));
            if let Some(addrs) = found {
                return addrs;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "scimgate exited ({status}) before listening; logs:\n{}",
                    self.logs().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "no \"listening\" line within {STARTUP_TIMEOUT:?}; logs:\n{}",
                self.logs().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Polls `GET /readyz` (bounded) until 200.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(r) = self.admin_get("/readyz").await
                && r.status == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz not 200 within {READY_TIMEOUT:?}; logs:\n{}",
                self.logs().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The `provisioner` account's sentinel key.
    pub fn sentinel(&self) -> &str {
        self.sentinel_of("provisioner")
    }

    pub fn sentinel_of(&self, account: &str) -> &str {
        self.sentinels
            .get(account)
            .unwrap_or_else(|| panic!("no service account {account:?}"))
    }

    fn all_sentinels(&self) -> Vec<String> {
        self.sentinels.values().cloned().collect()
    }

    /// Every account's sentinel key (for checking responses read by other clients).
    pub fn sentinels(&self) -> Vec<String> {
        self.all_sentinels()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `http://<proxy addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy_addr)
    }

    /// A request to the proxy port; the response is checked to be free of every sentinel.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Response {
        let response = send(self.proxy_addr, method, path, headers, body.into())
            .await
            .unwrap_or_else(|e| panic!("{e}; logs:\n{}", self.logs().join("\n")));
        response.assert_free_of(&self.all_sentinels());
        response
    }

    /// `GET path` with `Authorization: Bearer <token>` when a token is given.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        match token {
            Some(t) => {
                let auth = format!("Bearer {t}");
                self.request("GET", path, &[("authorization", &auth)], Bytes::new())
                    .await
            }
            None => self.request("GET", path, &[], Bytes::new()).await,
        }
    }

    /// Exact bytes to the proxy port on a fresh connection; response checked for sentinels.
    pub async fn raw(&self, request: &[u8]) -> Response {
        let raw = wire::raw_exchange(self.proxy_addr, request, REQUEST_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("raw exchange: {e}; logs:\n{}", self.logs().join("\n")));
        let response = Response::from(raw);
        response.assert_free_of(&self.all_sentinels());
        response
    }

    /// `GET path` on the admin port.
    pub async fn admin_get(&self, path: &str) -> Result<Response, String> {
        send(self.admin_addr, "GET", path, &[], Bytes::new()).await
    }

    /// Sends SIGTERM to the process.
    pub fn send_sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits (bounded, polling) for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "scimgate did not exit within {timeout:?}; logs:\n{}",
                self.logs().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Every captured line so far: stdout, then stderr.
    pub fn logs(&self) -> Vec<String> {
        let mut all = self.stdout.lock().expect("stdout lock").clone();
        all.extend(self.stderr.lock().expect("stderr lock").iter().cloned());
        all
    }

    /// Stdout lines that parse as JSON objects.
    pub fn json_logs(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lock()
            .expect("stdout lock")
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Polls (bounded) until at least `n` captured lines satisfy `pred`; returns them.
    pub async fn wait_for_logs(
        &self,
        pred: impl Fn(&str) -> bool,
        n: usize,
        timeout: Duration,
    ) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let hits: Vec<String> = self.logs().into_iter().filter(|l| pred(l)).collect();
            if hits.len() >= n {
                return hits;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} expected log lines within {timeout:?}; logs:\n{}",
                hits.len(),
                self.logs().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Makes sure every line the gateway has logged so far has been captured: the gateway
    /// writes its log in batches (at least every 20 ms), so a check right after a request could
    /// pass for want of lines. A request with a marker id is sent, and its access line waited
    /// for: the queue is first in, first out, so every earlier line is in too. Where no request
    /// can be sent (a TLS listener, a process that has exited), a wait of five batch intervals.
    pub fn flush_logs(&self) {
        use std::io::{Read, Write};
        let marker = format!("flush-marker-{}", super::config::random_hex(8));
        let sent = std::net::TcpStream::connect_timeout(&self.proxy_addr, Duration::from_secs(1))
            .and_then(|mut stream| {
                stream.set_read_timeout(Some(Duration::from_secs(2)))?;
                stream.set_write_timeout(Some(Duration::from_secs(2)))?;
                write!(
                    stream,
                    "GET /Users HTTP/1.1\r\nHost: localhost\r\nx-request-id: {marker}\r\nConnection: close\r\n\r\n"
                )?;
                let mut head = [0u8; 12];
                stream.read_exact(&mut head)?;
                // A plain HTTP answer: the request reached the pipeline (a TLS listener sends
                // an alert instead).
                if head.starts_with(b"HTTP/1.1 ") {
                    Ok(())
                } else {
                    Err(std::io::Error::other("not an HTTP/1.1 listener"))
                }
            });
        let deadline = Instant::now() + Duration::from_secs(3);
        if sent.is_ok() {
            while Instant::now() < deadline {
                if self.logs().iter().any(|l| l.contains(&marker)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    /// Asserts that no captured line contains any sentinel or any of `extra`, once every line
    /// logged so far is in ([`flush_logs`](Self::flush_logs)).
    pub fn assert_logs_free_of(&self, extra: &[&str]) {
        self.flush_logs();
        self.assert_captured_free_of(extra);
    }

    /// Asserts that no line captured so far contains any sentinel or any of `extra`.
    fn assert_captured_free_of(&self, extra: &[&str]) {
        let mut secrets = self.all_sentinels();
        secrets.extend(extra.iter().map(|s| (*s).to_owned()));
        for line in self.logs() {
            for secret in &secrets {
                assert!(
                    !line.contains(secret.as_str()),
                    "secret {secret:?} leaked into a log line: {line}"
                );
            }
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // The lines still queued in the gateway are part of what the check below reads.
        if !std::thread::panicking() && self.is_running() {
            self.flush_logs();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        if !std::thread::panicking() {
            self.assert_captured_free_of(&[]);
        }
    }
}

fn capture<R: std::io::Read + Send + 'static>(
    stream: R,
    lines: Lines,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let reader = BufReader::new(stream);
        for line in reader.split(b'\n') {
            let Ok(line) = line else { return };
            let text = String::from_utf8_lossy(&line).into_owned();
            if std::env::var_os("SCIMGATE_TEST_ECHO").is_some() {
                eprintln!("[scimgate] {text}");
            }
            lines.lock().expect("log lines lock").push(text);
        }
    })
}

fn parse_listening(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v["message"] != "listening" {
        return None;
    }
    let proxy = v["proxy_addr"].as_str()?.parse().ok()?;
    let admin = v["admin_addr"].as_str()?.parse().ok()?;
    Some((proxy, admin))
}
