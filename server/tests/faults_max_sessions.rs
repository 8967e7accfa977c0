//! At `--max-sessions`, a new connection gets one `error` frame "Server full" (no
//! `session_init`, `session_id` null) and a close, and is counted as `server_full`; the
//! sessions already open are untouched (they keep echoing, the bystander's latency stays
//! within the bound).

use sockchat_proto::FrameType;
use sockchat_testkit::*;

per_transport!(server_full);

const MAX: usize = 20;
const REFUSED: usize = 30;

fn server_full(t: Transport) {
    let a = Arena::start(t, "server_full", &["--max-sessions", &MAX.to_string()]);
    // The bystander holds one slot.
    let mut open: Vec<Client> = (1..MAX).map(|_| a.server.handshake(t)).collect();
    for (i, c) in open.iter_mut().enumerate() {
        c.echo(Some(TEXT_UTF8), format!("before {i}").as_bytes());
    }
    let pid = a.server.pid();
    let fds_before = proc_fds(pid);
    for i in 0..REFUSED {
        let mut c = a.server.connect(t);
        let out = c.read_until_closed(SHORT);
        assert_eq!(
            out.frames.len(),
            1,
            "[{t:?}] refused connection {i}: {:?}",
            describe(&out.frames)
        );
        let f = &out.frames[0];
        assert_eq!(
            f.header.kind,
            FrameType::Error,
            "{:?}",
            describe(&out.frames)
        );
        assert_eq!(&f.content[..], b"Server full");
        assert_eq!(
            f.header.session_id, None,
            "no session for a refused connection"
        );
    }
    // Refused connections hold nothing once closed.
    assert!(
        wait_until(SHORT, || proc_fds(pid) <= fds_before),
        "[{t:?}] fds {fds_before} before, {} after the refusals",
        proc_fds(pid)
    );
    for (i, c) in open.iter_mut().enumerate() {
        c.echo(Some(TEXT_UTF8), format!("after {i}").as_bytes());
        c.ping();
    }
    drop(open);
    let totals = a.finish(4 << 20);
    assert_eq!(totals.closes("server_full"), REFUSED as u64, "{totals:?}");
    assert_eq!(totals.get("accepted"), (MAX + REFUSED) as u64, "{totals:?}");
}
