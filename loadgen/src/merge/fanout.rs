//! Fan-out's last delivery over every worker's receivers, recomputed when merging.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use super::MergeError;
use crate::histogram::{self, new_hist, Summary};
use crate::report::Report;

/// Fan-out's primary latency is the time to a message's *last* delivery over every
/// receiver of every worker: recomputed from the workers' per-message figures
/// (`deliveries_by_seq`: sequence, send ns, latest arrival ns, deliveries), as are
/// complete and incomplete fan-outs.
pub(super) fn fanout_last_delivery(
    inputs: &[(PathBuf, Report)],
    histograms: &mut BTreeMap<String, String>,
    latencies: &mut BTreeMap<String, Summary>,
    errors: &mut BTreeMap<String, u64>,
    extra: &mut BTreeMap<String, Value>,
) -> Result<(), MergeError> {
    let mut per_seq: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
    let mut receivers = 0u64;
    for (p, r) in inputs {
        let x = &r.results.extra;
        let rows = x
            .get("deliveries_by_seq")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                MergeError::Mismatch(format!(
                    "{}: a fanout run without deliveries_by_seq (run the workers with --shard)",
                    p.display()
                ))
            })?;
        receivers += x.get("receivers").and_then(Value::as_u64).unwrap_or(0);
        for row in rows {
            let v: Vec<u64> = row
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default();
            let [seq, sent, last, n] = v[..] else {
                return Err(MergeError::Mismatch(format!(
                    "{}: malformed deliveries_by_seq row {row}",
                    p.display()
                )));
            };
            let e = per_seq.entry(seq).or_insert((sent, 0, 0));
            e.0 = e.0.max(sent);
            e.1 = e.1.max(last);
            e.2 += n;
        }
    }
    // The messages sent are those the sender's worker (shard 0) lists in `sent`.
    let sent = inputs
        .iter()
        .find(|(_, r)| r.results.shard.is_some_and(|s| s.index == 0))
        .and_then(|(_, r)| r.results.extra.get("sent").and_then(Value::as_u64))
        .unwrap_or(per_seq.len() as u64);
    let window = inputs
        .iter()
        .find(|(_, r)| r.results.shard.is_some_and(|s| s.index == 0))
        .and_then(|(_, r)| r.results.window);
    let mut h = new_hist();
    let (mut complete, mut incomplete) = (0u64, 0u64);
    for seq in 0..sent {
        match per_seq.get(&seq) {
            Some(&(send_ns, last, n)) if n >= receivers => {
                complete += 1;
                let ms = send_ns / 1_000_000;
                if window.is_some_and(|w| ms >= w.start_unix_ms && ms < w.end_unix_ms) {
                    h.saturating_record(last.saturating_sub(send_ns));
                }
            }
            None if receivers == 0 => complete += 1,
            _ => incomplete += 1,
        }
    }
    histograms.insert("last_delivery".into(), histogram::encode(&h)?);
    latencies.insert("last_delivery".into(), Summary::of(&h));
    errors.remove("incomplete_fanout");
    if incomplete > 0 {
        errors.insert("incomplete_fanout".into(), incomplete);
    }
    extra.insert("complete_fanouts".into(), Value::from(complete));
    extra.insert("sent".into(), Value::from(sent));
    extra.remove("deliveries_by_seq");
    Ok(())
}
