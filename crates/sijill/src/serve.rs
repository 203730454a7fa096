//! `sijill serve`: the FHIR server, with graceful shutdown on SIGTERM and Ctrl-C.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use sijill_api::{Engine, Limits};
use tracing_subscriber::EnvFilter;

/// Options of `sijill serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, env = "SIJILL_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Public base URL of the FHIR API (default: http://LISTEN/fhir).
    #[arg(long, env = "SIJILL_BASE_URL")]
    base_url: Option<String>,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "SIJILL_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    max_body_bytes: usize,
    /// On an empty data directory, first load a synthetic demo population.
    #[arg(long)]
    demo: bool,
    /// Citizens in the demo population.
    #[arg(long, default_value_t = 2000)]
    demo_patients: usize,
    /// Country of the demo population: ma or dz.
    #[arg(long, default_value = "ma")]
    demo_country: String,
    /// Log format: text or json.
    #[arg(long, env = "SIJILL_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown requested: finishing requests in flight");
}

/// Loads the demo population when the store is empty.
fn load_demo(
    store: &std::sync::Arc<dyn sijill_store::Store>,
    args: &ServeArgs,
) -> Result<Option<sijill_demo::Population>, String> {
    let stored: u64 = store.counts().map_err(|e| e.to_string())?.iter().map(|(_, n)| n).sum();
    if stored > 0 {
        return Ok(None);
    }
    let settings = sijill_demo::Settings {
        profile: sijill_demo::CountryProfile::builtin(&args.demo_country)?,
        patients: args.demo_patients,
        seed: 1,
        as_of: time::OffsetDateTime::now_utc().date(),
        slot_weeks: sijill_demo::DEFAULT_SLOT_WEEKS,
        history_years: sijill_demo::DEFAULT_HISTORY_YEARS,
    };
    crate::demo::load_into(store.clone(), settings).map(Some)
}

/// Runs the server until SIGTERM or Ctrl-C.
pub fn run(data_dir: &Path, args: ServeArgs) -> Result<ExitCode, String> {
    let filter = EnvFilter::try_from_env("SIJILL_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if args.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .init();
    }
    let store = crate::open_store(data_dir)?;
    let demo = if args.demo { load_demo(&store, &args)? } else { None };
    let unsupported = sijill_store::index::unsupported_params();
    tracing::info!(
        count = unsupported.len(),
        "search parameters not indexed yet (left out of the CapabilityStatement)"
    );
    for (rt, code, why) in unsupported {
        tracing::debug!(resource_type = %rt, param = code, reason = %why, "search parameter not indexed");
    }
    let limits = Limits {
        max_body_bytes: args.max_body_bytes,
        ..Limits::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let base_url = args.base_url.unwrap_or_else(|| format!("http://{local}/fhir"));
        let engine = Engine::new(store, base_url.clone(), limits);
        tracing::info!(address = %local, base_url = %base_url, data_dir = %data_dir.display(), "Sijill is serving FHIR R4");
        println!("Sijill listening on http://{local} (FHIR base {base_url})");
        match &demo {
            Some(population) => crate::demo::introduce(population, &base_url).iter().for_each(|l| println!("{l}")),
            None if args.demo => println!("The data directory already holds data: no demo population loaded."),
            None => {}
        }
        sijill_api::serve(listener, engine, shutdown_signal()).await.map_err(|e| e.to_string())
    })?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
