//! `sijill export`: every current resource as NDJSON, one file per resource type.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use sijill_store::StoreError;

/// Options of `sijill export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Directory to write `Type.ndjson` files into.
    #[arg(long, short, default_value = "./export")]
    output: PathBuf,
    /// Only this resource type.
    #[arg(long = "type")]
    resource_type: Option<String>,
}

/// Runs the export.
pub fn run(data_dir: &Path, database: Option<&str>, args: ExportArgs) -> Result<ExitCode, String> {
    let store = crate::open_store(data_dir, database)?;
    std::fs::create_dir_all(&args.output).map_err(|e| format!("cannot create {}: {e}", args.output.display()))?;
    let total: u64 = store.counts().map_err(|e| e.to_string())?.iter().map(|(_, n)| n).sum();
    let bar = crate::progress_bar(total, "{bar:40} {pos}/{len} resources ({per_sec}) {msg}");
    let mut files: HashMap<String, BufWriter<File>> = HashMap::new();
    let output = args.output.clone();
    store
        .export(args.resource_type.as_deref(), &mut |s| {
            if !files.contains_key(&s.resource_type) {
                let path = output.join(format!("{}.ndjson", s.resource_type));
                let f = File::create(&path).map_err(|e| StoreError::Database(format!("{}: {e}", path.display())))?;
                files.insert(s.resource_type.clone(), BufWriter::new(f));
            }
            if let Some(w) = files.get_mut(&s.resource_type) {
                w.write_all(&s.body)
                    .and_then(|_| w.write_all(b"\n"))
                    .map_err(|e| StoreError::Database(e.to_string()))?;
            }
            bar.inc(1);
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    for (_, mut w) in files.drain() {
        w.flush().map_err(|e| e.to_string())?;
    }
    bar.finish_and_clear();
    eprintln!("exported {} resources to {}", bar.position(), args.output.display());
    Ok(ExitCode::SUCCESS)
}
