//! Runs a program on a pseudo-terminal, so the interactive mode's line editor sees a
//! real terminal: type into it, wait for text to appear.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A child on a pseudo-terminal. Everything it prints is collected; it is killed (by
/// its own pid) if still running when dropped.
#[derive(Debug)]
pub struct PtyChild {
    child: Child,
    master: File,
    output: Arc<Mutex<Vec<u8>>>,
}

impl PtyChild {
    /// Starts `cmd` with the pty's slave side as stdin, stdout, stderr and controlling
    /// terminal (in a new session), and collects what it prints.
    pub fn spawn(mut cmd: Command) -> Self {
        let (mut master_fd, mut slave_fd) = (0, 0);
        let ws = libc::winsize {
            ws_row: 24,
            ws_col: 120,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two fds into the locals; name and termios are null
        // (allowed), the winsize is a valid local.
        let rc = unsafe {
            libc::openpty(
                &mut master_fd,
                &mut slave_fd,
                std::ptr::null_mut(),
                std::ptr::null(),
                &ws,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both fds were just opened by openpty and are owned by nobody else.
        let (master, slave) = unsafe {
            (
                OwnedFd::from_raw_fd(master_fd),
                OwnedFd::from_raw_fd(slave_fd),
            )
        };
        let stdio = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup pty"));
        cmd.stdin(stdio(&slave))
            .stdout(stdio(&slave))
            .stderr(stdio(&slave));
        // SAFETY: only async-signal-safe calls between fork and exec: setsid, ioctl.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Make the pty (our stdin) the controlling terminal: Ctrl+C becomes SIGINT.
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn on pty");
        drop(slave);
        let master = File::from(master);
        let output = Arc::new(Mutex::new(Vec::new()));
        {
            let mut reader = master.try_clone().unwrap();
            let mut writer = master.try_clone().unwrap();
            let output = output.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut answered = 0;
                // Ends with EIO once the child and its copies of the slave are gone.
                while let Ok(n) = reader.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut out = output.lock().unwrap();
                    out.extend_from_slice(&buf[..n]);
                    // The line editor asks where the cursor is: answer "column 1", or it
                    // would take the next typed characters for the answer.
                    let asks = out.windows(4).filter(|w| w == b"\x1b[6n").count();
                    while answered < asks {
                        let _ = writer.write_all(b"\x1b[1;1R");
                        answered += 1;
                    }
                }
            });
        }
        PtyChild {
            child,
            master,
            output,
        }
    }

    /// Everything printed so far, with carriage returns removed.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).replace('\r', "")
    }

    /// Waits until the output contains `needle` (panics with the output on timeout).
    pub fn expect(&self, needle: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.output().contains(needle) {
                return;
            }
            // Poll interval of a bounded wait on the output, not a wait in itself.
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "{needle:?} did not appear within {timeout:?}; output:\n{}",
            self.output()
        );
    }

    /// Types `s` a key at a time, as a person does (use `\r` for Enter, `\x04` for
    /// Ctrl+D, `\x03` for Ctrl+C), each key after the editor has answered the previous
    /// one. Keys arriving together are not what this checks: rustyline 14 leaves
    /// typeahead buffered behind its external-printer `select` until the next key
    /// (rustyline issue 976, fixed in 19), which under load would stall a test.
    pub fn type_str(&mut self, s: &str) {
        for b in s.bytes() {
            let before = self.output.lock().unwrap().len();
            self.master.write_all(&[b]).unwrap();
            if b.is_ascii_graphic() || b == b' ' {
                let end = Instant::now() + Duration::from_secs(5);
                while self.output.lock().unwrap().len() == before && Instant::now() < end {
                    // Poll interval of the wait for the editor's answer.
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// Sends `s` in one write, as a terminal delivers a paste.
    pub fn paste(&mut self, s: &str) {
        self.master.write_all(s.as_bytes()).unwrap();
    }

    /// Waits for the child to exit (panics on timeout).
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > end {
                panic!(
                    "child still running after {timeout:?}; output:\n{}",
                    self.output()
                );
            }
            // Poll interval of the bounded wait for the exit.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PtyChild {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
