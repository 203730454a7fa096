//! `sijill`: the Sijill national digital health platform.
//!
//! Commands: `serve` (the FHIR server), `import` (load FHIR files), `export` (NDJSON per
//! resource type), `demo` (generate a synthetic population), `reindex`, `migrate`. Every command that touches the store takes `--data-dir`.

/// mimalloc: the server and importer allocate many small JSON nodes; it is markedly faster than
/// the system allocator for that (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod audit_cmd;
mod auth_cmd;
mod demo;
mod export;
mod import;
mod reindex;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use sijill_store::pg::PgStore;
use sijill_store::sqlite::SqliteStore;
use sijill_store::Store;

/// Sijill: one national health record, reachable from every facility.
#[derive(Parser, Debug)]
#[command(name = "sijill", version, about)]
struct Cli {
    /// Directory that holds the embedded database.
    #[arg(long, global = true, env = "SIJILL_DATA_DIR", default_value = "./sijill-data")]
    data_dir: PathBuf,
    /// Keep FHIR data in PostgreSQL (postgres://user@host:port/database) instead of the
    /// embedded database; keys and app registrations stay in the data directory.
    #[arg(long, global = true, env = "SIJILL_DATABASE", hide_env_values = true)]
    database: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the FHIR server.
    Serve(Box<serve::ServeArgs>),
    /// Load FHIR JSON files, Bundles and NDJSON into the store.
    Import(import::ImportArgs),
    /// Write every current resource as NDJSON, one file per resource type.
    Export(export::ExportArgs),
    /// Generate a synthetic national population (into the store, or as files with --out).
    Demo(demo::DemoArgs),
    /// Rebuild the search index from the current versions, online (a server may keep serving).
    Reindex,
    /// Apply pending schema migrations and print the schema version (serve applies them too).
    Migrate,
    /// Mint an access token on the server machine (audited in auth/operator.log).
    Token(auth_cmd::TokenArgs),
    /// Register, list, revoke and re-key apps and institution systems.
    #[command(subcommand)]
    Client(auth_cmd::ClientCommand),
    /// Rotate or show the server's token-signing keys.
    #[command(subcommand)]
    Keys(auth_cmd::KeysCommand),
    /// Check the audit trail's hash chains.
    #[command(subcommand)]
    Audit(audit_cmd::AuditCommand),
}

/// Threads for parallel work: as requested, else one per core.
fn worker_threads(requested: Option<usize>) -> usize {
    requested
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2))
        .max(1)
}

/// A progress bar of `len` steps drawn with an indicatif `template`.
fn progress_bar(len: u64, template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template).unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Opens the store: PostgreSQL at `database` when given, else the embedded database of
/// the data directory. Pending migrations are applied.
fn open_store(data_dir: &std::path::Path, database: Option<&str>) -> Result<Arc<dyn Store>, String> {
    open_store_with_lanes(data_dir, database, None)
}

/// Opens the store as [`open_store`] does, with `lanes` group-commit lanes on PostgreSQL
/// (its default when None; the embedded store has one writer and no lanes).
fn open_store_with_lanes(
    data_dir: &std::path::Path,
    database: Option<&str>,
    lanes: Option<usize>,
) -> Result<Arc<dyn Store>, String> {
    match database {
        Some(url) => PgStore::open(url)
            .map(|s| match lanes {
                Some(n) => s.with_lanes(n),
                None => s,
            })
            .map(|s| Arc::new(s) as Arc<dyn Store>)
            .map_err(|e| format!("cannot open the PostgreSQL store: {e}")),
        None => SqliteStore::open(data_dir)
            .map(|s| Arc::new(s) as Arc<dyn Store>)
            .map_err(|e| format!("cannot open the store in {}: {e}", data_dir.display())),
    }
}

/// `sijill migrate`: opens the store (which applies pending migrations) and says where it is.
fn migrate(data_dir: &std::path::Path, database: Option<&str>) -> Result<ExitCode, String> {
    match database {
        Some(url) => {
            let store = PgStore::open(url).map_err(|e| format!("cannot open the PostgreSQL store: {e}"))?;
            let version = store.schema_version().map_err(|e| e.to_string())?;
            println!("PostgreSQL schema at version {version}");
        }
        None => {
            open_store(data_dir, None)?;
            println!("embedded store in {} is up to date", data_dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let database = cli.database.as_deref();
    let result = match cli.command {
        Command::Serve(args) => serve::run(&cli.data_dir, database, *args),
        Command::Import(args) => import::run(&cli.data_dir, database, args),
        Command::Export(args) => export::run(&cli.data_dir, database, args),
        Command::Demo(args) => demo::run(&cli.data_dir, database, args),
        Command::Reindex => reindex::run(&cli.data_dir, database),
        Command::Migrate => migrate(&cli.data_dir, database),
        Command::Token(args) => auth_cmd::token(&cli.data_dir, args),
        Command::Client(command) => auth_cmd::client(&cli.data_dir, command),
        Command::Keys(command) => auth_cmd::keys(&cli.data_dir, command),
        Command::Audit(command) => audit_cmd::run(&cli.data_dir, database, command),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("sijill: {message}");
            ExitCode::from(1)
        }
    }
}
