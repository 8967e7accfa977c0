//! `loadgen merge RUN.json... --json OUT.json`: the reports of a run's workers (one per
//! `--shard`) combined into one report of the same schema.
//!
//! Percentiles cannot be combined, histograms can: every histogram (the run's and each
//! timeline second's) is added, and the percentiles are computed from the sums. Counters,
//! errors, messages and bytes are summed; timelines are aligned on wall-clock seconds
//! (`end_unix_ms`). Runs of different scenarios or configurations (anything but the
//! shard and where the output went) are refused, naming the difference. Windows that do
//! not overlap and workers whose own CPU was saturated (their latencies then measure
//! loadgen as much as the server) are reported as warnings.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::cpu::CpuReport;
use crate::histogram::{self, new_hist, HistError, Summary};
use crate::report::{Report, Results};
use crate::runner::WallWindow;
use crate::shard::Shard;

mod fanout;
mod timeline;

/// A worker's share of the CPU its threads could use above which its figures are
/// suspect.
pub const SATURATED: f64 = 0.9;

/// Configuration keys that may differ between the workers of one run.
const PER_WORKER: &[&str] = &[
    "shard",
    "json",
    "interval_log",
    "label",
    "quiet",
    "server_pid",
    "cpus",
    "threads",
    "threads_used",
    "start_at_ms",
];

/// `extra` figures that are a worker's share of the run (summed); the others must be
/// equal in every input.
const ADDITIVE_EXTRA: &[&str] = &[
    "requested_rate",
    "achieved_rate",
    "ticks",
    "missed_ticks",
    "sessions_per_sec",
    "receivers",
    "connects_per_sec",
    "echo_messages_per_sec",
];

/// One input of a merged report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MergedInput {
    /// The file read.
    pub path: String,
    /// Its label.
    pub label: String,
    /// Host it ran on.
    pub host: String,
    /// Its shard.
    pub shard: Option<Shard>,
    /// Sessions it established.
    pub sessions_established: u64,
    /// Messages it measured.
    pub messages: u64,
    /// Its errors.
    pub errors_total: u64,
    /// Its window on the wall clock.
    pub window: Option<WallWindow>,
    /// loadgen CPU seconds (user + system) over its load phase.
    pub cpu_s: f64,
    /// That CPU time over what its threads could use (1.0 = every thread busy all the
    /// time).
    pub cpu_utilization: f64,
}

impl MergedInput {
    /// One line for the summary.
    pub fn line(&self) -> String {
        format!(
            "{} shard {} on {}: {} sessions, {} messages, {} errors, CPU {:.0}% of its threads",
            self.path,
            self.shard.map_or("-".into(), |s| s.to_string()),
            if self.host.is_empty() {
                "?"
            } else {
                &self.host
            },
            self.sessions_established,
            self.messages,
            self.errors_total,
            self.cpu_utilization * 100.0
        )
    }
}

/// Why reports were not merged.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MergeError {
    /// Fewer than one input.
    #[error("nothing to merge")]
    Empty,
    /// The inputs are not parts of one run.
    #[error("{0}")]
    Mismatch(String),
    /// A histogram did not decode.
    #[error(transparent)]
    Hist(#[from] HistError),
}

/// Config without the keys that may differ per worker.
fn shared_config(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !PER_WORKER.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), shared_config(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The first difference between two JSON values, as `path: a vs b`.
fn first_difference(path: &str, a: &Value, b: &Value) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let p = format!("{path}.{k}");
                first_difference(
                    &p,
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                )
            })
        }
        _ if a == b => None,
        _ => Some(format!("{path}: {a} vs {b}")),
    }
}

fn add_hist(into: &mut Option<Histogram<u64>>, b64: &str) -> Result<(), HistError> {
    let h = histogram::decode(b64)?;
    match into {
        Some(acc) => acc
            .add(&h)
            .map_err(|e| HistError::Decode(format!("{e:?}")))?,
        None => *into = Some(h),
    }
    Ok(())
}

/// Merges the workers' reports `inputs` (path, report) into one.
pub fn merge(inputs: &[(PathBuf, Report)], label: Option<&str>) -> Result<Report, MergeError> {
    let Some((_, first)) = inputs.first() else {
        return Err(MergeError::Empty);
    };
    check_compatible(inputs)?;
    let mut warnings = Vec::new();
    let r0 = &first.results;

    // Histograms: added, then summarised.
    let mut hists: BTreeMap<String, Option<Histogram<u64>>> = BTreeMap::new();
    for (_, r) in inputs {
        for (name, b64) in &r.results.histograms {
            add_hist(hists.entry(name.clone()).or_default(), b64)?;
        }
    }
    let mut histograms = BTreeMap::new();
    let mut latencies = BTreeMap::new();
    for (name, h) in hists {
        let h = h.unwrap_or_else(new_hist);
        histograms.insert(name.clone(), histogram::encode(&h)?);
        latencies.insert(name, Summary::of(&h));
    }

    let sum = |f: &dyn Fn(&Results) -> u64| inputs.iter().map(|(_, r)| f(&r.results)).sum::<u64>();
    let messages = sum(&|x| x.messages);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut counters: BTreeMap<String, u64> = BTreeMap::new();
    let mut problems = Vec::new();
    for (p, r) in inputs {
        for (k, v) in &r.results.errors {
            *errors.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &r.results.counters {
            *counters.entry(k.clone()).or_default() += v;
        }
        for pr in &r.results.problems {
            problems.push(format!("{}: {pr}", p.display()));
        }
    }
    let mut extra = merged_extra(inputs);
    if r0.scenario == "fanout" {
        fanout::fanout_last_delivery(
            inputs,
            &mut histograms,
            &mut latencies,
            &mut errors,
            &mut extra,
        )?;
    }
    let errors_total = errors.values().sum();

    let window = merged_window(inputs, &mut warnings);
    let merged_from: Vec<MergedInput> = inputs.iter().map(|(p, r)| input(p, r)).collect();
    for m in &merged_from {
        if m.cpu_utilization >= SATURATED {
            warnings.push(format!(
                "{} (shard {}) used {:.0}% of its threads' CPU: its latencies measure loadgen as much as the server",
                m.path,
                m.shard.map_or("-".into(), |s| s.to_string()),
                m.cpu_utilization * 100.0
            ));
        }
    }
    shard_coverage(inputs, &mut warnings);

    let results = Results {
        scenario: r0.scenario.clone(),
        transport: r0.transport.clone(),
        target: r0.target.clone(),
        ok: inputs.iter().all(|(_, r)| r.results.ok),
        problems,
        sessions_requested: sum(&|x| x.sessions_requested),
        sessions_established: sum(&|x| x.sessions_established),
        threads: inputs.iter().map(|(_, r)| r.results.threads).sum(),
        setup_s: inputs
            .iter()
            .map(|(_, r)| r.results.setup_s)
            .fold(0.0, f64::max),
        warmup_s: r0.warmup_s,
        duration_s: r0.duration_s,
        messages,
        messages_per_sec: messages as f64 / r0.duration_s,
        bytes_per_sec: inputs.iter().map(|(_, r)| r.results.bytes_per_sec).sum(),
        errors,
        errors_total,
        latency_name: r0.latency_name.clone(),
        latency_us: latencies.get(&r0.latency_name).copied().unwrap_or_default(),
        latencies_us: latencies,
        histograms,
        counters,
        extra,
        shard: None,
        window,
        max_rate: None,
    };
    let mut config = first.config.clone();
    if let Some(c) = config.get_mut("common").and_then(Value::as_object_mut) {
        c.insert("shard".into(), Value::Null);
    }
    Ok(Report {
        schema_version: first.schema_version,
        tool: first.tool.clone(),
        machine: first.machine.clone(),
        label: label.map_or_else(
            || format!("{}-{}-merged", r0.scenario, r0.transport),
            str::to_string,
        ),
        finished_unix_s: inputs
            .iter()
            .map(|(_, r)| r.finished_unix_s)
            .max()
            .unwrap_or(0),
        config,
        timeline: timeline::merged_timeline(inputs, &mut warnings)?,
        cpu: merged_cpu(inputs),
        results,
        merged_from: Some(merged_from),
        warnings,
    })
}

/// Refuses inputs that are not parts of one run.
fn check_compatible(inputs: &[(PathBuf, Report)]) -> Result<(), MergeError> {
    let (p0, r0) = &inputs[0];
    let c0 = shared_config(&r0.config);
    let mut seen: BTreeMap<usize, &PathBuf> = BTreeMap::new();
    for (p, r) in inputs {
        let name = |q: &PathBuf| q.display().to_string();
        if r.results.max_rate.is_some() {
            return Err(MergeError::Mismatch(format!(
                "{}: a --find-max-rate search is a sequence of runs, not one run; merge the runs of one rate instead",
                name(p)
            )));
        }
        if r.results.scenario != r0.results.scenario {
            return Err(MergeError::Mismatch(format!(
                "different scenarios: {} is {}, {} is {}",
                name(p0),
                r0.results.scenario,
                name(p),
                r.results.scenario
            )));
        }
        if let Some(d) = first_difference("config", &c0, &shared_config(&r.config)) {
            return Err(MergeError::Mismatch(format!(
                "different configurations ({} vs {}): {d}",
                name(p0),
                name(p)
            )));
        }
        match (r0.results.shard, r.results.shard) {
            (Some(a), Some(b)) if a.count != b.count => {
                return Err(MergeError::Mismatch(format!(
                    "different shard counts: {} is {a}, {} is {b}",
                    name(p0),
                    name(p)
                )))
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(MergeError::Mismatch(format!(
                    "{} and {} mix a sharded and an unsharded run",
                    name(p0),
                    name(p)
                )))
            }
            _ => {}
        }
        if let Some(s) = r.results.shard {
            if let Some(other) = seen.insert(s.index, p) {
                return Err(MergeError::Mismatch(format!(
                    "shard {s} appears twice: {} and {}",
                    name(other),
                    name(p)
                )));
            }
        }
    }
    Ok(())
}

fn shard_coverage(inputs: &[(PathBuf, Report)], warnings: &mut Vec<String>) {
    let Some(count) = inputs[0].1.results.shard.map(|s| s.count) else {
        return;
    };
    if inputs.len() < count {
        warnings.push(format!(
            "{} of {count} shards merged: the figures cover part of the run",
            inputs.len()
        ));
    }
}

fn input(p: &std::path::Path, r: &Report) -> MergedInput {
    let c = &r.cpu;
    let cpu_s = c.loadgen_user_s + c.loadgen_sys_s;
    let threads = r.results.threads.min(r.machine.cores.max(1)).max(1);
    MergedInput {
        path: p.display().to_string(),
        label: r.label.clone(),
        host: r.machine.hostname.clone(),
        shard: r.results.shard,
        sessions_established: r.results.sessions_established,
        messages: r.results.messages,
        errors_total: r.results.errors_total,
        window: r.results.window,
        cpu_s,
        cpu_utilization: if c.wall_s > 0.0 {
            cpu_s / (c.wall_s * threads as f64)
        } else {
            0.0
        },
    }
}

/// The union of the measured windows; warns when they do not (mostly) overlap.
fn merged_window(inputs: &[(PathBuf, Report)], warnings: &mut Vec<String>) -> Option<WallWindow> {
    let ws: Vec<WallWindow> = inputs
        .iter()
        .filter_map(|(_, r)| r.results.window)
        .collect();
    if ws.len() < inputs.len() {
        warnings.push(format!(
            "{} of {} inputs have no measured window on the wall clock (older loadgen, or the load phase never started)",
            inputs.len() - ws.len(),
            inputs.len()
        ));
    }
    let union = WallWindow {
        go_unix_ms: ws.iter().map(|w| w.go_unix_ms).min()?,
        start_unix_ms: ws.iter().map(|w| w.start_unix_ms).min()?,
        end_unix_ms: ws.iter().map(|w| w.end_unix_ms).max()?,
        observed_start_unix_ms: ws
            .iter()
            .map(|w| w.observed_start_unix_ms)
            .collect::<Option<Vec<u64>>>()
            .and_then(|v| v.into_iter().max()),
    };
    warnings.extend(start_spread_warning(&ws));
    let latest_start = ws.iter().map(|w| w.start_unix_ms).max()?;
    let earliest_end = ws.iter().map(|w| w.end_unix_ms).min()?;
    let shortest = ws
        .iter()
        .map(|w| w.end_unix_ms.saturating_sub(w.start_unix_ms))
        .min()?;
    let overlap = earliest_end.saturating_sub(latest_start);
    if earliest_end <= latest_start {
        warnings.push(format!(
            "the measured windows do not overlap (starts {} ms apart): the workers did not load the server together; use --start-at-ms",
            latest_start - union.start_unix_ms
        ));
    } else if (overlap as f64) < 0.9 * shortest as f64 {
        warnings.push(format!(
            "the measured windows overlap for only {:.1} of {:.1} s; use --start-at-ms",
            overlap as f64 / 1e3,
            shortest as f64 / 1e3
        ));
    }
    Some(union)
}

/// How far apart workers' observed starts may be before the merge says they did not
/// load the server together (issue 13: shards start within 50 ms of each other).
const START_SPREAD_MS: u64 = 50;

/// A warning when the workers' measured windows began, as each observed it, more than
/// [`START_SPREAD_MS`] apart (a worker stalled or late at the start instant), or when
/// some inputs did not record it.
fn start_spread_warning(ws: &[WallWindow]) -> Option<String> {
    let seen: Vec<u64> = ws.iter().filter_map(|w| w.observed_start_unix_ms).collect();
    if seen.len() < ws.len() {
        return Some(format!(
            "{} of {} inputs do not record when their measured window actually started (older loadgen, or a thread ended before it): their starts cannot be compared",
            ws.len() - seen.len(),
            ws.len()
        ));
    }
    let spread = seen.iter().max()? - seen.iter().min()?;
    (spread > START_SPREAD_MS).then(|| {
        format!(
            "the workers' measured windows actually started {spread} ms apart (more than {START_SPREAD_MS} ms): a worker was late at the start instant"
        )
    })
}

fn merged_extra(inputs: &[(PathBuf, Report)]) -> BTreeMap<String, Value> {
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    let keys: std::collections::BTreeSet<&String> = inputs
        .iter()
        .flat_map(|(_, r)| r.results.extra.keys())
        .collect();
    for k in keys {
        let vals: Vec<&Value> = inputs
            .iter()
            .filter_map(|(_, r)| r.results.extra.get(k))
            .collect();
        let v = if ADDITIVE_EXTRA.contains(&k.as_str()) && vals.iter().all(|v| v.is_number()) {
            let total: f64 = vals.iter().filter_map(|v| v.as_f64()).sum();
            if vals.iter().all(|v| v.is_u64()) {
                Value::from(total as u64)
            } else {
                Value::from(total)
            }
        } else if vals.windows(2).all(|w| w[0] == w[1]) {
            vals[0].clone()
        } else {
            // Differs per worker and is not a share: keep every worker's value.
            Value::Array(vals.into_iter().cloned().collect())
        };
        out.insert(k.clone(), v);
    }
    out
}

/// Summed CPU of the workers. The server's CPU (if measured) is the largest a worker
/// saw: each worker measured the same process over its own, overlapping, load phase.
fn merged_cpu(inputs: &[(PathBuf, Report)]) -> CpuReport {
    let cpus: Vec<&CpuReport> = inputs.iter().map(|(_, r)| &r.cpu).collect();
    let messages: u64 = cpus.iter().map(|c| c.messages).sum();
    let user: f64 = cpus.iter().map(|c| c.loadgen_user_s).sum();
    let sys: f64 = cpus.iter().map(|c| c.loadgen_sys_s).sum();
    let per_msg = |s: f64| (messages > 0).then(|| s * 1e9 / messages as f64);
    let server = cpus
        .iter()
        .filter(|c| c.server_user_s.is_some())
        .max_by(|a, b| {
            let t = |c: &CpuReport| c.server_user_s.unwrap_or(0.0) + c.server_sys_s.unwrap_or(0.0);
            t(a).total_cmp(&t(b))
        });
    CpuReport {
        wall_s: cpus.iter().map(|c| c.wall_s).fold(0.0, f64::max),
        messages,
        loadgen_user_s: user,
        loadgen_sys_s: sys,
        loadgen_cpu_ns_per_msg: per_msg(user + sys),
        server_pid: server.and_then(|c| c.server_pid),
        server_user_s: server.and_then(|c| c.server_user_s),
        server_sys_s: server.and_then(|c| c.server_sys_s),
        server_cpu_ns_per_msg: server
            .and_then(|c| per_msg(c.server_user_s.unwrap_or(0.0) + c.server_sys_s.unwrap_or(0.0))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_differences_are_named_and_per_worker_keys_ignored() {
        let a = json!({"common": {"sessions": 100, "shard": "0/2", "json": "a.json"}, "rate": 10});
        let b = json!({"common": {"sessions": 100, "shard": "1/2", "json": "b.json"}, "rate": 10});
        let c = json!({"common": {"sessions": 200, "shard": "1/2"}, "rate": 10});
        assert_eq!(
            first_difference("config", &shared_config(&a), &shared_config(&b)),
            None
        );
        assert_eq!(
            first_difference("config", &shared_config(&a), &shared_config(&c)).as_deref(),
            Some("config.common.sessions: 100 vs 200")
        );
    }

    fn window(observed: Option<u64>) -> WallWindow {
        WallWindow {
            go_unix_ms: 1_000,
            start_unix_ms: 2_000,
            end_unix_ms: 5_000,
            observed_start_unix_ms: observed,
        }
    }

    #[test]
    fn observed_starts_more_than_50_ms_apart_are_warned_about() {
        // Same planned start in both: only the observed starts can tell them apart.
        let close = [window(Some(2_001)), window(Some(2_051))];
        assert_eq!(start_spread_warning(&close), None);
        let apart = [window(Some(2_001)), window(Some(2_052))];
        let w = start_spread_warning(&apart).expect("51 ms apart");
        assert!(w.contains("51 ms apart"), "{w}");
        let unknown = [window(Some(2_001)), window(None)];
        let w = start_spread_warning(&unknown).expect("one not recorded");
        assert!(w.contains("1 of 2 inputs"), "{w}");
    }
}
