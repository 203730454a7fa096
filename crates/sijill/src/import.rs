//! `sijill import`: loads FHIR JSON files, Bundles and NDJSON, with a progress bar and a
//! summary. A bad file (or line, or entry) is reported with its name and reason and does
//! not stop the rest. Transaction Bundles stay atomic; other content is written in
//! batches, each one store transaction.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use clap::Args;
use serde_json::Value;
use sijill_api::access::Guard;
use sijill_api::audit::Interaction;
use sijill_api::context::RequestContext;
use sijill_api::engine::{Conditions, Exec, FhirRequest, Method, Payload, RequestBody};
use sijill_api::error::FhirError;
use sijill_api::interactions::checked_resource;
use sijill_api::{Engine, Limits};

/// Resources written per store transaction for NDJSON and collections.
const BATCH: usize = 1000;

/// Options of `sijill import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Files or directories (searched recursively for .json and .ndjson files).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Files processed at the same time (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
}

/// Counts of an import.
#[derive(Default)]
struct Tally {
    resources: AtomicU64,
    errors: AtomicU64,
    messages: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, file: &Path, reason: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.messages.lock() {
            m.push(format!("{}: {reason}", file.display()));
        }
    }
}

fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(p) = stack.pop() {
        let meta = std::fs::metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        if meta.is_dir() {
            let entries = std::fs::read_dir(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            for entry in entries.flatten() {
                stack.push(entry.path());
            }
        } else if paths.contains(&p) || p.extension().is_some_and(|e| e == "json" || e == "ndjson") {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// The diagnostics of an error on one line.
pub fn message(e: &FhirError) -> String {
    e.issues
        .iter()
        .map(|i| {
            if i.expression.is_empty() {
                i.diagnostics.clone()
            } else {
                format!("{} ({})", i.diagnostics, i.expression)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Writes resources that are not in a transaction: each is validated, then the valid ones
/// are written (update with their id, or create) in one store transaction.
fn upsert_all(engine: &Engine, ctx: &RequestContext, file: &Path, resources: Vec<(String, Value)>, tally: &Tally) {
    let mut valid = Vec::with_capacity(resources.len());
    for (where_, r) in resources {
        let rt = r.get("resourceType").and_then(Value::as_str).unwrap_or("").to_string();
        if !sijill_fhir::definitions::is_resource_type(&rt) {
            tally.fail(file, format!("{where_}: not a known FHIR resource type '{rt}'"));
            continue;
        }
        match checked_resource(RequestBody::Resource(r), &rt, None) {
            Ok(r) => valid.push((rt, r)),
            Err(e) => tally.fail(file, format!("{where_}: {}", message(&e))),
        }
    }
    let n = valid.len() as u64;
    let guard = Guard::new(engine, ctx, Interaction::bulk(format!("import {}", file.display())));
    let result = engine.with_tx(&guard, Exec::Standalone, |tx| {
        for (rt, r) in valid {
            let stored = match r.get("id").and_then(Value::as_str).map(str::to_string) {
                Some(id) => tx.update(&rt, &id, r, None)?.0,
                None => tx.create(&rt, r, None)?,
            };
            guard.disclose(&stored);
        }
        Ok(())
    });
    match result {
        Ok(()) => {
            tally.resources.fetch_add(n, Ordering::Relaxed);
        }
        Err(e) => tally.fail(file, message(&e)),
    }
}

fn import_file(engine: &Engine, ctx: &RequestContext, file: &Path, tally: &Tally) {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => return tally.fail(file, e),
    };
    if file.extension().is_some_and(|e| e == "ndjson") {
        let mut batch = Vec::with_capacity(BATCH);
        for (n, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match sijill_api::body::parse_json(line, engine.limits.max_depth) {
                Ok(v) => batch.push((format!("line {}", n + 1), v)),
                Err(e) => tally.fail(file, format!("line {}: {}", n + 1, message(&e))),
            }
            if batch.len() == BATCH {
                upsert_all(engine, ctx, file, std::mem::take(&mut batch), tally);
            }
        }
        return upsert_all(engine, ctx, file, batch, tally);
    }
    let value = match sijill_api::body::parse_json(&bytes, engine.limits.max_depth) {
        Ok(v) => v,
        Err(e) => return tally.fail(file, message(&e)),
    };
    let bundle_type = (value.get("resourceType").and_then(Value::as_str) == Some("Bundle"))
        .then(|| value.get("type").and_then(Value::as_str).unwrap_or("").to_string());
    match bundle_type.as_deref() {
        Some("transaction") | Some("batch") => {
            let request = FhirRequest {
                method: Method::Post,
                path: String::new(),
                query: Vec::new(),
                conditions: Conditions::default(),
                body: RequestBody::Resource(value),
                lenient: false,
            };
            match engine.execute(ctx, request) {
                Ok(r) => count_bundle_response(file, &r.payload, tally),
                Err(e) => tally.fail(file, message(&e)),
            }
        }
        Some(_) => {
            let entries = value
                .get("entry")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let resources = entries
                .into_iter()
                .enumerate()
                .filter_map(|(i, mut e)| e.get_mut("resource").map(|r| (format!("entry {i}"), r.take())))
                .collect();
            upsert_all(engine, ctx, file, resources, tally);
        }
        None => upsert_all(engine, ctx, file, vec![("resource".into(), value)], tally),
    }
}

/// Counts the written entries of a batch/transaction response and reports failed ones.
fn count_bundle_response(file: &Path, payload: &Payload, tally: &Tally) {
    let Payload::Bytes(bytes) = payload else { return };
    let Ok(bundle) = serde_json::from_slice::<Value>(bytes) else {
        return;
    };
    for (i, entry) in bundle
        .get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let status = entry.pointer("/response/status").and_then(Value::as_str).unwrap_or("");
        if status.starts_with('2') {
            tally.resources.fetch_add(1, Ordering::Relaxed);
        } else {
            let why = entry
                .pointer("/response/outcome/issue/0/diagnostics")
                .and_then(Value::as_str)
                .unwrap_or(status);
            tally.fail(file, format!("entry {i}: {why}"));
        }
    }
}

/// Runs the import.
pub fn run(data_dir: &Path, database: Option<&str>, args: ImportArgs) -> Result<ExitCode, String> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SIJILL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .init();
    let files = collect_files(&args.paths)?;
    let store = crate::open_store(data_dir, database)?;
    let engine = Engine::new(store, "urn:sijill:import", Limits::default());
    let ctx = RequestContext::local_operator(None);
    let tally = Tally::default();
    let bar = crate::progress_bar(
        files.len() as u64,
        "{bar:40} {pos}/{len} files  {msg}  [{elapsed_precise}]",
    );
    let started = Instant::now();
    let next = AtomicU64::new(0);
    let jobs = crate::worker_threads(args.jobs);
    engine.store.bulk_load(true).map_err(|e| e.to_string())?;
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(file) = files.get(i) else { break };
                import_file(&engine, &ctx, file, &tally);
                let done = tally.resources.load(Ordering::Relaxed);
                let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
                bar.set_message(format!(
                    "{done} resources, {rate:.0}/s, {} errors",
                    tally.errors.load(Ordering::Relaxed)
                ));
                bar.inc(1);
            });
        }
    });
    bar.finish_and_clear();
    // Everything imported is on disk before the import reports it.
    engine.store.bulk_load(false).map_err(|e| e.to_string())?;
    let seconds = started.elapsed().as_secs_f64();
    engine.store.refresh_statistics().map_err(|e| e.to_string())?;
    let resources = tally.resources.load(Ordering::Relaxed);
    let errors = tally.errors.load(Ordering::Relaxed);
    for m in tally.messages.lock().map(|m| m.clone()).unwrap_or_default() {
        eprintln!("error: {m}");
    }
    println!(
        "imported {resources} resources from {} files in {seconds:.1} s ({:.0} resources/s), {errors} errors",
        files.len(),
        resources as f64 / seconds.max(0.001)
    );
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
