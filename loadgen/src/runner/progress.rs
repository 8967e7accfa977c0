//! The live progress line.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{RunConfig, Shared, TimelinePoint};

/// The live progress line on stderr: an indicatif spinner on a terminal, plain lines
/// otherwise (CI logs keep the history).
pub(super) struct Progress {
    bar: Option<ProgressBar>,
    plain: bool,
    scenario: &'static str,
    sessions: usize,
    setup: bool,
    last_setup: Instant,
}

impl Progress {
    pub(super) fn new(cfg: &RunConfig) -> Self {
        let tty = std::io::stderr().is_terminal();
        let bar = (cfg.progress && tty).then(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            b.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("template"));
            b
        });
        Self {
            bar,
            plain: cfg.progress && !tty,
            scenario: cfg.scenario,
            sessions: cfg.sessions,
            setup: cfg.setup,
            last_setup: Instant::now(),
        }
    }

    fn show(&self, line: String) {
        if let Some(b) = &self.bar {
            b.set_message(line);
            b.tick();
        } else if self.plain {
            eprintln!("{line}");
        }
    }

    pub(super) fn setup(&mut self, shared: &Shared) {
        if self.last_setup.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_setup = Instant::now();
        self.show(format!(
            "[{}] setup: {}/{} sessions established, {} failed",
            self.scenario,
            shared.established.load(Ordering::Relaxed),
            self.sessions,
            shared.setup_failed.load(Ordering::Relaxed)
        ));
    }

    pub(super) fn tick(&mut self, p: &TimelinePoint, shared: &Shared) {
        // Churn establishes no sessions up front: its unit is a cycle, run by loops.
        let (rate, tail) = if let Some(open) = p.open_sessions {
            // Sessions open and close along --stages.
            let target = p
                .target
                .map_or(String::new(), |t| format!(" (stage level {t:.0})"));
            ("msg/s", format!("open sessions {open}{target}"))
        } else if self.setup {
            (
                "msg/s",
                format!(
                    "sessions {}/{}",
                    shared.established.load(Ordering::Relaxed),
                    self.sessions
                ),
            )
        } else {
            ("sessions/s", format!("loops {}", self.sessions))
        };
        self.show(format!(
            "[{}] {:>4}s {:<7} {:>10.0} {rate}  p99 {:>9.1} µs  errors {}  {tail}",
            self.scenario,
            p.t_s,
            p.part.as_deref().unwrap_or(&p.phase),
            p.messages_per_sec,
            p.p99_us,
            p.errors,
        ));
    }

    pub(super) fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
