//! What machine a run happened on, so figures are never compared across machines
//! without noticing.

use serde::{Deserialize, Serialize};

/// Machine facts recorded in every report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// CPUs this process may run on.
    pub cores: usize,
    /// Kernel release.
    pub kernel: String,
    /// Total memory in bytes (MemTotal).
    pub memory_bytes: u64,
    /// Host name (which worker of a split run wrote the report).
    #[serde(default)]
    pub hostname: String,
}

impl Machine {
    /// True when both describe the same hardware and kernel (the host name aside: the
    /// same kind of machine under another name measures alike).
    pub fn same_hardware(&self, other: &Machine) -> bool {
        (&self.cpu_model, self.cores, &self.kernel, self.memory_bytes)
            == (
                &other.cpu_model,
                other.cores,
                &other.kernel,
                other.memory_bytes,
            )
    }

    /// Reads the facts from /proc (fields are "unknown"/0 where unreadable).
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
                let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(kb * 1024)
            })
            .unwrap_or(0);
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Self {
            hostname,
            cpu_model,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel,
            memory_bytes,
        }
    }
}
