//! strata as production runs it: the built binary (its runtime, its thread count) with a
//! config file, on a free port, killed on drop. `STRATA_TEST_BIN` names another build to
//! try, such as an older one, to see a test fail on it.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{RawClient, free_port, wait_for_port};

/// A running strata binary.
pub struct Binary {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Binary {
    /// Starts the binary in front of `upstream` with `toml` as its config file; returns
    /// once a shared-route request is answered by Redis.
    pub async fn start(upstream: &str, toml: &str) -> Binary {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("strata.toml");
        std::fs::write(&config, toml).expect("write config");
        let port = free_port();
        let bin = std::env::var("STRATA_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_strata").into());
        let child = Command::new(bin)
            .args(["--config", config.to_str().expect("utf8 path")])
            .args(["--listen", &format!("127.0.0.1:{port}"), "--upstream", upstream])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start strata");
        wait_for_port(port);
        let binary = Binary { child, addr: SocketAddr::from(([127, 0, 0, 1], port)), _dir: dir };
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

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
