//! Appointments over HTTP: slot generation from availability, `$find`, `$hold`, `$book`,
//! `$cancel`, `$reschedule`, and the races — never two people in one slot.

mod common;

use common::{assert_outcome, every_day, json, Server};
use serde_json::{json, Value};

const NOT_AVAILABLE: &str = "https://sijill.health/fhir/StructureDefinition/not-available";
const CARDIOLOGY: &str = "394579002";

/// A facility with a place, a practitioner, their role and a schedule.
struct Clinic {
    org: String,
    role: String,
    schedule: String,
}

struct Doctor<'a> {
    province: &'a str,
    position: (f64, f64),
    gender: &'a str,
    language: &'a str,
    mode: &'a str,
    capacity: u64,
}

fn clinic(s: &Server, d: &Doctor<'_>) -> Clinic {
    let address = json!({"city": d.province, "district": d.province, "state": "Region Test", "country": "MA"});
    let org = s.create(
        &json!({"resourceType": "Organization", "name": format!("Hospital {}", d.province), "address": [address]}),
    );
    let location = s.create(
        &json!({"resourceType": "Location", "name": "Consultations", "address": address,
        "position": {"latitude": d.position.0, "longitude": d.position.1},
        "managingOrganization": {"reference": format!("Organization/{org}")}}),
    );
    let practitioner = s.create(
        &json!({"resourceType": "Practitioner", "name": [{"family": "Doctor"}], "gender": d.gender,
        "communication": [{"coding": [{"system": "urn:ietf:bcp:47", "code": d.language}]}]}),
    );
    let specialty =
        json!([{"coding": [{"system": "http://snomed.info/sct", "code": CARDIOLOGY, "display": "Cardiology"}]}]);
    let role = s.create(&json!({"resourceType": "PractitionerRole", "active": true,
        "practitioner": {"reference": format!("Practitioner/{practitioner}")},
        "organization": {"reference": format!("Organization/{org}")},
        "location": [{"reference": format!("Location/{location}")}],
        "specialty": specialty}));
    let schedule = s.create(
        &json!({"resourceType": "Schedule", "active": true, "specialty": specialty,
        "actor": [{"reference": format!("PractitionerRole/{role}")}, {"reference": format!("Location/{location}")}],
        "extension": [every_day(30, d.capacity, d.mode)]}),
    );
    Clinic { org, role, schedule }
}

fn rabat(s: &Server) -> Clinic {
    clinic(
        s,
        &Doctor {
            province: "Rabat",
            position: (34.02, -6.84),
            gender: "female",
            language: "ar",
            mode: "in-person",
            capacity: 1,
        },
    )
}

/// A male, French-speaking doctor in Oujda, far from Rabat.
fn oujda(s: &Server, mode: &str, capacity: u64) -> Clinic {
    clinic(
        s,
        &Doctor {
            province: "Oujda",
            position: (34.68, -1.91),
            gender: "male",
            language: "fr",
            mode,
            capacity,
        },
    )
}

fn generate(s: &Server, schedule: &str) -> Value {
    let r = s.post(
        &format!("Schedule/{schedule}/$generate-slots"),
        &json!({"resourceType": "Parameters"}),
    );
    assert_eq!(r.status(), 200);
    json(r)
}

fn param(p: &Value, name: &str) -> Value {
    p["parameter"]
        .as_array()
        .and_then(|ps| ps.iter().find(|x| x["name"] == name))
        .map(|x| x["valueInteger"].clone())
        .unwrap_or(Value::Null)
}

fn patient(s: &Server) -> String {
    s.create(&json!({"resourceType": "Patient", "name": [{"family": "Citizen"}]}))
}

fn citizen(s: &Server, patient: &str) -> String {
    s.token(&["--role", "citizen", "--patient", patient])
}

fn slot_ref(id: &str) -> Value {
    json!({"resourceType": "Parameters", "parameter": [{"name": "slot", "valueReference": {"reference": format!("Slot/{id}")}}]})
}

/// The slot ids of a `$find` answer, in order.
fn found(s: &Server, token: &str, query: &str) -> Vec<String> {
    let r = s.get_as(token, &format!("Appointment/$find?{query}"));
    assert_eq!(r.status(), 200, "{query}");
    let b = json(r);
    b["entry"]
        .as_array()
        .map(|es| {
            es.iter()
                .map(|e| {
                    assert_eq!(e["resource"]["status"], "proposed");
                    e["resource"]["slot"][0]["reference"]
                        .as_str()
                        .unwrap()
                        .trim_start_matches("Slot/")
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn read(s: &Server, path: &str) -> Value {
    let r = s.get(path);
    assert_eq!(r.status(), 200, "{path}");
    json(r)
}

fn count(s: &Server, query: &str) -> u64 {
    read(s, &format!("{query}&_summary=count"))["total"].as_u64().unwrap()
}

#[test]
fn slots_come_from_the_weekly_availability_and_generating_again_changes_nothing() {
    let s = Server::start_with(&["--booking-horizon", "3d", "--booking-rules", "none"]);
    let c = rabat(&s);
    let first = generate(&s, &c.schedule);
    let created = param(&first, "created").as_u64().unwrap();
    // Three days ahead of now, 20 half-hour slots a day (holidays aside): some, not many.
    assert!((20..=80).contains(&created), "{first}");
    assert_eq!(count(&s, &format!("Slot?schedule=Schedule/{}", c.schedule)), created);
    let again = generate(&s, &c.schedule);
    assert_eq!(param(&again, "created"), json!(0), "{again}");
    assert_eq!(param(&again, "removed"), json!(0));

    // Book one slot, then close the whole horizon: the free slots go, the booked one stays.
    let p = patient(&s);
    let t = citizen(&s, &p);
    let first_free = found(&s, &t, &format!("specialty={CARDIOLOGY}&_count=1"))[0].clone();
    assert_eq!(s.post_as(&t, "Appointment/$book", &slot_ref(&first_free)).status(), 201);
    let mut schedule = read(&s, &format!("Schedule/{}", c.schedule));
    schedule["extension"]
        .as_array_mut()
        .unwrap()
        .push(json!({"url": NOT_AVAILABLE, "extension": [
        {"url": "during", "valuePeriod": {"start": "2000-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z"}},
        {"url": "description", "valueString": "renovation"}]}));
    assert_eq!(s.put(&format!("Schedule/{}", c.schedule), &schedule).status(), 200);
    let closed = generate(&s, &c.schedule);
    assert_eq!(param(&closed, "removed").as_u64(), Some(created - 1), "{closed}");
    assert_eq!(param(&closed, "kept"), json!(1));
    assert_eq!(
        count(&s, &format!("Slot?schedule=Schedule/{}&status=free", c.schedule)),
        0
    );
    assert_eq!(
        count(&s, &format!("Slot?schedule=Schedule/{}&status=busy", c.schedule)),
        1
    );

    // A Schedule with an unreadable availability is refused, and says why.
    let mut backwards = every_day(30, 1, "in-person");
    for e in backwards["extension"].as_array_mut().unwrap() {
        if e["url"] == "availableStartTime" {
            e["valueTime"] = json!("19:00:00");
        }
    }
    schedule["extension"] = json!([backwards]);
    assert_outcome(
        s.put(&format!("Schedule/{}", c.schedule), &schedule),
        422,
        "availableEndTime",
    );
    schedule["extension"] = json!([every_day(0, 1, "in-person")]);
    assert_outcome(
        s.put(&format!("Schedule/{}", c.schedule), &schedule),
        400,
        "positiveInt",
    );
    // Only the facility's staff generate its slots.
    let other = s.token(&["--role", "facility-admin", "--organization", "elsewhere"]);
    let r = s.post_as(
        &other,
        &format!("Schedule/{}/$generate-slots", c.schedule),
        &json!({"resourceType": "Parameters"}),
    );
    assert_eq!(r.status(), 403);
    let own = s.token(&["--role", "facility-admin", "--organization", &c.org]);
    let r = s.post_as(
        &own,
        &format!("Schedule/{}/$generate-slots", c.schedule),
        &json!({"resourceType": "Parameters"}),
    );
    assert_eq!(r.status(), 200);

    // A schedule taken out of service loses its free slots at the next generation of all.
    let other = rabat(&s);
    generate(&s, &other.schedule);
    let mut retired = read(&s, &format!("Schedule/{}", other.schedule));
    retired["active"] = json!(false);
    assert_eq!(s.put(&format!("Schedule/{}", other.schedule), &retired).status(), 200);
    let r = s.post("Schedule/$generate-slots", &json!({"resourceType": "Parameters"}));
    assert_eq!(r.status(), 200);
    assert_eq!(
        count(&s, &format!("Slot?schedule=Schedule/{}&status=free", other.schedule)),
        0
    );
}

#[test]
fn find_filters_by_place_person_and_mode_and_orders_by_time_or_distance() {
    let s = Server::start_with(&["--booking-horizon", "3d", "--booking-rules", "none"]);
    let a = rabat(&s);
    let b = oujda(&s, "virtual", 2);
    generate(&s, &a.schedule);
    generate(&s, &b.schedule);
    let p = patient(&s);
    let t = citizen(&s, &p);
    let schedule_of = |slot: &str| {
        read(&s, &format!("Slot/{slot}"))["schedule"]["reference"]
            .as_str()
            .unwrap()
            .to_string()
    };

    let all = found(&s, &t, &format!("specialty={CARDIOLOGY}&_count=20"));
    assert_eq!(all.len(), 20);
    let starts: Vec<String> = all
        .iter()
        .map(|id| read(&s, &format!("Slot/{id}"))["start"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = starts.clone();
    sorted.sort();
    assert_eq!(starts, sorted, "earliest first");
    // Both schedules have slots at the same times: both appear, one seat per time.
    assert!(all.iter().any(|x| schedule_of(x).ends_with(&a.schedule)));
    assert!(all.iter().any(|x| schedule_of(x).ends_with(&b.schedule)));
    assert!(all.iter().all(|x| !x.ends_with("-2")), "one seat per time: {all:?}");

    for (query, expected) in [
        ("province=oujda", &b),
        ("province=Rabat", &a),
        ("language=fr", &b),
        ("gender=female", &a),
        ("mode=virtual", &b),
        ("mode=in-person", &a),
    ] {
        let ids = found(&s, &t, &format!("specialty={CARDIOLOGY}&{query}&_count=5"));
        assert_eq!(ids.len(), 5, "{query}");
        assert!(
            ids.iter().all(|x| schedule_of(x).ends_with(&expected.schedule)),
            "{query}: {ids:?}"
        );
    }
    assert!(found(&s, &t, "specialty=999999&_count=5").is_empty());
    assert!(found(&s, &t, "province=Nowhere").is_empty());

    // Nearest: from Oujda, the Oujda doctor first; from Rabat, the Rabat one.
    let near = |q: &str| found(&s, &t, &format!("sort=nearest&near={q}&_count=2"));
    assert!(schedule_of(&near("34.6|-1.9")[0]).ends_with(&b.schedule));
    assert!(schedule_of(&near("34.0|-6.8")[0]).ends_with(&a.schedule));

    // A proposal names the practitioner's role and, when asked, the patient.
    let r = s.get_as(
        &t,
        &format!(
            "Appointment/$find?practitioner=PractitionerRole/{}&patient=Patient/{p}&_count=1",
            a.role
        ),
    );
    let bundle = json(r);
    let actors: Vec<&str> = bundle["entry"][0]["resource"]["participant"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["actor"]["reference"].as_str().unwrap())
        .collect();
    assert!(actors.contains(&format!("Patient/{p}").as_str()), "{actors:?}");
    assert!(actors.contains(&format!("PractitionerRole/{}", a.role).as_str()));

    for (bad, needle) in [
        ("mode=helicopter", "mode"),
        ("sort=nearest", "near"),
        ("sort=cheapest", "sort"),
        ("near=500|1&sort=nearest", "near"),
        ("_count=0", "_count"),
        ("_count=100000", "_count"),
        ("start=yesterday", "start"),
        ("start=2026-12-10&end=2026-12-01", "after"),
        ("colour=blue", "colour"),
    ] {
        assert_outcome(s.get_as(&t, &format!("Appointment/$find?{bad}")), 400, needle);
    }
    // Proposals for someone else's record are not for a citizen to ask.
    let other = patient(&s);
    assert_eq!(
        s.get_as(&t, &format!("Appointment/$find?patient=Patient/{other}"))
            .status(),
        403
    );
    // The CapabilityStatement tells clients the operations are here.
    let metadata = read(&s, "metadata");
    let appointment = metadata["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Appointment")
        .unwrap();
    let names: Vec<&str> = appointment["operation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "find",
            "hold",
            "book",
            "cancel",
            "reschedule",
            "check-in",
            "no-show",
            "join-waitlist",
            "wait-times"
        ]
    );
    // Without a token, nothing.
    let anonymous = reqwest::blocking::Client::new()
        .get(s.url("Appointment/$find"))
        .send()
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[test]
fn find_over_many_schedules_reads_the_agenda_in_start_order() {
    // 17 schedules in one province and 3 in another: a request matching many schedules reads
    // the agenda of free slots in start order; one matching a few reads each one's first.
    let s = Server::start_with(&["--booking-horizon", "3d", "--booking-rules", "none"]);
    let place = |province| Doctor {
        province,
        position: (34.0, -6.8),
        gender: "female",
        language: "ar",
        mode: "in-person",
        capacity: 1,
    };
    let rabat: Vec<Clinic> = (0..17).map(|_| clinic(&s, &place("Rabat"))).collect();
    let fes: Vec<Clinic> = (0..3).map(|_| clinic(&s, &place("Fes"))).collect();
    let r = s.post("Schedule/$generate-slots", &json!({"resourceType": "Parameters"}));
    assert_eq!(r.status(), 200);
    let p = patient(&s);
    let t = citizen(&s, &p);
    let slot = |id: &str| read(&s, &format!("Slot/{id}"));
    let schedules_at_first_time = |ids: &[String]| {
        let first = slot(&ids[0])["start"].clone();
        let at_first: std::collections::BTreeSet<String> = ids
            .iter()
            .map(|id| slot(id))
            .filter(|x| x["start"] == first)
            .map(|x| x["schedule"]["reference"].as_str().unwrap().to_string())
            .collect();
        at_first
    };

    let all = found(&s, &t, &format!("specialty={CARDIOLOGY}&_count=30"));
    assert_eq!(all.len(), 30);
    let starts: Vec<String> = all
        .iter()
        .map(|id| slot(id)["start"].as_str().unwrap().to_string())
        .collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "earliest first: {starts:?}");
    assert_eq!(
        schedules_at_first_time(&all).len(),
        20,
        "every schedule at the first time"
    );

    let in_rabat = found(&s, &t, "province=Rabat&_count=17");
    let rabat_schedules = schedules_at_first_time(&in_rabat);
    assert_eq!(rabat_schedules.len(), 17);
    assert!(rabat
        .iter()
        .all(|c| rabat_schedules.contains(&format!("Schedule/{}", c.schedule))));
    let in_fes = found(&s, &t, "province=Fes&_count=3");
    let fes_schedules = schedules_at_first_time(&in_fes);
    assert!(fes
        .iter()
        .all(|c| fes_schedules.contains(&format!("Schedule/{}", c.schedule))));

    // A booked slot leaves the agenda at once; cancelled, it comes back.
    let taken = in_rabat[0].clone();
    let r = s.post_as(&t, "Appointment/$book", &slot_ref(&taken));
    assert_eq!(r.status(), 201);
    let appointment = json(r)["id"].as_str().unwrap().to_string();
    assert!(!found(&s, &t, "province=Rabat&_count=17").contains(&taken));
    assert!(!found(&s, &t, &format!("specialty={CARDIOLOGY}&_count=40")).contains(&taken));
    let r = s.post_as(
        &t,
        &format!("Appointment/{appointment}/$cancel"),
        &json!({"resourceType": "Parameters"}),
    );
    assert_eq!(r.status(), 200);
    assert!(found(&s, &t, "province=Rabat&_count=17").contains(&taken));
}

#[test]
fn hold_book_cancel_and_reschedule_keep_one_person_per_slot() {
    let s = Server::start_with(&["--booking-horizon", "3d", "--booking-rules", "none"]);
    let c = rabat(&s);
    generate(&s, &c.schedule);
    let (pa, pb) = (patient(&s), patient(&s));
    let (ta, tb) = (citizen(&s, &pa), citizen(&s, &pb));
    let slots = found(&s, &ta, "_count=3");
    let (first, second, third) = (&slots[0], &slots[1], &slots[2]);

    // A holds: a pending appointment; the slot is tentative and does not name the patient.
    let r = s.post_as(&ta, "Appointment/$hold", &slot_ref(first));
    assert_eq!(r.status(), 201);
    let held = json(r);
    assert_eq!(held["status"], "pending");
    let slot = read(&s, &format!("Slot/{first}"));
    assert_eq!(slot["status"], "busy-tentative");
    assert!(!slot.to_string().contains("Patient/"), "{slot}");
    assert!(
        !found(&s, &tb, "_count=3").contains(first),
        "a held slot is not offered"
    );
    // B can neither hold nor book it meanwhile.
    assert_outcome(s.post_as(&tb, "Appointment/$hold", &slot_ref(first)), 409, "held");
    assert_outcome(s.post_as(&tb, "Appointment/$book", &slot_ref(first)), 409, "held");
    // A books the hold: the same appointment, booked.
    let book_held = json!({"resourceType": "Parameters", "parameter": [
        {"name": "appointment-reference", "valueReference": {"reference": format!("Appointment/{}", held["id"].as_str().unwrap())}}]});
    // B cannot book A's hold, nor learn that it exists.
    assert_eq!(s.post_as(&tb, "Appointment/$book", &book_held).status(), 404);
    let r = s.post_as(&ta, "Appointment/$book", &book_held);
    assert_eq!(r.status(), 200);
    let booked = json(r);
    assert_eq!(booked["id"], held["id"]);
    assert_eq!(booked["status"], "booked");
    assert_eq!(read(&s, &format!("Slot/{first}"))["status"], "busy");
    assert_outcome(s.post_as(&ta, "Appointment/$book", &book_held), 409, "booked");

    // B books the second slot directly; A cannot cancel it, nor learn that it exists.
    let r = s.post_as(&tb, "Appointment/$book", &slot_ref(second));
    assert_eq!(r.status(), 201);
    let b_appt = json(r)["id"].as_str().unwrap().to_string();
    let cancel = json!({"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "travelling"}]});
    assert_eq!(
        s.post_as(&ta, &format!("Appointment/{b_appt}/$cancel"), &cancel)
            .status(),
        404
    );

    // Rescheduling A onto B's slot fails half-way and changes nothing.
    let a_id = booked["id"].as_str().unwrap();
    assert_outcome(
        s.post_as(&ta, &format!("Appointment/{a_id}/$reschedule"), &slot_ref(second)),
        409,
        "booked",
    );
    let a_now = read(&s, &format!("Appointment/{a_id}"));
    assert_eq!(a_now["meta"]["versionId"], booked["meta"]["versionId"]);
    assert_eq!(a_now["slot"][0]["reference"], format!("Slot/{first}"));
    assert_eq!(read(&s, &format!("Slot/{first}"))["status"], "busy");
    assert_eq!(read(&s, &format!("Slot/{second}"))["status"], "busy");

    // Rescheduling to a free slot moves the same appointment; the old slot is free again.
    let r = s.post_as(&ta, &format!("Appointment/{a_id}/$reschedule"), &slot_ref(third));
    assert_eq!(r.status(), 200);
    let moved = json(r);
    assert_eq!(moved["id"], a_id);
    assert_eq!(moved["status"], "booked");
    assert_eq!(moved["slot"][0]["reference"], format!("Slot/{third}"));
    assert_eq!(moved["start"], read(&s, &format!("Slot/{third}"))["start"]);
    assert_eq!(read(&s, &format!("Slot/{first}"))["status"], "free");
    assert_eq!(read(&s, &format!("Slot/{third}"))["status"], "busy");
    assert_eq!(count(&s, &format!("Appointment?patient=Patient/{pa}&status=booked")), 1);

    // B cancels: the slot is free again and the cancellation keeps the reason; the
    // earlier version stays in the history.
    let r = s.post_as(&tb, &format!("Appointment/{b_appt}/$cancel"), &cancel);
    assert_eq!(r.status(), 200);
    let cancelled = json(r);
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["cancelationReason"]["text"], "travelling");
    assert_eq!(read(&s, &format!("Slot/{second}"))["status"], "free");
    assert_eq!(read(&s, &format!("Appointment/{b_appt}/_history"))["total"], 2);
    assert_outcome(
        s.post_as(&tb, &format!("Appointment/{b_appt}/$cancel"), &cancel),
        409,
        "cancelled",
    );

    // Booking for someone else: not as a citizen; yes as the facility's staff.
    let for_a = json!({"resourceType": "Parameters", "parameter": [
        {"name": "slot", "valueReference": {"reference": format!("Slot/{second}")}},
        {"name": "patient", "valueReference": {"reference": format!("Patient/{pa}")}}]});
    assert_eq!(s.post_as(&tb, "Appointment/$book", &for_a).status(), 403);
    let stranger = s.token(&["--role", "practitioner", "--organization", "elsewhere"]);
    assert_eq!(s.post_as(&stranger, "Appointment/$book", &for_a).status(), 403);
    let reception = s.token(&["--role", "facility-admin", "--organization", &c.org]);
    assert_eq!(s.post_as(&reception, "Appointment/$book", &for_a).status(), 201);

    // Bad requests change nothing.
    assert_outcome(
        s.post_as(&ta, "Appointment/$book", &json!({"resourceType": "Parameters"})),
        400,
        "slot",
    );
    assert_outcome(
        s.post_as(&ta, "Appointment/$book", &json!({"resourceType": "Patient"})),
        400,
        "Parameters",
    );
    assert_eq!(
        s.post_as(&ta, "Appointment/$book", &slot_ref("no-such-slot")).status(),
        404
    );
    let r = s.post_as(
        &ta,
        "Appointment/$book",
        &json!({"resourceType": "Parameters", "parameter": [
        {"name": "appointment-reference", "valueReference": {"reference": "Patient/x"}}]}),
    );
    assert_outcome(r, 400, "appointment-reference");
}

/// A server without booking rules and with Rabat's slots generated, and the first of them.
fn server_with_a_free_slot() -> (Server, String) {
    let s = Server::start_with(&["--booking-horizon", "2d", "--booking-rules", "none"]);
    let c = rabat(&s);
    generate(&s, &c.schedule);
    let slot = found(&s, &s.admin_token, "_count=1")[0].clone();
    (s, slot)
}

#[test]
fn two_citizens_racing_for_the_last_slot_one_wins_the_others_get_409() {
    let (s, slot) = server_with_a_free_slot();
    let tokens: Vec<String> = (0..12).map(|_| citizen(&s, &patient(&s))).collect();
    let barrier = std::sync::Barrier::new(tokens.len());
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = tokens
            .iter()
            .map(|t| {
                let (s, barrier, slot) = (&s, &barrier, &slot);
                scope.spawn(move || {
                    barrier.wait();
                    s.post_as(t, "Appointment/$book", &slot_ref(slot)).status().as_u16()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(statuses.iter().filter(|x| **x == 201).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|x| *x == 201 || *x == 409), "{statuses:?}");
    assert_eq!(count(&s, &format!("Appointment?slot=Slot/{slot}&status=booked")), 1);
}

#[test]
fn the_same_request_id_books_once() {
    let s = Server::start_with(&["--booking-horizon", "2d", "--booking-rules", "none"]);
    let c = rabat(&s);
    generate(&s, &c.schedule);
    let p = patient(&s);
    let t = citizen(&s, &p);
    let slot = found(&s, &t, "_count=1")[0].clone();
    let send = || {
        s.request_as(&t, reqwest::Method::POST, "Appointment/$book")
            .header("content-type", "application/fhir+json")
            .header("x-request-id", "booking-7f3a")
            .body(slot_ref(&slot).to_string())
            .send()
            .unwrap()
    };
    let first = send();
    assert_eq!(first.status(), 201);
    let id = json(first)["id"].clone();
    let again = send();
    assert_eq!(again.status(), 200, "a retry answers the booking it made");
    assert_eq!(json(again)["id"], id);
    assert_eq!(count(&s, &format!("Appointment?patient=Patient/{p}")), 1);
}

#[test]
fn a_hold_that_expires_is_lost_to_a_faster_citizen_and_released_by_the_server() {
    let s = Server::start_with(&[
        "--booking-horizon",
        "2d",
        "--booking-rules",
        "none",
        "--hold-ttl",
        "1s",
        "--chores-every",
        "1s",
    ]);
    let c = rabat(&s);
    generate(&s, &c.schedule);
    let (pa, pb) = (patient(&s), patient(&s));
    let (ta, tb) = (citizen(&s, &pa), citizen(&s, &pb));
    let slots = found(&s, &ta, "_count=2");
    let hold = |t: &str, slot: &str| {
        let r = s.post_as(t, "Appointment/$hold", &slot_ref(slot));
        assert_eq!(r.status(), 201);
        json(r)["id"].as_str().unwrap().to_string()
    };
    let book_held = |t: &str, id: &str| {
        s.post_as(
            t,
            "Appointment/$book",
            &json!({"resourceType": "Parameters", "parameter": [
            {"name": "appointment-reference", "valueReference": {"reference": format!("Appointment/{id}")}}]}),
        )
    };
    // A holds, the hold expires, B books the slot first: A's booking is refused.
    let a_hold = hold(&ta, &slots[0]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(s.post_as(&tb, "Appointment/$book", &slot_ref(&slots[0])).status(), 201);
    assert_outcome(book_held(&ta, &a_hold), 409, "");
    assert_eq!(
        count(&s, &format!("Appointment?slot=Slot/{}&status=booked", slots[0])),
        1
    );

    // A holds another and does nothing: the server cancels the hold and frees the slot.
    let lapsed = hold(&ta, &slots[1]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let a = read(&s, &format!("Appointment/{lapsed}"));
        if a["status"] == "cancelled" {
            assert!(a["cancelationReason"]["text"].as_str().unwrap().contains("expired"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the expired hold was never released: {a}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(read(&s, &format!("Slot/{}", slots[1]))["status"], "free");
}

/// A booking rules file in a directory that outlives the server.
fn rules_file(dir: &tempfile::TempDir, rules: &Value) -> String {
    let path = dir.path().join("rules.json");
    std::fs::write(&path, rules.to_string()).unwrap();
    path.display().to_string()
}

fn book(s: &Server, token: &str, slot: &str) -> reqwest::blocking::Response {
    s.post_as(token, "Appointment/$book", &slot_ref(slot))
}

fn moment_in(hours: i64) -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::hours(hours);
    t.format(&time::format_description::well_known::Rfc3339).unwrap()
}

#[test]
fn country_rules_window_hoarding_referral_and_cancellation_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_file(
        &dir,
        &json!({"window_days": 2, "max_upcoming_per_specialty": 2, "referral_required": [CARDIOLOGY],
                "referral_from": ["394814009"], "cancellation_cutoff_hours": 1000}),
    );
    let s = Server::start_with(&["--booking-horizon", "4d", "--booking-rules", &rules]);
    let c = rabat(&s);
    generate(&s, &c.schedule);
    let p = patient(&s);
    let t = citizen(&s, &p);
    let soon = found(
        &s,
        &t,
        &format!("specialty={CARDIOLOGY}&end={}&_count=4", moment_in(40)),
    );
    assert_eq!(soon.len(), 4);

    // Cardiology is reached on referral from general practice only.
    assert_outcome(book(&s, &t, &soon[0]), 422, "referral");
    let referral = |requester: &str| {
        s.create(
            &json!({"resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "subject": {"reference": format!("Patient/{p}")},
            "requester": {"reference": format!("PractitionerRole/{requester}")},
            "performerType": {"coding": [{"system": "http://snomed.info/sct", "code": CARDIOLOGY}]}}),
        )
    };
    referral(&c.role);
    assert_outcome(book(&s, &t, &soon[0]), 422, "referral");
    let gp = s.create(
        &json!({"resourceType": "PractitionerRole", "organization": {"reference": format!("Organization/{}", c.org)},
        "specialty": [{"coding": [{"system": "http://snomed.info/sct", "code": "394814009"}]}]}),
    );
    let from_gp = referral(&gp);
    let r = book(&s, &t, &soon[0]);
    assert_eq!(r.status(), 201);
    let first = json(r);
    assert_eq!(first["basedOn"][0]["reference"], format!("ServiceRequest/{from_gp}"));

    // Beyond the window: refused, whatever else.
    let late = found(
        &s,
        &t,
        &format!("specialty={CARDIOLOGY}&start={}&_count=1", moment_in(60)),
    );
    assert_outcome(book(&s, &t, &late[0]), 422, "booking window");
    assert_outcome(
        s.post_as(&t, "Appointment/$hold", &slot_ref(&late[0])),
        422,
        "booking window",
    );

    // No hoarding: two upcoming cardiology appointments at most, holds included.
    assert_eq!(s.post_as(&t, "Appointment/$hold", &slot_ref(&soon[1])).status(), 201);
    assert_outcome(book(&s, &t, &soon[2]), 422, "at most 2");
    assert_eq!(
        read(&s, &format!("Slot/{}", soon[2]))["status"],
        "free",
        "a refusal changes nothing"
    );

    // Inside the cut-off the citizen cannot cancel or move; the facility's staff can.
    let id = first["id"].as_str().unwrap();
    let cancel = json!({"resourceType": "Parameters"});
    assert_outcome(
        s.post_as(&t, &format!("Appointment/{id}/$cancel"), &cancel),
        422,
        "call the facility",
    );
    assert_outcome(
        s.post_as(&t, &format!("Appointment/{id}/$reschedule"), &slot_ref(&soon[3])),
        422,
        "call the facility",
    );
    let desk = s.token(&["--role", "facility-admin", "--organization", &c.org]);
    assert_eq!(
        s.post_as(&desk, &format!("Appointment/{id}/$cancel"), &cancel).status(),
        200
    );
    assert_eq!(
        book(&s, &t, &soon[2]).status(),
        201,
        "one upcoming again: room for another"
    );
}

#[test]
fn staff_check_in_opens_an_encounter_no_shows_are_recorded_and_teleconsultations_get_a_room() {
    let s = Server::start_with(&[
        "--booking-horizon",
        "3d",
        "--booking-rules",
        "none",
        "--video-base-url",
        "https://visio.example.org/rooms/",
    ]);
    let a = rabat(&s);
    let v = oujda(&s, "virtual", 2);
    generate(&s, &a.schedule);
    generate(&s, &v.schedule);
    let p = patient(&s);
    let t = citizen(&s, &p);

    // Teleconsultations get a room of their own; visits in person get none.
    let remote = found(&s, &t, "mode=virtual&_count=2");
    let rooms: Vec<String> = remote
        .iter()
        .map(|slot| {
            let r = book(&s, &t, slot);
            assert_eq!(r.status(), 201);
            let link = json(r)["extension"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["url"] == "https://sijill.health/fhir/StructureDefinition/meeting-url")
                .expect("a meeting link")["valueUrl"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(
                link.starts_with("https://visio.example.org/rooms/") && !link.contains("rooms//"),
                "{link}"
            );
            link
        })
        .collect();
    assert_ne!(rooms[0], rooms[1], "one room per appointment");
    let here = found(&s, &t, "mode=in-person&_count=1");
    let r = book(&s, &t, &here[0]);
    assert_eq!(r.status(), 201);
    let booked = json(r);
    assert!(!booked.to_string().contains("meeting-url"), "{booked}");
    let id = booked["id"].as_str().unwrap().to_string();

    // Checking in is the facility's act: the appointment arrives and an encounter opens.
    let check_in = format!("Appointment/{id}/$check-in");
    let nothing = json!({"resourceType": "Parameters"});
    assert_eq!(s.post_as(&t, &check_in, &nothing).status(), 403);
    let elsewhere = s.token(&["--role", "facility-admin", "--organization", &v.org]);
    // Another facility does not even see the appointment.
    assert_eq!(s.post_as(&elsewhere, &check_in, &nothing).status(), 404);
    let desk = s.token(&["--role", "facility-admin", "--organization", &a.org]);
    let r = s.post_as(&desk, &check_in, &nothing);
    assert_eq!(r.status(), 200);
    let out = json(r);
    let part = |name: &str| {
        out["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .unwrap()["resource"]
            .clone()
    };
    assert_eq!(part("appointment")["status"], "arrived");
    let encounter = part("encounter");
    assert_eq!(encounter["status"], "arrived");
    assert_eq!(encounter["class"]["code"], "AMB");
    assert_eq!(encounter["subject"]["reference"], format!("Patient/{p}"));
    assert_eq!(encounter["appointment"][0]["reference"], format!("Appointment/{id}"));
    assert_eq!(
        encounter["serviceProvider"]["reference"],
        format!("Organization/{}", a.org)
    );
    assert_eq!(
        read(&s, &format!("Encounter/{}", encounter["id"].as_str().unwrap()))["participant"][0]["individual"]
            ["reference"],
        format!("PractitionerRole/{}", a.role)
    );
    assert_outcome(s.post_as(&desk, &check_in, &nothing), 409, "booked");

    // A no-show is recorded once the appointment has begun, not before.
    let later = found(&s, &t, "mode=in-person&_count=1");
    let r = book(&s, &t, &later[0]);
    let upcoming = json(r)["id"].as_str().unwrap().to_string();
    assert_outcome(
        s.post_as(&desk, &format!("Appointment/{upcoming}/$no-show"), &nothing),
        409,
        "not started",
    );
    let past_slot = s.create(
        &json!({"resourceType": "Slot", "schedule": {"reference": format!("Schedule/{}", a.schedule)},
        "status": "busy", "start": moment_in(-3), "end": moment_in(-2)}),
    );
    let past = s.create(
        &json!({"resourceType": "Appointment", "status": "booked", "start": moment_in(-3), "end": moment_in(-2),
        "slot": [{"reference": format!("Slot/{past_slot}")}],
        "participant": [{"actor": {"reference": format!("Patient/{p}")}, "status": "accepted"}]}),
    );
    assert_eq!(
        s.post_as(&t, &format!("Appointment/{past}/$no-show"), &nothing)
            .status(),
        403
    );
    let r = s.post_as(&desk, &format!("Appointment/{past}/$no-show"), &nothing);
    assert_eq!(r.status(), 200);
    assert_eq!(json(r)["status"], "noshow");
}

#[test]
fn wait_time_figures_per_specialty_and_province() {
    let s = Server::start_with(&["--booking-horizon", "3d", "--booking-rules", "none"]);
    let a = rabat(&s);
    let b = oujda(&s, "in-person", 1);
    generate(&s, &a.schedule);
    generate(&s, &b.schedule);
    // The past month in Rabat: four slots, two taken; two appointments due, one a no-show.
    for (i, status) in ["busy", "busy", "free", "free"].iter().enumerate() {
        let h = -(10 + i as i64);
        s.create(
            &json!({"resourceType": "Slot", "schedule": {"reference": format!("Schedule/{}", a.schedule)},
            "status": status, "start": moment_in(h), "end": moment_in(h + 1)}),
        );
    }
    let p = patient(&s);
    for status in ["noshow", "fulfilled"] {
        s.create(
            &json!({"resourceType": "Appointment", "status": status, "start": moment_in(-10), "end": moment_in(-9),
            "specialty": [{"coding": [{"system": "http://snomed.info/sct", "code": CARDIOLOGY}]}],
            "participant": [{"actor": {"reference": format!("Patient/{p}")}, "status": "accepted"},
                            {"actor": {"reference": format!("PractitionerRole/{}", a.role)}, "status": "accepted"}]}),
        );
    }
    let planner = s.token(&["--role", "planner"]);
    let r = s.get_as(&planner, "Appointment/$wait-times");
    assert_eq!(r.status(), 200);
    let figures = json(r);
    let groups: Vec<&Value> = figures["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "group")
        .collect();
    assert_eq!(groups.len(), 2, "{figures}");
    let part = |g: &Value, name: &str| {
        g["part"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| {
                p.as_object()
                    .unwrap()
                    .iter()
                    .find(|(k, _)| k.starts_with("value"))
                    .unwrap()
                    .1
                    .clone()
            })
    };
    let rabat_group = groups
        .iter()
        .find(|g| part(g, "province") == Some(json!("rabat")))
        .unwrap();
    assert_eq!(part(rabat_group, "slots"), Some(json!(4)));
    assert_eq!(part(rabat_group, "slots-taken"), Some(json!(2)));
    assert_eq!(part(rabat_group, "utilisation"), Some(json!(0.5)));
    assert_eq!(part(rabat_group, "appointments-due"), Some(json!(2)));
    assert_eq!(part(rabat_group, "no-show-rate"), Some(json!(0.5)));
    // The third next available is the third free time $find offers there.
    let t = citizen(&s, &p);
    let third = found(&s, &t, "province=Rabat&_count=3")[2].clone();
    let third_start = read(&s, &format!("Slot/{third}"))["start"]
        .as_str()
        .unwrap()
        .to_string();
    let reported = part(rabat_group, "third-next-available").unwrap();
    assert_eq!(
        time::OffsetDateTime::parse(
            reported.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339
        )
        .unwrap(),
        time::OffsetDateTime::parse(&third_start, &time::format_description::well_known::Rfc3339).unwrap()
    );
    let oujda = groups
        .iter()
        .find(|g| part(g, "province") == Some(json!("oujda")))
        .unwrap();
    assert_eq!(part(oujda, "slots"), Some(json!(0)));
    assert_eq!(part(oujda, "utilisation"), None, "no slots, no ratio");

    let narrowed = json(s.get_as(
        &planner,
        &format!("Appointment/$wait-times?specialty={CARDIOLOGY}&province=Oujda"),
    ));
    assert_eq!(
        narrowed["parameter"].as_array().unwrap().len(),
        2,
        "the period and one group"
    );
    assert_eq!(s.get_as(&t, "Appointment/$wait-times").status(), 403);
    assert_outcome(s.get_as(&planner, "Appointment/$wait-times?colour=red"), 400, "colour");
    assert_outcome(
        s.get_as(&planner, "Appointment/$wait-times?start=yesterday"),
        400,
        "start",
    );
}

fn join_waitlist(s: &Server, token: &str, province: &str) -> reqwest::blocking::Response {
    s.post_as(
        token,
        "Appointment/$join-waitlist",
        &json!({"resourceType": "Parameters", "parameter": [
            {"name": "specialty", "valueString": CARDIOLOGY},
            {"name": "province", "valueString": province}]}),
    )
}

#[test]
fn a_freed_slot_is_offered_to_the_first_waiting_and_an_offer_not_taken_goes_back_in_line() {
    let s = Server::start_with(&[
        "--booking-horizon",
        "2d",
        "--booking-rules",
        "none",
        "--offer-ttl",
        "2s",
        "--chores-every",
        "1s",
        "--notify",
        "none",
    ]);
    let c = rabat(&s);
    generate(&s, &c.schedule);
    let people: Vec<(String, String)> = (0..5)
        .map(|_| {
            let p = patient(&s);
            let t = citizen(&s, &p);
            (p, t)
        })
        .collect();
    let [(_, booker), (pa, ta), (pc, tc), (_, td), (_, other)] = &people[..] else {
        unreachable!()
    };
    let slots = found(&s, booker, "_count=2");
    let r = book(&s, booker, &slots[0]);
    let first = json(r)["id"].as_str().unwrap().to_string();

    // In line: A, then C, for cardiology in Rabat; D waits in Oujda.
    let entry_a = json(join_waitlist(&s, ta, "Rabat"))["id"].as_str().unwrap().to_string();
    assert_eq!(read(&s, &format!("Appointment/{entry_a}"))["status"], "waitlist");
    let entry_c = json(join_waitlist(&s, tc, "Rabat"))["id"].as_str().unwrap().to_string();
    assert_eq!(join_waitlist(&s, td, "Oujda").status(), 201);
    assert_outcome(join_waitlist(&s, ta, "Rabat"), 409, "already waits");
    assert_outcome(
        s.post_as(ta, "Appointment/$join-waitlist", &json!({"resourceType": "Parameters"})),
        400,
        "specialty",
    );
    let for_someone_else = json!({"resourceType": "Parameters", "parameter": [
        {"name": "specialty", "valueString": CARDIOLOGY},
        {"name": "patient", "valueReference": {"reference": format!("Patient/{pc}")}}]});
    assert_eq!(
        s.post_as(ta, "Appointment/$join-waitlist", &for_someone_else).status(),
        403
    );

    // The booker cancels: the slot goes to A at once, held for A, who is told.
    let nothing = json!({"resourceType": "Parameters"});
    assert_eq!(
        s.post_as(booker, &format!("Appointment/{first}/$cancel"), &nothing)
            .status(),
        200
    );
    let offered = read(&s, &format!("Appointment/{entry_a}"));
    assert_eq!(offered["status"], "pending");
    assert_eq!(offered["slot"][0]["reference"], format!("Slot/{}", slots[0]));
    assert_eq!(read(&s, &format!("Slot/{}", slots[0]))["status"], "busy-tentative");
    assert!(
        !found(&s, other, "_count=2").contains(&slots[0]),
        "not offered to others"
    );
    let offers = json(s.get(&format!(
        "Communication?subject=Patient/{pa}&category=https://sijill.health/fhir/CodeSystem/notice-topic|offer"
    )));
    assert_eq!(offers["total"], 1, "{offers}");
    let book_offer = json!({"resourceType": "Parameters", "parameter": [
        {"name": "appointment-reference", "valueReference": {"reference": format!("Appointment/{entry_a}")}}]});
    let r = s.post_as(ta, "Appointment/$book", &book_offer);
    assert_eq!(r.status(), 200);
    assert_eq!(json(r)["status"], "booked");

    // Another cancellation goes to C, who does not answer: back at the end of the line,
    // and the slot free again (nobody else waits for Rabat).
    let r = book(&s, other, &slots[1]);
    let second = json(r)["id"].as_str().unwrap().to_string();
    assert_eq!(
        s.post_as(other, &format!("Appointment/{second}/$cancel"), &nothing)
            .status(),
        200
    );
    assert_eq!(read(&s, &format!("Appointment/{entry_c}"))["status"], "pending");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while read(&s, &format!("Appointment/{entry_c}"))["status"] != "waitlist" {
        assert!(std::time::Instant::now() < until, "the offer did not lapse");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(read(&s, &format!("Slot/{}", slots[1]))["status"], "free");
    // Leaving the waitlist is a cancellation.
    let r = s.post_as(tc, &format!("Appointment/{entry_c}/$cancel"), &nothing);
    assert_eq!(r.status(), 200);
    assert_eq!(json(r)["status"], "cancelled");
}

#[test]
fn an_absence_cancels_its_appointments_and_holds_the_earliest_equivalent_for_each_patient() {
    let s = Server::start_with(&["--booking-horizon", "3d", "--booking-rules", "none", "--notify", "none"]);
    let a = rabat(&s);
    let b = rabat(&s);
    let r = s.post("Schedule/$generate-slots", &json!({"resourceType": "Parameters"}));
    assert_eq!(r.status(), 200);
    let patients: Vec<(String, String)> = (0..2)
        .map(|_| {
            let p = patient(&s);
            let t = citizen(&s, &p);
            (p, t)
        })
        .collect();
    let at_a = found(
        &s,
        &patients[0].1,
        &format!("practitioner=PractitionerRole/{}&_count=2", a.role),
    );
    let booked: Vec<String> = patients
        .iter()
        .zip(&at_a)
        .map(|((_, t), slot)| {
            let r = book(&s, t, slot);
            assert_eq!(r.status(), 201);
            json(r)["id"].as_str().unwrap().to_string()
        })
        .collect();

    let block = |token: &str, params: Value| s.post_as(token, &format!("Schedule/{}/$block", a.schedule), &params);
    let period = json!({"resourceType": "Parameters", "parameter": [
        {"name": "start", "valueDateTime": moment_in(-1)},
        {"name": "end", "valueDateTime": moment_in(24 * 4)},
        {"name": "reason", "valueString": "conference"}]});
    assert_eq!(block(&patients[0].1, period.clone()).status(), 403);
    let elsewhere = s.token(&["--role", "facility-admin", "--organization", &b.org]);
    assert_eq!(block(&elsewhere, period.clone()).status(), 403);
    let desk = s.token(&["--role", "facility-admin", "--organization", &a.org]);
    assert_outcome(
        block(
            &desk,
            json!({"resourceType": "Parameters", "parameter": [{"name": "end", "valueDateTime": moment_in(1)}]}),
        ),
        400,
        "start",
    );
    let r = block(&desk, period);
    assert_eq!(r.status(), 200);
    let out = json(r);
    let value = |name: &str| {
        out["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["valueInteger"]
            .clone()
    };
    assert!(value("slots-blocked").as_i64().unwrap() >= 2, "{out}");
    assert_eq!(value("appointments-cancelled"), json!(2));
    assert_eq!(value("offers-made"), json!(2));

    let mut offered = std::collections::HashSet::new();
    for ((p, _), id) in patients.iter().zip(&booked) {
        let cancelled = read(&s, &format!("Appointment/{id}"));
        assert_eq!(cancelled["status"], "cancelled");
        assert!(cancelled["cancelationReason"]["text"]
            .as_str()
            .unwrap()
            .contains("absent"));
        let held = json(s.get(&format!("Appointment?patient=Patient/{p}&status=pending")));
        assert_eq!(held["total"], 1, "{held}");
        let slot = held["entry"][0]["resource"]["slot"][0]["reference"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            read(&s, &slot)["schedule"]["reference"],
            format!("Schedule/{}", b.schedule),
            "an equivalent at another schedule"
        );
        assert!(offered.insert(slot), "one slot per patient");
        let notices = json(s.get(&format!("Communication?subject=Patient/{p}")));
        let topics: Vec<&str> = notices["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"]["category"][0]["coding"][0]["code"].as_str().unwrap())
            .collect();
        assert!(
            topics.contains(&"cancellation") && topics.contains(&"offer"),
            "{topics:?}"
        );
    }
    // Nothing at the absent practitioner's schedule is offered any more.
    assert!(found(
        &s,
        &patients[0].1,
        &format!("practitioner=PractitionerRole/{}&_count=2", a.role)
    )
    .is_empty());
    let schedule = read(&s, &format!("Schedule/{}", a.schedule));
    assert!(schedule.to_string().contains("conference"), "{schedule}");
}

#[test]
fn booking_or_holding_for_a_patient_or_slot_that_does_not_exist_is_404_and_changes_nothing() {
    let (s, slot) = server_with_a_free_slot();
    let known = patient(&s);
    let ask = |slot: &str, patient: &str| {
        json!({"resourceType": "Parameters", "parameter": [
            {"name": "slot", "valueReference": {"reference": format!("Slot/{slot}")}},
            {"name": "patient", "valueReference": {"reference": format!("Patient/{patient}")}}]})
    };
    for operation in ["Appointment/$book", "Appointment/$hold"] {
        assert_outcome(s.post(operation, &ask(&slot, "ghost-patient")), 404, "ghost-patient");
        assert_outcome(s.post(operation, &ask("ghost-slot", &known)), 404, "ghost-slot");
        // Both missing: the slot is answered first, as before the two were read together.
        assert_outcome(
            s.post(operation, &ask("ghost-slot", "ghost-patient")),
            404,
            "ghost-slot",
        );
    }
    assert_eq!(count(&s, "Appointment?_count=10"), 0);
    assert_eq!(read(&s, &format!("Slot/{slot}"))["status"], "free");
    // The same slot and a patient who exists: booked.
    assert_eq!(s.post("Appointment/$book", &ask(&slot, &known)).status(), 201);
}
