//! Receives straight into a caller's buffer (not a provided one): for the rest of a large
//! frame whose buffer is already reserved, so its bytes are not copied out of ring
//! buffers.

use std::io;
use std::os::fd::RawFd;

use bytes::BytesMut;
use io_uring7::{opcode, types};

use super::{Completion, DataRing, Token, CANCEL, RECV_INTO};

impl DataRing {
    /// Receives once on `fd` straight into the spare capacity of `buf` (at most `max`
    /// bytes). The ring owns `buf` until [`Completion::Received`] hands it back. One
    /// receive per token: not while a multishot [`recv`](Self::recv) is running.
    pub fn recv_into(&mut self, token: Token, fd: RawFd, mut buf: BytesMut, max: usize) {
        debug_assert!(
            !self.direct.contains_key(&token.0)
                && !self.slot(token).recv_armed
                && !self.slot(token).starved,
            "one receive per token"
        );
        let spare = buf.spare_capacity_mut();
        let len = spare.len().min(max).min(u32::MAX as usize) as u32;
        let ptr = spare.as_mut_ptr().cast::<u8>();
        // The pointer stays valid: `buf` moves into the ring's map (a BytesMut's heap
        // storage does not move with it) and is neither grown nor dropped until the final
        // completion (or leaked with the map if that never comes, see `Drop`).
        self.direct.insert(token.0, buf);
        let e = opcode::Recv::new(types::Fd(fd), ptr, len)
            .build()
            .user_data(RECV_INTO | u64::from(token.0));
        self.push(e);
    }

    /// True while a [`recv_into`](Self::recv_into) of `token` is in the kernel.
    pub fn receiving_into(&self, token: Token) -> bool {
        self.direct.contains_key(&token.0)
    }

    /// Cancels `token`'s [`recv_into`](Self::recv_into), if one is in flight; its
    /// [`Completion::Received`] follows (with `ECANCELED`, or with what it received
    /// before the cancellation took).
    pub fn cancel_recv_into(&mut self, token: Token) {
        if self.receiving_into(token) {
            let e = opcode::AsyncCancel::new(RECV_INTO | u64::from(token.0))
                .build()
                .user_data(CANCEL);
            self.push(e);
        }
    }

    pub(super) fn on_received(&mut self, token: Token, res: i32, out: &mut Vec<Completion>) {
        let Some(mut buf) = self.direct.remove(&token.0) else {
            return;
        };
        let result = if res >= 0 {
            let n = res as usize;
            // SAFETY: the kernel wrote `n` bytes (at most the spare capacity it was
            // given) right after `buf`'s initialised part.
            unsafe { buf.set_len(buf.len() + n) };
            Ok(n)
        } else {
            Err(io::Error::from_raw_os_error(-res))
        };
        out.push(Completion::Received { token, result, buf });
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use super::super::tests::{pump, small};
    use super::super::RingConfig;
    use super::*;

    #[test]
    fn appends_to_the_callers_buffer_and_hands_it_back() {
        for defer in [true, false] {
            let mut ring = DataRing::new(small(defer)).unwrap();
            let (a, mut b) = UnixStream::pair().unwrap();
            a.set_nonblocking(true).unwrap();
            let mut buf = BytesMut::with_capacity(64 * 1024);
            buf.extend_from_slice(b"head:");
            let sent: Vec<u8> = (0..40_000u32).map(|i| (i % 253) as u8).collect();
            b.write_all(&sent).unwrap();
            let mut got = Vec::new();
            let mut back = None;
            // Received in as many single receives as it takes, each into the same buffer.
            ring.recv_into(Token(4), a.as_raw_fd(), buf, 30_000);
            assert!(ring.receiving_into(Token(4)) && !ring.is_idle(Token(4)));
            pump(
                &mut ring,
                &mut (&mut got, &mut back),
                |r, (got, back), c| match c {
                    Completion::Received { token, result, buf } => {
                        assert_eq!(token, Token(4));
                        let n = result.unwrap();
                        assert!(n > 0 && n <= 30_000, "{n}");
                        got.push(n);
                        if buf.len() < 5 + 40_000 {
                            r.recv_into(Token(4), a.as_raw_fd(), buf, 30_000);
                        } else {
                            **back = Some(buf);
                        }
                    }
                    other => panic!("{other:?}"),
                },
                |_, (_, back)| back.is_some(),
            );
            let buf = back.unwrap();
            assert_eq!(&buf[..5], b"head:");
            assert_eq!(&buf[5..], &sent[..]);
            assert!(got.len() >= 2, "max bounds each receive: {got:?}");
            assert!(ring.is_idle(Token(4)));
            assert_eq!(ring.buffers_out(), 0, "no ring buffer was used");
        }
    }

    #[test]
    fn cancelled_hands_the_buffer_back() {
        let mut ring = DataRing::new(small(true)).unwrap();
        let (a, _b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        ring.recv_into(Token(1), a.as_raw_fd(), BytesMut::with_capacity(4096), 4096);
        ring.submit().unwrap();
        ring.cancel_recv_into(Token(1));
        let mut back = None;
        pump(
            &mut ring,
            &mut back,
            |_, back, c| match c {
                Completion::Received { result, buf, .. } => {
                    assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::ECANCELED));
                    *back = Some(buf);
                }
                other => panic!("{other:?}"),
            },
            |r, _| r.in_flight() == 0,
        );
        assert!(back.unwrap().is_empty());
        assert!(ring.is_idle(Token(1)));
    }

    /// A limit of one byte: one buffer, then the receive ends and says so, however much
    /// the socket holds (without it, one `io_uring_enter` took 33 buffers here).
    #[test]
    fn a_limited_receive_ends_after_its_limit() {
        let mut ring = DataRing::new(RingConfig {
            buf_count: 64,
            buf_size: 1024,
            ..RingConfig::default()
        })
        .unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.write_all(&[5u8; 20_000]).unwrap();
        for limit in [1, 3000] {
            ring.recv_limited(Token(2), a.as_raw_fd(), limit);
            let mut st = (0usize, false);
            pump(
                &mut ring,
                &mut st,
                |r, (got, ended), c| match c {
                    Completion::Data { buf, .. } => {
                        assert!(!*ended);
                        *got += buf.len();
                        r.recycle(buf);
                    }
                    Completion::RecvLimit { token } => {
                        assert_eq!(token, Token(2));
                        *ended = true;
                    }
                    other => panic!("{other:?}"),
                },
                |_, (_, ended)| *ended,
            );
            // The limit is reached by whole completions of up to one buffer each.
            let want = (limit as usize).div_ceil(1024) * 1024;
            assert_eq!(st.0, want, "limit {limit}");
            assert!(ring.is_idle(Token(2)));
            // Its end was in the batch just handled; from the next one on nothing of it
            // is left to cancel.
            assert!(!ring.cancel_recv(Token(2)));
            let mut none = Vec::new();
            ring.poll(&mut none);
            assert!(none.is_empty(), "{none:?}");
            assert!(ring.cancel_recv(Token(2)));
        }
    }

    /// A receive parked on an empty buffer ring and then cancelled still reports its end.
    #[test]
    fn a_cancelled_parked_receive_reports_its_end() {
        let mut ring = DataRing::new(RingConfig {
            rearm_free: 2,
            ..small(true)
        })
        .unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.write_all(&[1u8; 8 * 256 + 100]).unwrap();
        ring.recv(Token(7), a.as_raw_fd());
        let mut held = Vec::new();
        pump(
            &mut ring,
            &mut held,
            |_, held, c| match c {
                Completion::Data { buf, .. } => held.push(buf),
                other => panic!("{other:?}"),
            },
            |r, held| held.len() == 8 && r.in_flight() == 0,
        );
        assert!(!ring.cancel_recv(Token(7)), "its end follows");
        let mut out = Vec::new();
        ring.poll(&mut out);
        assert!(
            matches!(&out[..], [Completion::RecvEnded { token: Token(7), result: Err(e) }]
                if e.raw_os_error() == Some(libc::ECANCELED)),
            "{out:?}"
        );
        assert!(ring.is_idle(Token(7)));
        for buf in held {
            ring.recycle(buf);
        }
    }
}
