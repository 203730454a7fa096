//! An access to a patient's record told in one plain sentence, in the citizen's language
//! (English, French or Arabic): when, who (by name, with their role), from which facility,
//! what they did, why, under which grant, and whether it was refused. Names are looked up
//! by the server (the citizen does not read the directory); a name that cannot be found
//! stays a reference.

use std::collections::HashMap;

use serde_json::Value;
use sijill_store::{Current, SealedAudit};

use crate::engine::Engine;
use crate::resource_json::parsed;

/// The languages the sentences are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// English.
    En,
    /// French.
    Fr,
    /// Arabic (written right to left).
    Ar,
}

impl Language {
    /// Parses `en`, `fr` or `ar` (a region such as `fr-MA` is accepted); None otherwise.
    pub fn parse(code: &str) -> Option<Language> {
        match code.split(['-', '_']).next()?.to_ascii_lowercase().as_str() {
            "en" => Some(Language::En),
            "fr" => Some(Language::Fr),
            "ar" => Some(Language::Ar),
            _ => None,
        }
    }

    /// The BCP 47 code.
    pub fn code(self) -> &'static str {
        match self {
            Language::En => "en",
            Language::Fr => "fr",
            Language::Ar => "ar",
        }
    }
}

/// Names of the people and facilities met while telling one page of accesses.
pub struct Names<'e> {
    engine: &'e Engine,
    known: HashMap<String, Option<String>>,
}

impl<'e> Names<'e> {
    /// An empty cache over the engine's store.
    pub fn new(engine: &'e Engine) -> Names<'e> {
        Names {
            engine,
            known: HashMap::new(),
        }
    }

    /// The name of `Practitioner/…`, `Patient/…`, `RelatedPerson/…` or `Organization/…`.
    fn of(&mut self, reference: &str) -> Option<String> {
        if let Some(known) = self.known.get(reference) {
            return known.clone();
        }
        let name = reference.split_once('/').and_then(|(t, id)| {
            if !matches!(t, "Practitioner" | "Patient" | "RelatedPerson" | "Organization") {
                return None;
            }
            match self.engine.store.read(t, id).ok()? {
                Current::Found(s) => name_of(&parsed(&s)).map(|n| without_bidi_controls(&n)),
                _ => None,
            }
        });
        self.known.insert(reference.to_string(), name.clone());
        name
    }
}

/// A resource's name: an Organization's `name`, a person's given names and family name.
pub fn name_of(resource: &Value) -> Option<String> {
    if let Some(n) = resource["name"].as_str() {
        return Some(n.to_string());
    }
    let name = &resource["name"][0];
    if let Some(text) = name["text"].as_str() {
        return Some(text.to_string());
    }
    let mut words: Vec<&str> = name["given"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    words.extend(name["family"].as_str());
    (!words.is_empty()).then(|| words.join(" "))
}

/// A name without the characters that reorder text around it (a name with U+202E could
/// make the rest of the sentence read backwards).
fn without_bidi_controls(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'))
        .collect()
}

/// A value set inside Arabic text in its own direction: first-strong isolated (names), or
/// left-to-right isolated (dates and times).
fn isolated(value: &str, left_to_right: bool) -> String {
    let open = if left_to_right { '\u{2066}' } else { '\u{2068}' };
    format!("{open}{value}\u{2069}")
}

/// The role of an agent, in words.
fn role(code: &str, lang: Language) -> &'static str {
    let (en, fr, ar) = match code {
        "practitioner" => ("health professional", "professionnel de santé", "مهني صحة"),
        "citizen" => ("citizen", "citoyen", "مواطن"),
        "facility-admin" => (
            "facility administrator",
            "administrateur d'établissement",
            "مسؤول المؤسسة",
        ),
        "insurer" => ("insurer", "assureur", "مؤمِّن"),
        "planner" => ("planner", "planificateur", "مخطِّط"),
        "auditor" => ("auditor", "auditeur", "مدقِّق"),
        "admin" => (
            "platform administrator",
            "administrateur de la plateforme",
            "مسؤول المنصة",
        ),
        _ => ("user", "utilisateur", "مستخدم"),
    };
    pick(lang, en, fr, ar)
}

fn pick(lang: Language, en: &'static str, fr: &'static str, ar: &'static str) -> &'static str {
    match lang {
        Language::En => en,
        Language::Fr => fr,
        Language::Ar => ar,
    }
}

/// What was done, with how many items.
fn deed(action: Option<&str>, operation: bool, items: usize, lang: Language) -> String {
    let n = items;
    let plural = if n == 1 { "" } else { "s" };
    // French counts 0 and 1 in the singular.
    let pluriel = if n > 1 { "s" } else { "" };
    match lang {
        Language::En => match (operation, action) {
            (true, _) => "used an operation on your record".into(),
            (_, Some("C")) => format!("added {n} item{plural} to your record"),
            (_, Some("U")) => format!("changed {n} item{plural} of your record"),
            (_, Some("D")) => format!("deleted {n} item{plural} from your record"),
            _ if n > 0 => format!("looked at {n} item{plural} of your record"),
            _ => "looked at your record".into(),
        },
        Language::Fr => match (operation, action) {
            (true, _) => "a effectué une opération sur votre dossier".into(),
            (_, Some("C")) => format!("a ajouté {n} élément{pluriel} à votre dossier"),
            (_, Some("U")) => format!("a modifié {n} élément{pluriel} de votre dossier"),
            (_, Some("D")) => format!("a supprimé {n} élément{pluriel} de votre dossier"),
            _ if n > 0 => format!("a consulté {n} élément{pluriel} de votre dossier"),
            _ => "a consulté votre dossier".into(),
        },
        Language::Ar => {
            let verb = match (operation, action) {
                (true, _) => "أجرى عملية على ملفك",
                (_, Some("C")) => "أضاف إلى ملفك",
                (_, Some("U")) => "عدّل ملفك",
                (_, Some("D")) => "حذف من ملفك",
                _ => "اطّلع على ملفك",
            };
            if n > 0 && !operation {
                format!("{verb} (عدد العناصر: {n})")
            } else {
                verb.into()
            }
        }
    }
}

/// The XHTML narrative of one access (its `text.div`), in `lang`.
pub fn narrative(row: &SealedAudit, lang: Language, names: &mut Names<'_>) -> String {
    let words = sentence(row, lang, names);
    let dir = if lang == Language::Ar { " dir=\"rtl\"" } else { "" };
    format!(
        "<div xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"{code}\" xml:lang=\"{code}\"{dir}>{}</div>",
        crate::identity::smart::html_escape(&words),
        code = lang.code()
    )
}

/// The sentence of one access, in `lang`.
fn sentence(row: &SealedAudit, lang: Language, names: &mut Names<'_>) -> String {
    let v: Value = serde_json::from_slice(&row.entry.body).unwrap_or_default();
    let agents = v["agent"].as_array().cloned().unwrap_or_default();
    let first = agents.first().cloned().unwrap_or_default();
    let reference = first["who"]["reference"].as_str();
    let who = reference
        .and_then(|r| names.of(r))
        .or_else(|| reference.map(str::to_string))
        .or_else(|| first["who"]["display"].as_str().map(str::to_string))
        .unwrap_or_else(|| pick(lang, "someone", "quelqu'un", "شخص ما").to_string());
    let role = role(first["role"][0]["coding"][0]["code"].as_str().unwrap_or(""), lang);
    let facility = agents
        .iter()
        .find_map(|a| {
            a["who"]["reference"]
                .as_str()
                .filter(|r| r.starts_with("Organization/"))
        })
        .map(|f| names.of(f).unwrap_or_else(|| f.to_string()));
    let items = v["entity"]
        .as_array()
        .map(|e| e.iter().filter(|x| x["role"]["code"] == "4").count())
        .unwrap_or(0);
    let deed = deed(
        v["action"].as_str(),
        v["subtype"][0]["code"] == "operation",
        items,
        lang,
    );
    let why = match v["purposeOfEvent"][0]["coding"][0]["code"].as_str() {
        Some("ETREAT") => pick(
            lang,
            "in an emergency (break-glass)",
            "en urgence (accès d'urgence)",
            "في حالة طارئة (دخول استثنائي)",
        ),
        Some("TREAT") => pick(lang, "for your care", "pour vos soins", "من أجل علاجك"),
        _ => pick(
            lang,
            "for the running of the health system",
            "pour le fonctionnement du système de santé",
            "لتسيير المنظومة الصحية",
        ),
    };
    let grant = first["policy"][0].as_str().map(|c| match lang {
        Language::En => format!(", under your grant {c}"),
        Language::Fr => format!(", dans le cadre de votre autorisation {c}"),
        Language::Ar => format!("، بموجب الإذن {c}"),
    });
    let refused = (v["outcome"] != "0").then(|| {
        let why = v["outcomeDesc"].as_str().unwrap_or("not allowed").trim_end_matches('.');
        match lang {
            Language::En => format!(" It was refused: {why}."),
            Language::Fr => format!(" La demande a été refusée : {why}."),
            Language::Ar => format!(" وقد رُفض الطلب: {why}."),
        }
    });
    let recorded = &row.entry.recorded;
    let date = recorded.get(..10).unwrap_or(recorded);
    let time = recorded.get(11..16).unwrap_or("");
    let grant = grant.unwrap_or_default();
    let refused = refused.unwrap_or_default();
    match lang {
        Language::En => {
            let at = facility.map(|f| format!(" at {f}")).unwrap_or_default();
            format!("On {date} at {time} UTC, {who} ({role}){at} {deed} {why}{grant}.{refused}")
        }
        Language::Fr => {
            let at = facility.map(|f| format!(", {f}")).unwrap_or_default();
            format!("Le {date} à {time} UTC, {who} ({role}{at}) {deed} {why}{grant}.{refused}")
        }
        Language::Ar => {
            let at = facility
                .map(|f| format!(" من {}", isolated(&f, false)))
                .unwrap_or_default();
            format!(
                "في {} على الساعة {} (UTC)، {} ({role}){at} {deed} {why}{grant}.{refused}",
                isolated(date, true),
                isolated(time, true),
                isolated(&who, false)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_parse_with_or_without_a_region() {
        assert_eq!(Language::parse("fr-MA"), Some(Language::Fr));
        assert_eq!(Language::parse("AR"), Some(Language::Ar));
        assert_eq!(Language::parse("en"), Some(Language::En));
        assert_eq!(Language::parse("zgh"), None);
    }

    #[test]
    fn deeds_count_their_items_in_each_language() {
        assert_eq!(deed(None, false, 1, Language::En), "looked at 1 item of your record");
        assert_eq!(
            deed(Some("C"), false, 2, Language::Fr),
            "a ajouté 2 éléments à votre dossier"
        );
        assert_eq!(deed(None, false, 3, Language::Ar), "اطّلع على ملفك (عدد العناصر: 3)");
        assert_eq!(
            deed(Some("E"), true, 0, Language::En),
            "used an operation on your record"
        );
    }

    #[test]
    fn names_cannot_turn_the_sentence_around() {
        assert_eq!(without_bidi_controls("Dr \u{202E}evil\u{202C} X"), "Dr evil X");
        assert_eq!(isolated("CHU", false), "\u{2068}CHU\u{2069}");
    }

    #[test]
    fn names_read_organizations_and_people() {
        assert_eq!(
            name_of(&serde_json::json!({"name": "CHU Ibn Rochd"})).as_deref(),
            Some("CHU Ibn Rochd")
        );
        assert_eq!(
            name_of(&serde_json::json!({"name": [{"given": ["Salma", "Nour"], "family": "Bennani"}]})).as_deref(),
            Some("Salma Nour Bennani")
        );
        assert_eq!(name_of(&serde_json::json!({"name": [{}]})), None);
    }
}
