use serde_json::Value;
use sijill_fhir::validate::validate_resource;

fn load() -> Vec<(String, Value)> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../definitions/package");
    let defs = ["StructureDefinition","SearchParameter","ValueSet","CodeSystem","ConceptMap","OperationDefinition","CompartmentDefinition","NamingSystem","ImplementationGuide","CapabilityStatement","StructureMap","GraphDefinition","MessageDefinition","TerminologyCapabilities","ExampleScenario"];
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let n = p.file_name().unwrap().to_str().unwrap().to_string();
        if n == "package.json" || n.starts_with('.') { continue; }
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        if defs.contains(&v["resourceType"].as_str().unwrap_or("")) { continue; }
        out.push((n, v));
    }
    out
}

// Collect pointers to every object key / string leaf.
fn walk(v: &Value, ptr: String, keys: &mut Vec<String>, strings: &mut Vec<String>) {
    match v {
        Value::Object(m) => for (k, c) in m { let p = format!("{ptr}/{k}"); if k != "resourceType" { keys.push(p.clone()); } walk(c, p, keys, strings) },
        Value::Array(a) => for (i, c) in a.iter().enumerate() { walk(c, format!("{ptr}/{i}"), keys, strings) },
        Value::String(_) => strings.push(ptr),
        _ => {}
    }
}

#[test]
fn mutations() {
    let ex = load();
    let (mut n, mut missed) = (0, 0);
    for (name, v) in &ex {
        let (mut keys, mut strings) = (vec![], vec![]);
        walk(v, String::new(), &mut keys, &mut strings);
        for k in keys.iter().step_by(7) {
            let (parent, last) = k.rsplit_once('/').unwrap();
            let mut m = v.clone();
            let obj = m.pointer_mut(if parent.is_empty() { "" } else { parent }).unwrap().as_object_mut().unwrap();
            let val = obj.remove(last).unwrap();
            obj.insert(format!("{last}Zz"), val);
            n += 1;
            if validate_resource(&m).is_empty() { missed += 1; println!("MISSED rename {name} {k}"); }
        }
        for s in strings.iter().step_by(5) {
            let mut m = v.clone();
            *m.pointer_mut(s).unwrap() = Value::String(String::new());
            n += 1;
            if validate_resource(&m).is_empty() { missed += 1; println!("MISSED empty {name} {s}"); }
            let mut m = v.clone();
            *m.pointer_mut(s).unwrap() = Value::Array(vec![]);
            n += 1;
            if validate_resource(&m).is_empty() { missed += 1; println!("MISSED emptyarr {name} {s}"); }
        }
    }
    println!("mutations {n}, missed {missed}");
}

#[test]
fn speed() {
    let ex = load();
    let rounds = 50;
    let t = std::time::Instant::now();
    let mut total = 0usize;
    for _ in 0..rounds { for (_, v) in &ex { total += validate_resource(v).len(); } }
    let el = t.elapsed();
    let bytes: usize = ex.iter().map(|(_, v)| serde_json::to_string(v).unwrap().len()).sum();
    println!("{} validations in {:?}: {:.0}/s (avg {} bytes), issues {total}", rounds * ex.len(), el, (rounds * ex.len()) as f64 / el.as_secs_f64(), bytes / ex.len());
}
