//! Writes Bundles as bytes, splicing stored resource bodies in as they are (no re-parse,
//! no re-serialisation of the resources).

use serde_json::{json, Value};

/// The resource of a Bundle entry.
pub enum EntryResource<'a> {
    /// No resource (e.g. a deleted version in a history).
    None,
    /// Stored bytes of a resource.
    Raw(&'a [u8]),
    /// A resource built for this response.
    Json(&'a Value),
}

/// Builds one Bundle.
pub struct BundleWriter {
    buf: Vec<u8>,
    entries: usize,
}

impl BundleWriter {
    /// Starts a Bundle of `bundle_type` with an optional total and links (relation, url).
    pub fn new(bundle_type: &str, total: Option<u64>, links: &[(&str, String)]) -> Self {
        Self::as_of(bundle_type, total, links, &sijill_store::now_instant())
    }

    /// Like [`BundleWriter::new`], with `meta.lastUpdated` set to `last_updated` (a history
    /// gives the newest change it contains, so that a client polling with `_since` from
    /// there misses nothing).
    pub fn as_of(bundle_type: &str, total: Option<u64>, links: &[(&str, String)], last_updated: &str) -> Self {
        let mut head = json!({
            "resourceType": "Bundle",
            "id": uuid::Uuid::new_v4().to_string(),
            "meta": {"lastUpdated": last_updated},
            "type": bundle_type,
        });
        if let Some(t) = total {
            head["total"] = json!(t);
        }
        if !links.is_empty() {
            head["link"] = Value::Array(links.iter().map(|(r, u)| json!({"relation": r, "url": u})).collect());
        }
        let mut buf = serde_json::to_vec(&head).unwrap_or_default();
        buf.pop(); // the closing brace; entries follow
        buf.extend_from_slice(b",\"entry\":[");
        BundleWriter { buf, entries: 0 }
    }

    /// Adds an entry: fullUrl, resource, and further members (`search`, `request`, `response`).
    pub fn entry(&mut self, full_url: Option<&str>, resource: EntryResource<'_>, members: &[(&str, Value)]) {
        if self.entries > 0 {
            self.buf.push(b',');
        }
        self.entries += 1;
        self.buf.push(b'{');
        let mut first = true;
        let mut sep = |buf: &mut Vec<u8>| {
            if !first {
                buf.push(b',');
            }
            first = false;
        };
        if let Some(url) = full_url {
            sep(&mut self.buf);
            self.buf.extend_from_slice(b"\"fullUrl\":");
            self.buf.extend_from_slice(&serde_json::to_vec(url).unwrap_or_default());
        }
        match resource {
            EntryResource::None => {}
            EntryResource::Raw(bytes) => {
                sep(&mut self.buf);
                self.buf.extend_from_slice(b"\"resource\":");
                self.buf.extend_from_slice(bytes);
            }
            EntryResource::Json(v) => {
                sep(&mut self.buf);
                self.buf.extend_from_slice(b"\"resource\":");
                self.buf.extend_from_slice(&serde_json::to_vec(v).unwrap_or_default());
            }
        }
        for (name, value) in members {
            sep(&mut self.buf);
            self.buf
                .extend_from_slice(&serde_json::to_vec(name).unwrap_or_default());
            self.buf.push(b':');
            self.buf
                .extend_from_slice(&serde_json::to_vec(value).unwrap_or_default());
        }
        self.buf.push(b'}');
    }

    /// The finished Bundle's bytes (an empty `entry` array is left out).
    pub fn finish(mut self) -> Vec<u8> {
        if self.entries == 0 {
            let cut = self.buf.len() - b",\"entry\":[".len();
            self.buf.truncate(cut);
            self.buf.push(b'}');
        } else {
            self.buf.extend_from_slice(b"]}");
        }
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_valid_json() {
        let mut w = BundleWriter::new("searchset", Some(2), &[("self", "http://x/fhir/Patient".into())]);
        w.entry(
            Some("http://x/fhir/Patient/1"),
            EntryResource::Raw(br#"{"resourceType":"Patient","id":"1"}"#),
            &[("search", json!({"mode": "match"}))],
        );
        w.entry(None, EntryResource::None, &[("response", json!({"status": "204"}))]);
        let v: Value = serde_json::from_slice(&w.finish()).unwrap();
        assert_eq!(v["total"], 2);
        assert_eq!(v["entry"][0]["resource"]["id"], "1");
        assert_eq!(v["entry"][1]["response"]["status"], "204");
        let empty: Value = serde_json::from_slice(&BundleWriter::new("history", Some(0), &[]).finish()).unwrap();
        assert!(empty.get("entry").is_none());
    }
}
