//! A citizen's identity: what is drawn first from their random stream (id, sex, age, region,
//! names, national identity number, address, phone), cheap enough that other records (a
//! child's guardian, a booked appointment) can look it up by index.

use time::{Date, Duration};

use crate::profile::{CountryProfile, Phone, ScriptPair};
use crate::rng::Rng;
use crate::Settings;

/// The identity of generated citizen number `index`.
#[derive(Debug, Clone)]
pub struct Person {
    /// Patient id.
    pub id: String,
    /// Sex at birth (administrative gender male/female).
    pub male: bool,
    /// Date of birth.
    pub birth: Date,
    /// Age in whole years on the settings' date.
    pub age: u32,
    /// Region index.
    pub region: usize,
    /// Province index within the region.
    pub province: Option<usize>,
    /// Given name.
    pub given: ScriptPair,
    /// Family name.
    pub family: ScriptPair,
    /// National identity number, when the citizen has one at their age.
    pub national_id: Option<String>,
    /// Street of the home address.
    pub street: ScriptPair,
    /// House number.
    pub house: u32,
    /// Mobile phone.
    pub phone: String,
}

/// The Patient id of citizen `index` (the first draw of their stream).
pub fn patient_id(seed: u64, index: u64) -> String {
    Rng::new(seed, 1 + index).uuid()
}

/// Whole years from `birth` to `on`.
pub fn age_on(birth: Date, on: Date) -> u32 {
    let mut years = on.year() - birth.year();
    if (on.month() as u8, on.day()) < (birth.month() as u8, birth.day()) {
        years -= 1;
    }
    years.max(0) as u32
}

/// A mobile number in international format.
pub fn phone_number(rng: &mut Rng, phone: &Phone) -> String {
    let prefix = rng.pick(&phone.mobile_prefixes).clone();
    let rest: String = (prefix.len()..phone.national_digits)
        .map(|_| (b'0' + rng.below(10) as u8) as char)
        .collect();
    format!("{} {prefix}{rest}", phone.country_code)
}

/// A number unique to `index` shaped by `template` (`L` letter, `D` digit): the index is
/// mapped by a bijection (multiplication by a prime, plus a seed offset, modulo the number of
/// possible values), so numbers never collide and do not reveal the order of generation.
pub fn unique_number(template: &str, index: u64, seed: u64, salt: u64) -> String {
    let capacity: u128 = template
        .chars()
        .map(|c| match c {
            'L' => 26u128,
            'D' => 10,
            _ => 1,
        })
        .product();
    let offset = (seed as u128 ^ (salt as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15)) % capacity;
    let mut v = (index as u128 * 2_654_435_761 + offset) % capacity;
    let mut out: Vec<char> = template.chars().collect();
    for c in out.iter_mut().rev() {
        match *c {
            'L' => {
                *c = (b'A' + (v % 26) as u8) as char;
                v /= 26;
            }
            'D' => {
                *c = (b'0' + (v % 10) as u8) as char;
                v /= 10;
            }
            _ => {}
        }
    }
    out.into_iter().collect()
}

fn national_id(profile: &CountryProfile, age: u32, index: u64, seed: u64) -> Option<String> {
    let nid = &profile.national_id;
    if age < nid.from_age || nid.templates.is_empty() {
        return None;
    }
    let template = &nid.templates[(index % nid.templates.len() as u64) as usize];
    Some(unique_number(template, index, seed, 1))
}

/// The national identifier of member of staff `n` (numbered after the citizens, so it is
/// nobody else's); None when the profile defines no format.
pub fn staff_national_id(settings: &Settings, n: u64) -> Option<String> {
    let profile = &settings.profile;
    national_id(
        profile,
        profile.national_id.from_age,
        settings.patients as u64 + n,
        settings.seed,
    )
}

/// The identity of citizen `index`, and their random stream positioned after it.
pub fn person(settings: &Settings, index: u64) -> (Person, Rng) {
    let p = &settings.profile;
    let mut rng = Rng::new(settings.seed, 1 + index);
    let id = rng.uuid();
    let male = rng.chance(p.male_share);
    let band = &p.age_structure[rng.weighted(&p.age_structure.iter().map(|b| b.share).collect::<Vec<_>>())];
    let years = rng.between(band.from as i64, band.to as i64);
    let birth = settings.as_of - Duration::days(years * 365 + years / 4 + rng.below(365) as i64);
    let age = age_on(birth, settings.as_of);
    let region = rng.weighted(&p.regions.iter().map(|r| r.population as f64).collect::<Vec<_>>());
    let provinces = p.regions[region].provinces.len();
    let province = (provinces > 0).then(|| rng.below(provinces as u64) as usize);
    let given = rng
        .pick(if male {
            &p.given_names.male
        } else {
            &p.given_names.female
        })
        .clone();
    let family = rng.pick(&p.family_names).clone();
    let street = rng.pick(&p.street_names).clone();
    let house = rng.between(1, 250) as u32;
    let phone = phone_number(&mut rng, &p.phone);
    let national_id = national_id(p, age, index, settings.seed);
    let person = Person {
        id,
        male,
        birth,
        age,
        region,
        province,
        given,
        family,
        national_id,
        street,
        house,
        phone,
    };
    (person, rng)
}

/// For a minor, the nearest earlier citizen who can be their parent and guardian (an adult of
/// 20 to 55); the child then shares their family name and home.
pub fn guardian(settings: &Settings, index: u64) -> Option<(u64, Person)> {
    (index.saturating_sub(30)..index).rev().find_map(|j| {
        let (candidate, _) = person(settings, j);
        (20..=55).contains(&candidate.age).then_some((j, candidate))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_numbers_do_not_collide_and_follow_the_template() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..50_000 {
            let n = unique_number("LDDDDD", i, 42, 1);
            assert!(n.as_bytes()[0].is_ascii_uppercase());
            assert!(n[1..].bytes().all(|b| b.is_ascii_digit()), "{n}");
            assert!(seen.insert(n), "collision at {i}");
        }
    }

    #[test]
    fn age_counts_whole_years() {
        let d = |y, m, day| Date::from_calendar_date(y, time::Month::try_from(m).unwrap(), day).unwrap();
        assert_eq!(age_on(d(2000, 6, 15), d(2026, 6, 14)), 25);
        assert_eq!(age_on(d(2000, 6, 15), d(2026, 6, 15)), 26);
    }
}
