//! The order of a suite's runs: case by case, or round by round (one run of every case
//! per round), and the quick check's further rounds for the cases it confirms.

use super::cases::{Bench, CaseRuns};
use super::suite::{fill, CaseSpec, Order};
use super::BenchError;

/// Runs every case of `cases` `runs` times in `order`; returns each case's runs, in the
/// order of `cases`.
pub fn run_all(
    bench: &mut Bench,
    cases: &[&CaseSpec],
    runs: u32,
    order: Order,
    base_rev: &str,
) -> Result<Vec<CaseRuns>, BenchError> {
    let title = |c: &CaseSpec| {
        let frame_len = c.frame_len().unwrap_or(0);
        format!("== {}: {}", c.name, fill(&c.title, frame_len, base_rev))
    };
    let mut accs: Vec<CaseRuns> = cases.iter().map(|_| CaseRuns::default()).collect();
    match order {
        Order::Cases => {
            for (c, acc) in cases.iter().zip(&mut accs) {
                println!("{}", title(c));
                for i in 0..runs {
                    let line = bench.run_pair(c, acc)?;
                    println!("  run {}/{runs}: {line}", i + 1);
                }
            }
        }
        Order::Rounds => {
            for c in cases {
                println!("{}", title(c));
            }
            let all: Vec<usize> = (0..cases.len()).collect();
            rounds(bench, cases, &mut accs, &all, runs, "round")?;
        }
    }
    Ok(accs)
}

/// `rounds` rounds over the cases at `which` (indices into `cases` and `accs`), each
/// adding one run of every one of them.
pub fn rounds(
    bench: &mut Bench,
    cases: &[&CaseSpec],
    accs: &mut [CaseRuns],
    which: &[usize],
    rounds: u32,
    what: &str,
) -> Result<(), BenchError> {
    for r in 0..rounds {
        println!("-- {what} {}/{rounds}", r + 1);
        for &i in which {
            let line = bench.run_pair(cases[i], &mut accs[i])?;
            println!("  {} run {}: {line}", cases[i].name, accs[i].runs());
        }
    }
    Ok(())
}
