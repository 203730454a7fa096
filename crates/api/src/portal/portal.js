// The citizen portal: signs in with SMART App Launch (authorization code + PKCE) as the
// built-in public client, then reads and acts on the citizen's own record through the
// FHIR API with their token. Everything shown is set as text, never as HTML.
"use strict";

const CLIENT_ID = "sijill-portal";
const SCOPE = "openid fhirUser launch/patient patient/*.rs";
const origin = window.location.origin;
const FHIR = origin + "/fhir";
const REDIRECT = origin + "/portal/";
const $ = (id) => document.getElementById(id);

function status(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function base64url(bytes) {
  let s = "";
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomText() {
  return base64url(crypto.getRandomValues(new Uint8Array(32)));
}

async function signIn() {
  const verifier = randomText();
  const state = randomText();
  sessionStorage.setItem("pkce", JSON.stringify({ verifier, state }));
  const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  const query = new URLSearchParams({
    response_type: "code", client_id: CLIENT_ID, redirect_uri: REDIRECT, scope: SCOPE,
    state, aud: FHIR, code_challenge: challenge, code_challenge_method: "S256",
  });
  window.location.assign(origin + "/auth/authorize?" + query);
}

// Back from the sign-in with ?code=…&state=…: trade the code for a token.
async function finishSignIn(params) {
  const pending = JSON.parse(sessionStorage.getItem("pkce") || "null");
  sessionStorage.removeItem("pkce");
  history.replaceState(null, "", REDIRECT);
  if (!pending || pending.state !== params.get("state")) throw new Error("This sign-in was not started here; sign in again.");
  if (params.get("error")) throw new Error("The sign-in did not succeed: " + (params.get("error_description") || params.get("error")));
  const response = await fetch(origin + "/auth/token", {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code", code: params.get("code"), redirect_uri: REDIRECT,
      client_id: CLIENT_ID, code_verifier: pending.verifier,
    }),
  });
  const tokens = await response.json();
  if (!response.ok) throw new Error(tokens.error_description || "The sign-in was refused.");
  if (!tokens.patient) throw new Error("This sign-in is not a citizen's; the portal is for citizens.");
  sessionStorage.setItem("session", JSON.stringify({ token: tokens.access_token, patient: tokens.patient }));
}

function session() {
  return JSON.parse(sessionStorage.getItem("session") || "null");
}

async function api(path, options) {
  const s = session();
  const response = await fetch(FHIR + "/" + path, {
    ...options,
    headers: { authorization: "Bearer " + s.token, accept: "application/fhir+json", "content-type": "application/fhir+json" },
  });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) {
    sessionStorage.removeItem("session");
    throw new Error("Your session has ended; sign in again.");
  }
  if (!response.ok) {
    const why = (body.issue || []).map((i) => i.diagnostics).filter(Boolean).join("; ");
    throw new Error(why || "The request failed (HTTP " + response.status + ").");
  }
  return body;
}

function when(instant) {
  return instant ? new Date(instant).toLocaleString() : "";
}

function plainText(xhtml) {
  return new DOMParser().parseFromString(xhtml || "", "text/html").body.textContent.trim();
}

function item(text, detail) {
  const li = document.createElement("li");
  li.textContent = text;
  if (detail) {
    const small = document.createElement("span");
    small.className = "when";
    small.textContent = detail;
    li.appendChild(small);
  }
  return li;
}

async function showWho() {
  const p = await api("Patient/" + session().patient);
  const name = (p.name || [])[0] || {};
  $("who").textContent = [...(name.given || []), name.family].filter(Boolean).join(" ") || "Patient/" + p.id;
}

const GRANT_KIND = "https://sijill.health/fhir/CodeSystem/grant-kind";

// The grants in force now: active Consents made by Sijill (tagged with a grant kind) whose
// period has not ended; shown by the facility they let in.
async function showGrants() {
  const bundle = await api("Consent?patient=Patient/" + session().patient + "&status=active&_count=100");
  const list = $("grants");
  list.replaceChildren();
  const now = Date.now();
  for (const entry of bundle.entry || []) {
    const c = entry.resource;
    const kind = ((c.meta || {}).tag || []).find((t) => t.system === GRANT_KIND);
    const end = ((c.provision || {}).period || {}).end;
    if (!kind || (end && Date.parse(end) <= now)) continue;
    const facility = ((c.provision || {}).actor || [])
      .map((a) => a.reference || {})
      .find((r) => (r.reference || "").startsWith("Organization/")) || {};
    const who = facility.display || facility.reference || "a facility";
    const emergency = kind.code === "break-glass" ? " (emergency access)" : "";
    const li = item(who + " can read your record" + emergency, "until " + when(end));
    const button = document.createElement("button");
    button.textContent = "Revoke";
    button.className = "revoke";
    button.addEventListener("click", () => act(async () => {
      await api("Consent/" + c.id + "/$revoke", { method: "POST", body: "{}" });
      status("Access revoked: " + who + " can no longer read your record.");
      await showGrants();
    }));
    li.appendChild(button);
    list.appendChild(li);
  }
  $("no-grants").hidden = list.children.length > 0;
}

async function showAccessLog() {
  const bundle = await api("Patient/" + session().patient + "/$access-log?_count=50");
  const list = $("access-log");
  list.replaceChildren();
  for (const entry of bundle.entry || []) {
    const e = entry.resource;
    list.appendChild(item(plainText((e.text || {}).div), when(e.recorded)));
  }
  $("no-accesses").hidden = list.children.length > 0;
}

// A new access code for `patient` (the citizen, or one of their dependents): its text and
// a sentence on how long it and the grant it becomes last.
async function newCode(patient) {
  const p = await api("Patient/" + patient + "/$access-code", {
    method: "POST",
    body: JSON.stringify({ resourceType: "Parameters" }),
  });
  const value = (name) => ((p.parameter || []).find((x) => x.name === name) || {});
  return {
    code: value("code").valueString,
    terms: "Valid until " + when(value("expires").valueString) + "; the facility can then read the record for "
      + value("grantHours").valueInteger + " hours.",
  };
}

async function makeCode() {
  const made = await newCode(session().patient);
  $("code").textContent = made.code;
  $("code-expires").textContent = made.terms;
  $("code-box").hidden = false;
}

// The people the citizen is guardian of, each with a code button and their access log.
async function showDependents() {
  const p = await api("Patient/" + session().patient + "/$dependents");
  const list = $("dependents");
  list.replaceChildren();
  for (const d of (p.parameter || []).filter((x) => x.name === "dependent")) {
    const ref = d.valueReference || {};
    const id = (ref.reference || "").replace("Patient/", "");
    const li = document.createElement("li");
    li.className = "dependent";
    const name = document.createElement("b");
    name.textContent = ref.display || ref.reference;
    const codeButton = document.createElement("button");
    codeButton.textContent = "Make an access code";
    codeButton.className = "dependent-code";
    const logButton = document.createElement("button");
    logButton.textContent = "Who opened their record";
    logButton.className = "dependent-log";
    const out = document.createElement("ul");
    out.className = "dependent-out";
    codeButton.addEventListener("click", () => act(async () => {
      const made = await newCode(id);
      out.replaceChildren(item("Code for " + name.textContent + ": " + made.code, made.terms));
    }));
    logButton.addEventListener("click", () => act(async () => {
      const log = await api("Patient/" + id + "/$access-log?_count=50");
      const entries = (log.entry || []).map((e) => item(plainText((e.resource.text || {}).div), when(e.resource.recorded)));
      out.replaceChildren(...(entries.length ? entries : [item("Nobody else has opened this record.")]));
    }));
    li.append(name, " ", codeButton, " ", logButton, out);
    list.appendChild(li);
  }
  $("care").hidden = list.children.length === 0;
}

async function act(work) {
  try {
    await work();
  } catch (e) {
    status(e.message, true);
    if (!session()) render();
  }
}

async function render() {
  const signedIn = session() !== null;
  $("signed-out").hidden = signedIn;
  $("signed-in").hidden = !signedIn;
  $("sign-out").hidden = !signedIn;
  if (!signedIn) {
    status("You are not signed in.");
    return;
  }
  status("Loading your record…");
  await showWho();
  await Promise.all([showGrants(), showAccessLog(), showDependents()]);
  status("Up to date.");
}

window.addEventListener("DOMContentLoaded", () => {
  $("sign-in").addEventListener("click", () => act(signIn));
  $("sign-out").addEventListener("click", () => act(async () => {
    const s = session();
    sessionStorage.removeItem("session");
    if (s) {
      await fetch(origin + "/auth/revoke", {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ token: s.token }),
      }).catch(() => {});
    }
    await render();
  }));
  $("make-code").addEventListener("click", () => act(makeCode));
  act(async () => {
    const params = new URLSearchParams(window.location.search);
    if (params.has("code") || params.has("error")) await finishSignIn(params);
    await render();
  });
});
