//! SMART on FHIR scopes (App Launch v2, with the v1 `read`/`write` forms understood).
//!
//! `patient/Observation.rs` grants read and search of Observations in the token's patient
//! context; `user/*.cruds` grants everything the user may do; `system/*.r` is for backend
//! services. A scope with a query restriction (`patient/Observation.rs?category=laboratory`)
//! is dropped rather than widened: Sijill does not yet enforce such restrictions, and
//! ignoring the restriction would grant more than was asked.

use std::fmt;

/// The context a resource scope applies in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScopeContext {
    /// `patient/`: the patient in the token's launch context.
    Patient,
    /// `user/`: whatever the signed-in user may see.
    User,
    /// `system/`: a backend service, for what its client registration allows.
    System,
}

/// One permission letter of a v2 scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// `c`: create.
    Create,
    /// `r`: read and vread (and an instance's history).
    Read,
    /// `u`: update and patch.
    Update,
    /// `d`: delete.
    Delete,
    /// `s`: search (and type or system history).
    Search,
}

impl Permission {
    fn letter(self) -> char {
        match self {
            Permission::Create => 'c',
            Permission::Read => 'r',
            Permission::Update => 'u',
            Permission::Delete => 'd',
            Permission::Search => 's',
        }
    }
}

/// One resource scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceScope {
    /// Its context.
    pub context: ScopeContext,
    /// The resource type, or `*`.
    pub resource_type: String,
    /// The permissions, in `cruds` order.
    pub permissions: Vec<Permission>,
}

/// A token's granted scopes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes {
    /// The resource scopes.
    pub resources: Vec<ResourceScope>,
    /// Everything else (`openid`, `fhirUser`, `launch/patient`, `offline_access`, …).
    pub other: Vec<String>,
}

/// Parses the permission part of a scope (`rs`, `cruds`, `read`, `write`, `*`).
fn permissions(text: &str) -> Option<Vec<Permission>> {
    use Permission::*;
    match text {
        "read" => return Some(vec![Read, Search]),
        "write" => return Some(vec![Create, Update, Delete]),
        "*" => return Some(vec![Create, Read, Update, Delete, Search]),
        _ => {}
    }
    let order = [Create, Read, Update, Delete, Search];
    let mut out = Vec::new();
    let mut position = 0;
    for c in text.chars() {
        // v2 letters must appear in `cruds` order, each at most once.
        let at = order[position..].iter().position(|p| p.letter() == c)?;
        out.push(order[position + at]);
        position += at + 1;
    }
    (!out.is_empty()).then_some(out)
}

impl ResourceScope {
    /// Parses `context/Type.perms`; None when it is not a resource scope or not valid
    /// (including query-restricted scopes, which are refused rather than widened).
    pub fn parse(text: &str) -> Option<ResourceScope> {
        let (context, rest) = text.split_once('/')?;
        let context = match context {
            "patient" => ScopeContext::Patient,
            "user" => ScopeContext::User,
            "system" => ScopeContext::System,
            _ => return None,
        };
        if rest.contains('?') {
            return None;
        }
        let (resource_type, perms) = rest.split_once('.')?;
        let type_ok = resource_type == "*" || sijill_fhir::definitions::is_resource_type(resource_type);
        if !type_ok {
            return None;
        }
        Some(ResourceScope {
            context,
            resource_type: resource_type.to_string(),
            permissions: permissions(perms)?,
        })
    }
}

impl fmt::Display for ResourceScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let context = match self.context {
            ScopeContext::Patient => "patient",
            ScopeContext::User => "user",
            ScopeContext::System => "system",
        };
        let letters: String = self.permissions.iter().map(|p| p.letter()).collect();
        write!(f, "{context}/{}.{letters}", self.resource_type)
    }
}

impl Scopes {
    /// Parses a space-separated scope string. Resource scopes that are not valid are
    /// dropped (see the module documentation); the rest is kept as it is.
    pub fn parse(text: &str) -> Scopes {
        let mut scopes = Scopes::default();
        for word in text.split_whitespace() {
            if word.contains('/') && !word.starts_with("launch/") {
                if let Some(s) = ResourceScope::parse(word) {
                    scopes.resources.push(s);
                }
            } else if !scopes.other.iter().any(|o| o == word) {
                scopes.other.push(word.to_string());
            }
        }
        scopes
    }

    /// Whether some scope of `context` grants `permission` on `resource_type`.
    pub fn permits(&self, context: ScopeContext, resource_type: &str, permission: Permission) -> bool {
        self.resources.iter().any(|s| {
            s.context == context
                && (s.resource_type == "*" || s.resource_type == resource_type)
                && s.permissions.contains(&permission)
        })
    }

    /// Whether a non-resource scope (`openid`, `offline_access`, …) was granted.
    pub fn has(&self, name: &str) -> bool {
        self.other.iter().any(|o| o == name)
    }

    /// Keeps only the scopes that `allowed` also grants (a client asks; its registration or
    /// the user's role bounds what it gets).
    pub fn intersect(&self, allowed: &Scopes) -> Scopes {
        let resources = self
            .resources
            .iter()
            .filter_map(|s| {
                let permissions: Vec<Permission> = s
                    .permissions
                    .iter()
                    .copied()
                    .filter(|p| allowed.permits(s.context, &s.resource_type, *p))
                    .collect();
                (!permissions.is_empty()).then(|| ResourceScope {
                    permissions,
                    ..s.clone()
                })
            })
            .collect();
        Scopes {
            resources,
            other: self.other.iter().filter(|o| allowed.has(o)).cloned().collect(),
        }
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<String> = self
            .other
            .iter()
            .cloned()
            .chain(self.resources.iter().map(|s| s.to_string()))
            .collect();
        write!(f, "{}", words.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Permission::*;

    #[test]
    fn parses_v2_and_v1_scopes() {
        let s = Scopes::parse("openid fhirUser launch/patient patient/Observation.rs user/*.cruds system/Patient.read");
        assert_eq!(s.other, vec!["openid", "fhirUser", "launch/patient"]);
        assert!(s.permits(ScopeContext::Patient, "Observation", Read));
        assert!(s.permits(ScopeContext::Patient, "Observation", Search));
        assert!(!s.permits(ScopeContext::Patient, "Observation", Create));
        assert!(!s.permits(ScopeContext::Patient, "Condition", Read));
        assert!(s.permits(ScopeContext::User, "Condition", Delete));
        assert!(s.permits(ScopeContext::System, "Patient", Search));
        assert!(!s.permits(ScopeContext::System, "Patient", Update));
        assert_eq!(
            s.to_string(),
            "openid fhirUser launch/patient patient/Observation.rs user/*.cruds system/Patient.rs"
        );
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        // Letters out of order, repeated, unknown; unknown types; query restrictions.
        for bad in [
            "patient/Observation.sr",
            "patient/Observation.rr",
            "patient/Observation.x",
            "patient/Observation.",
            "patient/Nonsense.rs",
            "clinic/Observation.rs",
            "patient/Observation.rs?category=laboratory",
        ] {
            assert!(Scopes::parse(bad).resources.is_empty(), "{bad}");
        }
    }

    #[test]
    fn intersection_never_widens() {
        let asked = Scopes::parse("openid offline_access patient/*.cruds patient/Observation.rs");
        let allowed = Scopes::parse("openid patient/*.rs");
        let got = asked.intersect(&allowed);
        assert_eq!(got.to_string(), "openid patient/*.rs patient/Observation.rs");
        assert!(!got.permits(ScopeContext::Patient, "Observation", Create));
        assert!(!got.has("offline_access"));
    }
}
