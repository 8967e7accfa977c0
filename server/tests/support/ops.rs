//! Helpers for the operator-surface tests: HTTP against the admin endpoint, the
//! Prometheus text parsed by the reference parser (Python `prometheus-client`), a
//! `NOTIFY_SOCKET` datagram listener, PROXY protocol headers.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::SHORT;

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

/// A `NOTIFY_SOCKET` bound by the test, as systemd's would be.
pub struct NotifySocket {
    pub path: PathBuf,
    sock: UnixDatagram,
    pub seen: Vec<String>,
}

impl NotifySocket {
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        NotifySocket {
            path,
            sock,
            seen: Vec::new(),
        }
    }

    /// Waits for a datagram holding the line `want` (e.g. `READY=1`); every datagram
    /// read on the way is kept in `seen`.
    pub fn expect(&mut self, want: &str, timeout: Duration) -> String {
        self.expect_from(0, want, timeout)
    }

    /// Like [`expect`](Self::expect), for a datagram at index `from` of `seen` or later.
    pub fn expect_from(&mut self, from: usize, want: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 4096];
        loop {
            let found = self
                .seen
                .iter()
                .skip(from)
                .find(|d| d.lines().any(|l| l == want));
            if let Some(d) = found {
                return d.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {want:?} on NOTIFY_SOCKET within {timeout:?}; got {:?}",
                self.seen
            );
            self.sock.set_read_timeout(Some(left)).unwrap();
            match self.sock.recv(&mut buf) {
                Ok(n) => self
                    .seen
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("notify socket: {e}"),
            }
        }
    }

    /// Index in `seen` of the first datagram with line `want`.
    pub fn position(&self, want: &str) -> Option<usize> {
        self.seen.iter().position(|d| d.lines().any(|l| l == want))
    }
}

/// A PROXY protocol v1 header naming `src` as the client.
pub fn proxy_v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let fam = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {fam} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

/// A PROXY protocol v2 `PROXY` header (IPv4/TCP) naming `src` as the client, written
/// byte by byte from the specification (not with the server's parser crate).
pub fn proxy_v2(src: std::net::SocketAddrV4, dst: std::net::SocketAddrV4) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21); // version 2, command PROXY
    h.push(0x11); // AF_INET, STREAM
    h.extend_from_slice(&12u16.to_be_bytes());
    h.extend_from_slice(&src.ip().octets());
    h.extend_from_slice(&dst.ip().octets());
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h
}
