//! The `loadgen` binary: parses the command line and dispatches.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use loadgen::cli::{Cli, Command};
use loadgen::{compare, merge, raw_server, render, report::Report};

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run() -> Result<ExitCode> {
    let cli = Cli::parse_from(default_suite(std::env::args_os().collect()));
    match &cli.command {
        Command::RawServer(a) => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let target = a.target.target();
            // Before any thread starts, so every thread inherits the blocked mask and
            // the signals reach only the waiting thread.
            if a.fanout
                && (a.engine != raw_server::Engine::Ring
                    || a.threads.is_some_and(|t| t != 1)
                    || a.cpus.len() > 1)
            {
                anyhow::bail!("--fanout needs --engine ring, one thread and at most one CPU");
            }
            if a.handshake.is_some() && a.engine != raw_server::Engine::Monoio {
                anyhow::bail!("--handshake needs --engine monoio");
            }
            let signals = block_signals();
            let server = if a.fanout {
                raw_server::RawServer::start_fanout(&target, a.cpus.first().copied(), a.ring)
                    .context("starting the raw fan-out server")?
            } else if let Some(wire) = a.handshake {
                raw_server::RawServer::start_handshake(
                    &target,
                    a.threads.unwrap_or(cores),
                    &a.cpus,
                    a.ring,
                    wire,
                )
                .context("starting the raw handshake server")?
            } else {
                raw_server::RawServer::start_engine(
                    &target,
                    a.threads.unwrap_or(cores),
                    &a.cpus,
                    a.ring,
                    a.engine,
                )
                .context("starting the raw echo server")?
            };
            stop_on_signal(signals, server.stopper());
            eprintln!("raw-server listening on {}", server.target);
            // Returns once a signal stopped the workers; removes the socket file.
            server.wait();
            Ok(ExitCode::SUCCESS)
        }
        Command::Report(a) => {
            let out = render::render(&a.runs, &a.out).context("rendering the report")?;
            println!("wrote {}", out.markdown.display());
            for c in &out.charts {
                println!("wrote {}", c.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Compare(a) if loadgen::bench::doc::RatioFile::sniff(&a.base) => {
            use loadgen::bench::{doc::RatioFile, gate};
            let base = RatioFile::read(&a.base)?;
            let new = RatioFile::read(&a.new)?;
            let (text, failed) =
                gate::compare_files(&base, &new, a.max_regression, a.busy_threshold, &[]);
            print!("{text}");
            Ok(if failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        Command::Bench(a) => Ok(if loadgen::bench::run(a)? {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }),
        Command::Probe(a) => {
            let report = loadgen::probe::run(a)?;
            // The targets' standing is data; a doubtful figure fails the run.
            Ok(if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::Merge(a) => {
            let inputs = a
                .runs
                .iter()
                .map(|p| Report::read(p).map(|r| (p.clone(), r)))
                .collect::<Result<Vec<_>, _>>()?;
            let merged = merge::merge(&inputs, a.label.as_deref())?;
            merged.write(&a.json)?;
            for w in &merged.warnings {
                eprintln!("loadgen merge: warning: {w}");
            }
            print!("{}", merged.summary());
            println!("wrote {}", a.json.display());
            Ok(if merged.results.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::Compare(a) => {
            let base = Report::read(&a.base)?;
            let new = Report::read(&a.new)?;
            let cmp = compare::compare(&base, &new, a.max_regression);
            print!("{}", cmp.render(&base, &new));
            Ok(if cmp.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        cmd => {
            let report = loadgen::run_load(cmd)?.context("not a load scenario")?;
            print!("{}", report.summary());
            // Fewer sessions than asked, or any error, fails the run (the report is
            // written either way).
            Ok(if report.results.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
    }
}

/// `loadgen --sessions 5000 --unix PATH` (options, no scenario) runs the default suite:
/// `suite` is put in front of the options. clap has no default subcommand; doing it here
/// keeps `Cli::command` a plain `Command` for the library and its tests.
fn default_suite(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let first = args.get(1).and_then(|a| a.to_str()).unwrap_or("");
    let asks_for_help = matches!(first, "-h" | "--help" | "-V" | "--version");
    if first.starts_with('-') && !asks_for_help {
        args.insert(1, "suite".into());
    }
    args
}

/// Blocks SIGINT and SIGTERM in the calling thread (and so in threads it starts later).
fn block_signals() -> libc::sigset_t {
    // SAFETY: libc signal-set calls on a local, zero-initialised sigset_t; the mask
    // change affects only this thread and threads it spawns afterwards.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// On SIGINT/SIGTERM (blocked everywhere by [`block_signals`], taken here with sigwait),
/// stops the raw server's workers (which then remove its Unix socket file).
fn stop_on_signal(set: libc::sigset_t, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut sig = 0;
            // SAFETY: `set` is an initialised sigset and `sig` a valid out pointer.
            unsafe { libc::sigwait(&set, &mut sig) };
            stop.store(true, std::sync::atomic::Ordering::Release);
        });
}
