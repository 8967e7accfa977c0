//! `--max-messages-per-sec`: a sender over the rate is throttled by backpressure (the
//! server stops reading it), nothing it sent is lost, and other sessions are not slowed.

use std::time::{Duration, Instant};

use sockchat_proto::FrameType;
use sockchat_testkit::admin::{sample, scrape};
use sockchat_testkit::*;

const RATE: u32 = 50;
const BURST: u32 = 10;

#[test]
fn the_sender_is_throttled_and_the_others_are_not() {
    for t in TRANSPORTS {
        let mut server = Server::builder()
            .args([
                "--max-messages-per-sec",
                &RATE.to_string(),
                "--messages-burst",
                &BURST.to_string(),
                "--admin",
                "127.0.0.1:0",
            ])
            .start();
        let admin = server.admin.unwrap();
        let mut flood = server.handshake(t);
        let mut other = server.handshake(t);

        // 200 messages in one write: far more than the burst.
        const N: usize = 200;
        let mut data = Vec::new();
        let frames: Vec<Vec<u8>> = (0..N)
            .map(|i| {
                flood.frame(
                    FrameType::Message,
                    Some(TEXT_UTF8),
                    format!("m{i:04}").as_bytes(),
                )
            })
            .collect();
        for f in &frames {
            data.extend_from_slice(f);
        }
        let start = Instant::now();
        let writer = flood.spawn_writer(data);

        // While the flood is throttled, the other session's round trips go through; each
        // is well under its own rate (one per 100 ms).
        for i in 0..10 {
            let t0 = Instant::now();
            other.echo(Some(TEXT_UTF8), format!("other {i}").as_bytes());
            assert!(
                t0.elapsed() < Duration::from_secs(2),
                "[{t:?}] a bystander waited {:?} for an echo",
                t0.elapsed()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // The server has not read faster than the rate allows (an upper bound, measured
        // from before the first write, so load on this machine cannot break it).
        let got = sample(&scrape(admin), "sockchat_messages_received_total{}") - 10.0;
        let bound = BURST as f64 + RATE as f64 * start.elapsed().as_secs_f64() + 1.0;
        assert!(
            got <= bound,
            "[{t:?}] read {got} messages, the rate allows {bound}"
        );

        // Every message comes back, in order: throttled, not dropped.
        for (i, f) in frames.iter().enumerate() {
            let back = flood.expect_kind(FrameType::Message, LONG);
            assert_eq!(back.raw[..], f[..], "[{t:?}] echo {i}");
        }
        let took = start.elapsed();
        let min = Duration::from_secs_f64((N as u32 - BURST) as f64 / RATE as f64);
        assert!(
            took >= min.mul_f64(0.9),
            "[{t:?}] {N} messages in {took:?}: not throttled (≥ {min:?})"
        );
        writer.join().unwrap().unwrap();
        let m = scrape(admin);
        assert!(sample(&m, "sockchat_rate_limited_total{}") >= 1.0);
        assert_eq!(
            sample(&m, "sockchat_messages_received_total{}"),
            (N + 10) as f64
        );
        server.stop_clean();
    }
}
