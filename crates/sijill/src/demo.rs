//! `sijill demo`: generates a synthetic national population from a country profile, straight
//! into the store or as files (NDJSON per resource type, or one transaction Bundle per
//! citizen). Generation runs on every core; the same seed and date give the same output.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use clap::{Args, ValueEnum};
use indicatif::ProgressBar;
use serde_json::{json, Value};
use sijill_api::access::Guard;
use sijill_api::audit::Interaction;
use sijill_api::context::RequestContext;
use sijill_api::engine::{Exec, RequestBody};
use sijill_api::interactions::checked_resource;
use sijill_api::{Engine, Limits};
use sijill_demo::{person, CountryProfile, Population, Settings};
use sijill_store::{PreparedResource, Store};

/// Citizens generated (and written) together.
const CHUNK: u64 = 25;

/// Where the generated population goes.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// One NDJSON file per resource type.
    Ndjson,
    /// One transaction Bundle per citizen (and the directory in Bundles of 1,000 entries).
    Bundles,
}

/// Options of `sijill demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Country profile: ma (Morocco) or dz (Algeria).
    #[arg(long, default_value = "ma")]
    pub country: String,
    /// Number of citizens.
    #[arg(long, default_value_t = 1000)]
    pub patients: usize,
    /// Seed: the same seed (and date) gives the same population.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The population's "today" (YYYY-MM-DD); default: the current date.
    #[arg(long)]
    pub as_of: Option<String>,
    /// Weeks of appointment slots after that date.
    #[arg(long, default_value_t = sijill_demo::DEFAULT_SLOT_WEEKS)]
    pub slot_weeks: u32,
    /// Years of clinical history before that date.
    #[arg(long, default_value_t = sijill_demo::DEFAULT_HISTORY_YEARS)]
    pub history_years: u32,
    /// Write files into this directory instead of the store.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// File format with --out.
    #[arg(long, value_enum, default_value = "ndjson")]
    pub format: Format,
    /// Threads generating (default: the number of cores).
    #[arg(long)]
    pub jobs: Option<usize>,
}

fn parse_date(text: &str) -> Result<time::Date, String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, &format).map_err(|e| format!("--as-of '{text}' is not a date YYYY-MM-DD: {e}"))
}

/// The settings these options describe.
pub fn settings(args: &DemoArgs) -> Result<Settings, String> {
    let profile = CountryProfile::builtin(&args.country)?;
    let as_of = match &args.as_of {
        Some(text) => parse_date(text)?,
        None => time::OffsetDateTime::now_utc().date(),
    };
    Ok(Settings {
        profile,
        patients: args.patients,
        seed: args.seed,
        as_of,
        slot_weeks: args.slot_weeks,
        history_years: args.history_years,
    })
}

/// The records of a chunk of citizens, as generated or made ready for the store.
enum Batch {
    /// Each inner Vec one citizen's resources.
    Records(Vec<Vec<Value>>),
    /// Validated, serialised and indexed resources, ready for one store transaction.
    Prepared(Vec<PreparedResource>),
}

/// Receives generated resources in citizen order.
trait Sink {
    /// The directory's resources.
    fn directory(&mut self, resources: Vec<Value>) -> Result<(), String>;
    /// The resources of citizens `first..`.
    fn citizens(&mut self, first: u64, batch: Batch) -> Result<(), String>;
    /// Flushes; returns a summary line.
    fn finish(&mut self) -> Result<String, String>;
    /// Whether it takes resources validated, serialised and indexed for the store.
    fn takes_prepared(&self) -> bool {
        false
    }
}

/// NDJSON files, one per resource type.
struct NdjsonSink {
    dir: PathBuf,
    files: BTreeMap<String, std::io::BufWriter<std::fs::File>>,
}

impl NdjsonSink {
    fn write(&mut self, resource: &Value) -> Result<(), String> {
        let rt = resource["resourceType"].as_str().unwrap_or("Unknown").to_string();
        if !self.files.contains_key(&rt) {
            let path = self.dir.join(format!("{rt}.ndjson"));
            let file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            self.files.insert(rt.clone(), std::io::BufWriter::new(file));
        }
        let out = self.files.get_mut(&rt).ok_or("file vanished")?;
        serde_json::to_writer(&mut *out, resource).map_err(|e| e.to_string())?;
        out.write_all(b"\n").map_err(|e| e.to_string())
    }
}

impl Sink for NdjsonSink {
    fn directory(&mut self, resources: Vec<Value>) -> Result<(), String> {
        resources.iter().try_for_each(|r| self.write(r))
    }
    fn citizens(&mut self, _first: u64, batch: Batch) -> Result<(), String> {
        records(batch)?.iter().flatten().try_for_each(|r| self.write(r))
    }
    fn finish(&mut self) -> Result<String, String> {
        for f in self.files.values_mut() {
            f.flush().map_err(|e| e.to_string())?;
        }
        Ok(format!("{} NDJSON files in {}", self.files.len(), self.dir.display()))
    }
}

/// Transaction Bundles of PUT entries, so ids are kept on import.
struct BundleSink {
    dir: PathBuf,
    files: usize,
}

impl BundleSink {
    fn write(&mut self, name: &str, resources: &[Value]) -> Result<(), String> {
        let entries: Vec<Value> = resources
            .iter()
            .map(|r| {
                let url = format!(
                    "{}/{}",
                    r["resourceType"].as_str().unwrap_or(""),
                    r["id"].as_str().unwrap_or("")
                );
                json!({"resource": r, "request": {"method": "PUT", "url": url}})
            })
            .collect();
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
        let path = self.dir.join(name);
        let file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        serde_json::to_writer(&mut out, &bundle).map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
        self.files += 1;
        Ok(())
    }
}

impl Sink for BundleSink {
    fn directory(&mut self, resources: Vec<Value>) -> Result<(), String> {
        for (i, chunk) in resources.chunks(1000).enumerate() {
            self.write(&format!("directory-{:04}.json", i + 1), chunk)?;
        }
        Ok(())
    }
    fn citizens(&mut self, first: u64, batch: Batch) -> Result<(), String> {
        for (i, record) in records(batch)?.iter().enumerate() {
            self.write(&format!("citizen-{:07}.json", first + i as u64 + 1), record)?;
        }
        Ok(())
    }
    fn finish(&mut self) -> Result<String, String> {
        Ok(format!("{} transaction Bundles in {}", self.files, self.dir.display()))
    }
}

/// The store: every resource validated, written with its id; a chunk of citizens per
/// store transaction.
struct StoreSink {
    engine: Engine,
    /// Citizens' resources waiting for the next transaction.
    waiting: Vec<PreparedResource>,
}

/// Resources per store transaction. Large: a bulk load's cost is mostly the pages each
/// commit writes to the write-ahead log, and a page changed by many inserts of one
/// transaction is written once.
const STORE_BATCH: usize = 100_000;

impl StoreSink {
    /// A sink into `store`.
    fn new(store: Arc<dyn Store>) -> StoreSink {
        // The demo loads before anything else writes (an empty store, before serving).
        store.sole_writer(true);
        StoreSink {
            engine: Engine::new(store, "urn:sijill:demo", Limits::default()),
            waiting: Vec::new(),
        }
    }

    /// Inserts prepared resources in one store transaction.
    fn insert(&self, prepared: Vec<PreparedResource>) -> Result<(), String> {
        let ctx = RequestContext::local_operator(None);
        let guard = Guard::new(&self.engine, &ctx, Interaction::bulk("demo population".into()));
        self.engine
            .with_tx(&guard, Exec::Standalone, |tx| {
                for p in prepared {
                    guard.disclose(&tx.insert_prepared(p)?);
                }
                Ok(())
            })
            .map_err(|e| crate::import::message(&e))
    }
}

fn records(batch: Batch) -> Result<Vec<Vec<Value>>, String> {
    match batch {
        Batch::Records(r) => Ok(r),
        Batch::Prepared(_) => Err("files take generated records".into()),
    }
}

/// A generated resource validated (as every write is) and made ready for the store.
fn prepared(resource: Value, last_updated: &str) -> Result<PreparedResource, String> {
    let resource = validated(resource)?;
    let rt = resource["resourceType"].as_str().unwrap_or("").to_string();
    let id = resource["id"].as_str().unwrap_or("").to_string();
    sijill_store::prepare_new(&rt, &id, resource, last_updated).map_err(|e| e.to_string())
}

/// The resource after the validation every write gets, or why it is invalid.
fn validated(resource: Value) -> Result<Value, String> {
    let rt = resource["resourceType"].as_str().unwrap_or("").to_string();
    checked_resource(RequestBody::Resource(resource), &rt, None)
        .map_err(|e| format!("a generated {rt} is invalid: {}", crate::import::message(&e)))
}

impl Sink for StoreSink {
    fn directory(&mut self, resources: Vec<Value>) -> Result<(), String> {
        let stamp = sijill_store::now_instant();
        let mut ready = resources.into_iter().map(|r| prepared(r, &stamp));
        loop {
            let chunk = ready.by_ref().take(2000).collect::<Result<Vec<_>, _>>()?;
            if chunk.is_empty() {
                return Ok(());
            }
            self.insert(chunk)?;
        }
    }
    fn citizens(&mut self, _first: u64, batch: Batch) -> Result<(), String> {
        match batch {
            Batch::Prepared(prepared) => {
                self.waiting.extend(prepared);
                if self.waiting.len() >= STORE_BATCH {
                    let batch = std::mem::take(&mut self.waiting);
                    self.insert(batch)?;
                }
                Ok(())
            }
            Batch::Records(_) => Err("the store takes prepared resources".into()),
        }
    }
    fn finish(&mut self) -> Result<String, String> {
        let rest = std::mem::take(&mut self.waiting);
        if !rest.is_empty() {
            self.insert(rest)?;
        }
        self.engine.store.sole_writer(false);
        self.engine.store.refresh_statistics().map_err(|e| e.to_string())?;
        Ok("written to the store".into())
    }
    fn takes_prepared(&self) -> bool {
        true
    }
}

/// Generates on `jobs` threads (which, `for_store`, also validate, serialise and index) and
/// hands chunks to the sink in citizen order.
fn generate(
    population: &Population,
    sink: &mut dyn Sink,
    jobs: usize,
    for_store: bool,
    bar: &ProgressBar,
) -> Result<u64, String> {
    let patients = population.settings().patients as u64;
    let chunks = patients.div_ceil(CHUNK);
    let next = AtomicU64::new(0);
    let (send, receive) = mpsc::sync_channel::<(u64, usize, Result<Batch, String>)>(jobs * 2);
    let mut written = 0u64;
    std::thread::scope(|scope| -> Result<(), String> {
        for _ in 0..jobs {
            let send = send.clone();
            let next = &next;
            scope.spawn(move || loop {
                let chunk = next.fetch_add(1, Ordering::Relaxed);
                if chunk >= chunks {
                    break;
                }
                let first = chunk * CHUNK;
                let records: Vec<Vec<Value>> = (first..(first + CHUNK).min(patients))
                    .map(|i| population.patient(i))
                    .collect();
                let count = records.iter().map(Vec::len).sum();
                let batch = if for_store {
                    let stamp = sijill_store::now_instant();
                    records
                        .into_iter()
                        .flatten()
                        .map(|r| prepared(r, &stamp))
                        .collect::<Result<Vec<_>, _>>()
                        .map(Batch::Prepared)
                } else {
                    Ok(Batch::Records(records))
                };
                if send.send((chunk, count, batch)).is_err() {
                    break;
                }
            });
        }
        drop(send);
        let mut pending = BTreeMap::new();
        let mut expected = 0u64;
        for (chunk, count, batch) in receive.iter() {
            pending.insert(chunk, (count, batch?));
            while let Some((count, batch)) = pending.remove(&expected) {
                let first = expected * CHUNK;
                sink.citizens(first, batch)?;
                written += count as u64;
                bar.inc((first + CHUNK).min(patients) - first);
                bar.set_message(format!("{written} resources"));
                expected += 1;
            }
        }
        Ok(())
    })?;
    Ok(written)
}

/// Generates the population into `sink` with a progress bar; returns it and a summary line.
fn write_population(settings: Settings, mut sink: Box<dyn Sink>, jobs: usize) -> Result<(Population, String), String> {
    let started = Instant::now();
    eprintln!(
        "generating {} citizens of {} (seed {}, as of {})",
        settings.patients,
        settings.profile.name.en,
        settings.seed,
        sijill_demo::fhir::date(settings.as_of)
    );
    let for_store = sink.takes_prepared();
    let (population, directory) = Population::new(settings);
    let directory_count = directory.len() as u64;
    sink.directory(directory)?;
    let bar = crate::progress_bar(
        population.settings().patients as u64,
        "{bar:40} {pos}/{len} citizens  {msg}  [{elapsed_precise}]",
    );
    let citizens = generate(&population, sink.as_mut(), jobs, for_store, &bar)?;
    bar.finish_and_clear();
    let written = sink.finish()?;
    let total = directory_count + citizens;
    let seconds = started.elapsed().as_secs_f64();
    let summary = format!(
        "generated {total} resources ({directory_count} directory, {citizens} for {} citizens) in {seconds:.1} s ({:.0} resources/s); {written}",
        population.settings().patients,
        total as f64 / seconds.max(0.001)
    );
    Ok((population, summary))
}

/// Loads a demo population into the store of a server about to start (`serve --demo`).
pub fn load_into(store: Arc<dyn Store>, settings: Settings) -> Result<Population, String> {
    let sink = Box::new(StoreSink::new(store));
    let (population, summary) = write_population(settings, sink, crate::worker_threads(None))?;
    eprintln!("{summary}");
    Ok(population)
}

/// Lines that tell a newcomer whom the demo population holds and how to look at them.
pub fn introduce(population: &Population, base_url: &str, development_login: bool) -> Vec<String> {
    let settings = population.settings();
    let id_name = &settings.profile.national_id.name;
    let citizen = (0..settings.patients as u64)
        .map(|i| person::person(settings, i).0)
        .find(|p| p.age >= 18 && p.national_id.is_some());
    let mut lines = vec![
        format!(
            "Demo population: {} citizens of {} (seed {}). Every name, number and record in it is synthetic.",
            settings.patients, settings.profile.name.en, settings.seed
        ),
        if development_login {
            "Demo logins: an app's sign-in goes to the development identity provider; enter the national identifier shown. On this machine, `sijill token` mints a token directly:".to_string()
        } else {
            "Demo people (sign-in goes to the national eID; on this machine, `sijill token` mints a token directly):"
                .to_string()
        },
    ];
    let token = |args: String| format!("sijill token --base-url {base_url} {args}");
    if let Some(c) = citizen {
        lines.push(format!(
            "  citizen:      {} {}, {id_name} {}\n                {}",
            c.given.lat,
            c.family.lat,
            c.national_id.unwrap_or_default(),
            token(format!("--role citizen --patient {}", c.id))
        ));
    }
    let directory = population.directory();
    if let Some((facility, doctor)) = directory
        .facilities
        .iter()
        .flat_map(|f| f.clinicians.iter().map(move |c| (f, c)))
        .find(|(_, c)| c.specialty.is_some() && c.national_id.is_some())
    {
        lines.push(format!(
            "  practitioner: Dr {}, {} at {}, {id_name} {}\n                {}",
            doctor.name,
            doctor
                .specialty
                .map(|s| sijill_demo::codes::SPECIALTIES[s].display)
                .unwrap_or_default(),
            facility.name,
            doctor.national_id.as_deref().unwrap_or_default(),
            token(format!(
                "--role practitioner --practitioner {} --organization {}",
                doctor.practitioner, facility.id
            ))
        ));
    }
    for official in &directory.officials {
        lines.push(format!(
            "  {:<13} {}, Ministry of Health, {id_name} {}\n                {}",
            format!("{}:", official.platform_role),
            official.name,
            official.national_id.as_deref().unwrap_or_default(),
            token(format!(
                "--role {} --practitioner {}",
                official.platform_role, official.practitioner
            ))
        ));
    }
    lines
}

/// Runs `sijill demo`.
pub fn run(data_dir: &Path, database: Option<&str>, args: DemoArgs) -> Result<ExitCode, String> {
    let settings = settings(&args)?;
    let sink: Box<dyn Sink> = match &args.out {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            match args.format {
                Format::Ndjson => Box::new(NdjsonSink {
                    dir: dir.clone(),
                    files: BTreeMap::new(),
                }),
                Format::Bundles => Box::new(BundleSink {
                    dir: dir.clone(),
                    files: 0,
                }),
            }
        }
        None => {
            let store = crate::open_store(data_dir, database)?;
            Box::new(StoreSink::new(store))
        }
    };
    let (_, summary) = write_population(settings, sink, crate::worker_threads(args.jobs))?;
    println!("{summary}");
    Ok(ExitCode::SUCCESS)
}
