//! `sijill serve`: the FHIR server, with graceful shutdown on SIGTERM and Ctrl-C.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use sijill_api::audit::trail::AuditTrail;
use sijill_api::{Engine, Limits};
use tracing_subscriber::EnvFilter;

/// Options of `sijill serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, env = "SIJILL_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Public base URL of the FHIR API (default: http://LISTEN/fhir, https:// with a
    /// certificate).
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
    /// The country profile (ma or dz): national identifier system and eID claim, and the
    /// demo population's country.
    #[arg(long, env = "SIJILL_COUNTRY", alias = "demo-country", default_value = "ma")]
    country: String,
    /// Issuer URL of the national eID provider (OpenID Connect). Without one, logins go to
    /// a development identity provider and the server listens on loopback only.
    #[arg(long, env = "SIJILL_EID_ISSUER")]
    eid_issuer: Option<String>,
    /// Sijill's client id at the eID provider.
    #[arg(long, env = "SIJILL_EID_CLIENT_ID", default_value = "sijill")]
    eid_client_id: String,
    /// Sijill's client secret at the eID provider.
    #[arg(long, env = "SIJILL_EID_CLIENT_SECRET", default_value = "", hide_env_values = true)]
    eid_client_secret: String,
    /// The ID-token claim with the national identifier (default: the country profile's).
    #[arg(long, env = "SIJILL_EID_CLAIM")]
    eid_claim: Option<String>,
    /// On PostgreSQL: write transactions this server keeps open at once, each shared by
    /// the units of work that arrive while it runs (group commit). Fewer make larger
    /// groups; with several servers on one database, about two in all did best in the
    /// booking storm (BENCHMARKS.md, session 17): give each of two servers 1.
    #[arg(long, env = "SIJILL_WRITE_LANES", default_value_t = sijill_store::pg::DEFAULT_LANES as u8,
          value_parser = clap::value_parser!(u8).range(1..=8))]
    write_lanes: u8,
    /// Requests per second per user (the token's FHIR user, else its subject); 0: no limit.
    #[arg(long, env = "SIJILL_RATE_LIMIT_USER", default_value_t = 100)]
    rate_limit_user: u32,
    /// Requests per second per client app or system, all its users together; 0: no limit.
    #[arg(long, env = "SIJILL_RATE_LIMIT_CLIENT", default_value_t = 2000)]
    rate_limit_client: u32,
    /// Requests per second per network address on /auth and without a valid token; 0: no limit.
    #[arg(long, env = "SIJILL_RATE_LIMIT_ADDRESS", default_value_t = 20)]
    rate_limit_address: u32,
    /// An origin (https://portal.example) whose browser apps may call the API (CORS);
    /// repeat or separate with commas. None by default.
    #[arg(long = "cors-origin", env = "SIJILL_CORS_ORIGINS", value_delimiter = ',')]
    cors_origins: Vec<String>,
    /// PEM certificate chain: serve HTTPS (with --tls-key).
    #[arg(long, env = "SIJILL_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of the certificate.
    #[arg(long, env = "SIJILL_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// A PEM file of extra root certificates to trust for the eID provider (besides the
    /// system's), e.g. a national certification authority.
    #[arg(long, env = "SIJILL_EID_CA_FILE")]
    eid_ca_file: Option<std::path::PathBuf>,
    /// Make every request whose only write is its audit event wait until that event is on
    /// disk (an fsync of the audit journal) before answering. Without it the event is
    /// written to the journal before the answer leaves and reaches the disk with its move
    /// into the trail, a tenth of a second later.
    #[arg(long, env = "SIJILL_AUDIT_SYNC_READS")]
    pub audit_sync_reads: bool,
    /// How long a patient's access code stays valid (`90s`, `15m`, `72h`, `3d`).
    #[arg(long, env = "SIJILL_ACCESS_CODE_TTL", default_value = "15m", value_parser = parse_duration)]
    pub access_code_ttl: i64,
    /// How long a grant made with an access code lasts.
    #[arg(long, env = "SIJILL_GRANT_TTL", default_value = "72h", value_parser = parse_duration)]
    pub grant_ttl: i64,
    /// How long a break-glass (emergency) access lasts.
    #[arg(long, env = "SIJILL_BREAK_GLASS_TTL", default_value = "4h", value_parser = parse_duration)]
    pub break_glass_ttl: i64,
    /// How long a hold keeps a slot for a citizen before others may take it.
    #[arg(long, env = "SIJILL_HOLD_TTL", default_value = "10m", value_parser = parse_duration)]
    pub hold_ttl: i64,
    /// How far ahead slots are generated and may be booked.
    #[arg(long, env = "SIJILL_BOOKING_HORIZON", default_value = "56d", value_parser = parse_duration)]
    pub booking_horizon: i64,
    /// How long a slot freed for the first on a waitlist is kept for them.
    #[arg(long, env = "SIJILL_OFFER_TTL", default_value = "2h", value_parser = parse_duration)]
    pub offer_ttl: i64,
    /// A JSON file of booking rules replacing the country profile's (`none`: no rules).
    #[arg(long, env = "SIJILL_BOOKING_RULES")]
    pub booking_rules: Option<String>,
    /// The video service teleconsultations meet on: each virtual appointment gets a room of
    /// its own under this URL.
    #[arg(long, env = "SIJILL_VIDEO_BASE_URL")]
    pub video_base_url: Option<String>,
    /// Where notices to patients go: a directory (default: `outbox` in the data directory),
    /// an http(s) webhook URL (an SMS gateway), an smtp:// or smtps:// URL (e-mail to the
    /// patient's address), or `none`.
    #[arg(long, env = "SIJILL_NOTIFY")]
    pub notify: Option<String>,
    /// The sender of e-mailed notices.
    #[arg(long, env = "SIJILL_NOTIFY_FROM", default_value = "Sijill <no-reply@sijill.invalid>")]
    pub notify_from: String,
    /// Reminders before each appointment, comma-separated (`48h,2h`).
    #[arg(long, env = "SIJILL_REMINDERS", default_value = "48h,2h")]
    pub reminders: String,
    /// How long after a failed delivery it is tried again (doubled each time, at most an hour).
    #[arg(long, env = "SIJILL_NOTIFY_BACKOFF", default_value = "30s", value_parser = parse_duration)]
    pub notify_backoff: i64,
    /// How often the server releases expired holds, writes the reminders that come near and
    /// delivers due notices (slots are generated every hour).
    #[arg(long, env = "SIJILL_CHORES_EVERY", default_value = "30s", value_parser = parse_duration)]
    pub chores_every: i64,
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
        profile: sijill_demo::CountryProfile::builtin(&args.country)?,
        patients: args.demo_patients,
        seed: 1,
        as_of: time::OffsetDateTime::now_utc().date(),
        slot_weeks: sijill_demo::DEFAULT_SLOT_WEEKS,
        history_years: sijill_demo::DEFAULT_HISTORY_YEARS,
    };
    crate::demo::load_into(store.clone(), settings).map(Some)
}

/// Runs the server until SIGTERM or Ctrl-C.
pub fn run(data_dir: &Path, database: Option<&str>, args: ServeArgs) -> Result<ExitCode, String> {
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
    let profile = sijill_demo::CountryProfile::builtin(&args.country)?;
    if args.eid_issuer.is_none() && !args.listen.ip().is_loopback() {
        return Err(format!(
            "without a national eID provider (--eid-issuer) Sijill only listens on loopback; {} is not",
            args.listen
        ));
    }
    let outbox = outbox_settings(&args, data_dir)?;
    let tls_files = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(sijill_api::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    let edge = sijill_api::edge::EdgeSettings::new(
        sijill_api::rate_limit::RateSettings {
            per_user: args.rate_limit_user,
            per_client: args.rate_limit_client,
            per_address: args.rate_limit_address,
        },
        &args.cors_origins,
        tls_files.as_ref(),
    )?;
    let scheme = if edge.tls.is_some() { "https" } else { "http" };
    let scheduling = scheduling_settings(&profile, &args)?;
    let store = crate::open_store_with_lanes(data_dir, database, Some(usize::from(args.write_lanes)))?;
    let demo = if args.demo { load_demo(&store, &args)? } else { None };
    // Opened outside the runtime: it moves what an earlier process left in the journal,
    // and the PostgreSQL driver blocks.
    let journal = data_dir.join("audit-journal");
    let audit = AuditTrail::journaled(store.clone(), &journal, args.audit_sync_reads)
        .map(Arc::new)
        .map_err(|e| format!("the audit journal in {} cannot be opened: {e}", journal.display()))?;
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
    // The store outlives the runtime: a PostgreSQL connection must not be closed from
    // inside it (the driver blocks on its own runtime to close).
    let store_outside = store.clone();
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let base_url = args.base_url.unwrap_or_else(|| format!("{scheme}://{local}/fhir"));
        let mut engine = Engine::new(store, base_url.clone(), limits);
        engine.consent.code_seconds = args.access_code_ttl;
        engine.consent.grant_seconds = args.grant_ttl;
        engine.consent.break_glass_seconds = args.break_glass_ttl;
        engine.consent.national_id_system = Some(profile.national_id.system.clone());
        engine.scheduling = scheduling;
        engine.outbox = outbox;
        engine.audit = audit;
        if std::env::var("SIJILL_AUDIT").is_ok_and(|v| v == "off-for-benchmark") {
            tracing::warn!("SIJILL_AUDIT=off-for-benchmark: NO AUDIT EVENTS ARE RECORDED; never serve real data like this");
            engine = engine.without_audit();
        }
        let eid = match &args.eid_issuer {
            None => None,
            Some(issuer) => {
                let settings = sijill_api::identity::eid::EidSettings {
                    issuer: issuer.clone(),
                    client_id: args.eid_client_id.clone(),
                    client_secret: args.eid_client_secret.clone(),
                    national_id_claim: args.eid_claim.clone().unwrap_or_else(|| profile.national_id.claim.clone()),
                    redirect_uri: format!("{}/callback", sijill_auth::issuer_for(&base_url)),
                    ca_file: args.eid_ca_file.clone(),
                };
                Some(sijill_api::identity::eid::EidProvider::discover(settings).await?)
            }
        };
        let identity = sijill_api::identity::Identity::new(data_dir, &base_url, &profile.national_id.system, eid)?;
        tracing::info!(address = %local, base_url = %base_url, data_dir = %data_dir.display(), "Sijill is serving FHIR R4");
        println!("Sijill listening on {scheme}://{local} (FHIR base {base_url})");
        if identity.development() {
            println!("No national eID provider configured: logins use the DEVELOPMENT identity provider (loopback only).");
        }
        match &demo {
            Some(population) => crate::demo::introduce(population, &base_url, identity.development()).iter().for_each(|l| println!("{l}")),
            None if args.demo => println!("The data directory already holds data: no demo population loaded."),
            None => {}
        }
        let every = std::time::Duration::from_secs(args.chores_every as u64);
        tokio::spawn(sijill_api::scheduling::background(engine.clone(), every));
        sijill_api::serve(listener, engine, std::sync::Arc::new(identity), edge, shutdown_signal()).await.map_err(|e| e.to_string())
    });
    drop(runtime);
    drop(store_outside);
    served?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The scheduling settings: the country's time and holidays, and the durations given.
fn scheduling_settings(
    profile: &sijill_demo::CountryProfile,
    args: &ServeArgs,
) -> Result<sijill_api::scheduling::SchedulingSettings, String> {
    let offset = time::UtcOffset::parse(
        &profile.utc_offset,
        &time::macros::format_description!("[offset_hour sign:mandatory]:[offset_minute]"),
    )
    .map_err(|e| {
        format!(
            "the country profile's utc_offset '{}' is invalid: {e}",
            profile.utc_offset
        )
    })?;
    Ok(sijill_api::scheduling::SchedulingSettings {
        offset,
        holidays: sijill_api::scheduling::availability::Holidays::parse(&profile.public_holidays)?,
        horizon_days: (args.booking_horizon / 86_400).max(1),
        hold_seconds: args.hold_ttl,
        offer_seconds: args.offer_ttl,
        rules: booking_rules(profile, args.booking_rules.as_deref())?,
        video_base_url: args.video_base_url.clone(),
    })
}

/// The booking rules: the country profile's, or those of a file given instead (`none`: none).
fn booking_rules(
    profile: &sijill_demo::CountryProfile,
    file: Option<&str>,
) -> Result<sijill_api::scheduling::rules::BookingRules, String> {
    let rules = match file {
        None => profile.booking_rules.clone(),
        Some("none") => serde_json::json!({}),
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("cannot read the booking rules {path}: {e}"))?;
            serde_json::from_str(&text).map_err(|e| format!("the booking rules {path} are not JSON: {e}"))?
        }
    };
    serde_json::from_value(rules).map_err(|e| format!("the booking rules are invalid: {e}"))
}

/// Parses a duration of whole seconds, minutes, hours or days (`90s`, `15m`, `72h`, `3d`)
/// into seconds (at least one).
fn parse_duration(s: &str) -> Result<i64, String> {
    let not_a_duration = || format!("'{s}' is not a duration like 90s, 15m, 72h or 3d");
    let t = s.trim();
    // The unit is the last character, whatever its width.
    let (number, unit) = t.split_at(t.char_indices().last().map_or(0, |(i, _)| i));
    let n: i64 = number.parse().map_err(|_| not_a_duration())?;
    let unit_seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(not_a_duration()),
    };
    let seconds = n.checked_mul(unit_seconds).ok_or_else(not_a_duration)?;
    if seconds < 1 {
        return Err(format!("'{s}' must be at least one second"));
    }
    Ok(seconds)
}

/// How notices are delivered: the sink given (or the data directory's `outbox`), the
/// reminders and the backoff.
fn outbox_settings(args: &ServeArgs, data_dir: &std::path::Path) -> Result<sijill_api::outbox::OutboxSettings, String> {
    let sink = match &args.notify {
        Some(spec) => sijill_api::outbox::sink::Sink::parse(spec, &args.notify_from),
        None => sijill_api::outbox::sink::Sink::Directory(data_dir.join("outbox")),
    };
    let reminder_seconds = args
        .reminders
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(parse_duration)
        .collect::<Result<Vec<i64>, String>>()?;
    Ok(sijill_api::outbox::OutboxSettings {
        sink,
        reminder_seconds,
        backoff_seconds: args.notify_backoff,
        ..sijill_api::outbox::OutboxSettings::default()
    })
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("72h"), Ok(259_200));
        assert_eq!(parse_duration("3d"), Ok(259_200));
        for bad in ["", "15", "m", "0s", "-5m", "1w", "1.5h", "3é", "99999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
