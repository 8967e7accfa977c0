//! Rooms in interactive mode against the real chat server, on pseudo-terminals, as a
//! person uses it: two clients in one room, one pasting whole lines (several lines in one
//! write, no bracketed paste) while the other's messages arrive. Every pasted line must
//! be sent intact and every arrival printed (rustyline 14 lost typeahead here: a pasted
//! `three` arrived as `t`).

mod support;

use std::time::Duration;

use sockchat_client::Addr;
use sockchat_testkit::pty::PtyChild;
use sockchat_testkit::Server;
use support::client;

const LIMIT: Duration = Duration::from_secs(60);

fn in_room(addr: &Addr, room: &str) -> PtyChild {
    let mut cmd = client(addr);
    cmd.args(["interactive", "--no-echo", "--room", room]);
    let pty = PtyChild::spawn(cmd);
    pty.expect(&format!("{room}> "), LIMIT);
    pty
}

#[test]
fn pasted_lines_are_sent_whole_while_messages_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let mut server = Server::builder()
        .tcp_addr("127.0.0.1:0")
        .unix_path(&sock)
        .args(["--mode", "chat"])
        .start();
    let unix = Addr::Unix(server.unix.clone().expect("a Unix listener"));
    let tcp = Addr::Tcp(server.tcp.expect("a TCP listener").to_string());
    let mut alice = in_room(&unix, "team");
    let mut bob = in_room(&tcp, "team");

    let pasted: Vec<String> = (0..12).map(|i| format!("pasted line {i} three")).collect();
    // Bob pastes everything in a few writes while Alice's messages keep arriving on his
    // terminal (printed above his line).
    for (i, chunk) in pasted.chunks(4).enumerate() {
        alice.type_str(&format!("from alice {i}\r"));
        let mut blob = chunk.join("\r");
        blob.push('\r');
        bob.paste(&blob);
    }
    for i in 0..3 {
        bob.expect(&format!(": from alice {i}\n"), LIMIT);
    }
    for line in &pasted {
        // `[team] <8 chars of bob's id>: pasted line N three`, whole.
        alice.expect(&format!(": {line}\n"), LIMIT);
    }
    // Each arrival printed once at Bob's, with room and sender prefix.
    let out = bob.output();
    for i in 0..3 {
        let needle = format!("from alice {i}");
        assert_eq!(
            out.matches(&format!(": {needle}\n")).count(),
            1,
            "{needle} printed once:\n{out}"
        );
        assert!(out.contains("[team] "), "{out}");
    }

    // Slash commands: leave, list, and back to the lobby prompt.
    bob.type_str("/rooms\r");
    bob.expect("rooms: lobby, team (typing to team)", LIMIT);
    bob.type_str("/leave team\r");
    bob.expect("left team", LIMIT);
    bob.expect("lobby> ", LIMIT);
    for p in [&mut alice, &mut bob] {
        p.type_str("exit\r");
        assert!(p.wait(LIMIT).success(), "{}", p.output());
    }
    assert!(server.terminate_within(LIMIT).success());
}
