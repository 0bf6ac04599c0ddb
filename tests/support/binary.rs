//! strata as production runs it: the built binary (its runtime, its thread count) with a
//! config file, on a free port, killed on drop. `STRATA_TEST_BIN` names another build to
//! try, such as an older one, to see a test fail on it.

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{RawClient, free_port, wait_for_port};

/// A running strata binary.
pub struct Binary {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
    logs: Option<(PathBuf, PathBuf)>,
}

impl Binary {
    /// Starts the binary in front of `upstream` with `toml` as its config file; returns
    /// once a shared-route request is answered by Redis.
    pub async fn start(upstream: &str, toml: &str) -> Binary {
        Self::launch(upstream, toml, None).await
    }

    /// Like `start`, with `RUST_LOG` set to `rust_log` (unset for `None`) and stdout and
    /// stderr kept in files for `stdout()` and `stderr()`.
    pub async fn start_logged(upstream: &str, toml: &str, rust_log: Option<&str>) -> Binary {
        Self::launch(upstream, toml, Some(rust_log)).await
    }

    async fn launch(upstream: &str, toml: &str, logged: Option<Option<&str>>) -> Binary {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("strata.toml");
        std::fs::write(&config, toml).expect("write config");
        let port = free_port();
        let bin = std::env::var("STRATA_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_strata").into());
        let mut command = Command::new(bin);
        command
            .args(["--config", config.to_str().expect("utf8 path")])
            .args(["--listen", &format!("127.0.0.1:{port}"), "--upstream", upstream])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut logs = None;
        if let Some(rust_log) = logged {
            if let Some(level) = rust_log {
                command.env("RUST_LOG", level);
            }
            let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
            command.stdout(File::create(&out).expect("stdout file"));
            command.stderr(File::create(&err).expect("stderr file"));
            logs = Some((out, err));
        }
        let child = command.spawn().expect("start strata");
        wait_for_port(port);
        let binary = Binary { child, addr: SocketAddr::from(([127, 0, 0, 1], port)), _dir: dir, logs };
        for _ in 0..300 {
            let mut c = RawClient::connect(binary.addr).await;
            if c.command(&["EXISTS", "ready"]).await.starts_with(b":") {
                return binary;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("strata never connected to Redis");
    }

    /// The process's resident set, in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }
}

impl Binary {
    /// What the process wrote to stdout so far (`start_logged` only).
    pub fn stdout(&self) -> String {
        let (out, _) = self.logs.as_ref().expect("started with start_logged");
        std::fs::read_to_string(out).unwrap_or_default()
    }

    /// What the process wrote to stderr so far (`start_logged` only).
    pub fn stderr(&self) -> String {
        let (_, err) = self.logs.as_ref().expect("started with start_logged");
        std::fs::read_to_string(err).unwrap_or_default()
    }

    /// Sends a signal (TERM, INT) to the process.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status();
    }

    /// Waits up to `limit` for the process to exit; its status, or `None` if it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
