//! Running `scimgate check` as a subprocess.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::config::TempDir;
use super::gateway::binary;

/// What `scimgate check` produced.
#[derive(Debug)]
pub struct CheckOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `scimgate check --config <path>` (plus `args`) with an empty environment.
pub fn run_check_file(path: &Path, args: &[&str]) -> CheckOutput {
    let child = Command::new(binary())
        .arg("check")
        .args(args)
        .arg("--config")
        .arg(path)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn scimgate check");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(output) => output.expect("collect check output"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("scimgate check did not finish within 20s");
        }
    };
    CheckOutput {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Writes `config_text` to a temp file and runs `scimgate check` on it.
pub fn run_check(config_text: &str) -> CheckOutput {
    let dir = TempDir::new("check");
    let path = dir.write("scimgate.toml", config_text.as_bytes(), 0o644);
    run_check_file(&path, &[])
}
