//! Gathering a run's files: `--merge-parts` combines part documents (each written by
//! `--part-out`) into one run document, and `--keep` copies the raw loadgen reports out
//! of the run's temp directory. Neither measures anything; both only read and write
//! files after the cases ran.

use std::path::Path;

use super::doc::{self, BenchDoc};
use super::suite::Suite;
use super::{existing_charts, write_readme, BenchArgs, BenchError};

/// `--merge-parts`: one run document from parts run separately (cases in the suite's
/// order, each part's settings and load averages kept in its cases' runs; the
/// document's load average spans the first part's start and the last part's end).
pub(super) fn merge_parts(a: &BenchArgs, suite: &Suite) -> Result<bool, BenchError> {
    let mut parts = a
        .merge_parts
        .iter()
        .map(|p| BenchDoc::read(p))
        .collect::<Result<Vec<_>, _>>()?;
    parts.sort_by(|x, y| x.started_utc.cmp(&y.started_utc));
    let mut doc = parts[0].clone();
    let last = parts[parts.len() - 1].clone();
    doc.load_average.end = last.load_average.end.clone();
    doc.duration_s = parts.iter().map(|p| p.duration_s).sum();
    doc.dirty = parts.iter().any(|p| p.dirty);
    doc.problems = parts.iter().flat_map(|p| p.problems.clone()).collect();
    doc.cases = parts.iter().flat_map(|p| p.cases.clone()).collect();
    let order = |name: &str| suite.cases.iter().position(|c| c.name == name);
    doc.cases.sort_by_key(|c| order(&c.name));
    for p in &parts[1..] {
        if p.commit != doc.commit || p.settings != doc.settings {
            println!(
                "note: part started {} differs (commit {}, settings {:?})",
                p.started_utc, p.commit, p.settings
            );
        }
    }
    let name = format!("{}-{}.json", doc.date, doc.commit);
    let path = a.results.join(&name);
    doc::write_json(&path, &doc)?;
    println!(
        "wrote {} ({} cases from {} parts)",
        path.display(),
        doc.cases.len(),
        parts.len()
    );
    write_readme(
        &doc,
        suite,
        &existing_charts(suite, &a.results),
        &a.results,
        &name,
    )?;
    Ok(true)
}

/// Copies every loadgen report of the run (`tmp`) to `keep`.
pub(super) fn keep_reports(tmp: &Path, keep: &Path) -> Result<(), BenchError> {
    std::fs::create_dir_all(keep).map_err(|e| BenchError::io(keep, e))?;
    for e in std::fs::read_dir(tmp).map_err(|e| BenchError::io(tmp, e))? {
        let p = e.map_err(|e| BenchError::io(tmp, e))?.path();
        if p.extension().is_some_and(|x| x == "json") {
            let to = keep.join(p.file_name().unwrap_or_default());
            std::fs::copy(&p, &to).map_err(|e| BenchError::io(&to, e))?;
        }
    }
    Ok(())
}
