//! Rooms on the command line: `--room` with file mode and `--send` (no echo to wait for
//! on a chat server: join, send, make sure it is written, leave), and the interactive
//! mode's slash commands.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use sockchat_client::{Client, ClientError, Event, CLIENT_DISCONNECTING};

use crate::Settings;

/// How long a join may take to be answered.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Joins `room` and waits for the answer; messages arriving meanwhile are passed to
/// `other`.
pub(crate) fn join_and_wait(
    client: &Client,
    room: &str,
    other: &mut dyn FnMut(Event),
) -> anyhow::Result<()> {
    client
        .join(room)
        .with_context(|| format!("joining room {room}"))?;
    let deadline = Instant::now() + JOIN_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("no answer to joining room {room} within {JOIN_TIMEOUT:?}");
        }
        match client.next_event(left) {
            Ok(Some(Event::Joined(r))) if r == room => return Ok(()),
            Ok(Some(Event::PeerError(text))) => bail!("joining room {room}: {text}"),
            Ok(Some(Event::Closed(r))) | Err(ClientError::Closed(r)) => {
                bail!("joining room {room}: {}", r.wire_reason())
            }
            Ok(Some(e)) => other(e),
            Ok(None) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// `--no-echo` file mode and `--send`: each message to `settings.room` (the lobby
/// without it), `interval` apart, then waits until everything is written and leaves.
pub(crate) fn send_to_room(
    settings: &Settings,
    messages: Vec<(String, Bytes)>,
    interval: Duration,
) -> anyhow::Result<()> {
    let mut backoff = settings.backoff();
    let client = settings.connect(&mut backoff, &mut |m| eprintln!("{m}"))?;
    let room = settings.room.clone().unwrap_or_else(|| "lobby".into());
    if room != "lobby" {
        join_and_wait(&client, &room, &mut |_| {})?;
    }
    for (i, (ct, content)) in messages.into_iter().enumerate() {
        if i > 0 && !interval.is_zero() {
            std::thread::sleep(interval);
        }
        client
            .send_to(&room, &ct, content)
            .with_context(|| format!("message {}", i + 1))?;
    }
    if !client.flush(settings.echo_timeout)? {
        bail!(
            "not everything was written within {:?}",
            settings.echo_timeout
        );
    }
    let _ = client.disconnect(CLIENT_DISCONNECTING);
    Ok(())
}

/// A typed line: a slash command or text.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Input<'a> {
    Join(&'a str),
    Leave(&'a str),
    Select(&'a str),
    List,
    /// A slash command this client does not know, or one missing its room.
    Unknown(&'a str),
    Text(&'a str),
}

/// Reads `/join R`, `/leave R`, `/room R`, `/rooms`; anything else is text.
pub(crate) fn parse_input(line: &str) -> Input<'_> {
    let Some(cmd) = line.strip_prefix('/') else {
        return Input::Text(line);
    };
    let mut parts = cmd.split_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some("join"), Some(r), None) => Input::Join(r),
        (Some("leave"), Some(r), None) => Input::Leave(r),
        (Some("room"), Some(r), None) => Input::Select(r),
        (Some("rooms"), None, None) => Input::List,
        _ => Input::Unknown(line),
    }
}

/// `[R] <first 8 of the sender id>: text`.
pub(crate) fn format_room_message(room: &str, from: Option<&str>, text: &str) -> String {
    let from: String = from.unwrap_or("?").chars().take(8).collect();
    format!("[{room}] {from}: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slash_commands_parse() {
        assert_eq!(parse_input("/join ops"), Input::Join("ops"));
        assert_eq!(parse_input("/leave ops"), Input::Leave("ops"));
        assert_eq!(parse_input("/room ops"), Input::Select("ops"));
        assert_eq!(parse_input("/rooms"), Input::List);
        assert_eq!(parse_input("/join"), Input::Unknown("/join"));
        assert_eq!(parse_input("/dance now"), Input::Unknown("/dance now"));
        assert_eq!(parse_input("hello /join"), Input::Text("hello /join"));
    }

    #[test]
    fn room_messages_show_room_and_sender_prefix() {
        assert_eq!(
            format_room_message("ops", Some("0123456789abcdef"), "hi"),
            "[ops] 01234567: hi"
        );
    }
}
