//! Interactive mode: a `> ` prompt with line editing and history; received messages are
//! printed above the line being typed.
//!
//! Two threads: this one runs the line editor and sends what is typed; a receiver
//! thread takes the client's events, prints them through rustyline's external printer
//! (which redraws the prompt and the partial line underneath) and reconnects after a
//! drop. Lines typed but not yet echoed are kept, and sent again after a reconnect.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use rustyline::error::ReadlineError;
use rustyline::{DefaultEditor, ExternalPrinter};
use sockchat_client::{Backoff, Client, ClientError, Event, CLIENT_DISCONNECTING, TEXT_PLAIN};

use crate::rooms::{format_room_message, join_and_wait, parse_input, Input};
use crate::{after_close, Settings};

/// Where received messages go: above the prompt when stdin and stdout are a terminal,
/// plain stdout otherwise (piped input has no line being typed to protect).
struct Printer(Mutex<Option<Box<dyn ExternalPrinter + Send>>>);

impl Printer {
    fn print(&self, line: String) {
        let mut out = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = out.as_mut() {
            if p.print(format!("{line}\n")).is_ok() {
                return;
            }
        }
        println!("{line}");
    }
}

/// The terminal's settings before the line editor touched them, so a fatal exit from
/// the receiver thread (while the editor holds the terminal in raw mode) can put them
/// back.
struct SavedTerminal(Option<libc::termios>);

impl SavedTerminal {
    fn save() -> Self {
        // SAFETY: isatty and tcgetattr only read the state of fd 0 into a local value,
        // which is used only if the call succeeded.
        unsafe {
            if libc::isatty(0) != 1 {
                return Self(None);
            }
            let mut t: libc::termios = std::mem::zeroed();
            Self((libc::tcgetattr(0, &mut t) == 0).then_some(t))
        }
    }

    fn restore(&self) {
        if let Some(t) = &self.0 {
            // SAFETY: `t` is a termios that tcgetattr filled in for this same fd.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, t);
            }
        }
    }
}

struct Inner {
    client: Option<Arc<Client>>,
    /// Typed lines whose echo has not arrived, oldest first.
    outstanding: VecDeque<Bytes>,
    /// Rooms joined besides the lobby (joined again after a reconnect).
    rooms: Vec<String>,
    /// The room typed lines go to.
    current: String,
}

const LOBBY: &str = "lobby";

struct State {
    inner: Mutex<Inner>,
    stopping: AtomicBool,
    printer: Printer,
    terminal: SavedTerminal,
}

impl State {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection is gone for good: say why and leave, from any thread.
    fn fatal(&self, e: anyhow::Error) -> ! {
        self.terminal.restore();
        let line = format!("{e:#}").replace('\n', " ");
        eprintln!("\r\nsockchat-client: {line}");
        std::process::exit(1);
    }
}

pub(crate) fn run(settings: &Settings) -> anyhow::Result<()> {
    let terminal = SavedTerminal::save();
    let mut editor = DefaultEditor::new()?;
    let printer = match editor.create_external_printer() {
        Ok(p) => Some(Box::new(p) as Box<dyn ExternalPrinter + Send>),
        Err(_) => None,
    };
    let mut backoff = settings.backoff();
    let client = settings.connect(&mut backoff, &mut |m| eprintln!("{m}"))?;
    eprintln!(
        "connected to {} (session {}); type `exit` or Ctrl+D to leave, Ctrl+C to force quit",
        client.addr(),
        client.session_id()
    );
    let rooms_granted = client.features().rooms;
    let mut rooms = Vec::new();
    let mut current = LOBBY.to_string();
    if let Some(room) = &settings.room {
        if !rooms_granted {
            bail!("--room: this server does not offer rooms (start it with --mode chat)");
        }
        join_and_wait(&client, room, &mut |_| {})?;
        if room != LOBBY {
            rooms.push(room.clone());
        }
        current = room.clone();
    }
    let state = Arc::new(State {
        inner: Mutex::new(Inner {
            client: Some(Arc::new(client)),
            outstanding: VecDeque::new(),
            rooms,
            current,
        }),
        stopping: AtomicBool::new(false),
        printer: Printer(Mutex::new(printer)),
        terminal,
    });
    {
        let (state, settings) = (state.clone(), settings.clone());
        std::thread::Builder::new()
            .name("receiver".into())
            .spawn(move || receive(&state, &settings, backoff))?;
    }

    loop {
        let prompt = if rooms_granted {
            format!("{}> ", state.inner().current)
        } else {
            "> ".to_string()
        };
        match editor.readline(&prompt) {
            Ok(line) => {
                let text = line.trim();
                if text.is_empty() {
                    continue;
                }
                let _ = editor.add_history_entry(line.as_str());
                if text == "exit" {
                    break;
                }
                let text = match parse_input(text) {
                    Input::Text(t) => t,
                    cmd if rooms_granted => {
                        room_command(&state, cmd);
                        continue;
                    }
                    _ => text,
                };
                let content = Bytes::copy_from_slice(text.as_bytes());
                let mut inner = state.inner();
                if !settings.no_echo {
                    inner.outstanding.push_back(content.clone());
                }
                if let Some(c) = &inner.client {
                    // On failure the line stays outstanding and the receiver resends
                    // it after reconnecting.
                    let _ = if inner.current == LOBBY {
                        c.send(TEXT_PLAIN, content)
                    } else {
                        c.send_to(&inner.current, TEXT_PLAIN, content)
                    };
                }
            }
            Err(ReadlineError::Eof) => break,
            Err(ReadlineError::Interrupted) => {
                state.terminal.restore();
                eprintln!("^C: force quit");
                std::process::exit(130);
            }
            Err(e) => return Err(e.into()),
        }
    }
    leave(&state, settings.echo_timeout)
}

/// `/join`, `/leave`, `/room`, `/rooms` (the answers print when they arrive).
fn room_command(state: &State, cmd: Input<'_>) {
    let mut inner = state.inner();
    let say = |m: String| state.printer.print(m);
    let client = inner.client.clone();
    let sent = |r: Result<(), ClientError>| {
        if let Err(e) = r {
            say(format!("not sent: {e}"));
        }
    };
    match cmd {
        Input::Join(r) => match &client {
            Some(c) => sent(c.join(r)),
            None => say("not connected".into()),
        },
        Input::Leave(r) => match &client {
            Some(c) => {
                let r_sent = c.leave(r);
                // Typing goes to the lobby as soon as the leave is sent, not when its
                // answer arrives: the next prompt is drawn right after this returns and
                // cannot change while the editor waits, and a line typed meanwhile
                // would go to a room being left.
                if r_sent.is_ok() && inner.current == r {
                    inner.current = LOBBY.to_string();
                }
                sent(r_sent);
            }
            None => say("not connected".into()),
        },
        Input::Select(r) => {
            if r == LOBBY || inner.rooms.iter().any(|x| x == r) {
                inner.current = r.to_string();
            } else {
                say(format!("not in room {r}: /join {r} first"));
            }
        }
        Input::List => say(format!(
            "rooms: {} (typing to {})",
            std::iter::once(LOBBY)
                .chain(inner.rooms.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(", "),
            inner.current
        )),
        Input::Unknown(line) => say(format!(
            "unknown command {line:?}: /join ROOM, /leave ROOM, /room ROOM, /rooms"
        )),
        Input::Text(_) => {}
    }
}

/// A clean exit: wait for the echoes still due, then `disconnect`.
fn leave(state: &State, echo_timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + echo_timeout;
    while !state.inner().outstanding.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    state.stopping.store(true, Ordering::SeqCst);
    let (client, missing) = {
        let mut inner = state.inner();
        (inner.client.take(), inner.outstanding.len())
    };
    if let Some(c) = client {
        let _ = c.disconnect(CLIENT_DISCONNECTING);
    }
    if missing > 0 {
        bail!("{missing} message(s) not echoed within {echo_timeout:?}");
    }
    Ok(())
}

/// The receiver thread: prints events, reconnects after a drop, exits the process when
/// the connection cannot be had back.
fn receive(state: &State, settings: &Settings, mut backoff: Backoff) {
    let mut log = |m: String| state.printer.print(m);
    loop {
        if state.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Some(client) = state.inner().client.clone() else {
            return;
        };
        let reason = match client.next_event(Duration::from_millis(100)) {
            Ok(None) | Ok(Some(Event::Pong { .. })) => continue,
            Ok(Some(Event::Message(m))) => {
                {
                    let mut inner = state.inner();
                    if inner.outstanding.front() == Some(&m.content) {
                        inner.outstanding.pop_front();
                    }
                }
                backoff.reset();
                let line = match &m.room {
                    Some(room) => {
                        format_room_message(room, m.from.as_deref(), &m.display().to_string())
                    }
                    None => format!("< {}", m.display()),
                };
                state.printer.print(line);
                continue;
            }
            Ok(Some(Event::Joined(room))) => {
                let mut inner = state.inner();
                if room != LOBBY && !inner.rooms.contains(&room) {
                    inner.rooms.push(room.clone());
                }
                state.printer.print(format!("joined {room}"));
                continue;
            }
            Ok(Some(Event::Left(room))) => {
                let mut inner = state.inner();
                inner.rooms.retain(|r| *r != room);
                if inner.current == room {
                    inner.current = LOBBY.to_string();
                }
                state.printer.print(format!("left {room}"));
                continue;
            }
            Ok(Some(Event::PeerError(text))) => {
                state.printer.print(format!("server error: {text}"));
                continue;
            }
            Ok(Some(Event::Closed(r))) | Err(ClientError::Closed(r)) => r,
            Ok(Some(_)) => continue,
            Err(e) => state.fatal(e.into()),
        };
        if state.stopping.load(Ordering::SeqCst) {
            return;
        }
        state.inner().client = None;
        drop(client);
        let reconnected = after_close(&reason, &mut backoff, &mut log)
            .and_then(|()| settings.connect(&mut backoff, &mut log));
        match reconnected {
            Ok(c) => {
                let mut inner = state.inner();
                for room in &inner.rooms {
                    // The answers arrive as events and print as "joined R".
                    let _ = c.join(room);
                }
                for line in &inner.outstanding {
                    let _ = c.send(TEXT_PLAIN, line.clone());
                }
                log(format!(
                    "reconnected (session {}); {} message(s) resent",
                    c.session_id(),
                    inner.outstanding.len()
                ));
                inner.client = Some(Arc::new(c));
            }
            Err(e) => state.fatal(e),
        }
    }
}
