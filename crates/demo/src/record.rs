//! One citizen's record: the Patient, guardian and coverage, then a clinical history over the
//! last years that follows from who they are — immunisations on the national schedule for
//! children, check-ups, acute consultations, chronic conditions with their follow-up visits,
//! measurements that evolve under treatment, laboratory reports, prescriptions, allergies and
//! hospital stays with a discharge summary.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{json, Value};
use time::{Date, Duration, PrimitiveDateTime, Time};

use crate::codes::{self, labs, vitals, Chronic, CHRONIC, SPECIALTIES};
use crate::directory::{Directory, Facility};
use crate::fhir::{coding, concept, date, date_time, names, quantity, reference};
use crate::person::{self, Person};
use crate::rng::Rng;
use crate::Settings;

/// A chronic condition the citizen has, and since when.
struct Diagnosis {
    kind: Chronic,
    onset: Date,
}

/// Measurements of a citizen that evolve over time.
struct Physiology {
    height_cm: f64,
    bmi: f64,
    systolic: f64,
    hba1c: f64,
    cholesterol: f64,
    creatinine: f64,
}

struct Writer<'a> {
    settings: &'a Settings,
    directory: &'a Directory,
    rng: Rng,
    person: Person,
    out: Vec<Value>,
    primary: usize,
    hospital: usize,
    tertiary: Option<usize>,
    diagnoses: Vec<Diagnosis>,
    body: Physiology,
    /// Per chronic condition, the adult average of its age weight.
    risk_norm: [f64; 8],
}

/// A visit: who saw the patient, where and when.
struct Visit {
    encounter: String,
    practitioner: String,
    facility: usize,
    at: PrimitiveDateTime,
}

fn chronic_specialty(kind: Chronic) -> usize {
    let code = match kind {
        Chronic::Diabetes | Chronic::Obesity => "394583002",
        Chronic::Hypertension | Chronic::IschemicHeart => "394579002",
        Chronic::Asthma | Chronic::Copd => "418112009",
        Chronic::Ckd => "394589003",
        Chronic::Depression => "394587001",
    };
    SPECIALTIES
        .iter()
        .position(|s| s.code == code)
        .unwrap_or(codes::GENERAL_PRACTICE)
}

impl Writer<'_> {
    fn dt(&self, t: PrimitiveDateTime) -> String {
        date_time(t, &self.settings.profile.utc_offset)
    }

    fn patient_ref(&self) -> Value {
        reference("Patient", &self.person.id)
    }

    fn age_at(&self, d: Date) -> f64 {
        (d - self.person.birth).whole_days() as f64 / 365.25
    }

    /// A working-hours time on `day`.
    fn clinic_time(&mut self, day: Date) -> PrimitiveDateTime {
        let h = self.rng.between(8, 15) as u8;
        let m = (self.rng.below(4) * 15) as u8;
        PrimitiveDateTime::new(day, Time::from_hms(h, m, 0).unwrap_or(Time::MIDNIGHT))
    }

    fn facility(&self, i: usize) -> &Facility {
        &self.directory.facilities[i]
    }

    /// Writes an Encounter and returns the visit.
    fn encounter(
        &mut self,
        facility: usize,
        specialty: Option<usize>,
        class: (&str, &str),
        kind: (&str, &str),
        at: PrimitiveDateTime,
        end: PrimitiveDateTime,
    ) -> Visit {
        let id = self.rng.uuid();
        let directory = self.directory;
        let f = &directory.facilities[facility];
        let clinician = f.clinician(&mut self.rng, specialty);
        let mut enc = json!({
            "resourceType": "Encounter",
            "id": id,
            "status": "finished",
            "class": coding("http://terminology.hl7.org/CodeSystem/v3-ActCode", class.0, class.1),
            "type": [concept(codes::SNOMED, kind.0, kind.1)],
            "subject": self.patient_ref(),
            "participant": [{"individual": reference("Practitioner", &clinician.practitioner)}],
            "period": {"start": self.dt(at), "end": self.dt(end)},
            "location": [{"location": reference("Location", &f.site)}],
            "serviceProvider": reference("Organization", &f.id),
        });
        if let Some(s) = specialty {
            let sp = &SPECIALTIES[s];
            enc["serviceType"] = concept(codes::SNOMED, sp.code, sp.display);
        }
        self.out.push(enc);
        Visit {
            encounter: id,
            practitioner: clinician.practitioner.clone(),
            facility,
            at,
        }
    }

    fn ambulatory(&mut self, facility: usize, specialty: Option<usize>, kind: (&str, &str), day: Date) -> Visit {
        let at = self.clinic_time(day);
        let end = at + Duration::minutes(self.rng.between(10, 30));
        self.encounter(facility, specialty, ("AMB", "ambulatory"), kind, at, end)
    }

    fn observation(&mut self, visit: &Visit, category: &str, code: (&str, &str), value: Value, lab: bool) -> String {
        let id = self.rng.uuid();
        let (cat_code, cat_display) = if category == "vital-signs" {
            ("vital-signs", "Vital Signs")
        } else {
            ("laboratory", "Laboratory")
        };
        let mut obs = json!({
            "resourceType": "Observation",
            "id": id,
            "status": "final",
            "category": [concept("http://terminology.hl7.org/CodeSystem/observation-category", cat_code, cat_display)],
            "code": concept(codes::LOINC, code.0, code.1),
            "subject": self.patient_ref(),
            "encounter": reference("Encounter", &visit.encounter),
            "effectiveDateTime": self.dt(visit.at),
            "performer": [reference("Practitioner", &visit.practitioner)],
        });
        if lab {
            let issued = visit.at + Duration::hours(self.rng.between(4, 48));
            obs["issued"] = json!(self.dt(issued));
        }
        match value {
            Value::Array(components) => obs["component"] = Value::Array(components),
            v => obs["valueQuantity"] = v,
        }
        self.out.push(obs);
        id
    }

    fn vital(&mut self, visit: &Visit, code: (&str, &str, &str), value: f64, decimals: u32) {
        self.observation(
            visit,
            "vital-signs",
            (code.0, code.1),
            quantity(value, code.2, decimals),
            false,
        );
    }

    /// A blood pressure reading around the systolic `mean`.
    fn blood_pressure(&mut self, visit: &Visit, mean: f64) {
        let systolic = (mean + self.rng.normal(0.0, 6.0)).clamp(85.0, 220.0);
        let diastolic = (systolic * 0.6 + self.rng.normal(6.0, 4.0)).clamp(50.0, 130.0);
        let components = json!([
            {"code": concept(codes::LOINC, vitals::SYSTOLIC.0, vitals::SYSTOLIC.1), "valueQuantity": quantity(systolic, "mm[Hg]", 0)},
            {"code": concept(codes::LOINC, vitals::DIASTOLIC.0, vitals::DIASTOLIC.1), "valueQuantity": quantity(diastolic, "mm[Hg]", 0)},
        ]);
        self.observation(visit, "vital-signs", vitals::BLOOD_PRESSURE, components, false);
    }

    fn height_at(&self, d: Date) -> f64 {
        let a = self.age_at(d);
        let adult = self.body.height_cm;
        let child = if a < 1.0 {
            50.0 + 25.0 * a
        } else if a < 2.0 {
            75.0 + 12.0 * (a - 1.0)
        } else {
            87.0 + 6.3 * (a - 2.0)
        };
        child.min(adult)
    }

    /// Weight, height and, for adults, BMI at a visit.
    fn growth(&mut self, visit: &Visit) {
        let d = visit.at.date();
        let h = self.height_at(d);
        let child = self.age_at(d) < 18.0;
        let bmi = if child {
            15.5 + self.rng.normal(0.0, 1.0)
        } else {
            self.body.bmi + self.rng.normal(0.0, 0.6)
        };
        let w = bmi * (h / 100.0) * (h / 100.0);
        self.vital(visit, vitals::WEIGHT, w, 1);
        self.vital(visit, vitals::HEIGHT, h, 0);
        if !child {
            self.vital(visit, vitals::BMI, bmi, 1);
        }
    }

    fn heart_rate(&mut self, visit: &Visit) {
        let base = if self.age_at(visit.at.date()) < 5.0 {
            110.0
        } else {
            74.0
        };
        let v = self.rng.normal(base, 8.0);
        self.vital(visit, vitals::HEART_RATE, v, 0);
    }

    fn temperature(&mut self, visit: &Visit, fever: bool) {
        let v = if fever {
            self.rng.normal(38.6, 0.4)
        } else {
            self.rng.normal(36.8, 0.2)
        };
        self.vital(visit, vitals::TEMPERATURE, v, 1);
    }

    /// A laboratory report with its results.
    fn lab_report(&mut self, visit: &Visit, report: (&str, &str), results: &[((&str, &str, &str), f64, u32)]) {
        let mut ids = Vec::new();
        for (code, value, decimals) in results {
            let q = quantity(*value, code.2, *decimals);
            ids.push(self.observation(visit, "laboratory", (code.0, code.1), q, true));
        }
        let id = self.rng.uuid();
        let issued = visit.at + Duration::hours(self.rng.between(6, 48));
        self.out.push(json!({
            "resourceType": "DiagnosticReport",
            "id": id,
            "status": "final",
            "category": [concept("http://terminology.hl7.org/CodeSystem/v2-0074", "LAB", "Laboratory")],
            "code": concept(codes::LOINC, report.0, report.1),
            "subject": self.patient_ref(),
            "encounter": reference("Encounter", &visit.encounter),
            "effectiveDateTime": self.dt(visit.at),
            "issued": self.dt(issued),
            "performer": [reference("Organization", &self.facility(visit.facility).id)],
            "result": ids.iter().map(|i| reference("Observation", i)).collect::<Vec<_>>(),
        }));
    }

    fn condition(
        &mut self,
        visit: Option<&Visit>,
        icd: (&str, &str),
        onset: Date,
        abated: Option<Date>,
        category: &str,
    ) -> String {
        let id = self.rng.uuid();
        let (status, display) = if abated.is_some() {
            ("resolved", "Resolved")
        } else {
            ("active", "Active")
        };
        let cat_display = if category == "problem-list-item" {
            "Problem List Item"
        } else {
            "Encounter Diagnosis"
        };
        let mut c = json!({
            "resourceType": "Condition",
            "id": id,
            "clinicalStatus": concept("http://terminology.hl7.org/CodeSystem/condition-clinical", status, display),
            "verificationStatus": concept("http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed", "Confirmed"),
            "category": [concept("http://terminology.hl7.org/CodeSystem/condition-category", category, cat_display)],
            "code": concept(codes::ICD10, icd.0, icd.1),
            "subject": self.patient_ref(),
            "onsetDateTime": date(onset),
            "recordedDate": date(onset.max(visit.map(|v| v.at.date()).unwrap_or(onset))),
        });
        if let Some(v) = visit {
            c["encounter"] = reference("Encounter", &v.encounter);
            c["recorder"] = reference("Practitioner", &v.practitioner);
        }
        if let Some(a) = abated {
            c["abatementDateTime"] = json!(date(a));
        }
        self.out.push(c);
        id
    }

    fn prescription(&mut self, visit: &Visit, drug: (&str, &str, &str), reason: Option<&str>, active: bool) {
        let id = self.rng.uuid();
        let mut m = json!({
            "resourceType": "MedicationRequest",
            "id": id,
            "status": if active { "active" } else { "completed" },
            "intent": "order",
            "medicationCodeableConcept": concept(codes::ATC, drug.0, drug.1),
            "subject": self.patient_ref(),
            "encounter": reference("Encounter", &visit.encounter),
            "authoredOn": self.dt(visit.at),
            "requester": reference("Practitioner", &visit.practitioner),
            "dosageInstruction": [{"text": drug.2}],
        });
        if let Some(r) = reason {
            m["reasonReference"] = json!([reference("Condition", r)]);
        }
        self.out.push(m);
    }

    fn patient(&mut self, guardian: Option<&Person>) {
        let p = &self.settings.profile;
        let person = &self.person;
        let primary = &self.directory.facilities[self.primary];
        let mut identifiers = Vec::new();
        if let Some(n) = &person.national_id {
            identifiers.push(json!({
                "use": "official",
                "type": concept("http://terminology.hl7.org/CodeSystem/v2-0203", "NI", "National unique individual identifier"),
                "system": p.national_id.system,
                "value": n,
            }));
        }
        identifiers.push(json!({
            "use": "usual",
            "type": concept("http://terminology.hl7.org/CodeSystem/v2-0203", "MR", "Medical record number"),
            "system": p.identifier_systems.facility_record,
            "value": format!("{}-{}", &primary.id[..8], &person.id[..8]),
            "assigner": reference("Organization", &primary.id),
        }));
        let region = &p.regions[person.region];
        let city = person
            .province
            .map(|i| &region.provinces[i].name)
            .unwrap_or(&region.name);
        let mut address = json!({
            "use": "home",
            "type": "physical",
            "line": [format!("{} {}", person.house, person.street.lat)],
            "city": city.fr,
            "state": region.name.fr,
            "country": p.code.to_uppercase(),
        });
        if let Some(i) = person.province {
            address["district"] = json!(region.provinces[i].name.fr);
        }
        let arabic_address = json!({
            "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/language", "valueCode": "ar"}],
            "use": "home",
            "line": [format!("{} {}", person.house, person.street.ar)],
            "city": city.ar,
            "state": region.name.ar,
            "country": p.code.to_uppercase(),
        });
        let language = &p.languages[if self.rng.chance(0.8) {
            0
        } else {
            self.rng.below(p.languages.len() as u64) as usize
        }];
        let mut patient = json!({
            "resourceType": "Patient",
            "id": person.id,
            "identifier": identifiers,
            "active": true,
            "name": names(&person.given, &person.family, None),
            "gender": if person.male { "male" } else { "female" },
            "birthDate": date(person.birth),
            "address": [address, arabic_address],
            "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": language.code, "display": language.display}]}, "preferred": true}],
            "generalPractitioner": [reference("Organization", &primary.id)],
        });
        let phone = guardian
            .map(|g| g.phone.clone())
            .unwrap_or_else(|| person.phone.clone());
        if person.age >= 12 || guardian.is_none() {
            patient["telecom"] = json!([{"system": "phone", "value": phone, "use": "mobile"}]);
        }
        self.out.push(patient);
        if let Some(g) = guardian {
            let id = self.rng.uuid();
            let (rel, rel_display) = if g.male { ("FTH", "father") } else { ("MTH", "mother") };
            let mut identifier = Vec::new();
            if let Some(n) = &g.national_id {
                identifier.push(json!({"use": "official", "system": p.national_id.system, "value": n}));
            }
            self.out.push(json!({
                "resourceType": "RelatedPerson",
                "id": id,
                "identifier": identifier,
                "active": true,
                "patient": self.patient_ref(),
                "relationship": [
                    concept("http://terminology.hl7.org/CodeSystem/v3-RoleCode", rel, rel_display),
                    concept("http://terminology.hl7.org/CodeSystem/v3-RoleCode", "GUARD", "guardian"),
                ],
                "name": names(&g.given, &g.family, None),
                "telecom": [{"system": "phone", "value": g.phone, "use": "mobile"}],
                "gender": if g.male { "male" } else { "female" },
                "birthDate": date(g.birth),
            }));
        }
    }

    fn coverage(&mut self, index: u64, guardian: Option<&Person>) {
        let p = &self.settings.profile;
        let shares: Vec<f64> = p.insurers.iter().map(|i| i.share).collect();
        let insured: f64 = shares.iter().sum();
        if p.insurers.is_empty() || !self.rng.chance(insured.min(1.0)) {
            return;
        }
        let which = self.rng.weighted(&shares);
        let insurer = &p.insurers[which];
        let member = person::unique_number(&insurer.member_template, index, self.settings.seed, 2 + which as u64);
        let id = self.rng.uuid();
        let start = self.settings.as_of - Duration::days(self.rng.between(30, 3650));
        let (rel, rel_display) = if guardian.is_some() {
            ("child", "Child")
        } else {
            ("self", "Self")
        };
        let mut cov = json!({
            "resourceType": "Coverage",
            "id": id,
            "identifier": [{"system": insurer.member_system, "value": member}],
            "status": "active",
            "type": {"text": insurer.scheme},
            "subscriberId": member,
            "beneficiary": self.patient_ref(),
            "relationship": concept("http://terminology.hl7.org/CodeSystem/subscriber-relationship", rel, rel_display),
            "period": {"start": date(start.max(self.person.birth))},
            "payor": [reference("Organization", &self.directory.insurers[which])],
        });
        if let Some(card) = &p.insurance_card {
            cov["class"] = json!([{"type": concept("http://terminology.hl7.org/CodeSystem/coverage-class", "plan", "Plan"), "value": card, "name": card}]);
        }
        self.out.push(cov);
    }

    fn immunisations(&mut self, from: Date) {
        let settings = self.settings;
        let schedule = &settings.profile.immunisation_schedule;
        let mut ages: Vec<u32> = schedule.iter().map(|d| d.age_months).collect();
        ages.sort_unstable();
        ages.dedup();
        for months in ages {
            let due = self.person.birth + Duration::days(months as i64 * 30 + months as i64 / 2);
            let day = due + Duration::days(self.rng.between(0, 10));
            if day < from || day >= self.settings.as_of || self.rng.chance(0.03) {
                continue;
            }
            let visit = self.ambulatory(self.primary, None, ("410620009", "Well child visit (procedure)"), day);
            self.growth(&visit);
            for dose in schedule.iter().filter(|d| d.age_months == months) {
                let number = schedule
                    .iter()
                    .filter(|d| d.vaccine == dose.vaccine && d.age_months <= months)
                    .count();
                let id = self.rng.uuid();
                let lot = self.rng.from_template("LLDDDDD");
                let site = self.facility(visit.facility).site.clone();
                self.out.push(json!({
                    "resourceType": "Immunization",
                    "id": id,
                    "status": "completed",
                    "vaccineCode": {"coding": [coding(codes::CVX, &dose.cvx, &dose.display)], "text": dose.vaccine},
                    "patient": self.patient_ref(),
                    "encounter": reference("Encounter", &visit.encounter),
                    "occurrenceDateTime": self.dt(visit.at),
                    "primarySource": true,
                    "location": reference("Location", &site),
                    "lotNumber": lot,
                    "performer": [{"actor": reference("Practitioner", &visit.practitioner)}],
                    "protocolApplied": [{"series": dose.vaccine, "doseNumberPositiveInt": number}],
                }));
            }
        }
    }

    fn checkups(&mut self, from: Date) {
        let mut year_start = from;
        while year_start < self.settings.as_of {
            let age = self.age_at(year_start);
            let p = if age < 2.0 {
                0.0
            } else if age < 18.0 {
                0.5
            } else {
                0.45
            };
            if self.rng.chance(p) {
                let day = year_start + Duration::days(self.rng.between(0, 364));
                if day < self.settings.as_of {
                    let kind = if age < 18.0 {
                        ("410620009", "Well child visit (procedure)")
                    } else {
                        ("162673000", "General examination of patient (procedure)")
                    };
                    let visit = self.ambulatory(self.primary, Some(codes::GENERAL_PRACTICE), kind, day);
                    self.growth(&visit);
                    self.heart_rate(&visit);
                    if age >= 18.0 {
                        self.blood_pressure(&visit, self.body.systolic);
                    }
                    if age >= 40.0 && self.rng.chance(0.3) {
                        let glucose = self.rng.normal(92.0, 8.0);
                        self.lab_report(
                            &visit,
                            (labs::GLUCOSE.0, labs::GLUCOSE.1),
                            &[(labs::GLUCOSE, glucose, 0)],
                        );
                    }
                }
            }
            year_start += Duration::days(365);
        }
    }

    fn acute_visits(&mut self, from: Date) {
        let mut month = from;
        while month < self.settings.as_of {
            let age = self.age_at(month);
            let rate = if age < 5.0 {
                2.2
            } else if age < 18.0 {
                1.3
            } else if age < 65.0 {
                1.0
            } else {
                1.6
            };
            if self.rng.chance(rate / 12.0) {
                let day = month + Duration::days(self.rng.between(0, 29));
                if day < self.settings.as_of {
                    self.acute_visit(day, age);
                }
            }
            month += Duration::days(30);
        }
    }

    fn acute_visit(&mut self, day: Date, age: f64) {
        let &(code, display, infection) = self.rng.pick(codes::ACUTE);
        if code == "H66.9" && age > 15.0 {
            return;
        }
        let visit = self.ambulatory(
            self.primary,
            Some(codes::GENERAL_PRACTICE),
            ("185345009", "Encounter for symptom"),
            day,
        );
        let fever = infection && self.rng.chance(0.6);
        self.temperature(&visit, fever);
        let healed = day + Duration::days(self.rng.between(5, 14));
        let condition = self.condition(Some(&visit), (code, display), day, Some(healed), "encounter-diagnosis");
        if infection && self.rng.chance(0.6) {
            self.prescription(&visit, codes::ANTIBIOTIC, Some(&condition), false);
        } else if self.rng.chance(0.5) {
            self.prescription(&visit, codes::ANALGESIC, Some(&condition), false);
        }
    }

    fn diagnose(&mut self) {
        let p = &self.settings.profile.prevalence;
        let norm = self.risk_norm;
        for kind in CHRONIC {
            let base = match kind {
                Chronic::Diabetes => p.diabetes,
                Chronic::Hypertension => p.hypertension,
                Chronic::Asthma => p.asthma,
                Chronic::Ckd => p.ckd,
                Chronic::IschemicHeart => p.ischemic_heart_disease,
                Chronic::Copd => p.copd,
                Chronic::Depression => p.depression,
                Chronic::Obesity => p.obesity,
            };
            let age = self.person.age;
            let chance = if age < 18 {
                if kind.in_children() && age >= 3 {
                    base * 0.8
                } else {
                    0.0
                }
            } else {
                base * kind.age_weight(age) / norm[kind as usize]
            };
            if !self.rng.chance(chance.min(0.95)) {
                continue;
            }
            let earliest = if age < 18 { 3.0 } else { 18.0_f64.max(age as f64 - 25.0) };
            let onset_age = earliest + self.rng.unit() * (age as f64 - earliest).max(0.0);
            let onset = self.person.birth + Duration::days((onset_age * 365.25) as i64);
            let onset = onset.min(self.settings.as_of - Duration::days(1));
            self.diagnoses.push(Diagnosis { kind, onset });
        }
        let has = |k| self.diagnoses.iter().any(|d| d.kind == k);
        if has(Chronic::Obesity) {
            self.body.bmi = self.rng.normal(33.0, 2.5).max(30.0);
        }
        if has(Chronic::Hypertension) {
            self.body.systolic = self.rng.normal(152.0, 8.0);
        }
        if has(Chronic::Diabetes) {
            self.body.hba1c = self.rng.normal(8.4, 0.9).clamp(6.6, 12.5);
        }
        if has(Chronic::Ckd) {
            self.body.creatinine = self.rng.normal(1.9, 0.3);
        }
    }

    /// Diagnosis visit, then follow-ups every few months with the measurements the condition
    /// calls for, and a yearly renewal of the prescription.
    fn chronic_care(&mut self, from: Date) {
        for i in 0..self.diagnoses.len() {
            let kind = self.diagnoses[i].kind;
            let onset = self.diagnoses[i].onset;
            let specialty = chronic_specialty(kind);
            let first_day = onset.max(from);
            let diagnosed_here = onset >= from;
            let first = self.ambulatory(
                self.primary,
                Some(codes::GENERAL_PRACTICE),
                ("390906007", "Follow-up encounter"),
                first_day,
            );
            let condition = self.condition(
                diagnosed_here.then_some(&first),
                kind.icd10(),
                onset,
                None,
                "problem-list-item",
            );
            self.measure(kind, &first, 0.0);
            let interval = match kind {
                Chronic::Diabetes => (80, 130),
                Chronic::Hypertension | Chronic::Ckd => (110, 190),
                _ => (170, 300),
            };
            let mut day = first_day + Duration::days(self.rng.between(interval.0, interval.1));
            let mut last_prescribed = first_day;
            if let Some(drug) = kind.treatment() {
                let active = first_day + Duration::days(365) > self.settings.as_of;
                self.prescription(&first, drug, Some(&condition), active);
            }
            while day < self.settings.as_of {
                let years = (day - first_day).whole_days() as f64 / 365.25;
                let specialist = self.rng.chance(0.2);
                let (facility, sp) = if specialist {
                    let f = self
                        .tertiary
                        .filter(|_| SPECIALTIES[specialty].min_level >= 3)
                        .unwrap_or(self.hospital);
                    (f, Some(specialty))
                } else {
                    (self.primary, Some(codes::GENERAL_PRACTICE))
                };
                let visit = self.ambulatory(facility, sp, ("390906007", "Follow-up encounter"), day);
                self.measure(kind, &visit, years);
                if let Some(drug) = kind.treatment() {
                    if (day - last_prescribed).whole_days() >= 330 {
                        let active = day + Duration::days(365) > self.settings.as_of;
                        self.prescription(&visit, drug, Some(&condition), active);
                        last_prescribed = day;
                    }
                }
                day += Duration::days(self.rng.between(interval.0, interval.1));
            }
        }
    }

    /// The measurements of a follow-up visit, `years` after treatment began.
    fn measure(&mut self, kind: Chronic, visit: &Visit, years: f64) {
        let improvement = (years * 0.5).min(1.0);
        match kind {
            Chronic::Hypertension | Chronic::IschemicHeart => {
                // Treatment brings a high pressure down by up to 14 mmHg.
                let base = self.body.systolic;
                let treated = if base > 135.0 { base - 14.0 * improvement } else { base };
                self.blood_pressure(visit, treated);
                self.heart_rate(visit);
                if kind == Chronic::IschemicHeart && self.rng.chance(0.4) {
                    self.lipids(visit);
                }
            }
            Chronic::Diabetes => {
                let hba1c = (self.body.hba1c - 1.1 * improvement + self.rng.normal(0.0, 0.35)).clamp(5.6, 13.5);
                let glucose = 28.7 * hba1c - 46.7 + self.rng.normal(0.0, 12.0);
                self.lab_report(
                    visit,
                    labs::HBA1C_REPORT,
                    &[(labs::HBA1C, hba1c, 1), (labs::GLUCOSE, glucose, 0)],
                );
                self.growth(visit);
                if self.rng.chance(0.35) {
                    self.lipids(visit);
                }
                if self.rng.chance(0.3) {
                    self.renal(visit);
                }
            }
            Chronic::Ckd => {
                self.blood_pressure(visit, self.body.systolic);
                self.renal(visit);
            }
            Chronic::Obesity => self.growth(visit),
            Chronic::Asthma | Chronic::Copd => {
                self.heart_rate(visit);
                self.temperature(visit, false);
            }
            Chronic::Depression => self.heart_rate(visit),
        }
    }

    fn lipids(&mut self, visit: &Visit) {
        let total = (self.body.cholesterol + self.rng.normal(0.0, 12.0)).clamp(110.0, 330.0);
        let tg = self.rng.normal(140.0, 40.0).clamp(45.0, 420.0);
        let hdl = self
            .rng
            .normal(if self.person.male { 44.0 } else { 54.0 }, 8.0)
            .clamp(25.0, 95.0);
        let ldl = (total - hdl - tg / 5.0).max(30.0);
        self.lab_report(
            visit,
            labs::LIPID_PANEL,
            &[
                (labs::CHOLESTEROL, total, 0),
                (labs::TRIGLYCERIDES, tg, 0),
                (labs::LDL, ldl, 0),
                (labs::HDL, hdl, 0),
            ],
        );
    }

    fn renal(&mut self, visit: &Visit) {
        let creatinine = (self.body.creatinine + self.rng.normal(0.0, 0.08)).clamp(0.4, 6.0);
        let age = self.age_at(visit.at.date()).max(18.0);
        let sex = if self.person.male { 1.0 } else { 0.742 };
        let egfr = (186.0 * creatinine.powf(-1.154) * age.powf(-0.203) * sex).clamp(5.0, 150.0);
        self.lab_report(
            visit,
            labs::RENAL_PANEL,
            &[(labs::CREATININE, creatinine, 2), (labs::EGFR, egfr, 0)],
        );
    }

    fn hospital_stays(&mut self, from: Date) {
        let mut year_start = from;
        while year_start < self.settings.as_of {
            let age = self.age_at(year_start);
            let rate = if age < 5.0 {
                0.04
            } else if age < 45.0 {
                0.02
            } else if age < 65.0 {
                0.04
            } else {
                0.1
            };
            let delivery = !self.person.male && (20.0..42.0).contains(&age) && self.rng.chance(0.08);
            if delivery || self.rng.chance(rate) {
                let day = year_start + Duration::days(self.rng.between(0, 364));
                if day + Duration::days(10) < self.settings.as_of {
                    self.stay(day, delivery, age);
                }
            }
            year_start += Duration::days(365);
        }
    }

    fn stay(&mut self, day: Date, delivery: bool, age: f64) {
        let candidates: Vec<&(&str, &str, usize)> = codes::ADMISSIONS
            .iter()
            .filter(|a| a.0 != "O80" && (a.0 != "S72.0" || age > 60.0) && (a.0 != "I21.9" || age > 35.0))
            .collect();
        let &(code, display, specialty) = if delivery {
            codes::ADMISSIONS
                .iter()
                .find(|a| a.0 == "O80")
                .unwrap_or(&codes::ADMISSIONS[0])
        } else {
            *self.rng.pick(&candidates)
        };
        let hours = self.rng.between(0, 23) as u8;
        let at = PrimitiveDateTime::new(day, Time::from_hms(hours, 0, 0).unwrap_or(Time::MIDNIGHT));
        let end = at + Duration::days(self.rng.between(1, 8)) + Duration::hours(self.rng.between(0, 6));
        let encounter_at = self.out.len();
        let visit = self.encounter(
            self.hospital,
            Some(specialty),
            ("IMP", "inpatient encounter"),
            ("32485007", "Hospital admission (procedure)"),
            at,
            end,
        );
        let wards = self.facility(self.hospital).wards.clone();
        let condition = self.condition(
            Some(&visit),
            (code, display),
            day,
            Some(end.date()),
            "encounter-diagnosis",
        );
        let encounter = &mut self.out[encounter_at];
        encounter["diagnosis"] = json!([{"condition": reference("Condition", &condition), "rank": 1}]);
        if let (false, Some(locations)) = (wards.is_empty(), encounter["location"].as_array_mut()) {
            let ward = &wards[(day.to_julian_day() as usize) % wards.len()];
            locations.push(json!({"location": reference("Location", ward), "status": "completed"}));
        }
        self.blood_pressure(&visit, self.body.systolic);
        self.heart_rate(&visit);
        self.temperature(&visit, code == "J18.9");
        let text = format!(
            "Compte rendu d'hospitalisation\nMotif : {display} ({code}).\nEntrée le {}, sortie le {}.\nÉvolution favorable. Suivi par le médecin traitant.\n",
            date(at.date()),
            date(end.date()),
        );
        let id = self.rng.uuid();
        let facility_id = self.facility(self.hospital).id.clone();
        self.out.push(json!({
            "resourceType": "DocumentReference",
            "id": id,
            "status": "current",
            "type": concept(codes::LOINC, "18842-5", "Discharge summary"),
            "subject": self.patient_ref(),
            "date": self.dt(end),
            "author": [reference("Practitioner", &visit.practitioner)],
            "custodian": reference("Organization", &facility_id),
            "content": [{"attachment": {"contentType": "text/plain; charset=utf-8", "language": "fr", "data": BASE64.encode(text.as_bytes()), "title": "Compte rendu d'hospitalisation", "creation": self.dt(end)}}],
            "context": {"encounter": [reference("Encounter", &visit.encounter)], "period": {"start": self.dt(at), "end": self.dt(end)}},
        }));
    }

    fn allergy(&mut self, from: Date) {
        if !self.rng.chance(0.1) {
            return;
        }
        let &(code, display, category) = self.rng.pick(codes::ALLERGIES);
        let id = self.rng.uuid();
        let recorded = from
            + Duration::days(
                self.rng
                    .below(((self.settings.as_of - from).whole_days().max(1)) as u64) as i64,
            );
        let severe = category == "medication" || self.rng.chance(0.15);
        let reaction = if severe {
            ("39579001", "Anaphylaxis")
        } else {
            ("271807003", "Eruption of skin")
        };
        self.out.push(json!({
            "resourceType": "AllergyIntolerance",
            "id": id,
            "clinicalStatus": concept("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active", "Active"),
            "verificationStatus": concept("http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "confirmed", "Confirmed"),
            "type": "allergy",
            "category": [category],
            "criticality": if severe { "high" } else { "low" },
            "code": concept(codes::SNOMED, code, display),
            "patient": self.patient_ref(),
            "recordedDate": date(recorded),
            "reaction": [{"manifestation": [concept(codes::SNOMED, reaction.0, reaction.1)], "severity": if severe { "severe" } else { "mild" }}],
        }));
    }
}

/// For each chronic condition, the average of its age weight over the adult population, so
/// that age-dependent risks still give the profile's prevalence over all adults.
pub fn adult_age_norm(settings: &Settings) -> [f64; 8] {
    let mut norm = [0.0; 8];
    let bands: Vec<_> = settings.profile.age_structure.iter().filter(|b| b.to >= 18).collect();
    for kind in CHRONIC {
        let mut weighted = 0.0;
        let mut total = 0.0;
        for b in &bands {
            for age in b.from.max(18)..=b.to {
                let share = b.share / (b.to - b.from + 1) as f64;
                weighted += share * kind.age_weight(age);
                total += share;
            }
        }
        norm[kind as usize] = if total > 0.0 { weighted / total } else { 1.0 };
    }
    norm
}

/// All resources of citizen `index`.
/// `risk_norm` is [`adult_age_norm`] of the settings, computed once per population.
pub fn patient_record(settings: &Settings, directory: &Directory, risk_norm: [f64; 8], index: u64) -> Vec<Value> {
    let (mut me, mut rng) = person::person(settings, index);
    let guardian = if me.age < 18 {
        person::guardian(settings, index).map(|(_, g)| g)
    } else {
        None
    };
    if let Some(g) = &guardian {
        me.family = g.family.clone();
        me.region = g.region;
        me.province = g.province;
        me.street = g.street.clone();
        me.house = g.house;
    }
    let mut choose = |level: u8| {
        let choices = directory.near(level, me.region);
        (!choices.is_empty()).then(|| *rng.pick(&choices))
    };
    let primary = choose(1).unwrap_or(0);
    let hospital = choose(2).unwrap_or(primary);
    let tertiary = choose(3);
    let height = if me.male {
        rng.normal(172.0, 7.0)
    } else {
        rng.normal(160.0, 6.0)
    };
    let body = Physiology {
        height_cm: height.clamp(140.0, 200.0),
        bmi: rng.normal(25.5, 2.8).clamp(18.5, 29.9),
        systolic: rng.normal(118.0, 9.0),
        hba1c: rng.normal(5.4, 0.3),
        cholesterol: rng.normal(190.0, 28.0),
        creatinine: if me.male {
            rng.normal(0.95, 0.12)
        } else {
            rng.normal(0.75, 0.1)
        },
    };
    let history_from = (settings.as_of - Duration::days(365 * settings.history_years as i64)).max(me.birth);
    let mut w = Writer {
        settings,
        directory,
        rng,
        person: me,
        out: Vec::with_capacity(128),
        primary,
        hospital,
        tertiary,
        diagnoses: Vec::new(),
        body,
        risk_norm,
    };
    w.patient(guardian.as_ref());
    w.coverage(index, guardian.as_ref());
    w.diagnose();
    w.allergy(history_from);
    w.immunisations(history_from);
    w.checkups(history_from);
    w.acute_visits(history_from);
    w.chronic_care(history_from);
    w.hospital_stays(history_from);
    w.out
}
