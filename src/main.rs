//! The `strata` binary: command line, logging, signals; everything else is in the library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use strata::config::{Config, LogFormat, Overrides};
use tokio_util::sync::CancellationToken;

/// mimalloc: the data path allocates small, short-lived buffers per request, which the
/// system allocator handled measurably slower in bench/tiers.sh profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for an invalid configuration (EX_CONFIG-like, as sysexits' EX_USAGE).
const EXIT_BAD_CONFIG: u8 = 64;

/// strata: a Redis-protocol sidecar proxy. Point unmodified Redis clients at --listen.
///
/// Every `env` argument hides its value in `--help`: URLs carry passwords.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    /// TOML config file; every field is documented in strata.example.toml.
    #[arg(long, global = true, env = "STRATA_CONFIG", hide_env_values = true)]
    config: Option<PathBuf>,
    /// Address clients connect to (overrides server.listen), e.g. 127.0.0.1:6380.
    #[arg(long, global = true, env = "STRATA_LISTEN", hide_env_values = true)]
    listen: Option<String>,
    /// The Redis behind strata (overrides upstream.url): redis://[user:pass@]host:port[/db].
    #[arg(long, global = true, env = "STRATA_UPSTREAM", hide_env_values = true)]
    upstream: Option<String>,
    /// HTTP side port for /metrics, /healthz and /readyz (overrides server.admin).
    #[arg(long, global = true, env = "STRATA_ADMIN", hide_env_values = true)]
    admin: Option<String>,
    /// PostgreSQL for read-through (overrides postgres.url): postgres://user@host:port/db.
    #[arg(long, global = true, env = "STRATA_POSTGRES", hide_env_values = true)]
    postgres: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate a config file: print every problem and exit 64, or a summary and exit 0.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
        /// Also prepare every read-through statement against the live database
        /// (postgres.url, or --postgres) and check its parameter and column types.
        #[arg(long)]
        db: bool,
    },
}

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    let overrides = Overrides {
        listen: cli.listen.clone(),
        upstream: cli.upstream.clone(),
        admin: cli.admin.clone(),
        postgres: cli.postgres.clone(),
    };
    if let Some(Command::CheckConfig { file, db }) = &cli.command {
        return check_config(file, &overrides, *db);
    }
    let config = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(errors) => {
            let lines: String = errors.iter().map(|e| format!("  {e}\n")).collect();
            emit(std::io::stderr().lock(), &format!("strata: invalid configuration:\n{lines}"));
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    init_logging(config.log.format);
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            emit(std::io::stderr().lock(), &format!("strata: {e:#}\n"));
            ExitCode::FAILURE
        }
    }
}

fn check_config(file: &std::path::Path, overrides: &Overrides, db: bool) -> ExitCode {
    match Config::load(Some(file), overrides) {
        Ok(config) if db => check_against_database(file, &config),
        Ok(config) => {
            emit(std::io::stdout().lock(), &format!("{}: ok\n{}\n", file.display(), config.summary()));
            ExitCode::SUCCESS
        }
        Err(errors) => report_problems(file, errors.iter()),
    }
}

/// Prints `problems` under a heading and gives the bad-config exit status.
fn report_problems<T: std::fmt::Display>(
    file: &std::path::Path,
    problems: impl ExactSizeIterator<Item = T>,
) -> ExitCode {
    let mut text = format!("{}: {} problem(s)\n", file.display(), problems.len());
    problems.for_each(|e| text.push_str(&format!("  {e}\n")));
    emit(std::io::stdout().lock(), &text);
    ExitCode::from(EXIT_BAD_CONFIG)
}

/// Writes `text` without `println!`'s panic when the reader went away (`check-config |
/// head -1`): a closed pipe is a normal end, and the exit status stays the check's own.
fn emit(mut out: impl Write, text: &str) {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            let _ = writeln!(std::io::stderr(), "strata: cannot write output: {e}");
        }
        _ => {}
    }
}

/// `check-config --db`: prepares each read-through statement on the live database.
fn check_against_database(file: &std::path::Path, config: &Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            emit(std::io::stderr().lock(), &format!("strata: {e}\n"));
            return ExitCode::FAILURE;
        }
    };
    let problems = runtime.block_on(strata::fallback::check_rules(&config.fallback_setup()));
    if problems.is_empty() {
        let text =
            format!("{}: ok (every read-through statement prepared)\n{}\n", file.display(), config.summary());
        emit(std::io::stdout().lock(), &text);
        return ExitCode::SUCCESS;
    }
    report_problems(file, problems.iter())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a terminal: escape codes in a log file or collector are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    let runtime = strata::runtime(config.server.threads)?;
    runtime.block_on(async move {
        let listener = strata::server::bind(&config.server.listen, config.server.tcp_backlog)
            .await
            .with_context(|| format!("cannot listen on {} (server.listen)", config.server.listen))?;
        tracing::info!(listen = %config.server.listen, upstream = %config.upstream.url, "strata started");
        let admin = match &config.server.admin {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr.as_str())
                    .await
                    .with_context(|| format!("cannot listen on {addr} (server.admin)"))?,
            ),
            None => None,
        };
        let shutdown = CancellationToken::new();
        spawn_signal_handlers(shutdown.clone())?;
        tokio::spawn(return_freed_memory());
        strata::run_with_admin(config, listener, admin, shutdown).await;
        tracing::info!("strata stopped");
        Ok(())
    })
}

/// mimalloc asks the kernel for transparent huge pages on its arenas (`madvise`), so the
/// first touch of each 2 MiB zeroes all of it and, after mimalloc returned freed memory,
/// zeroes it again. A burst of thousands of new clients then stalled the runtime for tens of
/// milliseconds at a time: the listen queue overflowed and connects waited a second for a
/// SYN retry (bench/connect-burst.py: 1.8x Redis' time with them, 1.0x without). Request
/// throughput did not measurably change (bench/LOG.md, "Runs of 2026-12-07, evening").
fn disable_transparent_huge_pages() {
    // SAFETY: prctl with integer arguments only; it changes this process' memory policy.
    let failed = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0;
    if failed {
        eprintln!("strata: could not turn off transparent huge pages (prctl); continuing");
    }
}

/// mimalloc gives freed memory back to the OS lazily, on a later allocation: a sidecar
/// that went idle after a 200 MB value would keep it resident. A light collection once a
/// second returns what was freed (and is a no-op when nothing was).
async fn return_freed_memory() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // SAFETY: mi_collect takes no pointers and may be called from any thread.
        unsafe { libmimalloc_sys::mi_collect(false) };
    }
}

/// SIGTERM drains gracefully; SIGINT exits at once.
fn spawn_signal_handlers(shutdown: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM: no new clients; finishing in-flight replies");
                shutdown.cancel();
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: exiting now");
                std::process::exit(130);
            }
        }
    });
    Ok(())
}
