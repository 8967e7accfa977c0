//! Running cases: each side of a case on fresh processes, the subject and its baseline
//! interleaved run by run with the order alternating (S B, B S, ...) so a drift in the
//! machine's load does not always favour the same side.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::doc::{BaselineResult, CaseResult, Detail, LoadDetail, MemoryDetail, Stats};
use super::markdown::fmt_value;
use super::process::{self, LoadRun, LoadSpec, Server, Stream};
use super::stats;
use super::suite::{fill, Build, CaseSpec, Metric, Side, TargetKind, Transport};
use super::BenchError;
use crate::report::Report;

/// The binaries a run uses.
#[derive(Debug, Clone)]
pub struct Bins {
    /// This tree's sockchat-server.
    pub server: PathBuf,
    /// loadgen (also the raw server).
    pub loadgen: PathBuf,
    /// proto's hmac_throughput example.
    pub hmac: PathBuf,
    /// The server's hmac_floor example.
    pub hmac_floor: PathBuf,
    /// The BASE_REV build of sockchat-server.
    pub base_server: Option<PathBuf>,
}

/// Per-run settings shared by every case.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Runs per side.
    pub runs: u32,
    /// Warm-up seconds.
    pub warmup: f64,
    /// Measured seconds.
    pub duration: f64,
    /// Seconds of the HMAC baseline.
    pub hmac_seconds: f64,
    /// CPU of the servers.
    pub server_cpu: usize,
    /// CPU of loadgen.
    pub loadgen_cpu: usize,
    /// The second build's revision ("" without one).
    pub base_rev: String,
}

/// The state of a suite run: where files go, and what went wrong on the way.
#[derive(Debug)]
pub struct Bench {
    bins: Bins,
    set: RunSettings,
    tmp: PathBuf,
    seq: u32,
    /// Failed loadgen runs and servers that did not exit cleanly.
    pub problems: Vec<String>,
}

/// One run of one side.
#[derive(Debug)]
struct SideRun {
    value: f64,
    detail: Detail,
    load: Option<LoadRun>,
}

/// The runs of a case so far (both sides), and the time they took.
#[derive(Debug, Default)]
pub struct CaseRuns {
    subj: Vec<SideRun>,
    base: Vec<SideRun>,
    took: Duration,
}

impl CaseRuns {
    /// Runs of the subject so far.
    pub fn runs(&self) -> usize {
        self.subj.len()
    }
}

/// A finished case: the document entry plus the median runs' reports (for the charts
/// and the ratio check).
#[derive(Debug)]
pub struct CaseRun {
    /// The entry in the run document.
    pub result: CaseResult,
    /// The subject's median run.
    pub median: Option<LoadRun>,
    /// The baseline's median run.
    pub baseline_median: Option<LoadRun>,
}

/// Figures of a loadgen report as the document keeps them.
pub fn load_detail(r: &Report, other_cpu_pct: Option<f64>) -> LoadDetail {
    let x = &r.results;
    LoadDetail {
        messages_per_sec: x.messages_per_sec,
        bytes_per_sec: x.bytes_per_sec,
        latency_p50_us: x.latency_us.p50,
        latency_p99_us: x.latency_us.p99,
        latency_p999_us: x.latency_us.p999,
        errors: x.errors_total,
        sessions: format!("{}/{}", x.sessions_established, x.sessions_requested),
        server_cpu_ns_per_msg: r.cpu.server_cpu_ns_per_msg,
        loadgen_cpu_ns_per_msg: r.cpu.loadgen_cpu_ns_per_msg,
        other_cpu_pct,
    }
}

fn metric_of(r: &Report, m: Metric) -> Result<f64, BenchError> {
    Ok(match m {
        Metric::MessagesPerSec => r.results.messages_per_sec,
        Metric::BytesPerSec => r.results.bytes_per_sec,
        Metric::LatencyP99Us => r.results.latency_us.p99,
        Metric::ServerCpuNsPerMsg => r
            .cpu
            .server_cpu_ns_per_msg
            .ok_or_else(|| BenchError::Suite("no server CPU per message in the report".into()))?,
        Metric::Value => {
            return Err(BenchError::Suite(
                "metric \"value\" on a loadgen side".into(),
            ))
        }
    })
}

impl Bench {
    /// A suite run writing its temporary files under `tmp`.
    pub fn new(bins: Bins, set: RunSettings, tmp: &Path) -> Self {
        Self {
            bins,
            set,
            tmp: tmp.to_path_buf(),
            seq: 0,
            problems: Vec::new(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &RunSettings {
        &self.set
    }

    pub(crate) fn path(&mut self, stem: &str, ext: &str) -> PathBuf {
        self.seq += 1;
        self.tmp.join(format!("{:03}-{stem}.{ext}", self.seq))
    }

    pub(crate) fn sockchat(
        &mut self,
        transport: Transport,
        mode: &str,
        extra: &[String],
        build: Build,
    ) -> Result<Server, BenchError> {
        let binary = match build {
            Build::This => self.bins.server.clone(),
            Build::Base => self.bins.base_server.clone().ok_or_else(|| {
                BenchError::Suite("a base-build case without --base-server".into())
            })?,
        };
        let sock = self.path("sockchat", "sock");
        let mut argv: Vec<OsString> = vec![binary.into(), "--cores".into(), "1".into()];
        argv.extend(["--mode".into(), mode.into()]);
        match transport {
            Transport::Tcp => argv.extend(["--tcp".into(), "127.0.0.1:0".into()]),
            Transport::Unix => argv.extend(["--unix".into(), sock.clone().into()]),
        }
        argv.extend(extra.iter().map(OsString::from));
        let log = self.tmp.join("server.log");
        let mut srv = Server::start(&argv, self.set.server_cpu, Stream::Stdout, &log, |l| {
            l == "ready"
        })?;
        srv.target = match transport {
            Transport::Tcp => {
                let addr = srv
                    .lines
                    .iter()
                    .find_map(|l| l.strip_prefix("listening tcp "))
                    .ok_or_else(|| BenchError::NotReady(srv.name.clone(), srv.lines.clone()))?;
                ["--tcp".into(), addr.trim().into()]
            }
            Transport::Unix => ["--unix".into(), sock.display().to_string()],
        };
        Ok(srv)
    }

    pub(crate) fn raw_server(
        &mut self,
        transport: Transport,
        extra: &[String],
    ) -> Result<Server, BenchError> {
        let sock = self.path("raw", "sock");
        let mut argv: Vec<OsString> = vec![self.bins.loadgen.clone().into(), "raw-server".into()];
        match transport {
            Transport::Tcp => argv.extend(["--tcp".into(), "127.0.0.1:0".into()]),
            Transport::Unix => argv.extend(["--unix".into(), sock.into()]),
        }
        let cpu = self.set.server_cpu.to_string();
        argv.extend(["--threads".into(), "1".into(), "--cpus".into(), cpu.into()]);
        argv.extend(extra.iter().map(OsString::from));
        let log = self.tmp.join("raw-server.log");
        let mut srv = Server::start(&argv, self.set.server_cpu, Stream::Stderr, &log, |l| {
            parse_raw_ready(l).is_some()
        })?;
        let last = srv.lines.last().map(String::as_str).unwrap_or_default();
        srv.target = parse_raw_ready(last).expect("readiness line matched");
        Ok(srv)
    }

    /// Stops a server; an unclean exit is a problem of the run.
    pub(crate) fn stopped(&mut self, mut srv: Server) -> Result<(), BenchError> {
        let st = srv.stop()?;
        if !st.success() {
            self.problems.push(format!(
                "{} (pid {}) exited {} on SIGTERM",
                srv.name,
                srv.pid,
                st.code().map_or_else(|| st.to_string(), |c| c.to_string())
            ));
        }
        Ok(())
    }

    pub(crate) fn loadgen(
        &mut self,
        spec: &LoadSpec<'_>,
        srv: &Server,
    ) -> Result<LoadRun, BenchError> {
        let json = self.path(spec.label, "json");
        let run = process::run_loadgen(&self.bins.loadgen, spec, srv, self.set.loadgen_cpu, &json)?;
        if run.exit_code != Some(0) {
            self.problems.push(format!(
                "{}: loadgen exit {}: {}",
                spec.label,
                run.exit_code
                    .map_or_else(|| "by signal".into(), |c| c.to_string()),
                run.report.results.problems.join("; ")
            ));
        }
        Ok(run)
    }

    /// Runs a loadgen side against `srv`, stopping the server whatever happens.
    fn against(
        &mut self,
        srv: Server,
        spec: &LoadSpec<'_>,
        metric: Metric,
    ) -> Result<SideRun, BenchError> {
        let run = self.loadgen(spec, &srv);
        self.stopped(srv)?;
        let run = run?;
        Ok(SideRun {
            value: metric_of(&run.report, metric)?,
            detail: Detail::Load(load_detail(&run.report, run.other_cpu_pct)),
            load: Some(run),
        })
    }

    fn side(&mut self, case: &CaseSpec, side: &Side) -> Result<SideRun, BenchError> {
        let label = |suffix: &Option<String>| match suffix {
            Some(s) => format!("{}-{s}", case.name),
            None => case.name.clone(),
        };
        let (warmup, duration) = (self.set.warmup, self.set.duration);
        match side {
            Side::Sockchat {
                build,
                transport,
                mode,
                server_args,
                scenario,
                args,
                min_warmup,
                label_suffix,
            } => {
                let srv = self.sockchat(*transport, mode, server_args, *build)?;
                let label = label(label_suffix);
                let spec = LoadSpec {
                    scenario,
                    args,
                    label: &label,
                    warmup: min_warmup.map_or(warmup, |m| warmup.max(m)),
                    duration,
                    server_pid: true,
                };
                self.against(srv, &spec, case.metric)
            }
            Side::RawServer {
                transport,
                scenario,
                args,
                server_args,
                label_suffix,
                ..
            } => {
                let mut args = args.clone();
                if let Some(n) = side.raw_size() {
                    args.extend(["--size".into(), n.to_string()]);
                }
                let srv = self.raw_server(*transport, server_args)?;
                let label = label(label_suffix);
                let spec = LoadSpec {
                    scenario,
                    args: &args,
                    label: &label,
                    warmup,
                    duration,
                    server_pid: true,
                };
                self.against(srv, &spec, case.metric)
            }
            Side::Hmac => {
                let out = self.path("hmac", "json");
                let h = process::run_hmac(
                    &self.bins.hmac,
                    self.set.server_cpu,
                    self.set.hmac_seconds,
                    &out,
                )?;
                Ok(SideRun {
                    value: h.bytes_per_sec as f64,
                    detail: Detail::Hmac(h),
                    load: None,
                })
            }
            Side::HmacFloor { content } => {
                let out = self.path("hmac-floor", "txt");
                let h = process::run_hmac_floor(
                    &self.bins.hmac_floor,
                    self.set.server_cpu,
                    *content,
                    &out,
                )?;
                Ok(SideRun {
                    value: h.ns,
                    detail: Detail::HmacFloor(h),
                    load: None,
                })
            }
            Side::Cluster {
                nodes,
                scenario,
                args,
                server_args,
                label_suffix,
            } => {
                let label = label(label_suffix);
                self.cluster(&label, *nodes, scenario, args, server_args, case.metric)
            }
            Side::IdleMemory {
                sessions,
                hold_s,
                server_args,
            } => self.idle_memory(&case.name, *sessions, *hold_s, server_args),
        }
    }

    /// A loadgen scenario against `nodes` chat servers clustered through a broker the
    /// bench starts; everything is stopped whatever happens.
    fn cluster(
        &mut self,
        label: &str,
        nodes: usize,
        scenario: &str,
        args: &[String],
        server_args: &[String],
        metric: Metric,
    ) -> Result<SideRun, BenchError> {
        let log = self.tmp.join("nats.log");
        let mut broker = process::Broker::start(self.set.server_cpu, &log)?;
        let mut servers = Vec::new();
        let mut started = Ok(());
        for n in 0..nodes {
            let mut a = vec![
                "--cluster".to_string(),
                broker.url.clone(),
                "--node-name".into(),
                format!("n{n}"),
            ];
            a.extend(server_args.iter().cloned());
            match self.sockchat(Transport::Unix, "chat", &a, Build::This) {
                Ok(s) => servers.push(s),
                Err(e) => {
                    started = Err(e);
                    break;
                }
            }
        }
        let res = started.and_then(|()| {
            let mut args = args.to_vec();
            let others: Vec<String> = servers[1..]
                .iter()
                .map(|s| format!("unix:{}", s.target[1]))
                .collect();
            if !others.is_empty() {
                args.extend(["--targets".into(), others.join(",")]);
            }
            let spec = LoadSpec {
                scenario,
                args: &args,
                label,
                warmup: self.set.warmup,
                duration: self.set.duration,
                server_pid: true,
            };
            let run = self.loadgen(&spec, &servers[0])?;
            Ok(SideRun {
                value: metric_of(&run.report, metric)?,
                detail: Detail::Load(load_detail(&run.report, run.other_cpu_pct)),
                load: Some(run),
            })
        });
        for s in servers {
            self.stopped(s)?;
        }
        broker.stop();
        res
    }

    /// RSS growth of a warmed-up server per idle established session.
    fn idle_memory(
        &mut self,
        name: &str,
        sessions: usize,
        hold_s: f64,
        server_args: &[String],
    ) -> Result<SideRun, BenchError> {
        let srv = self.sockchat(Transport::Unix, "echo", server_args, Build::This)?;
        let res = self.idle_memory_on(&srv, name, sessions, hold_s);
        self.stopped(srv)?;
        res
    }

    fn idle_memory_on(
        &mut self,
        srv: &Server,
        name: &str,
        sessions: usize,
        hold_s: f64,
    ) -> Result<SideRun, BenchError> {
        if hold_s < IDLE_MIN_HOLD_S {
            return Err(BenchError::Suite(format!(
                "{name}: hold_s {hold_s} < {IDLE_MIN_HOLD_S}: RSS is read {} s after the last session is accepted, and must be read while they are held",
                IDLE_SETTLE.as_secs_f64()
            )));
        }
        // Warm-up: allocator arenas, runtime slabs and buffer pools reach their working
        // size before "before" is read.
        let warm_args: Vec<String> = ["--sessions", "200", "--depth", "4", "--size", "1024"]
            .map(String::from)
            .to_vec();
        let warm_label = format!("{name}-warmup");
        let warm = LoadSpec {
            scenario: "echo",
            args: &warm_args,
            label: &warm_label,
            warmup: 0.5,
            duration: 1.0,
            server_pid: true,
        };
        self.loadgen(&warm, srv)?;
        std::thread::sleep(Duration::from_millis(500));
        let (fds0, rss0) = (srv.fds()?, srv.rss_kib()?);
        let args: Vec<String> = vec![
            "--sessions".into(),
            sessions.to_string(),
            "--interval".into(),
            "600".into(),
            "--ramp".into(),
            "5000".into(),
        ];
        let spec = LoadSpec {
            scenario: "heartbeat",
            args: &args,
            label: name,
            warmup: 0.0,
            duration: hold_s,
            server_pid: false,
        };
        let json = self.path(name, "json");
        let out = json.with_extension("out");
        let argv =
            process::loadgen_argv(&self.bins.loadgen, &spec, srv, self.set.loadgen_cpu, &json);
        let child = process::spawn_loadgen(&argv, self.set.loadgen_cpu, &out)?;
        // Bounded wait for the sessions to be accepted (every one holds an fd).
        let deadline = Instant::now() + Duration::from_secs(30);
        while srv.fds()? < fds0 + sessions && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        // Settle, then read RSS while the sessions are still held: loadgen holds them for
        // the window (`hold_s`, which starts ~0.1 s after the last handshake), so the read
        // lands inside it. The fd count is read on both sides of RSS and the lower one
        // kept: if the sessions had begun closing, the figure is not the cost of open
        // sessions, and the case fails instead of reporting it (it once read RSS after
        // they had closed: fds 47 of 5,000, the allocator's retained peak).
        std::thread::sleep(IDLE_SETTLE);
        let fds_a = srv.fds()?;
        let rss1 = srv.rss_kib()?;
        let fds1 = fds_a.min(srv.fds()?);
        let (report, code) =
            process::finish_loadgen(child, Duration::from_secs(120), &json, &out, "heartbeat")?;
        let r = &report.results;
        if code != Some(0) || (r.sessions_established as usize) < sessions {
            self.problems.push(format!(
                "{name}: loadgen exit {}, {}/{sessions} sessions",
                code.map_or_else(|| "by signal".into(), |c| c.to_string()),
                r.sessions_established
            ));
        }
        if let Some(p) = idle_fds_problem(fds0, fds1, sessions) {
            self.problems.push(format!("{name}: {p}"));
        }
        let per = (rss1 as f64 - rss0 as f64) * 1024.0 / sessions as f64;
        Ok(SideRun {
            value: per,
            detail: Detail::Memory(MemoryDetail {
                rss_before_kib: rss0,
                rss_after_kib: rss1,
                fds_before: fds0,
                fds_after: fds1,
                sessions: r.sessions_established,
                bytes_per_session: stats::round_to(per, 1),
            }),
            load: None,
        })
    }

    /// One more run of `case`'s subject and (if it has one) its baseline, added to `acc`;
    /// returns the progress line. The order alternates with the runs `acc` already holds
    /// (S B, B S, ...), so a drift in the machine's load does not always favour one side.
    pub fn run_pair(&mut self, case: &CaseSpec, acc: &mut CaseRuns) -> Result<String, BenchError> {
        let t0 = Instant::now();
        let subject_first = acc.subj.len().is_multiple_of(2);
        let mut b = None;
        if !subject_first {
            b = case
                .baseline
                .as_ref()
                .map(|s| self.side(case, s))
                .transpose()?;
        }
        let s = self.side(case, &case.subject)?;
        if subject_first {
            b = case
                .baseline
                .as_ref()
                .map(|s| self.side(case, s))
                .transpose()?;
        }
        let mut line = fmt_value(s.value, case.unit);
        if let Some(b) = &b {
            let r = (b.value != 0.0).then(|| s.value / b.value);
            line += &format!(
                "  baseline {}  ratio {}",
                fmt_value(b.value, case.unit),
                r.map_or_else(|| "–".into(), |r| format!("{r:.3}"))
            );
        }
        if let Detail::Memory(m) = &s.detail {
            // The fd counts say whether RSS was read with the sessions open.
            line += &format!(
                "  (RSS {} -> {} KiB, fds {} -> {})",
                m.rss_before_kib, m.rss_after_kib, m.fds_before, m.fds_after
            );
        }
        acc.subj.push(s);
        acc.base.extend(b);
        acc.took += t0.elapsed();
        Ok(line)
    }

    /// Sums up the runs `acc` holds (they stay there: more can be added and summed again).
    pub fn finish(&self, case: &CaseSpec, acc: &CaseRuns) -> CaseRun {
        let (subj, base, took) = (&acc.subj, &acc.base, acc.took);
        let values = |v: &[SideRun]| v.iter().map(|r| r.value).collect::<Vec<_>>();
        let (sv, bv) = (values(subj), values(base));
        let s = Stats::of(&sv);
        let command = |v: &[SideRun]| {
            v.first()
                .and_then(|r| r.load.as_ref())
                .map(|l| l.command.clone())
        };
        let details = |v: &[SideRun]| v.iter().map(|r| r.detail.clone()).collect::<Vec<_>>();
        let frame_len = case.frame_len().unwrap_or(0);
        let fill = |t: &str| fill(t, frame_len, &self.set.base_rev);
        let (sd, bd) = (details(subj), details(base));
        let (baseline, ratio, cpu) = if base.is_empty() {
            (None, None, None)
        } else {
            let bs = Stats::of(&bv);
            let pairs: Vec<(f64, f64)> = sv.iter().copied().zip(bv.iter().copied()).collect();
            let ratio = stats::ratio(&s, &bs, &pairs);
            let b = BaselineResult {
                stats: bs,
                title: fill(case.baseline_title.as_deref().unwrap_or_default()),
                command: command(base),
                details: bd.clone(),
            };
            (Some(b), Some(ratio), stats::cpu_cost(&sd, &bd))
        };
        let target_value = case.target.and_then(|t| match t.kind {
            TargetKind::Ratio => ratio.as_ref()?.median_over_median,
            TargetKind::CpuRatio => cpu.map(|c| c.median_over_median),
            TargetKind::Absolute => Some(s.median),
        });
        let standing = case
            .target
            .as_ref()
            .zip(target_value)
            .map(|(t, v)| stats::standing(t, v));
        let result = CaseResult {
            name: case.name.clone(),
            title: fill(&case.title),
            group: case.group.clone(),
            unit: case.unit,
            better: case.better,
            subject_command: command(subj),
            details: sd.clone(),
            seconds: stats::round_to(took.as_secs_f64(), 1),
            other_cpu_pct: stats::other_cpu(sd.iter().chain(&bd)),
            subject: s,
            baseline,
            ratio,
            cpu_cost_ratio: cpu,
            target: case.target,
            standing,
        };
        let median_run = |runs: &[SideRun]| {
            let with: Vec<&LoadRun> = runs.iter().filter_map(|r| r.load.as_ref()).collect();
            let vals: Vec<f64> = runs
                .iter()
                .filter(|r| r.load.is_some())
                .map(|r| r.value)
                .collect();
            stats::median_index(&vals).map(|m| with[m].clone())
        };
        CaseRun {
            result,
            median: median_run(subj),
            baseline_median: median_run(base),
        }
    }
}

/// How long the idle-memory case waits after the last session is accepted before it
/// reads RSS (runtime slabs and allocator settle).
const IDLE_SETTLE: Duration = Duration::from_secs(1);

/// The shortest hold that leaves the RSS read well inside it.
const IDLE_MIN_HOLD_S: f64 = 3.0;

/// Why an idle-memory reading does not measure `sessions` open sessions: fewer than
/// `sessions` fds more than before were open around the RSS read.
fn idle_fds_problem(fds_before: usize, fds_after: usize, sessions: usize) -> Option<String> {
    (fds_after < fds_before + sessions).then(|| {
        format!(
            "only {} of {sessions} sessions were open when RSS was read (fds {fds_before} -> {fds_after}): not the cost of open sessions",
            fds_after.saturating_sub(fds_before)
        )
    })
}

/// `raw-server listening on tcp:ADDR` / `unix:PATH` → loadgen's target options.
fn parse_raw_ready(line: &str) -> Option<[String; 2]> {
    let rest = line.split("raw-server listening on ").nth(1)?;
    let (kind, addr) = rest.split_once(':')?;
    let addr = addr.split_whitespace().next()?;
    matches!(kind, "tcp" | "unix").then(|| [format!("--{kind}"), addr.to_string()])
}

#[cfg(test)]
mod tests {
    use super::{idle_fds_problem, parse_raw_ready};

    #[test]
    fn idle_memory_read_after_the_sessions_closed_is_a_problem() {
        // What every committed 5k run recorded: 48 fds before, 47 at the read.
        let p = idle_fds_problem(48, 47, 5000).expect("sessions had closed");
        assert!(p.contains("only 0 of 5000"), "{p}");
        assert!(idle_fds_problem(48, 5047, 5000).is_some());
        assert_eq!(idle_fds_problem(48, 5048, 5000), None);
    }

    #[test]
    fn raw_server_readiness_line() {
        assert_eq!(
            parse_raw_ready("raw-server listening on tcp:127.0.0.1:4242"),
            Some(["--tcp".into(), "127.0.0.1:4242".into()])
        );
        assert_eq!(
            parse_raw_ready("raw-server listening on unix:/tmp/x/raw.sock"),
            Some(["--unix".into(), "/tmp/x/raw.sock".into()])
        );
        assert_eq!(parse_raw_ready("raw-server starting"), None);
    }
}
