//! Test support: loadgen scenarios run in-process against the real `sockchat-server`
//! (started by `sockchat_testkit::Server`), or against a protocol double ([`double`]) for
//! what the real server cannot be made to do (corrupt a frame; echo valid frames that
//! differ in bytes).

pub(crate) mod double;

use clap::Parser;
use loadgen::cli::Cli;
use loadgen::conn::Target;
use loadgen::report::Report;
use sockchat_testkit::Server;

/// The real server's listener for `transport` ("tcp" or "unix").
pub(crate) fn target(server: &Server, transport: &str) -> Target {
    match transport {
        "tcp" => Target::Tcp(server.tcp.expect("a TCP listener")),
        "unix" => Target::Unix(server.unix.clone().expect("a Unix listener")),
        other => panic!("unknown transport {other}"),
    }
}

/// `--tcp ADDR` or `--unix PATH`.
pub(crate) fn target_args(t: &Target) -> Vec<String> {
    match t {
        Target::Tcp(a) => vec!["--tcp".into(), a.to_string()],
        Target::Unix(p) => vec!["--unix".into(), p.display().to_string()],
    }
}

/// Runs `loadgen SCENARIO ARGS... --quiet` in-process, short, and returns its report.
pub(crate) fn run(scenario: &str, t: &Target, args: &[&str]) -> Report {
    let mut argv: Vec<String> = vec!["loadgen".into(), scenario.into()];
    argv.extend(target_args(t));
    argv.extend(
        [
            "--quiet",
            "--threads",
            "2",
            "--warmup",
            "0.3",
            "--duration",
            "1.2",
            // An upper bound only (sessions end as soon as their replies are in): generous,
            // so a loaded CI machine does not turn a slow tail into `timeout` errors.
            "--drain",
            "10",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    argv.extend(args.iter().map(|s| s.to_string()));
    let cli = Cli::try_parse_from(&argv).expect("valid arguments");
    loadgen::run_load(&cli.command)
        .expect("scenario runs")
        .expect("a load scenario")
}

/// The assertions every clean run must pass.
pub(crate) fn assert_clean(r: &Report) {
    let x = &r.results;
    assert_eq!(
        x.sessions_established,
        x.sessions_requested,
        "sessions established: {}",
        r.summary()
    );
    assert_eq!(x.errors_total, 0, "errors: {:?}\n{}", x.errors, r.summary());
    assert!(x.ok, "{}", r.summary());
    assert!(
        x.messages > 0 && x.messages_per_sec > 0.0,
        "{}",
        r.summary()
    );
    assert!(
        x.latency_us.count > 0 && x.latency_us.p50 > 0.0,
        "{}",
        r.summary()
    );
    for (name, h) in &x.histograms {
        let h = loadgen::histogram::decode(h).unwrap_or_else(|e| panic!("{name}: {e}"));
        if name == &x.latency_name {
            assert_eq!(h.len(), x.latency_us.count);
        }
    }
    assert!(r.cpu.loadgen_cpu_ns_per_msg.is_some(), "{:?}", r.cpu);
    assert!(!r.timeline.is_empty());
}
