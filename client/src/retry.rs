//! Retries: exponential backoff with full jitter, and which failures deserve one.

use std::time::Duration;

use rand::Rng;
use sockchat_proto::CloseReason;

use crate::{Addr, Client, ClientError, ClientOptions};

/// Exponential backoff with "full jitter": the n-th retry waits a random time in
/// `[0, min(cap, base * 2^n)]`. Randomising the whole interval spreads the reconnects
/// of many clients dropped at once (a server restart) instead of bunching them.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The first ceiling.
    pub base: Duration,
    /// The largest ceiling.
    pub cap: Duration,
    /// How many retries in a row are allowed before giving up.
    pub max_retries: u32,
    used: u32,
}

impl Backoff {
    /// `max_retries` retries, from 100 ms doubling up to 5 s.
    pub fn new(max_retries: u32) -> Self {
        Self::with(
            Duration::from_millis(100),
            Duration::from_secs(5),
            max_retries,
        )
    }

    /// A custom schedule.
    pub fn with(base: Duration, cap: Duration, max_retries: u32) -> Self {
        Self {
            base,
            cap,
            max_retries,
            used: 0,
        }
    }

    /// Retries used since the last [`reset`](Self::reset).
    pub fn used(&self) -> u32 {
        self.used
    }

    /// The delay before the next retry, or `None` when the retries are used up.
    pub fn next_delay(&mut self) -> Option<Duration> {
        if self.used >= self.max_retries {
            return None;
        }
        let ceiling = self.ceiling(self.used);
        self.used += 1;
        let nanos = ceiling.as_nanos().min(u64::MAX as u128) as u64;
        Some(Duration::from_nanos(
            rand::thread_rng().gen_range(0..=nanos),
        ))
    }

    /// The ceiling of the `n`-th retry's delay (0-based).
    pub fn ceiling(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Progress was made: the next failure starts from the first delay again.
    pub fn reset(&mut self) {
        self.used = 0;
    }
}

/// True when a session that ended this way is worth reconnecting: the connection was
/// lost, the server went away or asked us to come back later. Not for errors a retry
/// would only repeat (a bad key shows as an invalid frame) or our own disconnect.
pub fn is_retryable(reason: &CloseReason) -> bool {
    use CloseReason::*;
    matches!(
        reason,
        ServerShutdown
            | ServerDisconnect { .. }
            | HandshakeTimeout
            | SessionTimeout
            | PeerClosed
            | Io(_)
            | SlowConsumer
            | ServerFull
    )
}

impl ClientError {
    /// True when trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::Io(_) => true,
            ClientError::Handshake { reason, .. } | ClientError::Closed(reason) => {
                is_retryable(reason)
            }
            ClientError::Send(_) | ClientError::Room(_) => false,
        }
    }
}

/// Connects, retrying retryable failures after [`Backoff`] delays. `on_retry` is told
/// each failure and the delay before the next attempt (the CLI prints it). The backoff
/// is not reset here: the caller resets it once the connection has made progress, so
/// a server that accepts and drops at once still runs out of retries.
pub fn connect_with_retry(
    addr: &Addr,
    options: &ClientOptions,
    backoff: &mut Backoff,
    mut on_retry: impl FnMut(&ClientError, u32, Duration),
) -> Result<Client, ClientError> {
    loop {
        match Client::connect(addr, options) {
            Ok(c) => return Ok(c),
            Err(e) if e.is_retryable() => match backoff.next_delay() {
                Some(d) => {
                    on_retry(&e, backoff.used(), d);
                    std::thread::sleep(d);
                }
                None => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_a_doubling_capped_ceiling() {
        let mut b = Backoff::new(10);
        let ceilings: Vec<_> = (0..8).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        for n in 0..10 {
            let d = b.next_delay().expect("retries left");
            assert!(d <= b.ceiling(n));
        }
        assert_eq!(b.next_delay(), None);
        b.reset();
        assert!(b.next_delay().is_some());
        assert_eq!(b.ceiling(40), Duration::from_secs(5));
    }

    #[test]
    fn zero_retries_means_one_attempt() {
        assert_eq!(Backoff::new(0).next_delay(), None);
    }

    #[test]
    fn only_transient_ends_are_retried() {
        assert!(is_retryable(&CloseReason::ServerShutdown));
        assert!(is_retryable(&CloseReason::PeerClosed));
        assert!(!is_retryable(&CloseReason::HandshakeFailed));
        assert!(!is_retryable(&CloseReason::ClientDisconnect {
            reason: "bye".into()
        }));
    }
}
