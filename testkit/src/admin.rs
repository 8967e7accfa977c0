//! The admin endpoint from a test: plain HTTP/1.1 requests, and `/metrics` parsed by the
//! reference parser (Python `prometheus-client`, strict about the exposition format).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::SHORT;

/// One HTTP/1.1 request; the status code and body.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, SHORT).expect("connect admin");
    s.set_read_timeout(Some(SHORT)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read admin response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// `GET path`: status and body.
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(addr, "GET", path)
}

/// One sample: metric name plus labels (`name{k="v",...}` with sorted labels).
pub type Samples = BTreeMap<String, f64>;

const PARSER: &str = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
text = sys.stdin.read()
for fam in text_string_to_metric_families(text):
    print("FAMILY", fam.name, fam.type)
    for s in fam.samples:
        labels = ",".join('%s="%s"' % (k, v) for k, v in sorted(s.labels.items()))
        print("SAMPLE", "%s{%s}" % (s.name, labels), repr(float(s.value)))
"#;

/// Parses exposition text with the Python `prometheus-client` OpenMetrics parser (the
/// reference implementation; strict about the format). Panics with the parser's error.
pub fn parse_metrics(text: &str) -> (Samples, BTreeMap<String, String>) {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(PARSER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (with the prometheus-client package; .ci/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics: {}\n--- text ---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut samples = Samples::new();
    let mut types = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let mut parts = line.splitn(3, ' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("FAMILY"), Some(name), Some(kind)) => {
                types.insert(name.to_string(), kind.to_string());
            }
            (Some("SAMPLE"), Some(key), Some(v)) => {
                samples.insert(key.to_string(), v.parse().unwrap());
            }
            _ => panic!("unexpected parser output {line:?}"),
        }
    }
    (samples, types)
}

/// Scrapes and parses `/metrics`.
pub fn scrape(admin: SocketAddr) -> Samples {
    let (status, body) = get(admin, "/metrics");
    assert_eq!(status, 200, "{body}");
    parse_metrics(&body).0
}

/// The value of `key` (`name{labels}`), 0 when absent.
pub fn sample(s: &Samples, key: &str) -> f64 {
    s.get(key).copied().unwrap_or(0.0)
}

/// Polls `/metrics` until `cond` holds (bounded by `timeout`); the last scrape.
pub fn scrape_until(
    admin: SocketAddr,
    timeout: Duration,
    mut cond: impl FnMut(&Samples) -> bool,
) -> Samples {
    let deadline = Instant::now() + timeout;
    loop {
        let s = scrape(admin);
        if cond(&s) || Instant::now() >= deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
