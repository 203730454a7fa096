//! The health system of the generated country: insurers, facilities by tier spread over the
//! regions, their sites, wards, rooms and beds, services by specialty, practitioners and
//! their roles, schedules and slots for the coming weeks (some already booked), and medical
//! equipment with its maintenance history.

use serde_json::{json, Value};
use time::{Duration, PrimitiveDateTime, Time};

use crate::codes::{self, SPECIALTIES};
use crate::fhir::{coding, concept, date, date_time, names, reference};
use crate::rng::Rng;
use crate::Settings;

/// A doctor or nurse and the role they hold at one facility.
#[derive(Debug, Clone)]
pub struct Clinician {
    /// Practitioner id.
    pub practitioner: String,
    /// Index into `SPECIALTIES`; None for nurses.
    pub specialty: Option<usize>,
    /// Their national identifier (how they sign in).
    pub national_id: Option<String>,
    /// Their name as written in Latin script.
    pub name: String,
}

/// A ministry official who signs in with a platform role (planner, auditor).
#[derive(Debug, Clone)]
pub struct Official {
    /// The platform role code (`planner`, `auditor`).
    pub platform_role: &'static str,
    /// Practitioner id.
    pub practitioner: String,
    /// Their national identifier.
    pub national_id: Option<String>,
    /// Their name as written in Latin script.
    pub name: String,
}

/// A facility and what patients' records need to refer to it.
#[derive(Debug, Clone)]
pub struct Facility {
    /// Organization id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Location id of its site.
    pub site: String,
    /// 1 primary, 2 secondary, 3 tertiary.
    pub level: u8,
    /// Index of its region in the profile.
    pub region: usize,
    /// Its staff.
    pub clinicians: Vec<Clinician>,
    /// Ward Location ids (hospitals only).
    pub wards: Vec<String>,
}

impl Facility {
    /// A clinician of the specialty, else any doctor, else anyone.
    pub fn clinician(&self, rng: &mut Rng, specialty: Option<usize>) -> &Clinician {
        let of_specialty = |c: &&Clinician| specialty.is_some() && c.specialty == specialty;
        let doctor = |c: &&Clinician| c.specialty.is_some();
        let anyone = |_: &&Clinician| true;
        let rules: [&dyn Fn(&&Clinician) -> bool; 3] = [&of_specialty, &doctor, &anyone];
        for rule in rules {
            let count = self.clinicians.iter().filter(rule).count();
            if count > 0 {
                let n = rng.below(count as u64) as usize;
                if let Some(c) = self.clinicians.iter().filter(rule).nth(n) {
                    return c;
                }
            }
        }
        rng.pick(&self.clinicians)
    }
}

/// The directory patients' records refer to.
#[derive(Debug, Clone)]
pub struct Directory {
    /// All facilities.
    pub facilities: Vec<Facility>,
    /// Organization ids of the insurers, in profile order.
    pub insurers: Vec<String>,
    /// The ministry's planner and auditor.
    pub officials: Vec<Official>,
}

impl Directory {
    /// Facilities of a level, those of the region first (the region's own when it has some).
    pub fn near(&self, level: u8, region: usize) -> Vec<usize> {
        let of_level = || {
            self.facilities
                .iter()
                .enumerate()
                .filter(move |(_, f)| f.level == level)
        };
        let local: Vec<usize> = of_level().filter(|(_, f)| f.region == region).map(|(i, _)| i).collect();
        if local.is_empty() {
            of_level().map(|(i, _)| i).collect()
        } else {
            local
        }
    }
}

/// How many facilities of a tier the demo has for `patients` citizens: the real density,
/// capped so that a small demo is not all buildings.
fn facility_count(settings: &Settings, level: u8, per_million: f64) -> usize {
    let p = &settings.profile;
    let real = ((per_million * p.population() as f64 / 1e6).round() as usize).max(1);
    let wanted = match level {
        3 => 2 + settings.patients / 20_000,
        2 => (settings.patients / 2_000).max(1),
        _ => (settings.patients / 200).max(p.regions.len()),
    };
    wanted.min(real)
}

/// Share of real bed and equipment numbers the demo builds (a small population needs few).
fn bed_scale(settings: &Settings) -> f64 {
    (settings.patients as f64 / 20_000.0).clamp(0.02, 1.0)
}

struct Builder<'a> {
    settings: &'a Settings,
    rng: Rng,
    out: Vec<Value>,
    /// Members of staff so far (numbers their national identifiers).
    staff_count: u64,
}

impl<'a> Builder<'a> {
    fn push(&mut self, resource: Value) {
        self.out.push(resource);
    }

    /// The country's UTC offset, borrowed from the settings (not from the builder).
    fn offset(&self) -> &'a str {
        &self.settings.profile.utc_offset
    }

    fn now(&self) -> PrimitiveDateTime {
        PrimitiveDateTime::new(self.settings.as_of, Time::MIDNIGHT)
    }

    fn insurers(&mut self) -> Vec<String> {
        let p = &self.settings.profile;
        let mut ids = Vec::new();
        for insurer in &p.insurers {
            let id = self.rng.uuid();
            self.push(json!({
                "resourceType": "Organization",
                "id": id,
                "identifier": [{"system": p.identifier_systems.facility, "value": format!("{}-INS-{}", p.code.to_uppercase(), insurer.code)}],
                "active": true,
                "type": [concept("http://terminology.hl7.org/CodeSystem/organization-type", "ins", "Insurance Company")],
                "name": insurer.name,
                "alias": [insurer.code, insurer.name_ar],
                "address": [{"country": p.code.to_uppercase()}],
            }));
            ids.push(id);
        }
        ids
    }

    fn facility(&mut self, tier: usize, number: usize, region: usize) -> Facility {
        let p = &self.settings.profile;
        let t = &p.facility_tiers[tier];
        let r = &p.regions[region];
        let province = (!r.provinces.is_empty()).then(|| self.rng.below(r.provinces.len() as u64) as usize);
        let (city, city_ar) = match province {
            Some(i) => (r.provinces[i].name.fr.clone(), r.provinces[i].name.ar.clone()),
            None => (r.name.fr.clone(), r.name.ar.clone()),
        };
        let code = format!("{}-{}-{:04}", p.code.to_uppercase(), t.code.to_uppercase(), number);
        let id = self.rng.uuid();
        let site = self.rng.uuid();
        let name = format!("{} {city} {number}", t.display);
        let mut address = json!({"use": "work", "type": "physical", "city": city, "state": r.name.fr, "country": p.code.to_uppercase()});
        if let Some(i) = province {
            address["district"] = json!(r.provinces[i].name.fr);
        }
        let phone = self.phone();
        self.push(json!({
            "resourceType": "Organization",
            "id": id,
            "identifier": [{"system": p.identifier_systems.facility, "value": code}],
            "active": true,
            "type": [{"coding": [coding(codes::FACILITY_TIER, &t.code, &t.display)], "text": t.display}],
            "name": name,
            "alias": [format!("{} {city_ar}", t.display_ar)],
            "telecom": [{"system": "phone", "value": phone, "use": "work"}],
            "address": [address.clone()],
        }));
        self.push(json!({
            "resourceType": "Location",
            "id": site,
            "status": "active",
            "name": name,
            "alias": [format!("{} {city_ar}", t.display_ar)],
            "mode": "instance",
            "physicalType": concept("http://terminology.hl7.org/CodeSystem/location-physical-type", "si", "Site"),
            "address": address,
            "managingOrganization": reference("Organization", &id),
        }));
        Facility {
            id,
            name,
            site,
            level: t.level,
            region,
            clinicians: Vec::new(),
            wards: Vec::new(),
        }
    }

    fn next_staff_national_id(&mut self) -> Option<String> {
        self.staff_count += 1;
        crate::person::staff_national_id(self.settings, self.staff_count - 1)
    }

    /// The ministry of health, with a planner (aggregate figures) and an auditor (audit
    /// events) who sign in with their platform role.
    fn officials(&mut self) -> Vec<Official> {
        let p = &self.settings.profile;
        let ministry = self.rng.uuid();
        self.push(json!({
            "resourceType": "Organization",
            "id": ministry,
            "identifier": [{"system": p.identifier_systems.facility, "value": format!("{}-MOH", p.code.to_uppercase())}],
            "active": true,
            "type": [concept("http://terminology.hl7.org/CodeSystem/organization-type", "govt", "Government")],
            "name": "Ministry of Health",
            "alias": ["وزارة الصحة"],
            "address": [{"country": p.code.to_uppercase()}],
        }));
        let mut officials = Vec::new();
        for (platform_role, display) in [("planner", "Planner"), ("auditor", "Auditor")] {
            let practitioner = self.rng.uuid();
            let male = self.rng.chance(0.5);
            let given = self.rng.pick(if male {
                &p.given_names.male
            } else {
                &p.given_names.female
            });
            let family = self.rng.pick(&p.family_names);
            let national_id = self.next_staff_national_id();
            let mut person = json!({
                "resourceType": "Practitioner",
                "id": practitioner,
                "active": true,
                "name": names(given, family, None),
                "gender": if male { "male" } else { "female" },
            });
            if let Some(n) = &national_id {
                person["identifier"] = json!([{"use": "official", "system": p.national_id.system, "value": n}]);
            }
            self.push(person);
            let role = self.rng.uuid();
            self.push(json!({
                "resourceType": "PractitionerRole",
                "id": role,
                "active": true,
                "practitioner": reference("Practitioner", &practitioner),
                "organization": reference("Organization", &ministry),
                "code": [concept(sijill_auth::PLATFORM_ROLE_SYSTEM, platform_role, display)],
            }));
            officials.push(Official {
                platform_role,
                practitioner,
                national_id,
                name: format!("{} {}", given.lat, family.lat),
            });
        }
        officials
    }

    fn phone(&mut self) -> String {
        crate::person::phone_number(&mut self.rng, &self.settings.profile.phone)
    }

    /// Services, practitioners and roles of a facility.
    fn staff(&mut self, facility: &mut Facility) {
        let level = facility.level;
        let offered: Vec<usize> = (0..SPECIALTIES.len())
            .filter(|&s| {
                if level == 1 {
                    s == codes::GENERAL_PRACTICE
                } else {
                    SPECIALTIES[s].min_level <= level
                }
            })
            .collect();
        let mut doctors: Vec<usize> = offered.clone();
        let extra = match level {
            1 => self.rng.between(1, 3),
            2 => self.rng.between(4, 10),
            _ => self.rng.between(15, 30),
        };
        let weights: Vec<f64> = offered.iter().map(|&s| SPECIALTIES[s].weight as f64).collect();
        for _ in 0..extra {
            doctors.push(offered[self.rng.weighted(&weights)]);
        }
        let nurses = match level {
            1 => self.rng.between(1, 2),
            2 => self.rng.between(5, 10),
            _ => self.rng.between(10, 20),
        } as usize;
        let mut services = Vec::new();
        for &s in &offered {
            let id = self.rng.uuid();
            let sp = &SPECIALTIES[s];
            self.push(json!({
                "resourceType": "HealthcareService",
                "id": id,
                "active": true,
                "providedBy": reference("Organization", &facility.id),
                "specialty": [concept(codes::SNOMED, sp.code, sp.display)],
                "location": [reference("Location", &facility.site)],
                "name": sp.name_fr,
                "availableTime": [{"daysOfWeek": self.working_days(), "availableStartTime": "08:00:00", "availableEndTime": "16:00:00"}],
            }));
            services.push((s, id));
        }
        for specialty in doctors.into_iter().map(Some).chain(std::iter::repeat_n(None, nurses)) {
            let clinician = self.clinician(facility, specialty, &services);
            facility.clinicians.push(clinician);
        }
    }

    fn working_days(&self) -> Vec<&'static str> {
        const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        (1..=7u8)
            .filter(|d| !self.settings.profile.weekend.contains(d))
            .map(|d| DAYS[d as usize - 1])
            .collect()
    }

    fn clinician(&mut self, facility: &Facility, specialty: Option<usize>, services: &[(usize, String)]) -> Clinician {
        let settings = self.settings;
        let p = &settings.profile;
        let practitioner = self.rng.uuid();
        let role = self.rng.uuid();
        let male = self.rng.chance(if specialty.is_some() { 0.45 } else { 0.3 });
        let given = self.rng.pick(if male {
            &p.given_names.male
        } else {
            &p.given_names.female
        });
        let family = self.rng.pick(&p.family_names);
        let licence = format!("{}-{}", p.code.to_uppercase(), self.rng.from_template("DDDDDDD"));
        let languages: Vec<Value> = p
            .languages
            .iter()
            .enumerate()
            .filter(|(i, _)| *i < 2 || self.rng.chance(0.3))
            .map(|(_, l)| json!({"coding": [{"system": "urn:ietf:bcp:47", "code": l.code, "display": l.display}]}))
            .collect();
        let (qualification, role_code) = match specialty {
            Some(_) => (
                concept(
                    "http://terminology.hl7.org/CodeSystem/v2-0360|2.7",
                    "MD",
                    "Doctor of Medicine",
                ),
                "doctor",
            ),
            None => (
                concept(
                    "http://terminology.hl7.org/CodeSystem/v2-0360|2.7",
                    "RN",
                    "Registered Nurse",
                ),
                "nurse",
            ),
        };
        let national_id = self.next_staff_national_id();
        let mut identifier = vec![json!({"system": p.identifier_systems.practitioner, "value": licence})];
        if let Some(n) = &national_id {
            identifier.push(json!({"use": "official", "system": p.national_id.system, "value": n}));
        }
        self.push(json!({
            "resourceType": "Practitioner",
            "id": practitioner,
            "identifier": identifier,
            "active": true,
            "name": names(given, family, specialty.map(|_| "Dr")),
            "gender": if male { "male" } else { "female" },
            "qualification": [{"code": qualification}],
            "communication": languages,
        }));
        let mut pr = json!({
            "resourceType": "PractitionerRole",
            "id": role,
            "active": true,
            "practitioner": reference("Practitioner", &practitioner),
            "organization": reference("Organization", &facility.id),
            "code": [concept("http://terminology.hl7.org/CodeSystem/practitioner-role", role_code, if role_code == "doctor" { "Doctor" } else { "Nurse" })],
            "location": [reference("Location", &facility.site)],
        });
        if let Some(s) = specialty {
            let sp = &SPECIALTIES[s];
            pr["specialty"] = json!([concept(codes::SNOMED, sp.code, sp.display)]);
            if let Some((_, service)) = services.iter().find(|(x, _)| *x == s) {
                pr["healthcareService"] = json!([reference("HealthcareService", service)]);
            }
        }
        self.push(pr);
        if specialty.is_some() {
            self.schedule(&role, specialty, facility);
        }
        Clinician {
            practitioner,
            specialty,
            national_id,
            name: format!("{} {}", given.lat, family.lat),
        }
    }

    /// A schedule for a doctor's role and its slots over the coming weeks: mornings of working
    /// days, 20-minute consultations; about a third already booked.
    fn schedule(&mut self, role: &str, specialty: Option<usize>, facility: &Facility) {
        let weeks = self.settings.slot_weeks;
        if weeks == 0 {
            return;
        }
        let Some(s) = specialty else { return };
        let sp = &SPECIALTIES[s];
        let start = self.settings.as_of + Duration::days(1);
        let end = start + Duration::weeks(weeks as i64);
        let id = self.rng.uuid();
        let offset = self.offset();
        self.push(json!({
            "resourceType": "Schedule",
            "id": id,
            "active": true,
            "specialty": [concept(codes::SNOMED, sp.code, sp.display)],
            "actor": [reference("PractitionerRole", role), reference("Location", &facility.site)],
            "planningHorizon": {"start": format!("{}T00:00:00{offset}", date(start)), "end": format!("{}T00:00:00{offset}", date(end))},
        }));
        let mut day = start;
        while day < end {
            let weekday = day.weekday().number_from_monday();
            if !self.settings.profile.weekend.contains(&weekday) {
                for k in 0..12 {
                    let begin = PrimitiveDateTime::new(day, Time::from_hms(8, 30, 0).unwrap_or(Time::MIDNIGHT))
                        + Duration::minutes(20 * k);
                    let finish = begin + Duration::minutes(20);
                    let slot = self.rng.uuid();
                    let booked = self.rng.chance(0.3);
                    self.push(json!({
                        "resourceType": "Slot",
                        "id": slot,
                        "specialty": [concept(codes::SNOMED, sp.code, sp.display)],
                        "schedule": reference("Schedule", &id),
                        "status": if booked { "busy" } else { "free" },
                        "start": date_time(begin, offset),
                        "end": date_time(finish, offset),
                    }));
                    if booked {
                        let created = self.now() - Duration::days(self.rng.between(1, 30));
                        let patient = self.rng.below(self.settings.patients.max(1) as u64);
                        let appointment = self.rng.uuid();
                        self.push(json!({
                            "resourceType": "Appointment",
                            "id": appointment,
                            "status": "booked",
                            "specialty": [concept(codes::SNOMED, sp.code, sp.display)],
                            "start": date_time(begin, offset),
                            "end": date_time(finish, offset),
                            "slot": [reference("Slot", &slot)],
                            "created": date_time(created, offset),
                            "participant": [
                                {"actor": reference("Patient", &crate::person::patient_id(self.settings.seed, patient)), "status": "accepted"},
                                {"actor": reference("PractitionerRole", role), "status": "accepted"},
                                {"actor": reference("Location", &facility.site), "status": "accepted"},
                            ],
                        }));
                    }
                }
            }
            day += Duration::days(1);
        }
    }

    /// Wards, rooms and beds of a hospital, and the equipment of each ward.
    fn wards(&mut self, facility: &mut Facility, tier: usize) {
        let beds_range = self.settings.profile.facility_tiers[tier].beds;
        let total = (self.rng.between(beds_range[0] as i64, beds_range[1] as i64) as f64 * bed_scale(self.settings))
            .round() as usize;
        for (code, display, name, min_level, share) in codes::WARDS {
            if facility.level < *min_level {
                continue;
            }
            let ward = self.rng.uuid();
            self.push(json!({
                "resourceType": "Location",
                "id": ward,
                "status": "active",
                "name": name,
                "mode": "instance",
                "type": [concept("http://terminology.hl7.org/CodeSystem/v3-RoleCode", code, display)],
                "physicalType": concept("http://terminology.hl7.org/CodeSystem/location-physical-type", "wa", "Ward"),
                "managingOrganization": reference("Organization", &facility.id),
                "partOf": reference("Location", &facility.site),
            }));
            let beds = ((total as f64 * share).round() as usize).max(2);
            let mut room = String::new();
            for b in 0..beds {
                if b % 4 == 0 {
                    room = self.rng.uuid();
                    self.push(json!({
                        "resourceType": "Location",
                        "id": room,
                        "status": "active",
                        "name": format!("{name} — chambre {}", b / 4 + 1),
                        "mode": "instance",
                        "physicalType": concept("http://terminology.hl7.org/CodeSystem/location-physical-type", "ro", "Room"),
                        "managingOrganization": reference("Organization", &facility.id),
                        "partOf": reference("Location", &ward),
                    }));
                }
                let status = match self.rng.weighted(&[0.74, 0.2, 0.03, 0.03]) {
                    0 => ("O", "Occupied"),
                    1 => ("U", "Unoccupied"),
                    2 => ("K", "Contaminated"),
                    _ => ("C", "Closed"),
                };
                let bed = self.rng.uuid();
                self.push(json!({
                    "resourceType": "Location",
                    "id": bed,
                    "status": "active",
                    "operationalStatus": coding("http://terminology.hl7.org/CodeSystem/v2-0116", status.0, status.1),
                    "name": format!("{name} — lit {}", b + 1),
                    "mode": "instance",
                    "physicalType": concept("http://terminology.hl7.org/CodeSystem/location-physical-type", "bd", "Bed"),
                    "managingOrganization": reference("Organization", &facility.id),
                    "partOf": reference("Location", &room),
                }));
            }
            self.equipment(facility, &ward, name, beds);
            facility.wards.push(ward);
        }
    }

    /// Devices of a ward, each with its maintenance history and sometimes an open work order.
    fn equipment(&mut self, facility: &Facility, ward: &str, ward_name: &str, beds: usize) {
        let p = &self.settings.profile;
        for (kind, display, snomed, wards) in codes::EQUIPMENT {
            if !wards.is_empty() && !wards.contains(&ward_name) {
                continue;
            }
            let count = (beds / 8).clamp(1, 6);
            for _ in 0..count {
                let id = self.rng.uuid();
                let maker = *self.rng.pick(codes::MAKERS);
                let mut kinds = vec![coding(codes::EQUIPMENT_KIND, kind, display)];
                if let Some(s) = snomed {
                    kinds.push(coding(codes::SNOMED, s, display));
                }
                let installed = self.settings.as_of - Duration::days(self.rng.between(200, 3000));
                let inventory = format!("{}-DEV-{}", p.code.to_uppercase(), self.rng.from_template("DDDDDDDD"));
                let serial = self.rng.from_template("LLDDDDDDDD");
                let model = format!("{}-{}", kind.to_uppercase(), self.rng.between(100, 999));
                let out_of_order = self.rng.chance(0.05);
                self.push(json!({
                    "resourceType": "Device",
                    "id": id,
                    "identifier": [{"system": p.identifier_systems.device, "value": inventory}],
                    "status": if out_of_order { "inactive" } else { "active" },
                    "manufacturer": maker,
                    "manufactureDate": date(installed - Duration::days(90)),
                    "serialNumber": serial,
                    "deviceName": [{"name": format!("{maker} {display}"), "type": "user-friendly-name"}],
                    "modelNumber": model,
                    "type": {"coding": kinds, "text": display},
                    "owner": reference("Organization", &facility.id),
                    "location": reference("Location", ward),
                }));
                self.maintenance(facility, &id, installed, out_of_order);
            }
        }
    }

    fn maintenance(&mut self, facility: &Facility, device: &str, installed: time::Date, out_of_order: bool) {
        let mut day = installed + Duration::days(180);
        let history_start = self.settings.as_of - Duration::days(730);
        while day < self.settings.as_of {
            if day >= history_start {
                let (kind, text) = if self.rng.chance(0.25) {
                    ("corrective", "Réparation après panne signalée")
                } else {
                    ("preventive", "Maintenance préventive semestrielle")
                };
                let started = PrimitiveDateTime::new(day, Time::from_hms(9, 0, 0).unwrap_or(Time::MIDNIGHT));
                let finished = started + Duration::hours(self.rng.between(1, 6));
                self.task(facility, device, kind, text, started, Some(finished));
            }
            day += Duration::days(self.rng.between(150, 210));
        }
        if out_of_order {
            let reported = self.now() - Duration::hours(self.rng.between(2, 240));
            self.task(
                facility,
                device,
                "corrective",
                "Panne signalée, en attente d'intervention",
                reported,
                None,
            );
        }
    }

    /// A maintenance work order on a device: completed when it has an end, else requested.
    fn task(
        &mut self,
        facility: &Facility,
        device: &str,
        kind: &str,
        text: &str,
        start: PrimitiveDateTime,
        end: Option<PrimitiveDateTime>,
    ) {
        let offset = self.offset();
        let status = if end.is_some() { "completed" } else { "requested" };
        let id = self.rng.uuid();
        let mut period = json!({"start": date_time(start, offset)});
        if let Some(e) = end {
            period["end"] = json!(date_time(e, offset));
        }
        let display = if kind == "preventive" {
            "Preventive maintenance"
        } else {
            "Corrective maintenance"
        };
        self.push(json!({
            "resourceType": "Task",
            "id": id,
            "status": status,
            "intent": "order",
            "priority": if kind == "corrective" { "urgent" } else { "routine" },
            "code": concept(codes::MAINTENANCE_KIND, kind, display),
            "description": text,
            "focus": reference("Device", device),
            "authoredOn": date_time(start, offset),
            "executionPeriod": period,
            "owner": reference("Organization", &facility.id),
        }));
    }
}

/// Builds the directory: returns it with all its resources.
pub fn build(settings: &Settings) -> (Directory, Vec<Value>) {
    let mut b = Builder {
        settings,
        rng: Rng::new(settings.seed, 0),
        out: Vec::new(),
        staff_count: 0,
    };
    let insurers = b.insurers();
    let p = &settings.profile;
    let region_weights: Vec<f64> = p.regions.iter().map(|r| r.population as f64).collect();
    let mut facilities = Vec::new();
    for (tier, t) in p.facility_tiers.iter().enumerate() {
        let count = facility_count(settings, t.level, t.per_million);
        for n in 0..count {
            let region = if t.level == 1 && n < p.regions.len() {
                n
            } else {
                b.rng.weighted(&region_weights)
            };
            let mut facility = b.facility(tier, n + 1, region);
            b.staff(&mut facility);
            if t.level >= 2 && t.beds[1] > 0 {
                b.wards(&mut facility, tier);
            }
            facilities.push(facility);
        }
    }
    let officials = b.officials();
    (
        Directory {
            facilities,
            insurers,
            officials,
        },
        b.out,
    )
}
