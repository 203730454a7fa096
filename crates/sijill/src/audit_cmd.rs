//! `sijill audit verify`: re-walks the audit trail's hash chains and reports the first row
//! that was changed, removed or reordered; with `--anchor`, also checks the chain heads an
//! operator recorded earlier (which catches a rewritten or cut-off trail).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use sijill_store::audit::{check_anchors, verify, Head};

/// The audit commands.
#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check every chain; print the heads to record as anchors. Exit 1 on a break.
    Verify {
        /// A file of heads printed by an earlier verify (`chain position hash` lines):
        /// each must still be in the trail.
        #[arg(long)]
        anchor: Option<PathBuf>,
    },
}

/// Runs an audit command.
pub fn run(data_dir: &Path, database: Option<&str>, command: AuditCommand) -> Result<ExitCode, String> {
    let AuditCommand::Verify { anchor } = command;
    let anchors = match &anchor {
        Some(file) => read_anchors(file)?,
        None => Vec::new(),
    };
    let store = crate::open_store(data_dir, database)?;
    let bar = crate::progress_bar(0, "{spinner} {pos} audit events checked ({per_sec})");
    let found =
        verify(&*store, &mut |n| bar.set_position(n)).map_err(|e| format!("cannot read the audit trail: {e}"))?;
    bar.finish_and_clear();
    println!("{} audit events checked", found.checked);
    if let Some(b) = &found.first_break {
        println!(
            "BROKEN: chain {} position {}{}: {}",
            b.chain,
            b.position,
            b.seq.map(|s| format!(" (AuditEvent/{s})")).unwrap_or_default(),
            b.what
        );
        return Ok(ExitCode::from(1));
    }
    if let Some(b) = check_anchors(&*store, &anchors).map_err(|e| format!("cannot read the audit trail: {e}"))? {
        println!("BROKEN: chain {} position {}: {}", b.chain, b.position, b.what);
        return Ok(ExitCode::from(1));
    }
    println!(
        "every chain holds{}",
        if anchors.is_empty() {
            ""
        } else {
            ", and every anchor is in place"
        }
    );
    println!("heads (record them outside the database, then check with --anchor):");
    for h in &found.heads {
        println!("{} {} {}", h.chain, h.position, h.hash);
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads `chain position hash` lines (other lines are skipped).
fn read_anchors(file: &Path) -> Result<Vec<Head>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let chain = parts.next()?.parse().ok()?;
            let position = parts.next()?.parse().ok()?;
            let hash = parts.next()?.to_string();
            (hash.len() == 64 && parts.next().is_none()).then_some(Head { chain, position, hash })
        })
        .collect())
}
