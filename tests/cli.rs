//! The `strata` binary's command line: `--help` keeps secrets out, output to a closed
//! pipe is a normal end, and the listener gets the configured backlog.

mod support;

use std::process::{Child, Command, Stdio};

use support::{free_port, wait_for_port};

fn strata_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strata"))
}

#[test]
fn help_never_shows_environment_values() {
    let out = strata_bin()
        .arg("--help")
        .env("STRATA_UPSTREAM", "redis://app:S3cretPass@10.0.0.1:6379")
        .env("STRATA_POSTGRES", "postgres://app:PgSecret@db/shop")
        .env("STRATA_LISTEN", "127.0.0.1:7777")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    assert!(help.contains("STRATA_UPSTREAM"), "the variable is still named:\n{help}");
    for secret in ["S3cretPass", "PgSecret", "7777"] {
        assert!(!help.contains(secret), "--help shows {secret}:\n{help}");
    }
}

/// `strata check-config … | head -1`: the reader is gone before strata writes.
#[test]
fn check_config_into_a_closed_pipe_exits_normally() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/strata.example.toml");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nmax_clients = 0\n").unwrap();
    for (file, status) in [(example, 0), (bad.to_str().unwrap(), 64)] {
        for _ in 0..3 {
            let (reader, writer) = std::io::pipe().unwrap();
            drop(reader);
            let out = strata_bin().args(["check-config", file]).stdout(writer).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(status), "{file}: {stderr}");
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The backlog `ss` shows for a listening socket (its Send-Q column).
fn listen_backlog(port: u16) -> Option<u32> {
    let out = Command::new("ss").args(["-Hltn", &format!("sport = :{port}")]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(2)?.parse().ok()
}

fn backlog_of_strata(config: &str) -> Option<u32> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.toml");
    std::fs::write(&file, config).unwrap();
    let port = free_port();
    // Redis need not be there: strata starts while its upstream is down.
    let _strata = KillOnDrop(
        strata_bin()
            .arg("--config")
            .arg(&file)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--upstream", &format!("redis://127.0.0.1:{}", free_port())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(port);
    listen_backlog(port)
}

#[test]
fn the_listener_gets_redis_default_backlog_or_the_configured_one() {
    if Command::new("ss").arg("-V").output().is_err() {
        eprintln!("no `ss` (iproute2) to read the backlog with; skipped");
        return;
    }
    assert_eq!(backlog_of_strata(""), Some(511), "Redis' tcp-backlog default");
    assert_eq!(backlog_of_strata("[server]\ntcp_backlog = 300\n"), Some(300));
}
