//! A throwaway PostgreSQL cluster per test: `initdb` into a temp dir and `pg_ctl start` on
//! a free loopback port, as the `postgres` user when the tests run as root (PostgreSQL
//! refuses root). Stopped on drop; `kill` and `start` inject database outages.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// Where Debian puts the PostgreSQL 15 server binaries.
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// One running (or stopped) cluster.
pub struct PgServer {
    pub port: u16,
    dir: tempfile::TempDir,
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

/// Runs a PostgreSQL binary, as `postgres` when we are root.
fn pg_command(binary: &str) -> Command {
    let path = format!("{PG_BIN}/{binary}");
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &path]);
        c
    } else {
        Command::new(path)
    }
}

fn run(command: Command, what: &str) {
    if let Err(why) = try_run(command, what) {
        panic!("{why}");
    }
}

fn try_run(mut command: Command, what: &str) -> Result<(), String> {
    let out = command.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

impl PgServer {
    /// initdb + start on a free port.
    pub fn start() -> PgServer {
        let dir = tempfile::Builder::new().prefix("strata-pg").tempdir().expect("tempdir");
        if is_root() {
            let mut chown = Command::new("chown");
            chown.args(["-R", "postgres:postgres"]).arg(dir.path());
            run(chown, "chown");
        }
        let mut server = PgServer { port: super::free_port(), dir };
        let mut initdb = pg_command("initdb");
        initdb.args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"]).arg(server.data());
        run(initdb, "initdb");
        // The free port can be taken by a parallel test between choosing and binding it;
        // a few fresh ports make that race harmless.
        let mut last = String::new();
        for _ in 0..3 {
            match server.try_resume() {
                Ok(()) => return server,
                Err(why) => last = why,
            }
            server.port = super::free_port();
        }
        panic!("{last}");
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts (again) the stopped cluster.
    pub fn resume(&self) {
        if let Err(why) = self.try_resume() {
            panic!("{why}");
        }
    }

    fn try_resume(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let mut pg_ctl = pg_command("pg_ctl");
        pg_ctl
            .args(["-w", "-t", "20", "-o", &options, "-l"])
            .arg(self.dir.path().join("log"))
            .arg("-D")
            .arg(self.data())
            .arg("start");
        try_run(pg_ctl, "pg_ctl start")
    }

    /// Stops the cluster at once (a database outage).
    pub fn kill(&self) {
        let mut pg_ctl = pg_command("pg_ctl");
        pg_ctl.args(["-w", "-m", "immediate", "-D"]).arg(self.data()).arg("stop");
        let _ = pg_ctl.output();
    }

    /// The server's log so far (`pg_ctl -l`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// `postgres://…` for strata.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs SQL with psql and returns its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .expect("psql");
        assert!(out.status.success(), "psql failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.kill();
    }
}
