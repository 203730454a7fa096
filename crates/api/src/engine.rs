//! The FHIR engine: one request in, one response out, independent of HTTP.
//!
//! The HTTP layer, the Bundle processor and `sijill import` all call [`Engine::execute`]
//! (or [`Engine::execute_in`] inside a transaction). Routing lives here; each interaction
//! lives in its own module under `interactions/`.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::Value;
use sijill_fhir::definitions;
use sijill_store::{Store, StoreError, StoreTx};

use crate::access::Guard;
use crate::audit::access_log;
use crate::audit::trail::AuditTrail;
use crate::audit::{Interaction, Outcome};
use crate::consent::{self, ConsentSettings};
use crate::context::RequestContext;
use crate::error::{FhirError, FhirResult};
use crate::interactions::{bundle, capabilities, create, delete, everything, history, patch, read, search, update};
use crate::scheduling::directory::{self, DirectoryCache};
use crate::scheduling::{absence, booking, figures, find, generate, staff, waitlist, SchedulingSettings};

/// The HTTP method of a FHIR interaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET (and HEAD).
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
}

impl Method {
    /// Parses a method name as used in `Bundle.entry.request.method`.
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "GET" | "HEAD" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            _ => return None,
        })
    }

    /// The method's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// Conditional request headers (or their Bundle.entry.request equivalents).
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    /// `If-Match: W/"n"`.
    pub if_match: Option<String>,
    /// `If-None-Match: W/"n"` (read).
    pub if_none_match: Option<String>,
    /// `If-Modified-Since` (read), an HTTP date.
    pub if_modified_since: Option<String>,
    /// `If-None-Exist: query` (conditional create).
    pub if_none_exist: Option<String>,
}

/// The body of a request.
#[derive(Debug, Clone)]
pub enum RequestBody {
    /// No body.
    None,
    /// A FHIR resource.
    Resource(Value),
    /// A JSON Patch document.
    JsonPatch(Value),
}

/// One FHIR interaction request, independent of HTTP.
#[derive(Debug, Clone)]
pub struct FhirRequest {
    /// Method.
    pub method: Method,
    /// Path below the FHIR base, without leading slash: `Patient/1/_history/2`.
    pub path: String,
    /// Query parameters, decoded, in order.
    pub query: Vec<(String, String)>,
    /// Conditional headers.
    pub conditions: Conditions,
    /// Body.
    pub body: RequestBody,
    /// `Prefer: handling=lenient`: unknown or unsupported search parameters are ignored
    /// (and left out of the self link) instead of refused.
    pub lenient: bool,
}

/// The body of a response.
#[derive(Debug, Clone)]
pub enum Payload {
    /// Nothing.
    None,
    /// Stored resource bytes, served as they are.
    Stored(Arc<[u8]>),
    /// A resource built for this response (Bundle, OperationOutcome, CapabilityStatement).
    Json(Value),
    /// Pre-serialised JSON bytes built for this response (Bundles with stored entries).
    Bytes(Vec<u8>),
}

/// One FHIR interaction response.
#[derive(Debug, Clone)]
pub struct FhirResponse {
    /// Status.
    pub status: StatusCode,
    /// `Location` (absolute URL of the version written).
    pub location: Option<String>,
    /// Version for `ETag: W/"n"`.
    pub version: Option<u64>,
    /// `Last-Modified`, as a stored instant.
    pub last_modified: Option<String>,
    /// Body.
    pub payload: Payload,
}

impl FhirResponse {
    /// A response with a status and a body, no headers.
    pub fn new(status: StatusCode, payload: Payload) -> Self {
        FhirResponse {
            status,
            location: None,
            version: None,
            last_modified: None,
            payload,
        }
    }
}

/// Where a request path points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `` (the base: Bundle POST, system search).
    System,
    /// `metadata`.
    Metadata,
    /// `_history`.
    SystemHistory,
    /// `Type`.
    Type(String),
    /// `Type/_search`.
    TypeSearch(String),
    /// `Type/_history`.
    TypeHistory(String),
    /// `Type/id`.
    Instance(String, String),
    /// `Type/id/_history`.
    InstanceHistory(String, String),
    /// `Type/id/_history/vid`.
    Version(String, String, String),
    /// `Owner/id/Type`: a search within a compartment.
    Compartment(String, String, String),
    /// `Type/id/$operation`.
    InstanceOperation(String, String, String),
    /// `Type/$op`.
    TypeOperation(String, String),
}

impl Route {
    /// Parses a path below the FHIR base. Unknown resource types are 404.
    pub fn parse(path: &str) -> FhirResult<Route> {
        let path = path.trim_matches('/');
        let parts: Vec<&str> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').collect()
        };
        let route = match parts.as_slice() {
            [] => return Ok(Route::System),
            ["metadata"] => return Ok(Route::Metadata),
            ["_history"] => return Ok(Route::SystemHistory),
            [t, ..] if !definitions::is_resource_type(t) => {
                return Err(FhirError::not_found(format!("Unknown resource type '{}'", truncate(t))))
            }
            [t] => Route::Type(t.to_string()),
            [t, "_search"] => Route::TypeSearch(t.to_string()),
            [t, "_history"] => Route::TypeHistory(t.to_string()),
            [t, op] if op.starts_with('$') => Route::TypeOperation(t.to_string(), op.to_string()),
            [t, id] => Route::Instance(t.to_string(), id.to_string()),
            [t, id, "_history"] => Route::InstanceHistory(t.to_string(), id.to_string()),
            [t, id, op] if op.starts_with('$') => {
                Route::InstanceOperation(t.to_string(), id.to_string(), op.to_string())
            }
            [t, id, member] if definitions::is_resource_type(member) => {
                Route::Compartment(t.to_string(), id.to_string(), member.to_string())
            }
            [t, id, "_history", v] => Route::Version(t.to_string(), id.to_string(), v.to_string()),
            _ => {
                return Err(FhirError::not_found(format!(
                    "No FHIR interaction at '{}'",
                    truncate(path)
                )))
            }
        };
        Ok(route)
    }
}

/// Shortens untrusted text before it is echoed in an error message.
pub fn truncate(s: &str) -> String {
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s.to_string()
    }
}

/// How an interaction reaches the store: on its own (its own transaction for a write), or
/// as an entry of a transaction Bundle.
pub enum Exec<'a> {
    /// Standalone: writes get their own transaction.
    Standalone,
    /// Inside a running transaction.
    InTx(&'a mut dyn StoreTx),
}

/// Limits that protect the server from hostile input.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
    /// Deepest accepted JSON nesting.
    pub max_depth: usize,
    /// Most entries in one Bundle.
    pub max_bundle_entries: usize,
    /// Largest page size.
    pub max_count: usize,
    /// Default page size.
    pub default_count: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 16 * 1024 * 1024,
            max_depth: 100,
            max_bundle_entries: 100_000,
            max_count: 1000,
            default_count: 50,
        }
    }
}

/// The engine: the store, the server's base URL and its limits.
#[derive(Clone)]
pub struct Engine {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Absolute base URL of the FHIR endpoint, without trailing slash (`http://host/fhir`).
    pub base_url: String,
    /// Input limits.
    pub limits: Limits,
    /// Result snapshots of sorted searches.
    pub snapshots: Arc<crate::snapshots::Snapshots>,
    /// Where the audit events of requests that write nothing go.
    pub audit: Arc<AuditTrail>,
    /// Access codes, grants and break-glass.
    pub consent: ConsentSettings,
    /// Slots, holds and bookings.
    pub scheduling: SchedulingSettings,
    /// How notices to patients are delivered.
    pub outbox: crate::outbox::OutboxSettings,
    /// The directory facts `$find` filters on.
    pub directory: Arc<DirectoryCache>,
    /// Bookings of one slot take turns in this server.
    pub slot_turns: Arc<crate::scheduling::turns::SlotTurns>,
}

impl Engine {
    /// A new engine.
    pub fn new(store: Arc<dyn Store>, base_url: impl Into<String>, limits: Limits) -> Self {
        Engine {
            audit: Arc::new(AuditTrail::new(store.clone(), true)),
            store,
            base_url: base_url.into().trim_end_matches('/').to_string(),
            limits,
            snapshots: Arc::default(),
            consent: ConsentSettings::default(),
            scheduling: SchedulingSettings::default(),
            outbox: crate::outbox::OutboxSettings::default(),
            directory: Arc::default(),
            slot_turns: Arc::default(),
        }
    }

    /// The same engine recording no audit events: for measuring what the audit costs,
    /// never for serving real data.
    pub fn without_audit(mut self) -> Self {
        self.audit = Arc::new(AuditTrail::new(self.store.clone(), false));
        self
    }

    /// Runs one interaction on its own.
    pub fn execute(&self, ctx: &RequestContext, req: FhirRequest) -> FhirResult<FhirResponse> {
        let route = match Route::parse(&req.path) {
            Ok(r) => r,
            Err(e) => {
                let guard = Guard::new(self, ctx, Interaction::of(req.method, None, &req));
                return self.audited(&guard, Err(e));
            }
        };
        if route == Route::System && req.method == Method::Post {
            let guard = Guard::new(self, ctx, Interaction::of(req.method, Some(&route), &req));
            let result = bundle::process(self, &guard, req);
            return self.audited(&guard, result);
        }
        self.dispatch(ctx, Exec::Standalone, route, req)
    }

    /// Runs one interaction as part of a running transaction.
    pub fn execute_in(&self, ctx: &RequestContext, tx: &mut dyn StoreTx, req: FhirRequest) -> FhirResult<FhirResponse> {
        let route = Route::parse(&req.path)?;
        if route == Route::System {
            return Err(FhirError::bad_request("A Bundle entry cannot address the server base"));
        }
        self.dispatch(ctx, Exec::InTx(tx), route, req)
    }

    /// Runs an interaction and records its audit events: in the transaction it runs in, or
    /// (when it wrote nothing itself) through the audit trail before the response leaves.
    fn dispatch(
        &self,
        ctx: &RequestContext,
        exec: Exec<'_>,
        route: Route,
        req: FhirRequest,
    ) -> FhirResult<FhirResponse> {
        let guard = Guard::new(self, ctx, Interaction::of(req.method, Some(&route), &req));
        // A write to the directory makes `$find`'s facts stale, once it has been done (a
        // Bundle's entries: before their transaction commits; the facts' age bounds that).
        let writes_directory = req.method != Method::Get
            && matches!(&route, Route::Type(t) | Route::Instance(t, _) if directory::is_source(t));
        let result = match exec {
            Exec::Standalone => {
                let result = self.run(&guard, Exec::Standalone, route, req);
                self.audited(&guard, result)
            }
            Exec::InTx(tx) => {
                let result = self.run(&guard, Exec::InTx(&mut *tx), route, req);
                if !guard.audited() {
                    self.append_events(&guard, tx, &outcome_of(&result))?;
                    guard.mark_audited();
                }
                result
            }
        };
        if writes_directory && result.is_ok() {
            self.directory.invalidate();
        }
        result
    }

    /// Records the events of a request whose write (if any) did not already: a request
    /// whose events cannot be recorded fails, whatever it found.
    fn audited(&self, guard: &Guard<'_>, result: FhirResult<FhirResponse>) -> FhirResult<FhirResponse> {
        if guard.audited() {
            return result;
        }
        match self.audit.record(guard.audit_events(&outcome_of(&result))) {
            Ok(()) => result,
            Err(e) => {
                tracing::error!(error = %e, "a request failed because its audit event could not be written");
                Err(FhirError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "transient",
                    "The request could not be recorded in the audit trail, so it was not answered; try again",
                ))
            }
        }
    }

    fn run(&self, guard: &Guard<'_>, exec: Exec<'_>, route: Route, req: FhirRequest) -> FhirResult<FhirResponse> {
        use Method::*;
        let is_audit = |t: &str| t == "AuditEvent";
        // Reading the trail first moves the audit journal into it (so that it shows every
        // request made before), a write of its own: never inside another transaction (a
        // Bundle's).
        let reads_trail = match &route {
            Route::Type(t) | Route::TypeSearch(t) | Route::Instance(t, _) | Route::TypeOperation(t, _) => is_audit(t),
            Route::InstanceOperation(t, _, op) => is_audit(t) || (t == "Patient" && op == "$access-log"),
            _ => false,
        };
        if reads_trail {
            if matches!(exec, Exec::InTx(_)) {
                return Err(FhirError::bad_request(
                    "The audit trail and the access log are read on their own, not inside a transaction or batch write",
                ));
            }
            self.audit.flush()?;
        }
        match (req.method, route) {
            (Get, Route::Type(t)) | (Post, Route::TypeSearch(t)) if is_audit(&t) => {
                access_log::search(self, guard, &req.query)
            }
            (Get, Route::Instance(t, id)) if is_audit(&t) => access_log::read(self, guard, &id),
            (Get, Route::TypeOperation(t, op)) if is_audit(&t) && op == "$review-queue" => {
                access_log::review_queue(self, guard, &req.query)
            }
            (Post, Route::InstanceOperation(t, id, op)) if is_audit(&t) && op == "$review" => {
                access_log::review(self, guard, &id, &req.body)
            }
            (
                _,
                Route::Type(t)
                | Route::TypeSearch(t)
                | Route::TypeHistory(t)
                | Route::TypeOperation(t, _)
                | Route::Instance(t, _)
                | Route::InstanceHistory(t, _)
                | Route::Version(t, ..)
                | Route::InstanceOperation(t, ..),
            ) if is_audit(&t) => Err(access_log::append_only()),
            (Post, Route::InstanceOperation(t, id, op)) if t == "Patient" && op == "$access-code" => {
                consent::access_code(self, guard, &id, &req.body)
            }
            (Post, Route::TypeOperation(t, op)) if t == "Patient" && op == "$grant-access" => {
                consent::grant_access(self, guard, &req.body)
            }
            (Post, Route::InstanceOperation(t, id, op)) if t == "Patient" && op == "$break-glass" => {
                consent::break_glass(self, guard, &id, &req.body)
            }
            (Post, Route::InstanceOperation(t, id, op)) if t == "Consent" && op == "$revoke" => {
                consent::revoke(self, guard, &id)
            }
            (Get, Route::InstanceOperation(t, id, op)) if t == "Patient" && op == "$access-log" => {
                access_log::access_log(self, guard, &id, &req.query)
            }
            (Get, Route::InstanceOperation(t, id, op)) if t == "Patient" && op == "$dependents" => {
                crate::guardian::dependents(self, guard, &id)
            }
            (Get | Post, Route::TypeOperation(t, op)) if t == "Appointment" && op == "$find" => {
                find::find(self, guard, &req.query, &req.body)
            }
            (Get, Route::TypeOperation(t, op)) if t == "Appointment" && op == "$wait-times" => {
                figures::wait_times(self, guard, &req.query)
            }
            (Post, Route::TypeOperation(t, op)) if t == "Appointment" && op == "$join-waitlist" => {
                waitlist::join(self, guard, &req.body)
            }
            (Post, Route::TypeOperation(t, op)) if t == "Appointment" && op == "$hold" => {
                booking::hold(self, guard, &req.body)
            }
            (Post, Route::TypeOperation(t, op)) if t == "Appointment" && op == "$book" => {
                booking::book(self, guard, &req.body)
            }
            (Post, Route::InstanceOperation(t, id, op)) if t == "Appointment" && op == "$cancel" => {
                booking::cancel(self, guard, &id, &req.body)
            }
            (Post, Route::InstanceOperation(t, id, op)) if t == "Appointment" && op == "$reschedule" => {
                booking::reschedule(self, guard, &id, &req.body)
            }
            (Post, Route::InstanceOperation(t, id, op)) if t == "Appointment" && op == "$check-in" => {
                staff::check_in(self, guard, &id)
            }
            (Post, Route::InstanceOperation(t, id, op)) if t == "Appointment" && op == "$no-show" => {
                staff::no_show(self, guard, &id)
            }
            (Post, Route::InstanceOperation(t, id, op)) if t == "Schedule" && op == "$block" => {
                absence::block(self, guard, &id, &req.body)
            }
            (Post, Route::InstanceOperation(t, id, op)) if t == "Schedule" && op == "$generate-slots" => {
                generate::generate_one(self, guard, &id)
            }
            (Post, Route::TypeOperation(t, op)) if t == "Schedule" && op == "$generate-slots" => {
                generate::generate_all_operation(self, guard)
            }
            (Get, Route::Metadata) => Ok(capabilities::capability_statement(self)),
            (Get, Route::Instance(t, id)) => read::read(self, guard, exec, &t, &id, &req.conditions),
            (Get, Route::Version(t, id, v)) => read::vread(self, guard, &t, &id, &v),
            (Get, Route::Type(t)) | (Post, Route::TypeSearch(t)) => {
                search::search(self, guard, exec, &t, None, &req.query, req.lenient)
            }
            (Get, Route::Compartment(owner, id, t)) => {
                search::search(self, guard, exec, &t, Some((&owner, &id)), &req.query, req.lenient)
            }
            (Get | Post, Route::InstanceOperation(t, id, op)) if t == "Patient" && op == "$everything" => {
                everything::everything(self, guard, &id, &req.query)
            }
            (Get | Post, Route::TypeOperation(t, op)) if t == "Patient" && op == "$everything" => {
                everything::everything_for_all(self, guard, &req.query)
            }
            (_, Route::InstanceOperation(_, _, op)) | (_, Route::TypeOperation(_, op)) => Err(FhirError::new(
                StatusCode::NOT_FOUND,
                "not-supported",
                format!("Operation '{}' is not supported here", truncate(&op)),
            )),
            (Get, Route::SystemHistory) => {
                history::history(self, guard, sijill_store::HistoryScope::System, &req.query)
            }
            (Get, Route::TypeHistory(t)) => {
                history::history(self, guard, sijill_store::HistoryScope::Type(t), &req.query)
            }
            (Get, Route::InstanceHistory(t, id)) => {
                history::history(self, guard, sijill_store::HistoryScope::Instance(t, id), &req.query)
            }
            (Post, Route::Type(t)) => create::create(self, guard, exec, &t, req),
            (Put, Route::Instance(t, id)) => update::update(self, guard, exec, &t, Some(&id), req),
            (Put, Route::Type(t)) => update::update(self, guard, exec, &t, None, req),
            (Patch, Route::Instance(t, id)) => patch::patch(self, guard, exec, &t, Some(&id), req),
            (Patch, Route::Type(t)) => patch::patch(self, guard, exec, &t, None, req),
            (Delete, Route::Instance(t, id)) => delete::delete(self, guard, exec, &t, Some(&id), req),
            (Delete, Route::Type(t)) => delete::delete(self, guard, exec, &t, None, req),
            (m, r) => Err(FhirError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "not-supported",
                format!("{} is not supported on {}", m.as_str(), route_name(&r)),
            )),
        }
    }

    /// Runs `work` in a write transaction: standalone requests get a new one, Bundle
    /// entries use the Bundle's. A FhirError from `work` rolls the transaction back. When
    /// `work` succeeds, the request's audit events (what `guard` saw) are appended in the
    /// same transaction.
    pub fn with_tx<T>(
        &self,
        guard: &Guard<'_>,
        exec: Exec<'_>,
        work: impl FnOnce(&mut dyn StoreTx) -> FhirResult<T>,
    ) -> FhirResult<T> {
        self.audited_tx(guard, exec, |tx| work(tx).map(Ok))
    }

    /// [`Engine::with_tx`] for a standalone write that may end in a refusal that must
    /// still commit (a wrong access code's attempt counters): `Ok(Err(refusal))` commits
    /// the work and returns the refusal, whose audit event then records it as refused.
    pub fn with_tx_or_refuse<T>(
        &self,
        guard: &Guard<'_>,
        work: impl FnOnce(&mut dyn StoreTx) -> FhirResult<Result<T, FhirError>>,
    ) -> FhirResult<T> {
        self.audited_tx(guard, Exec::Standalone, work)
    }

    /// Runs `work` in a transaction and, when it succeeds without a refusal, appends the
    /// request's success events in the same transaction.
    fn audited_tx<T>(
        &self,
        guard: &Guard<'_>,
        exec: Exec<'_>,
        work: impl FnOnce(&mut dyn StoreTx) -> FhirResult<Result<T, FhirError>>,
    ) -> FhirResult<T> {
        let done = self.in_transaction(exec, |tx| {
            let out = work(tx)?;
            if out.is_ok() {
                self.append_events(guard, tx, &Outcome::success())?;
            }
            Ok(out)
        })??;
        guard.mark_audited();
        Ok(done)
    }

    /// Appends the request's events (with `outcome`) to a running transaction.
    fn append_events(&self, guard: &Guard<'_>, tx: &mut dyn StoreTx, outcome: &Outcome) -> FhirResult<()> {
        if self.audit.enabled() {
            tx.append_audit(guard.audit_events(outcome))?;
        }
        Ok(())
    }

    /// Runs `work` in a write transaction without appending audit events: for work whose
    /// interactions record their own (a batch entry run with [`Engine::execute_in`]).
    pub fn in_transaction<T>(
        &self,
        exec: Exec<'_>,
        work: impl FnOnce(&mut dyn StoreTx) -> FhirResult<T>,
    ) -> FhirResult<T> {
        match exec {
            Exec::InTx(tx) => work(tx),
            Exec::Standalone => {
                let mut work = Some(work);
                let mut out = None;
                let mut failure = None;
                let result = self.store.write(&mut |tx| {
                    let Some(work) = work.take() else {
                        return Err(StoreError::Database("unit of work ran twice".into()));
                    };
                    match work(tx) {
                        Ok(v) => {
                            out = Some(v);
                            Ok(())
                        }
                        Err(e) => {
                            failure = Some(e);
                            Err(StoreError::Invalid("rolled back".into()))
                        }
                    }
                });
                match (result, failure, out) {
                    (_, Some(e), _) => Err(e),
                    (Err(e), None, _) => Err(e.into()),
                    (Ok(()), None, Some(v)) => Ok(v),
                    (Ok(()), None, None) => Err(FhirError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "exception",
                        "the write produced no result",
                    )),
                }
            }
        }
    }

    /// The absolute URL of a version: `{base}/Type/id/_history/v`.
    pub fn version_url(&self, resource_type: &str, id: &str, version: u64) -> String {
        format!("{}/{resource_type}/{id}/_history/{version}", self.base_url)
    }
}

/// The audit outcome of an interaction's result.
fn outcome_of(result: &FhirResult<FhirResponse>) -> Outcome {
    match result {
        Ok(r) => Outcome::of_status(r.status.as_u16(), None),
        Err(e) => Outcome::of_status(e.status.as_u16(), e.issues.first().map(|i| i.diagnostics.clone())),
    }
}

impl Interaction {
    /// What a request does, for its audit events (`route` None: a path that did not parse).
    pub fn of(method: Method, route: Option<&Route>, req: &FhirRequest) -> Interaction {
        use Method::*;
        let (code, action) = match (method, route) {
            (_, None) => ("operation", "E"),
            (Get, Some(Route::Metadata)) => ("capabilities", "R"),
            (Get, Some(Route::Instance(..))) => ("read", "R"),
            (Get, Some(Route::Version(..))) => ("vread", "R"),
            (Get, Some(Route::Type(_) | Route::Compartment(..))) | (Post, Some(Route::TypeSearch(_))) => {
                ("search-type", "E")
            }
            (Get, Some(Route::System)) => ("search-system", "E"),
            (Get, Some(Route::SystemHistory)) => ("history-system", "R"),
            (Get, Some(Route::TypeHistory(_))) => ("history-type", "R"),
            (Get, Some(Route::InstanceHistory(..))) => ("history-instance", "R"),
            (Post, Some(Route::System)) => ("transaction", "E"),
            (Post, Some(Route::Type(_))) => ("create", "C"),
            (Put, _) => ("update", "U"),
            (Patch, _) => ("patch", "U"),
            (Delete, _) => ("delete", "D"),
            _ => ("operation", "E"),
        };
        let query = (!req.query.is_empty()).then(|| {
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(req.query.iter())
                .finish()
        });
        Interaction {
            code,
            action,
            request: format!("{} {}", method.as_str(), truncate(&req.path)),
            query,
        }
    }
}

fn route_name(route: &Route) -> &'static str {
    match route {
        Route::System => "the server base",
        Route::Metadata => "metadata",
        Route::SystemHistory | Route::TypeHistory(_) | Route::InstanceHistory(..) => "a history",
        Route::Type(_) | Route::TypeSearch(_) => "a resource type",
        Route::Instance(..) => "a resource instance",
        Route::Version(..) => "a resource version",
        Route::Compartment(..) => "a compartment",
        Route::InstanceOperation(..) | Route::TypeOperation(..) => "an operation",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(Route::parse("").unwrap(), Route::System);
        assert_eq!(
            Route::parse("Patient/1/_history/2").unwrap(),
            Route::Version("Patient".into(), "1".into(), "2".into())
        );
        assert_eq!(
            Route::parse("Patient/_history").unwrap(),
            Route::TypeHistory("Patient".into())
        );
        assert_eq!(Route::parse("Foo/1").unwrap_err().status, StatusCode::NOT_FOUND);
        assert_eq!(
            Route::parse("Patient/1/x/y/z").unwrap_err().status,
            StatusCode::NOT_FOUND
        );
    }
}
