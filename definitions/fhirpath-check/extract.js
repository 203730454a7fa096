#!/usr/bin/env node
// Evaluates the official FHIR R4 SearchParameter expressions with fhirpath.js
// over the official R4 example resources and writes the extracted facts as a
// JSON fixture, used to cross-check Sijill's own search-index extraction.
//
// Usage: node extract.js <package-dir> <output.json>
'use strict';

const fs = require('fs');
const path = require('path');
const fhirpath = require('fhirpath');
const r4model = require('fhirpath/fhir-context/r4');

const GENERATOR = 'fhirpath@' + require('fhirpath/package.json').version;

const DEFINITION_TYPES = new Set([
  'StructureDefinition', 'ValueSet', 'CodeSystem', 'SearchParameter',
  'OperationDefinition', 'CompartmentDefinition', 'CapabilityStatement',
  'ImplementationGuide', 'ConceptMap', 'NamingSystem', 'StructureMap',
  'MessageDefinition', 'GraphDefinition', 'ExampleScenario',
  'TerminologyCapabilities',
]);

const PARAM_TYPES = new Set([
  'token', 'reference', 'string', 'uri', 'date', 'number', 'quantity',
]);

// --- resolve() -------------------------------------------------------------
// fhirpath.js implements resolve() as an asynchronous function that fetches
// the target over HTTP (or throws when async mode is off). A search index has
// no such access, so, as FHIR servers commonly do, resolve() is replaced here
// by a synchronous, offline version that yields a stub resource whose type
// is taken from the reference itself:
//   "#id"                          -> the contained resource with that id
//   "Type/id", ".../Type/id[/_history/v]" (Type a known resource type)
//                                  -> {resourceType: Type, id}
//   anything else (urn:uuid:..., identifier-only, ...)
//                                  -> {resourceType: Reference.type} if present,
//                                     otherwise nothing.
// This is enough for the `where(resolve() is Patient)` filters used by R4.

function isResourceType(name) {
  const parent = r4model.type2Parent && r4model.type2Parent[name];
  return parent === 'Resource' || parent === 'DomainResource';
}

function stubFromReference(ref, rootResource) {
  const value = ref && ref.reference;
  if (typeof value === 'string') {
    if (value.startsWith('#')) {
      const id = value.slice(1);
      const contained = (rootResource && rootResource.contained) || [];
      const hit = contained.find(c => c && c.id === id);
      if (hit) return hit;
      return null;
    }
    const noHistory = value.replace(/\/_history\/[^/]*$/, '');
    const m = /(?:^|\/)([A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})$/.exec(noHistory);
    if (m && isResourceType(m[1])) {
      return {resourceType: m[1], id: m[2]};
    }
  }
  if (ref && typeof ref.type === 'string' && isResourceType(ref.type)) {
    return {resourceType: ref.type};
  }
  return null;
}

// The resource being evaluated (for "#id" references to contained resources).
let currentRoot = null;

function makeResolveTable() {
  return {
    resolve: {
      internalStructures: true,
      fn: function (coll) {
        const ctx = this;
        const out = [];
        for (const item of coll || []) {
          const data = fhirpath.util.valData(item);
          if (!data || typeof data !== 'object') continue;
          const stub = stubFromReference(data, currentRoot);
          if (!stub) continue;
          // Build a model-aware node of the same class the engine uses, so that
          // `is Patient` sees the FHIR type of the stub.
          out.push(new item.constructor(ctx, stub, null, null, null, null));
        }
        return out;
      },
    },
  };
}

// --- fact extraction -------------------------------------------------------

function typeName(node) {
  // e.g. "FHIR.Coding", "FHIR.string", "System.String"
  return fhirpath.types([node])[0] || '';
}

function plain(node) {
  const r = fhirpath.resolveInternalTypes([node]);
  return r.length ? r[0] : undefined;
}

function isMetadataOnly(node) {
  // Primitive nodes carrying only `_x` metadata (id/extension) and no value.
  return node && typeof node === 'object' && node.data == null && node._data;
}

function primitiveString(v) {
  if (v === null || v === undefined) return null;
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'bigint') return String(v);
  if (typeof v === 'object') {
    // Internal FHIRPath types left over (dates, decimals): use their string form.
    if (typeof v.toString === 'function' && v.toString !== Object.prototype.toString) {
      return v.toString();
    }
    return null;
  }
  return String(v);
}

const unexpectedTypes = {};
function noteUnexpected(kind, type) {
  const k = kind + ' ' + type;
  unexpectedTypes[k] = (unexpectedTypes[k] || 0) + 1;
}

function tokenCodes(type, value) {
  const bare = type.replace(/^(FHIR|System)\./, '');
  const codes = [];
  const push = c => { if (c !== null && c !== undefined) codes.push(String(c)); };
  if (bare === 'Coding') {
    push(value.code);
  } else if (bare === 'CodeableConcept') {
    for (const coding of value.coding || []) push(coding && coding.code);
  } else if (bare === 'Identifier' || bare === 'ContactPoint') {
    push(value.value);
  } else if (value === null || typeof value !== 'object' ||
             (typeof value.toString === 'function' &&
              value.toString !== Object.prototype.toString)) {
    push(primitiveString(value));
  } else {
    noteUnexpected('token', type);
  }
  return codes;
}

function referenceValues(type, value) {
  const bare = type.replace(/^(FHIR|System)\./, '');
  if (bare === 'Reference') {
    return typeof value.reference === 'string' ? [value.reference] : [];
  }
  if (value !== null && typeof value !== 'object') {
    return [String(value)];
  }
  noteUnexpected('reference', type);
  return [];
}

// Sort by UTF-8 bytes so the order matches Rust's `str` ordering.
function byteCompare(a, b) {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function sortedUnique(values) {
  return Array.from(new Set(values)).sort(byteCompare);
}

function facts(kind, nodes) {
  const items = nodes
    .filter(n => !isMetadataOnly(n))
    .map(n => ({type: typeName(n), value: plain(n)}))
    .filter(it => it.value !== null && it.value !== undefined);
  if (items.length === 0) return null;
  if (kind === 'token') {
    return {kind, values: sortedUnique(items.flatMap(it => tokenCodes(it.type, it.value)))};
  }
  if (kind === 'reference') {
    return {kind, values: sortedUnique(items.flatMap(it => referenceValues(it.type, it.value)))};
  }
  if (kind === 'uri') {
    const values = items.map(it => primitiveString(it.value)).filter(v => v !== null);
    return {kind, count: items.length, values: sortedUnique(values)};
  }
  return {kind, count: items.length};
}

// --- inputs ----------------------------------------------------------------

function loadSearchParams(pkgDir) {
  const bundle = JSON.parse(fs.readFileSync(path.join(pkgDir, 'Bundle-searchParams.json'), 'utf8'));
  const byType = new Map();
  for (const entry of bundle.entry || []) {
    const sp = entry.resource;
    if (!sp || sp.resourceType !== 'SearchParameter') continue;
    if (!PARAM_TYPES.has(sp.type) || !sp.expression || !sp.expression.trim()) continue;
    for (const base of sp.base || []) {
      if (!byType.has(base)) byType.set(base, []);
      byType.get(base).push(sp);
    }
  }
  for (const list of byType.values()) list.sort((a, b) => byteCompare(a.code, b.code));
  return byType;
}

function loadExamples(pkgDir) {
  const out = [];
  const names = fs.readdirSync(pkgDir).filter(n => n.endsWith('.json')).sort(byteCompare);
  for (const name of names) {
    let text;
    let res;
    try {
      text = fs.readFileSync(path.join(pkgDir, name), 'utf8');
      res = JSON.parse(text);
    } catch (e) {
      continue;
    }
    if (!res || typeof res !== 'object' || typeof res.resourceType !== 'string') continue;
    if (res.resourceType === 'Bundle' || DEFINITION_TYPES.has(res.resourceType)) continue;
    out.push({name, type: res.resourceType, text});
  }
  return out;
}

// --- output ----------------------------------------------------------------

function canonical(value) {
  if (Array.isArray(value)) return value.map(canonical);
  if (value && typeof value === 'object') {
    const o = {};
    for (const k of Object.keys(value).sort(byteCompare)) o[k] = canonical(value[k]);
    return o;
  }
  return value;
}

function render(files, errors) {
  const lines = ['{'];
  lines.push('"errors": [');
  errors.forEach((e, i) => {
    lines.push(JSON.stringify(canonical(e)) + (i + 1 < errors.length ? ',' : ''));
  });
  lines.push('],');
  lines.push('"files": {');
  const fileNames = Object.keys(files).sort(byteCompare);
  fileNames.forEach((f, i) => {
    lines.push(JSON.stringify(f) + ': ' + JSON.stringify(canonical(files[f])) +
      (i + 1 < fileNames.length ? ',' : ''));
  });
  lines.push('},');
  lines.push('"generator": ' + JSON.stringify(GENERATOR));
  lines.push('}');
  return lines.join('\n') + '\n';
}

// --- main ------------------------------------------------------------------

// fhirpath.js error messages can embed the whole offending collection as JSON;
// keep them short and on one line.
function errorMessage(e) {
  const msg = String((e && e.message) || e).replace(/\s+/g, ' ').trim();
  return msg.length > 160 ? msg.slice(0, 160) + '...' : msg;
}

function main() {
  const [pkgDir, outPath] = process.argv.slice(2);
  if (!pkgDir || !outPath) {
    console.error('usage: node extract.js <package-dir> <output.json>');
    process.exit(2);
  }
  const paramsByType = loadSearchParams(pkgDir);
  const examples = loadExamples(pkgDir);

  const options = {userInvocationTable: makeResolveTable(), resolveInternalTypes: false};
  const compiled = new Map(); // SearchParameter id -> {fn} | {error}
  const compileParam = sp => {
    if (!compiled.has(sp.id)) {
      try {
        compiled.set(sp.id, {fn: fhirpath.compile(sp.expression, r4model, options)});
      } catch (e) {
        compiled.set(sp.id, {error: 'compile: ' + errorMessage(e)});
      }
    }
    return compiled.get(sp.id);
  };
  const files = {};
  const errors = [];
  let evaluations = 0;
  let emptyValuePairs = 0;

  for (const ex of examples) {
    const params = paramsByType.get(ex.type) || [];
    if (params.length === 0) continue;
    const perFile = {};
    for (const sp of params) {
      // Fresh copy per evaluation: fhirpath.js annotates the input objects.
      const resource = JSON.parse(ex.text);
      currentRoot = resource;
      evaluations++;
      let nodes;
      try {
        const c = compileParam(sp);
        if (c.error) throw new Error(c.error);
        nodes = c.fn(resource, {resource, rootResource: resource});
        if (nodes && typeof nodes.then === 'function') {
          throw new Error('expression returned a Promise (asynchronous function used)');
        }
      } catch (e) {
        errors.push({file: ex.name, param: sp.code, message: errorMessage(e)});
        continue;
      }
      let f;
      try {
        f = facts(sp.type, nodes || []);
      } catch (e) {
        errors.push({file: ex.name, param: sp.code, message: 'fact extraction: ' + errorMessage(e)});
        continue;
      }
      if (!f) continue;
      if ((f.kind === 'token' || f.kind === 'reference') && f.values.length === 0) emptyValuePairs++;
      perFile[sp.code] = f;
    }
    if (Object.keys(perFile).length) files[ex.name] = perFile;
  }

  errors.sort((a, b) => byteCompare(a.file, b.file) || byteCompare(a.param, b.param));
  fs.mkdirSync(path.dirname(path.resolve(outPath)), {recursive: true});
  fs.writeFileSync(outPath, render(files, errors));

  const pairs = Object.values(files).reduce((n, p) => n + Object.keys(p).length, 0);
  console.error(`${GENERATOR}: ${examples.length} example resources, ${evaluations} evaluations, ` +
    `${Object.keys(files).length} files with results, ${pairs} (file,param) pairs, ${errors.length} errors, ` +
    `${emptyValuePairs} token/reference pairs with a non-empty result but no values`);
  const unexpected = Object.entries(unexpectedTypes);
  if (unexpected.length) {
    console.error('result nodes of types not mapped to values (ignored):');
    for (const [k, n] of unexpected.sort()) console.error(`  ${k}: ${n}`);
  }
}

main();
