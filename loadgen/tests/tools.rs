//! `loadgen report` and `loadgen compare` through the real binary, on a real run's JSON
//! and a synthetic regression of it.

use std::path::Path;
use std::process::Command;

use loadgen::conn::Target;
use loadgen::raw_server::RawServer;
use loadgen::report::Report;

fn loadgen() -> Command {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
}

/// A real (short) run's report, written with --json.
fn real_report(dir: &Path) -> std::path::PathBuf {
    let server = RawServer::start(&Target::Unix(dir.join("raw.sock")), 1, &[]).unwrap();
    let json = dir.join("base.json");
    let out = loadgen()
        .args(["raw-echo", "--unix"])
        .arg(dir.join("raw.sock"))
        .args([
            "--sessions",
            "4",
            "--threads",
            "1",
            "--warmup",
            "0.2",
            "--duration",
            "1",
        ])
        .args(["--quiet", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    drop(server);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("RESULT      OK"), "{stdout}");
    json
}

/// A copy of `base` whose throughput halved and whose latency doubled.
fn regressed(base: &Path, dir: &Path) -> std::path::PathBuf {
    let mut r = Report::read(base).unwrap();
    r.label = "regressed".into();
    r.results.messages_per_sec /= 2.0;
    r.results.latency_us.p50 *= 2.0;
    r.results.latency_us.p99 *= 2.0;
    for p in &mut r.timeline {
        p.messages_per_sec /= 2.0;
    }
    let path = dir.join("new.json");
    r.write(&path).unwrap();
    path
}

#[test]
fn report_json_is_versioned_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let json = real_report(dir.path());
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["schema_version"], loadgen::report::SCHEMA_VERSION);
    for key in ["tool", "machine", "config", "results", "timeline", "cpu"] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["tool"]["name"], "loadgen");
    assert!(v["machine"]["cores"].as_u64().unwrap() > 0);
    assert_eq!(v["config"]["common"]["sessions"], 4);
    let res = &v["results"];
    for key in [
        "sessions_requested",
        "sessions_established",
        "messages",
        "messages_per_sec",
        "bytes_per_sec",
        "errors",
        "latency_us",
        "histograms",
    ] {
        assert!(res.get(key).is_some(), "missing results.{key}");
    }
    for key in ["loadgen_user_s", "loadgen_sys_s", "loadgen_cpu_ns_per_msg"] {
        assert!(v["cpu"].get(key).is_some(), "missing cpu.{key}");
    }
    // Histograms from separate runs merge.
    let h = loadgen::histogram::decode(res["histograms"]["latency"].as_str().unwrap()).unwrap();
    let mut merged = h.clone();
    merged.add(&h).unwrap();
    assert_eq!(merged.len(), 2 * h.len());
}

#[test]
fn compare_fails_on_a_regression_and_passes_on_itself() {
    let dir = tempfile::tempdir().unwrap();
    let base = real_report(dir.path());
    let new = regressed(&base, dir.path());
    let same = loadgen()
        .arg("compare")
        .arg(&base)
        .arg(&base)
        .output()
        .unwrap();
    assert!(
        same.status.success(),
        "{}",
        String::from_utf8_lossy(&same.stdout)
    );
    let worse = loadgen()
        .arg("compare")
        .arg(&base)
        .arg(&new)
        .args(["--max-regression", "10"])
        .output()
        .unwrap();
    assert_eq!(worse.status.code(), Some(3));
    let text = String::from_utf8_lossy(&worse.stdout);
    assert!(
        text.contains("FAIL: messages_per_sec regressed 50.0%"),
        "{text}"
    );
    assert!(text.contains("latency_p99_us"), "{text}");
    // The metric choice is documented in --help.
    let help = loadgen().args(["compare", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("higher is better"));
}

/// Minimal well-formedness check: tags balance and the root is <svg>.
fn assert_well_formed_svg(text: &str) {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = text;
    let mut saw_svg = false;
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').expect("unclosed tag") + start;
        let tag = &rest[start + 1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.trim()),
                "mismatched </{name}>"
            );
        } else if !tag.ends_with('/') {
            let name = tag.split_whitespace().next().unwrap().to_string();
            if stack.is_empty() {
                assert_eq!(name, "svg", "root element");
                saw_svg = true;
            }
            stack.push(name);
        }
    }
    assert!(saw_svg && stack.is_empty(), "unbalanced: {stack:?}");
}

#[test]
fn report_renders_markdown_and_valid_svg() {
    let dir = tempfile::tempdir().unwrap();
    let base = real_report(dir.path());
    let new = regressed(&base, dir.path());
    let out = dir.path().join("bench");
    let st = loadgen()
        .arg("report")
        .arg(&base)
        .arg(&new)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let md = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(md.contains("| raw-echo-unix | raw-echo | unix |"), "{md}");
    assert!(md.contains("| regressed |"), "{md}");
    for chart in ["latency.svg", "throughput.svg"] {
        let svg = std::fs::read_to_string(out.join(chart)).unwrap();
        assert_well_formed_svg(&svg);
        assert!(svg.contains("<polyline"), "{chart} has no curve");
        assert!(svg.contains("regressed"), "{chart} has no legend");
    }
}
