//! File mode: send each line of a file and wait for every echo, surviving reconnects.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use sockchat_client::{ClientError, Event, CLIENT_DISCONNECTING, TEXT_PLAIN};

use crate::{after_close, Settings};

/// Lines sent ahead of their echoes at most: enough to keep the pipe full, few enough
/// that a drop costs little to resend.
const WINDOW: usize = 256;

/// The messages of a file: each line trimmed (as the reference's `line.strip()`),
/// blank lines skipped, stopping at a line `exit`.
pub(crate) fn parse_lines(text: &str) -> Vec<Bytes> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take_while(|l| *l != "exit")
        .map(|l| Bytes::copy_from_slice(l.as_bytes()))
        .collect()
}

/// Sends the lines in order and returns once each one's echo has arrived.
///
/// The echo server answers in order, so progress is one counter: `echoed` lines are
/// done. After a drop the client reconnects and starts again from line `echoed`: a
/// line whose echo was lost with the connection is sent again, none is skipped.
pub(crate) fn run(settings: &Settings, path: &Path, interval: Duration) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading messages file {}", path.display()))?;
    let lines = parse_lines(&text);
    let mut log = |m: String| eprintln!("{m}");
    let mut backoff = settings.backoff();
    let mut echoed = 0usize;
    loop {
        let client = settings.connect(&mut backoff, &mut log)?;
        let mut next = echoed;
        let mut next_at = Instant::now();
        let mut last_progress = Instant::now();
        let ended = loop {
            let now = Instant::now();
            // Send what the window and the interval allow.
            while next < lines.len() && next - echoed < WINDOW && now >= next_at {
                match client.send(TEXT_PLAIN, lines[next].clone()) {
                    Ok(()) => {}
                    Err(ClientError::Closed(_)) => break, // the Closed event says why
                    Err(e) => {
                        return Err(anyhow::Error::new(e).context(format!("line {}", next + 1)))
                    }
                }
                if next == echoed {
                    last_progress = now;
                }
                next += 1;
                next_at = now + interval;
            }
            if echoed == lines.len() {
                break None;
            }
            let can_send = next < lines.len() && next - echoed < WINDOW;
            let echo_deadline = last_progress + settings.echo_timeout;
            let wake = if can_send && next > echoed {
                next_at.min(echo_deadline)
            } else if can_send {
                next_at
            } else {
                echo_deadline
            };
            let event = match client.next_event(wake.saturating_duration_since(now)) {
                Ok(e) => e,
                Err(ClientError::Closed(r)) => Some(Event::Closed(r)),
                Err(e) => return Err(e.into()),
            };
            match event {
                Some(Event::Message(m)) => {
                    let Some(want) = lines.get(echoed) else {
                        bail!("unexpected message after the last echo: {}", m.display());
                    };
                    if m.content != want {
                        bail!(
                            "echo of line {} differs: sent {:?}, got {}",
                            echoed + 1,
                            String::from_utf8_lossy(want),
                            m.display()
                        );
                    }
                    println!("< {}", m.display());
                    echoed += 1;
                    last_progress = Instant::now();
                    backoff.reset();
                }
                Some(Event::PeerError(text)) => eprintln!("server error: {text}"),
                Some(Event::Closed(reason)) => break Some(reason),
                Some(_) => {}
                None => {
                    if next > echoed && Instant::now() >= echo_deadline {
                        bail!(
                            "no echo of message {} within {} s ({} of {} echoed)",
                            echoed + 1,
                            settings.echo_timeout.as_secs_f64(),
                            echoed,
                            lines.len()
                        );
                    }
                }
            }
        };
        match ended {
            None => {
                let _ = client.disconnect(CLIENT_DISCONNECTING);
                eprintln!("{} of {} messages echoed", echoed, lines.len());
                return Ok(());
            }
            Some(reason) => {
                drop(client);
                after_close(&reason, &mut backoff, &mut log)
                    .with_context(|| format!("{} of {} messages echoed", echoed, lines.len()))?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_lines_are_skipped_and_exit_ends_the_list() {
        let got = parse_lines("Hello Server\n\n  \nHow are you?\r\nexit\nnot sent\n");
        assert_eq!(got, ["Hello Server", "How are you?"]);
        assert!(parse_lines("").is_empty());
    }
}
