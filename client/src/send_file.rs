//! `--send FILE`: one file as one message, echo verified byte for byte.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use bytes::Bytes;
use sockchat_client::{ClientError, Event, CLIENT_DISCONNECTING};
use sockchat_proto::frame::MAX_CONTENT_LEN;

use crate::{after_close, Settings};

/// A content type from the file name's extension, for the common cases; anything else
/// is `application/octet-stream`, which the echo preserves either way.
pub(crate) fn guess_content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("txt" | "log" | "md") => "text/plain; charset=utf-8",
        Some("json") => "application/json",
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("csv") => "text/csv",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("pdf") => "application/pdf",
        _ => "application/octet-stream",
    }
}

/// Sends the file and waits for its echo; resends it whole after a reconnect.
pub(crate) fn run(
    settings: &Settings,
    path: &Path,
    content_type: Option<&str>,
) -> anyhow::Result<()> {
    let data =
        Bytes::from(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?);
    if data.is_empty() {
        bail!(
            "{} is empty: the protocol has no empty messages",
            path.display()
        );
    }
    let content_type = content_type.unwrap_or_else(|| guess_content_type(path));
    let mut log = |m: String| eprintln!("{m}");
    let mut backoff = settings.backoff();
    loop {
        let client = settings.connect(&mut backoff, &mut log)?;
        if data.len() as u64 > MAX_CONTENT_LEN && !client.features().chunk {
            bail!(
                "{} is {} bytes, more than one frame holds, and the server does not accept chunked messages",
                path.display(),
                data.len()
            );
        }
        let started = Instant::now();
        let outcome = match client.send(content_type, data.clone()) {
            Ok(()) => wait_echo(settings, &client, &data, content_type)?,
            Err(ClientError::Closed(r)) => Err(r),
            Err(e) => return Err(e.into()),
        };
        match outcome {
            Ok(()) => {
                let elapsed = started.elapsed();
                let _ = client.disconnect(CLIENT_DISCONNECTING);
                println!(
                    "sent {} ({} bytes, {}): echo verified in {} ms",
                    path.display(),
                    data.len(),
                    content_type,
                    elapsed.as_millis()
                );
                return Ok(());
            }
            Err(reason) => {
                drop(client);
                after_close(&reason, &mut backoff, &mut log)?;
            }
        }
    }
}

/// `Ok(Ok(()))` when the echo matched; `Ok(Err(reason))` when the session ended first.
fn wait_echo(
    settings: &Settings,
    client: &sockchat_client::Client,
    data: &Bytes,
    content_type: &str,
) -> anyhow::Result<Result<(), sockchat_client::CloseReason>> {
    // The clock starts once the bytes are out: a large file takes a while to write.
    match client.flush(settings.echo_timeout) {
        Ok(true) => {}
        Ok(false) => bail!(
            "could not write the file within {:?}",
            settings.echo_timeout
        ),
        Err(ClientError::Closed(r)) => return Ok(Err(r)),
        Err(e) => return Err(e.into()),
    }
    let deadline = Instant::now() + settings.echo_timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("no echo within {} s", settings.echo_timeout.as_secs_f64());
        }
        match client.next_event(left) {
            Ok(Some(Event::Message(m))) => {
                if m.content != *data {
                    bail!(
                        "echo differs from the file: {} bytes back for {} sent",
                        m.content.len(),
                        data.len()
                    );
                }
                if m.content_type.as_deref() != Some(content_type) {
                    bail!(
                        "echo came back as {:?}, sent as {content_type:?}",
                        m.content_type
                    );
                }
                return Ok(Ok(()));
            }
            Ok(Some(Event::PeerError(text))) => eprintln!("server error: {text}"),
            Ok(Some(Event::Closed(r))) | Err(ClientError::Closed(r)) => return Ok(Err(r)),
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_are_guessed_from_extensions() {
        assert_eq!(guess_content_type(Path::new("a.JPG")), "image/jpeg");
        assert_eq!(
            guess_content_type(Path::new("notes.txt")),
            "text/plain; charset=utf-8"
        );
        assert_eq!(
            guess_content_type(Path::new("blob")),
            "application/octet-stream"
        );
    }
}
