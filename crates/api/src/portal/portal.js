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

// The page's words in Arabic, French and English ({name} marks a value put in).
const WORDS = {
  title: ["ملفي الصحي", "Mon dossier de santé", "My health record"],
  language: ["اللغة", "Langue", "Language"],
  signOut: ["تسجيل الخروج", "Se déconnecter", "Sign out"],
  intro: [
    "سجّل الدخول ببطاقة التعريف الوطنية الإلكترونية لترى من فتح ملفك، والمؤسسات التي أذنت لها، ولإنشاء رمز لزيارتك القادمة.",
    "Connectez-vous avec votre carte d'identité électronique nationale pour voir qui a ouvert votre dossier, les établissements que vous avez autorisés, et pour créer un code pour votre prochaine visite.",
    "Sign in with your national electronic ID card to see who opened your record, the facilities you have let in, and to make a code for your next visit.",
  ],
  signIn: ["تسجيل الدخول ببطاقتي الإلكترونية", "Me connecter avec ma carte d'identité électronique", "Sign in with my eID card"],
  signedInAs: ["متصل باسم", "Connecté en tant que", "Signed in as"],
  giveAccess: ["منح مؤسسة صحية حق الاطلاع", "Donner accès à un établissement", "Give a facility access"],
  codeHelp: [
    "اقرأ هذا الرمز بصوت عالٍ على مهني الصحة مع رقم بطاقة تعريفك. يُستعمل مرة واحدة ولمدة قصيرة، ويسمح لمؤسسته بالاطلاع على ملفك لبضعة أيام.",
    "Lisez ce code au professionnel de santé avec le numéro de votre carte d'identité. Il ne sert qu'une fois, pendant peu de temps, et permet à son établissement de lire votre dossier pendant quelques jours.",
    "Read this code aloud to the practitioner with your ID card number. It works once, for a short time, and lets their facility read your record for a few days.",
  ],
  makeCode: ["إنشاء رمز اطلاع", "Créer un code d'accès", "Make an access code"],
  whoCanRead: ["من يمكنه الاطلاع على ملفي الآن", "Qui peut lire mon dossier maintenant", "Who can read my record now"],
  noGrants: ["لا توجد حاليًا أي مؤسسة مأذون لها بالاطلاع على ملفك.", "Aucun établissement n'a accès à votre dossier en ce moment.", "No facility has access to your record right now."],
  care: ["الأشخاص الذين أتولى رعايتهم", "Personnes dont j'ai la charge", "People in my care"],
  careHelp: [
    "أنت الولي المسجَّل لهؤلاء الأشخاص: يمكنك منح حق الاطلاع على ملفاتهم ومعرفة من فتحها.",
    "Vous êtes le tuteur enregistré de ces personnes : vous pouvez donner accès à leur dossier et voir qui l'a ouvert.",
    "You are the recorded guardian of these people: you can give a facility access to their record and see who opened it.",
  ],
  whoOpened: ["من فتح ملفي", "Qui a ouvert mon dossier", "Who opened my record"],
  noAccesses: ["لم يفتح أحد غيرك ملفك.", "Personne d'autre n'a ouvert votre dossier.", "Nobody else has opened your record."],
  canRead: ["{who} يمكنها الاطلاع على ملفك", "{who} peut lire votre dossier", "{who} can read your record"],
  emergency: [" (دخول استثنائي)", " (accès d'urgence)", " (emergency access)"],
  until: ["حتى {when}", "jusqu'au {when}", "until {when}"],
  revoke: ["إلغاء الإذن", "Révoquer", "Revoke"],
  revoked: ["تم إلغاء الإذن: لم يعد بإمكان {who} الاطلاع على ملفك.", "Accès révoqué : {who} ne peut plus lire votre dossier.", "Access revoked: {who} can no longer read your record."],
  terms: [
    "صالح حتى {when}؛ ويمكن للمؤسسة بعد ذلك الاطلاع على الملف لمدة {hours} ساعة.",
    "Valable jusqu'au {when} ; l'établissement pourra ensuite lire le dossier pendant {hours} heures.",
    "Valid until {when}; the facility can then read the record for {hours} hours.",
  ],
  codeFor: ["رمز {name}: {code}", "Code pour {name} : {code}", "Code for {name}: {code}"],
  theirLog: ["من فتح ملفه", "Qui a ouvert son dossier", "Who opened their record"],
  nobodyTheirs: ["لم يفتح أحد آخر هذا الملف.", "Personne d'autre n'a ouvert ce dossier.", "Nobody else has opened this record."],
  notSignedIn: ["لم تسجّل الدخول بعد.", "Vous n'êtes pas connecté.", "You are not signed in."],
  loading: ["جارٍ تحميل ملفك…", "Chargement de votre dossier…", "Loading your record…"],
  upToDate: ["محدَّث.", "À jour.", "Up to date."],
  aFacility: ["مؤسسة صحية", "un établissement", "a facility"],
};
const LANGUAGES = ["ar", "fr", "en"];
const LOCALES = { ar: "ar-MA", fr: "fr-MA", en: "en-GB" };

function language() {
  const chosen = localStorage.getItem("language");
  if (LANGUAGES.includes(chosen)) return chosen;
  const browser = (navigator.language || "en").slice(0, 2);
  return LANGUAGES.includes(browser) ? browser : "en";
}

// The words of `key` in the chosen language, with {name} values put in.
function t(key, values) {
  const words = WORDS[key][LANGUAGES.indexOf(language())];
  return words.replace(/\{(\w+)\}/g, (_, name) => String((values || {})[name] ?? ""));
}

// Sets the page's language and direction, and every fixed text.
function translatePage() {
  const lang = language();
  document.documentElement.lang = lang;
  document.documentElement.dir = lang === "ar" ? "rtl" : "ltr";
  document.title = "Sijill — " + t("title");
  $("language").value = lang;
  for (const el of document.querySelectorAll("[data-t]")) el.textContent = t(el.dataset.t);
}

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
  return instant ? new Date(instant).toLocaleString(LOCALES[language()]) : "";
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
    const who = facility.display || facility.reference || t("aFacility");
    const emergency = kind.code === "break-glass" ? t("emergency") : "";
    const li = item(t("canRead", { who }) + emergency, t("until", { when: when(end) }));
    const button = document.createElement("button");
    button.textContent = t("revoke");
    button.className = "revoke";
    button.addEventListener("click", () => act(async () => {
      await api("Consent/" + c.id + "/$revoke", { method: "POST", body: "{}" });
      status(t("revoked", { who }));
      await showGrants();
    }));
    li.appendChild(button);
    list.appendChild(li);
  }
  $("no-grants").hidden = list.children.length > 0;
}

async function showAccessLog() {
  const bundle = await api("Patient/" + session().patient + "/$access-log?_count=50&language=" + language());
  const list = $("access-log");
  list.replaceChildren();
  for (const entry of bundle.entry || []) {
    list.appendChild(told(entry));
  }
  $("no-accesses").hidden = list.children.length > 0;
}

// An access-log sentence, in its own language and direction.
function told(entry) {
  const li = item(plainText((entry.resource.text || {}).div), when(entry.resource.recorded));
  li.dir = language() === "ar" ? "rtl" : "ltr";
  return li;
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
    terms: t("terms", { when: when(value("expires").valueString), hours: value("grantHours").valueInteger }),
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
    codeButton.textContent = t("makeCode");
    codeButton.className = "dependent-code";
    const logButton = document.createElement("button");
    logButton.textContent = t("theirLog");
    logButton.className = "dependent-log";
    const out = document.createElement("ul");
    out.className = "dependent-out";
    codeButton.addEventListener("click", () => act(async () => {
      const made = await newCode(id);
      out.replaceChildren(item(t("codeFor", { name: name.textContent, code: made.code }), made.terms));
    }));
    logButton.addEventListener("click", () => act(async () => {
      const log = await api("Patient/" + id + "/$access-log?_count=50&language=" + language());
      const entries = (log.entry || []).map(told);
      out.replaceChildren(...(entries.length ? entries : [item(t("nobodyTheirs"))]));
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
    status(t("notSignedIn"));
    return;
  }
  status(t("loading"));
  await showWho();
  await Promise.all([showGrants(), showAccessLog(), showDependents()]);
  status(t("upToDate"));
}

window.addEventListener("DOMContentLoaded", () => {
  translatePage();
  $("language").addEventListener("change", () => act(async () => {
    localStorage.setItem("language", $("language").value);
    translatePage();
    await render();
  }));
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
