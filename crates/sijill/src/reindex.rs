//! `sijill reindex`: rebuilds the search index from the current versions, with progress, in
//! short transactions so that a server on the same store keeps serving and writing.

use std::path::Path;
use std::process::ExitCode;

/// Runs the rebuild.
pub fn run(data_dir: &Path, database: Option<&str>) -> Result<ExitCode, String> {
    let store = crate::open_store(data_dir, database)?;
    let bar = crate::progress_bar(0, "{bar:40} {pos}/{len} resources ({per_sec}) [{elapsed_precise}]");
    store
        .reindex(&mut |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })
        .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    eprintln!("reindexed {} resources", bar.position());
    Ok(ExitCode::SUCCESS)
}
