//! loadgen past one process, against the real `sockchat-server` (and a capacity-limited
//! double): the default suite, two `--shard` worker processes sharing a `--start-at-ms`
//! window and their `merge`, merge refusing mismatched runs, the `--interval-log` read
//! back by the `hdrhistogram` crate's own interval-log reader, `--find-max-rate` against
//! a server of known capacity (alone: `sockchat_testkit::timing`), and `--stages`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use loadgen::conn::Target;
use loadgen::report::Report;
use sockchat_testkit::Server;
use support::double::{Double, DoubleOpts};
use support::{assert_clean, run, target, target_args};

fn loadgen() -> Command {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn default_suite_runs_every_phase_with_no_scenario() {
    let _timing = sockchat_testkit::timing::shared();
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    for t in ["tcp", "unix"] {
        let json = dir.path().join(format!("suite-{t}.json"));
        let out = loadgen()
            .args(target_args(&target(&server, t)))
            .args(["--sessions", "30", "--threads", "2", "--warmup", "0.3"])
            .args(["--duration", "1", "--interval", "0.2", "--churn-loops", "4"])
            .args(["--drain", "10", "--quiet", "--json"])
            .arg(&json)
            .output()
            .unwrap();
        let said = text(&out);
        assert!(out.status.success(), "{said}");
        assert!(said.contains("RESULT      OK"), "{said}");
        let r = Report::read(&json).unwrap();
        let x = &r.results;
        assert_eq!(x.scenario, "suite");
        assert_eq!((x.sessions_established, x.errors_total), (30, 0), "{said}");
        for h in [
            "echo_latency",
            "pong_latency",
            "churn_handshake",
            "setup_handshake",
        ] {
            assert!(x.latencies_us[h].count > 0, "{h} empty: {said}");
        }
        // 30 sessions x 1 s / 0.2 s of heartbeat phase.
        let ticks = x.extra["ticks"].as_u64().unwrap();
        assert!((140..=160).contains(&ticks), "ticks {ticks}");
        let verdicts = x.extra["verdicts"].as_array().unwrap();
        assert_eq!(verdicts.len(), 5, "{verdicts:?}");
        for phase in ["connect", "echo", "heartbeat", "churn", "errors"] {
            assert!(
                said.contains(&format!("  {phase} ")),
                "no {phase} verdict: {said}"
            );
        }
        // The timeline names each phase.
        for part in ["echo", "heartbeat", "churn"] {
            assert!(
                r.timeline.iter().any(|p| p.part.as_deref() == Some(part)),
                "{part} not in the timeline"
            );
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Starts one worker of a split heartbeat run.
fn worker(target: &Target, shard: &str, start_ms: u64, json: &Path, extra: &[&str]) -> Child {
    loadgen()
        .arg("heartbeat")
        .args(target_args(target))
        .args(["--sessions", "21", "--threads", "1", "--interval", "0.05"])
        .args(["--warmup", "0.5", "--duration", "1.5", "--drain", "10"])
        .args(["--shard", shard, "--start-at-ms", &start_ms.to_string()])
        .args(extra)
        .args(["--quiet", "--json"])
        .arg(json)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Two workers of one run, started 300 ms apart, and their reports.
fn split_run(target: &Target, dir: &Path) -> (PathBuf, PathBuf) {
    let (a, b) = (dir.join("w0.json"), dir.join("w1.json"));
    // Far enough ahead for both to connect 11 and 10 sessions even on a busy machine.
    let start = now_ms() + 2500;
    let w0 = worker(target, "0/2", start, &a, &[]);
    std::thread::sleep(Duration::from_millis(300));
    let w1 = worker(target, "1/2", start, &b, &[]);
    for w in [w0, w1] {
        let out = w.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    (a, b)
}

#[test]
fn two_shards_share_a_window_and_merge_exactly() {
    let _timing = sockchat_testkit::timing::shared();
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = split_run(&target(&server, "unix"), dir.path());
    let (ra, rb) = (Report::read(&a).unwrap(), Report::read(&b).unwrap());
    assert_clean(&ra);
    assert_clean(&rb);
    // Shares of 21 differ by one, and the two establish exactly the sessions asked.
    assert_eq!(ra.results.sessions_established, 11);
    assert_eq!(rb.results.sessions_established, 10);
    assert_eq!(ra.results.shard.unwrap().to_string(), "0/2");
    // Started 300 ms apart, the two began measuring within 50 ms of each other, as each
    // one's threads observed it (the planned start is the same number in both).
    let (wa, wb) = (ra.results.window.unwrap(), rb.results.window.unwrap());
    let (oa, ob) = (
        wa.observed_start_unix_ms.expect("observed start recorded"),
        wb.observed_start_unix_ms.expect("observed start recorded"),
    );
    assert!(oa.abs_diff(ob) <= 50, "{wa:?} {wb:?}");
    for w in [wa, wb] {
        let o = w.observed_start_unix_ms.unwrap();
        assert!(o >= w.start_unix_ms && o < w.end_unix_ms, "{w:?}");
    }
    // Both loaded the server from the first measured second on.
    for r in [&ra, &rb] {
        let first = r.timeline.iter().find(|p| p.phase == "measure").unwrap();
        assert!(first.messages_per_sec > 0.0, "{:?}", r.timeline);
    }

    let merged = dir.path().join("merged.json");
    let out = loadgen()
        .arg("merge")
        .args([&a, &b])
        .arg("--json")
        .arg(&merged)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let m = Report::read(&merged).unwrap();
    let x = &m.results;
    assert_eq!(x.sessions_established, 21);
    assert_eq!(x.sessions_requested, 21);
    assert_eq!(x.messages, ra.results.messages + rb.results.messages);
    assert_eq!(
        x.latency_us.count,
        ra.results.latency_us.count + rb.results.latency_us.count
    );
    let (pa, pb) = (ra.results.latency_us.p99, rb.results.latency_us.p99);
    assert!(
        pa.min(pb) <= x.latency_us.p99 && x.latency_us.p99 <= pa.max(pb),
        "merged p99 {} outside {pa}..{pb}",
        x.latency_us.p99
    );
    assert_eq!(
        x.extra["ticks"].as_u64().unwrap(),
        ra.results.extra["ticks"].as_u64().unwrap() + rb.results.extra["ticks"].as_u64().unwrap()
    );
    let from = m.merged_from.as_ref().unwrap();
    assert_eq!(from.len(), 2);
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    // A worker that had begun 80 ms late is warned about.
    let mut late = rb.clone();
    let lw = late.results.window.as_mut().unwrap();
    lw.observed_start_unix_ms = Some(oa + 80);
    let inputs = [(a.clone(), ra.clone()), (b.clone(), late)];
    let lm = loadgen::merge::merge(&inputs, None).unwrap();
    assert!(
        lm.warnings.iter().any(|w| w.contains("80 ms apart")),
        "{:?}",
        lm.warnings
    );
    // The timelines were aligned second by second: the measured seconds' messages add up
    // to at least what the window counted.
    let timeline_msgs: f64 = m.timeline.iter().map(|p| p.messages_per_sec).sum();
    let inputs_msgs: f64 = [&ra, &rb]
        .iter()
        .flat_map(|r| r.timeline.iter().map(|p| p.messages_per_sec))
        .sum();
    assert_eq!(timeline_msgs, inputs_msgs);
    assert!(m.timeline.len() <= ra.timeline.len().max(rb.timeline.len()) + 1);

    // `report` and `compare` take the merged report.
    let out = loadgen()
        .arg("report")
        .arg(&merged)
        .arg("--out")
        .arg(dir.path().join("charts"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let md = std::fs::read_to_string(dir.path().join("charts/README.md")).unwrap();
    assert!(md.contains("merged from 2 workers"), "{md}");
    let svg = std::fs::read_to_string(dir.path().join("charts/latency-over-time.svg")).unwrap();
    assert!(svg.contains("p99.9"), "no p99.9 series");
    let out = loadgen()
        .arg("compare")
        .args([&merged, &merged])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_worker_that_misses_the_start_instant_says_so_and_fails() {
    let _timing = sockchat_testkit::timing::shared();
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("late.json");
    let past = (now_ms() - 1000).to_string();
    let out = loadgen()
        .arg("heartbeat")
        .args(target_args(&target(&server, "unix")))
        .args(["--sessions", "3", "--shard", "1/2", "--start-at-ms", &past])
        .args(["--quiet", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let r = Report::read(&json).unwrap();
    assert!(!r.results.ok);
    assert!(
        r.results
            .problems
            .iter()
            // Seen while connecting, or when setup ended: either way past the instant.
            .any(|p| p.contains("the --start-at-ms instant")),
        "{:?}",
        r.results.problems
    );
    assert_eq!(r.results.messages, 0);
}

#[test]
fn merge_refuses_runs_that_are_not_one_run() {
    let _timing = sockchat_testkit::timing::shared();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start();
    let target = target(&server, "unix");
    let short = |scenario: &str, extra: &[&str], name: &str| {
        let json = dir.path().join(name);
        let r = run(
            scenario,
            &target,
            &[extra, &["--json", json.to_str().unwrap()]].concat(),
        );
        assert_clean(&r);
        json
    };
    let a = short(
        "heartbeat",
        &["--sessions", "4", "--shard", "0/2"],
        "a.json",
    );
    let b = short(
        "heartbeat",
        &["--sessions", "6", "--shard", "1/2"],
        "b.json",
    );
    let c = short("echo", &["--sessions", "4", "--shard", "1/2"], "c.json");
    let d = short(
        "heartbeat",
        &["--sessions", "4", "--shard", "0/2"],
        "d.json",
    );
    let merge = |x: &Path, y: &Path| {
        loadgen()
            .arg("merge")
            .args([x, y])
            .arg("--json")
            .arg(dir.path().join("m.json"))
            .output()
            .unwrap()
    };
    let out = merge(&a, &b);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("config.common.sessions: 4 vs 6"),
        "{}",
        text(&out)
    );
    let out = merge(&a, &c);
    assert!(!out.status.success());
    assert!(text(&out).contains("different scenarios"), "{}", text(&out));
    let out = merge(&a, &d);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("shard 0/2 appears twice"),
        "{}",
        text(&out)
    );
}

#[test]
fn interval_log_reads_back_with_the_reports_counts() {
    let _timing = sockchat_testkit::timing::shared();
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    for (scenario, args) in [
        ("echo", vec!["--sessions", "4"]),
        ("rate", vec!["--sessions", "4", "--rate", "400"]),
    ] {
        let log = dir.path().join(format!("{scenario}.hlog"));
        let mut all = args.clone();
        all.extend(["--interval-log", log.to_str().unwrap()]);
        let r = run(scenario, &target(&server, "tcp"), &all);
        assert_clean(&r);
        let bytes = std::fs::read(&log).unwrap();
        let (mut sum, mut intervals) = (0u64, 0);
        for entry in IntervalLogIterator::new(&bytes) {
            if let LogEntry::Interval(h) = entry.expect("a valid interval log") {
                let b64 = h.encoded_histogram();
                let raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64)
                    .unwrap();
                let hist: hdrhistogram::Histogram<u64> = Deserializer::new()
                    .deserialize(&mut raw.as_slice())
                    .unwrap();
                assert_eq!(h.tag().unwrap().as_str(), r.results.latency_name);
                sum += hist.len();
                intervals += 1;
            }
        }
        assert!(intervals >= 2, "{intervals} intervals");
        assert_eq!(sum, r.results.latency_us.count, "{scenario}");
    }
}

#[test]
fn max_rate_search_finds_a_fixed_capacity() {
    let _timing = sockchat_testkit::timing::alone();
    const K: f64 = 2000.0;
    let d = Double::start(
        "unix",
        DoubleOpts {
            capacity: Some(K),
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("max.json");
    let r = run(
        "rate",
        &d.target,
        &[
            "--sessions",
            "4",
            "--rate",
            "500",
            "--find-max-rate",
            "--p99",
            "50ms",
            "--json",
            json.to_str().unwrap(),
        ],
    );
    let m = r.results.max_rate.as_ref().expect("max_rate in the report");
    let found = m
        .rate
        .unwrap_or_else(|| panic!("nothing passed: {}", m.render()));
    assert!(
        (found - K).abs() <= 0.2 * K,
        "found {found} for a capacity of {K}:\n{}",
        m.render()
    );
    // Exponential steps first, from the rate given.
    assert_eq!(m.steps[0].rate, 500.0);
    assert_eq!(m.steps[1].rate, 1000.0);
    assert!(m.steps.iter().any(|s| !s.pass));
    let back = Report::read(&json).unwrap();
    assert_eq!(
        back.results.max_rate.as_ref().unwrap().steps.len(),
        m.steps.len()
    );
}

#[test]
fn stages_change_the_rate_and_the_session_count() {
    let _timing = sockchat_testkit::timing::shared();
    let server = Server::start();
    let target = target(&server, "unix");
    // 100 msg/s for a second, then 400 msg/s for a second.
    let r = run(
        "rate",
        &target,
        &["--sessions", "4", "--stages", "0s:100,1s:100,0s:400,1s:400"],
    );
    assert_clean(&r);
    assert_eq!(r.results.duration_s, 2.0);
    let m = r.results.messages as f64;
    assert!((450.0..=550.0).contains(&m), "{m} messages");
    let per_sec: Vec<f64> = r
        .timeline
        .iter()
        .filter(|p| p.phase == "measure")
        .map(|p| p.messages_per_sec)
        .collect();
    assert!(per_sec.len() >= 2, "{per_sec:?}");
    assert!(per_sec[1] > 2.5 * per_sec[0], "{per_sec:?}");
    let targets: Vec<f64> = r.timeline.iter().filter_map(|p| p.target).collect();
    assert_eq!(targets.first(), Some(&100.0), "{targets:?}");

    // Sessions: up to 10 over 0.5 s, held 1 s, down to 0 over 0.5 s.
    let r = run(
        "heartbeat",
        &target,
        &["--interval", "0.1", "--stages", "0.5s:10,1s:10,0.5s:0"],
    );
    let x = &r.results;
    assert_eq!(x.errors_total, 0, "{}", r.summary());
    assert_eq!(x.sessions_requested, 10);
    assert!(x.sessions_established >= 10, "{}", r.summary());
    let open: Vec<u64> = r.timeline.iter().filter_map(|p| p.open_sessions).collect();
    assert_eq!(open.iter().max(), Some(&10), "{open:?}");
    assert_eq!(open.last(), Some(&0), "{open:?}");
    assert!(x.latency_us.count > 0);
}

#[test]
fn echo_stages_work_with_chunked_messages() {
    let _timing = sockchat_testkit::timing::shared();
    let server = Server::start();
    let target = target(&server, "unix");
    // 8 KiB messages in 1 KiB chunks; sessions: up to 6 over 0.5 s, held 1 s, down to 0.
    let r = run(
        "echo",
        &target,
        &[
            "--chunked",
            "--size",
            "8192",
            "--chunk-size",
            "1024",
            "--stages",
            "0.5s:6,1s:6,0.5s:0",
        ],
    );
    let x = &r.results;
    assert_eq!(x.errors_total, 0, "{}", r.summary());
    assert_eq!(x.sessions_requested, 6);
    assert!(x.sessions_established >= 6, "{}", r.summary());
    assert_eq!(
        r.config["chunked"],
        serde_json::json!(true),
        "{:?}",
        r.config
    );
    let open: Vec<u64> = r.timeline.iter().filter_map(|p| p.open_sessions).collect();
    assert_eq!(open.iter().max(), Some(&6), "{open:?}");
    assert_eq!(open.last(), Some(&0), "{open:?}");
    assert!(x.latency_us.count > 0);
}

#[test]
fn sharded_fanout_merges_the_last_delivery_over_all_workers() {
    let _timing = sockchat_testkit::timing::shared();
    let server = Server::builder().args(["--mode", "chat"]).start();
    let target = target(&server, "unix");
    let dir = tempfile::tempdir().unwrap();
    let start = (now_ms() + 2000).to_string();
    let workers: Vec<_> = (0..2)
        .map(|i| {
            let (target, start) = (target.clone(), start.clone());
            let json = dir.path().join(format!("f{i}.json"));
            std::thread::spawn(move || {
                let shard = format!("{i}/2");
                let r = run(
                    "fanout",
                    &target,
                    &[
                        "--sessions",
                        "7",
                        "--rate",
                        "20",
                        "--shard",
                        &shard,
                        "--start-at-ms",
                        &start,
                        "--json",
                        json.to_str().unwrap(),
                    ],
                );
                (json, r)
            })
        })
        .collect();
    let inputs: Vec<(PathBuf, Report)> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    for (_, r) in &inputs {
        assert_clean(r);
    }
    // Worker 0: the sender and 3 receivers; worker 1: 3 receivers.
    assert_eq!(inputs[0].1.results.sessions_established, 4);
    assert_eq!(inputs[1].1.results.sessions_established, 3);
    let m = loadgen::merge::merge(&inputs, None).unwrap();
    let x = &m.results;
    assert_eq!(x.extra["receivers"], 6, "{:?}", x.extra);
    assert_eq!(x.extra["complete_fanouts"], x.extra["sent"]);
    assert_eq!(x.errors_total, 0, "{:?}", x.errors);
    assert!(!x.extra.contains_key("deliveries_by_seq"));
    let (last, each) = (
        &x.latencies_us["last_delivery"],
        &x.latencies_us["delivery"],
    );
    assert!(last.count > 0 && last.count <= x.extra["sent"].as_u64().unwrap());
    // The last of 6 deliveries comes no earlier than a typical one, and every delivery
    // of both workers is in the merged delivery histogram.
    assert!(last.max >= each.p50, "{last:?} {each:?}");
    assert_eq!(
        each.count,
        inputs
            .iter()
            .map(|(_, r)| r.results.latencies_us["delivery"].count)
            .sum::<u64>()
    );
}
