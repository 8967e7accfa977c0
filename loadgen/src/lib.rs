//! `loadgen`: the sockchat load generator, as a library so tests (and other tools) can
//! run scenarios in-process.
//!
//! * [`cli`]: the command line.
//! * [`runner`]: the thread-per-core harness (setup ramp, start barrier, window, progress).
//! * [`scenarios`]: echo, rate, heartbeat, churn, fanout, raw-echo, raw-churn.
//! * [`client`]: the protocol side of a session, on `sockchat-proto`'s codec.
//! * [`conn`]: TCP / Unix stream abstraction over monoio.
//! * [`echo_wire`]: echo replies verified by byte comparison with the frame sent.
//! * [`fanout_wire`]: fan-out deliveries verified without re-parsing a repeated header.
//! * [`stats`], [`histogram`]: recording and HdrHistogram encoding.
//! * [`report`], [`machine`], [`cpu`]: the versioned JSON report.
//! * [`render`], [`compare`]: Markdown/SVG rendering and regression checks.
//! * [`raw_server`]: the minimal monoio echo server used as a baseline, and the compio
//!   ([`raw_compio`]) and own-ring ([`raw_ring`], on the `sockchat-uring` crate) variants measured beside it.
//! * [`bench`]: the benchmark suite runner (`loadgen bench`, driven by `ci/bench.sh`).

pub mod bench;
pub mod cli;
pub mod client;
pub mod compare;
pub mod conn;
pub mod cpu;
pub mod echo_wire;
pub mod fanout_wire;
pub mod histogram;
pub mod interval_log;
pub mod machine;
pub mod max_rate;
pub mod merge;
pub mod probe;
pub mod raw_compio;
pub mod raw_ring;
pub mod raw_server;
pub mod render;
pub mod report;
pub mod runner;
pub mod scenarios;
#[cfg(test)]
mod script_reader;
pub mod shard;
pub mod stages;
pub mod stats;
pub mod sync;

use cli::Command;
use report::Report;
use scenarios::{Finished, ScenarioError};
use thiserror::Error;

/// A load run that could not be carried out or reported.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The scenario failed to run.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// The report failed to build or write.
    #[error(transparent)]
    Report(#[from] report::ReportError),
    /// The interval log failed to write.
    #[error(transparent)]
    IntervalLog(#[from] interval_log::IntervalLogError),
}

/// Runs a load scenario command and builds its report (also writing it when `--json`
/// was given). Returns `None` for commands that are not load scenarios.
pub fn run_load(cmd: &Command) -> Result<Option<Report>, LoadError> {
    let (finished, common, config): (Finished, &cli::CommonArgs, serde_json::Value) = match cmd {
        Command::Rate(a) if a.find_max_rate => return max_rate::run(a).map(Some),
        Command::Suite(a) => (scenarios::suite::run(a)?, &a.common, config_of(a)),
        Command::Echo(a) => (scenarios::echo::run(a)?, &a.common, config_of(a)),
        Command::Rate(a) => (scenarios::rate::run(a)?, &a.common, config_of(a)),
        Command::Heartbeat(a) => (scenarios::heartbeat::run(a)?, &a.common, config_of(a)),
        Command::Churn(a) => (scenarios::churn::run(a)?, &a.common, config_of(a)),
        Command::Fanout(a) => (scenarios::fanout::run(a)?, &a.common, config_of(a)),
        Command::RawEcho(a) => (scenarios::raw::run_echo(a)?, &a.common, config_of(a)),
        Command::RawChurn(a) => (scenarios::raw::run_churn(a)?, &a.common, config_of(a)),
        _ => return Ok(None),
    };
    // The configuration the harness ran with (this worker's share of a split run).
    let run_cfg = &finished.outcome.cfg;
    let mut config = config;
    if let serde_json::Value::Object(m) = &mut config {
        m.insert("scenario".into(), finished.scenario.into());
        m.insert("threads_used".into(), run_cfg.threads.into());
    }
    let report = Report::build(&finished, run_cfg, config, common.label.as_deref())?;
    if let Some(path) = &common.json {
        report.write(path)?;
    }
    if let Some(path) = &common.interval_log {
        let start = finished.outcome.wall.map_or(std::time::UNIX_EPOCH, |w| {
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(w.start_unix_ms)
        });
        interval_log::write(
            path,
            finished.sampled_name(),
            start,
            &finished.outcome.intervals,
        )?;
    }
    Ok(Some(report))
}

fn config_of<T: serde::Serialize>(args: &T) -> serde_json::Value {
    serde_json::to_value(args).unwrap_or(serde_json::Value::Null)
}
