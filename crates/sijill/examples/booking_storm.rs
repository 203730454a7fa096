//! The booking storm: CLIENTS concurrent clients race for SLOTS slots, each slot sought
//! by CONTENDERS clients at once, against one or more running Sijill servers (that share
//! one store). Then it checks the outcome: every slot booked exactly once, every 201
//! answered an appointment that exists and is booked, no appointment without its 201.
//!
//! Run through `scripts/bench-booking`, which starts the servers. Arguments:
//! `BASE_URLS(comma-separated) ADMIN_TOKEN [CLIENTS] [SLOTS] [CONTENDERS]`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::{json, Value};

const AVAILABILITY: &str = "https://sijill.health/fhir/StructureDefinition/availability";

struct Api {
    client: Client,
    token: String,
}

impl Api {
    fn send(&self, method: reqwest::Method, url: &str, body: Option<&Value>) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, url)
            .bearer_auth(&self.token)
            .header("content-type", "application/fhir+json");
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let r = req.send().expect("the server answers");
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    fn create(&self, base: &str, body: Value) -> String {
        let rt = body["resourceType"].as_str().unwrap().to_string();
        let (status, v) = self.send(reqwest::Method::POST, &format!("{base}/{rt}"), Some(&body));
        assert_eq!(status, 201, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    fn all_ids(&self, base: &str, query: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut url = format!("{base}/{query}&_count=1000");
        loop {
            let (status, page) = self.send(reqwest::Method::GET, &url, None);
            assert_eq!(status, 200, "{page}");
            out.extend(page["entry"].as_array().cloned().unwrap_or_default());
            match page["link"]
                .as_array()
                .and_then(|l| l.iter().find(|x| x["relation"] == "next"))
            {
                Some(next) => url = next["url"].as_str().unwrap().to_string(),
                None => return out,
            }
        }
    }
}

/// Schedules enough to hold `slots` slots over the next days, and their slots generated.
fn set_up(api: &Api, base: &str, slots: usize) -> Vec<String> {
    let org = api.create(base, json!({"resourceType": "Organization", "name": "Storm Hospital"}));
    let days: Vec<Value> = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .map(|d| json!({"url": "daysOfWeek", "valueCode": d}))
        .collect();
    let mut ids = Vec::new();
    while ids.len() < slots {
        let role = api.create(
            base,
            json!({"resourceType": "PractitionerRole", "organization": {"reference": format!("Organization/{org}")},
                "specialty": [{"coding": [{"system": "http://snomed.info/sct", "code": "394579002"}]}]}),
        );
        let mut ext = days.clone();
        ext.push(json!({"url": "availableStartTime", "valueTime": "08:00:00"}));
        ext.push(json!({"url": "availableEndTime", "valueTime": "18:00:00"}));
        ext.push(json!({"url": "slotMinutes", "valuePositiveInt": 30}));
        let schedule = api.create(
            base,
            json!({"resourceType": "Schedule", "actor": [{"reference": format!("PractitionerRole/{role}")}],
                "extension": [{"url": AVAILABILITY, "extension": ext}]}),
        );
        let (status, v) = api.send(
            reqwest::Method::POST,
            &format!("{base}/Schedule/{schedule}/$generate-slots"),
            Some(&json!({"resourceType": "Parameters"})),
        );
        assert_eq!(status, 200, "{v}");
        for e in api.all_ids(base, &format!("Slot?schedule=Schedule/{schedule}&status=free")) {
            ids.push(e["resource"]["id"].as_str().unwrap().to_string());
        }
    }
    ids.truncate(slots);
    ids
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bases: Vec<String> = args[1].split(',').map(str::to_string).collect();
    let token = args[2].clone();
    let clients: usize = args.get(3).map_or(64, |a| a.parse().unwrap());
    let slots: usize = args.get(4).map_or(1000, |a| a.parse().unwrap());
    let contenders: usize = args.get(5).map_or(4, |a| a.parse().unwrap());
    let api = Api {
        client: Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(clients)
            .build()
            .unwrap(),
        token,
    };
    let base = &bases[0];
    let slot_ids = set_up(&api, base, slots);
    let patients: Vec<String> = (0..clients)
        .map(|i| {
            api.create(
                base,
                json!({"resourceType": "Patient", "name": [{"family": format!("Storm{i}")}]}),
            )
        })
        .collect();
    // Client k seeks the slots of its group: groups of `contenders` clients share slots,
    // all starting together, so every slot is sought by `contenders` clients at once.
    let groups = clients / contenders;
    let wins = Mutex::new(Vec::<(String, String)>::new());
    let (conflicts, errors) = (AtomicUsize::new(0), AtomicUsize::new(0));
    if let Ok(signal) = std::env::var("STORM_STARTED_FILE") {
        // For a profiler: the set-up is done, the storm begins.
        let _ = std::fs::write(signal, "started");
    }
    let started = Instant::now();
    std::thread::scope(|scope| {
        for k in 0..clients {
            let (api, slot_ids, patients, bases) = (&api, &slot_ids, &patients, &bases);
            let (wins, conflicts, errors) = (&wins, &conflicts, &errors);
            scope.spawn(move || {
                let base = &bases[k % bases.len()];
                let group = k % groups;
                for (_, slot) in slot_ids.iter().enumerate().filter(|(i, _)| i % groups == group) {
                    let body = json!({"resourceType": "Parameters", "parameter": [
                        {"name": "slot", "valueReference": {"reference": format!("Slot/{slot}")}},
                        {"name": "patient", "valueReference": {"reference": format!("Patient/{}", patients[k])}}]});
                    let (status, v) =
                        api.send(reqwest::Method::POST, &format!("{base}/Appointment/$book"), Some(&body));
                    match status {
                        201 => wins
                            .lock()
                            .unwrap()
                            .push((slot.clone(), v["id"].as_str().unwrap_or("").to_string())),
                        409 => {
                            conflicts.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            eprintln!("unexpected {status}: {v}");
                        }
                    }
                }
            });
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    if let Ok(signal) = std::env::var("STORM_STARTED_FILE") {
        // For a profiler: the storm is over; the check waits (at most a minute) until the
        // profiler has taken its figures and removed the file.
        let _ = std::fs::write(&signal, "ended");
        let until = Instant::now() + Duration::from_secs(60);
        while std::path::Path::new(&signal).exists() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let wins = wins.into_inner().unwrap();
    let attempts = wins.len() + conflicts.load(Ordering::Relaxed) + errors.load(Ordering::Relaxed);
    // The outcome, read back from the store.
    let booked = api.all_ids(base, "Appointment?status=booked");
    let booked_slots: Vec<String> = booked
        .iter()
        .map(|e| e["resource"]["slot"][0]["reference"].as_str().unwrap_or("").to_string())
        .collect();
    let distinct: HashSet<&String> = booked_slots.iter().collect();
    let double = booked_slots.len() - distinct.len();
    let won_ids: HashSet<&str> = wins.iter().map(|(_, id)| id.as_str()).collect();
    let booked_ids: HashSet<&str> = booked.iter().filter_map(|e| e["resource"]["id"].as_str()).collect();
    let lost = won_ids.difference(&booked_ids).count();
    let unanswered = booked_ids.difference(&won_ids).count();
    let busy = api.all_ids(base, "Slot?status=busy").len();
    println!(
        "servers {}  clients {clients}  slots {slots}  contenders/slot {contenders}  attempts {attempts}  booked {}  409 {}  errors {}  seconds {seconds:.2}  bookings/s {:.0}  attempts/s {:.0}",
        bases.len(),
        wins.len(),
        conflicts.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        wins.len() as f64 / seconds,
        attempts as f64 / seconds
    );
    println!(
        "check: slots booked twice {double}  bookings lost {lost}  bookings nobody was told of {unanswered}  busy slots {busy}  every slot booked {}",
        distinct.len() == slots
    );
    if double > 0 || lost > 0 || unanswered > 0 || distinct.len() != slots || busy != slots {
        eprintln!("THE STORM BROKE A RULE");
        std::process::exit(1);
    }
}
