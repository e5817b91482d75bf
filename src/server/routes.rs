//! HTTP routing of paths for the gateway, authentication with the master key, health and
//! metrics endpoints.

use std::rc::Rc;
use std::sync::atomic::Ordering;

use http::{Method, StatusCode};
use subtle::ConstantTimeEq;

use super::shard::ShardCtx;
use crate::api::{ApiError, ErrorKind};
use crate::gateway;
use crate::http1::{Request, ResponseWriter, ServerIo, Service};
use crate::keys::credential::{self, Presented};
use crate::keys::shard::Caller;
use crate::keys::Refusal;
use crate::telemetry::metrics;

pub struct GatewayService {
    ctx: Rc<ShardCtx>,
}

impl GatewayService {
    pub fn new(ctx: Rc<ShardCtx>) -> Self {
        Self { ctx }
    }
}

#[derive(Clone, Copy)]
enum Route {
    Chat,
    Models,
    Live,
    Ready,
    Metrics,
    /// The router's view of every deployment (LLMux's).
    HealthDeployments,
    /// LiteLLM's `/health` shape, from the same view.
    Health,
    DebugPanic,
    /// `POST /debug/clock`: moves the process's wall clock (rate windows, budgets), for tests.
    DebugClock,
    /// The key management API (`/key/*`, `/team/*`): master key only.
    AdminGet,
    AdminPost,
}

impl Route {
    fn name(self) -> &'static str {
        match self {
            Route::Chat => "chat_completions",
            Route::Models => "models",
            Route::Live => "health_live",
            Route::Ready => "health_ready",
            Route::Metrics => "metrics",
            Route::HealthDeployments => "health_deployments",
            Route::Health => "health",
            Route::DebugPanic | Route::DebugClock => "debug",
            Route::AdminGet | Route::AdminPost => "key_management",
        }
    }

    fn method(self) -> Method {
        match self {
            Route::Chat | Route::DebugPanic | Route::DebugClock | Route::AdminPost => Method::POST,
            _ => Method::GET,
        }
    }

    fn needs_auth(self) -> bool {
        matches!(
            self,
            Route::Chat
                | Route::Models
                | Route::HealthDeployments
                | Route::Health
                | Route::AdminGet
                | Route::AdminPost
                | Route::DebugClock
        )
    }
}

fn route(path: &str) -> Option<Route> {
    Some(match path {
        "/v1/chat/completions" | "/chat/completions" => Route::Chat,
        "/v1/models" | "/models" => Route::Models,
        "/health/live" | "/health/liveliness" | "/health/liveness" => Route::Live,
        "/health/ready" | "/health/readiness" => Route::Ready,
        "/metrics" | "/metrics/" => Route::Metrics,
        "/health/deployments" => Route::HealthDeployments,
        "/health" => Route::Health,
        "/debug/panic" => Route::DebugPanic,
        "/debug/clock" => Route::DebugClock,
        "/key/generate" | "/key/update" | "/key/delete" | "/key/block" | "/key/unblock"
        | "/team/new" => Route::AdminPost,
        "/key/info" | "/key/list" | "/team/info" => Route::AdminGet,
        _ => return None,
    })
}

/// Who is calling: the master key, a virtual key (LiteLLM's headers, order and checks), or
/// anyone when no master key is set.
async fn authenticate(
    ctx: &ShardCtx,
    snap: &crate::config::Snapshot,
    req: &Request,
) -> Result<Caller, ApiError> {
    let Some(master) = &snap.master_key else {
        return Ok(Caller::Open);
    };
    let missing = || {
        ApiError::new(
            ErrorKind::Authentication,
            "Authentication error: a valid API key is required (Authorization: Bearer <key>).",
        )
        .with_code("invalid_api_key")
    };
    let raw = match credential::presented(req) {
        Presented::Key(k) if !k.is_empty() => k,
        Presented::Malformed => return Err(Refusal::Malformed.to_error(snap.keys.budget_status)),
        _ => return Err(missing()),
    };
    if bool::from(raw.as_bytes().ct_eq(master.as_bytes())) {
        return Ok(Caller::Master);
    }
    if !snap.keys.enabled() {
        return Err(missing());
    }
    ctx.gateway
        .keys
        .authenticate(&snap.keys, raw)
        .await
        .map(Caller::Key)
        .map_err(|r| r.to_error(snap.keys.budget_status))
}

/// Every shard's view of the deployments, summed. A shard that does not answer within two
/// seconds (it is stuck, or stopping) is left out rather than holding the answer.
async fn deployment_views(
    ctx: &ShardCtx,
    snap: &std::sync::Arc<crate::config::Snapshot>,
) -> Vec<gateway::route::DeploymentView> {
    let mut replies = Vec::with_capacity(ctx.shared.shard_control.len());
    for tx in &ctx.shared.shard_control {
        let (reply, rx) = flume::bounded(1);
        let asked = tx.send(gateway::route::ShardControl::DeploymentViews {
            snap: snap.clone(),
            reply,
        });
        if asked.is_ok() {
            replies.push(rx);
        }
    }
    let mut views = Vec::with_capacity(replies.len());
    for rx in replies {
        let answer =
            monoio::time::timeout(std::time::Duration::from_secs(2), rx.recv_async()).await;
        if let Ok(Ok(v)) = answer {
            views.push(v);
        }
    }
    gateway::route::merge(views)
}

/// A key management call: parsed here, carried out by the key control plane; the keys it
/// changed are dropped from every shard's cache.
/// `POST /debug/clock` with `{"unix_ms": T}` (the clock reads T now) or `{"advance_ms": D}`;
/// master key only when one is set. Answers the clock's reading.
fn move_clock(req: &Request, caller: &Caller) -> (u16, Vec<u8>) {
    let error = |status: u16, kind: ErrorKind, message: &str| {
        (status, ApiError::new(kind, message).to_json())
    };
    if matches!(caller, Caller::Key(_)) {
        return error(
            401,
            ErrorKind::Authentication,
            "Authentication Error, /debug/clock is only for the master key",
        );
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Move {
        unix_ms: Option<u64>,
        advance_ms: Option<i64>,
    }
    let m: Move = match serde_json::from_slice(&req.body) {
        Ok(m) => m,
        Err(e) => return error(400, ErrorKind::BadRequest, &format!("bad clock move: {e}")),
    };
    let skew = crate::util::clock_skew_ms();
    let new = match (m.unix_ms, m.advance_ms) {
        (Some(t), None) => (t as i64).saturating_sub(crate::util::system_unix_ms() as i64),
        (None, Some(d)) => skew.saturating_add(d),
        _ => {
            return error(
                400,
                ErrorKind::BadRequest,
                "give one of unix_ms and advance_ms",
            )
        }
    };
    crate::util::set_clock_skew_ms(new);
    let body = serde_json::json!({ "unix_ms": crate::util::unix_ms(), "skew_ms": new });
    (200, body.to_string().into_bytes())
}

async fn admin(ctx: &ShardCtx, req: &Request, caller: &Caller) -> (u16, Vec<u8>) {
    use crate::keys::admin;
    let error = |status: u16, message: &str| {
        let kind = match status {
            401 => ErrorKind::Authentication,
            404 => ErrorKind::NotFound,
            503 => ErrorKind::ServiceUnavailable,
            500 => ErrorKind::Internal,
            _ => ErrorKind::BadRequest,
        };
        (status, ApiError::new(kind, message).to_json())
    };
    if !matches!(caller, Caller::Master) {
        return error(
            401,
            &format!(
                "Authentication Error, Tried to access route={}, which is only for MASTER KEY",
                req.path()
            ),
        );
    }
    let op = match admin::parse(req.path(), req.query(), &req.body) {
        Ok(op) => op,
        Err(e) => return error(e.status, &e.message),
    };
    let Some(tx) = crate::keys::control::sender() else {
        return error(
            400,
            "the key management API needs a database (general_settings.database_url)",
        );
    };
    let (reply, rx) = flume::bounded(1);
    if tx
        .send(crate::keys::control::KeyMsg::Admin {
            op: Box::new(op),
            reply,
        })
        .is_err()
    {
        return error(503, "the key control plane is not running");
    }
    match rx.recv_async().await {
        Ok(Ok(answer)) => {
            if !answer.invalidate.is_empty() {
                // Answered once every shard has dropped the keys (a shard that does not answer
                // within two seconds is stuck or stopping; its entries expire with the TTL).
                let tokens = std::sync::Arc::new(answer.invalidate);
                let (done, acks) = flume::unbounded();
                let mut asked = 0;
                for shard in &ctx.shared.shard_control {
                    let sent = shard.send(gateway::route::ShardControl::InvalidateKeys {
                        tokens: tokens.clone(),
                        done: done.clone(),
                    });
                    asked += usize::from(sent.is_ok());
                }
                for _ in 0..asked {
                    let ack =
                        monoio::time::timeout(std::time::Duration::from_secs(2), acks.recv_async())
                            .await;
                    if !matches!(ack, Ok(Ok(()))) {
                        break;
                    }
                }
            }
            (200, serde_json::to_vec(&answer.body).unwrap_or_default())
        }
        Ok(Err(e)) => error(e.status, &e.message),
        Err(_) => error(503, "the key control plane did not answer"),
    }
}

struct InflightGuard<'a>(&'a ShardCtx);

impl<'a> InflightGuard<'a> {
    fn new(ctx: &'a ShardCtx) -> Self {
        let n = ctx.inflight.get() + 1;
        ctx.inflight.set(n);
        // The shard's gauge is the shard's count: a store, not a locked increment.
        ctx.gateway.metrics.inflight.set(n as i64);
        Self(ctx)
    }
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        let n = self.0.inflight.get().saturating_sub(1);
        self.0.inflight.set(n);
        self.0.gateway.metrics.inflight.set(n as i64);
    }
}

impl Service for GatewayService {
    async fn call<IO: ServerIo>(&self, req: &Request, w: &mut ResponseWriter<'_, IO>) {
        let ctx = &*self.ctx;
        let _inflight = InflightGuard::new(ctx);
        let snap = ctx.snapshot();
        let route = route(req.path()).filter(|r| {
            !matches!(r, Route::DebugPanic | Route::DebugClock) || snap.server.debug_routes
        });
        let Some(route) = route else {
            let e = ApiError::new(
                ErrorKind::NotFound,
                format!("Unknown path: {}", crate::util::clip(req.path())),
            )
            .with_code("not_found");
            let _ = w.send_error(&e).await;
            ctx.gateway.metrics.record_http("unknown", 404);
            return;
        };
        let method_ok = *req.method() == route.method()
            || (*req.method() == Method::HEAD && route.method() == Method::GET);
        if !method_ok {
            let e = ApiError::new(
                ErrorKind::MethodNotAllowed,
                format!(
                    "Method {} is not allowed on {}; use {}.",
                    crate::util::clip(req.method().as_str()),
                    req.path(),
                    route.method()
                ),
            )
            .with_code("method_not_allowed");
            let _ = w.send_error(&e).await;
            ctx.gateway.metrics.record_http(route.name(), 405);
            return;
        }
        let caller = if route.needs_auth() {
            match authenticate(ctx, &snap, req).await {
                Ok(c) => c,
                Err(e) => {
                    let _ = w.send_error(&e).await;
                    ctx.gateway
                        .metrics
                        .record_http(route.name(), e.status().as_u16());
                    return;
                }
            }
        } else {
            Caller::Open
        };
        match route {
            Route::AdminGet | Route::AdminPost => {
                let (status, body) = admin(ctx, req, &caller).await;
                let _ = w
                    .send_json(
                        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                        &body,
                    )
                    .await;
                ctx.gateway.metrics.record_http(route.name(), status);
                return;
            }
            Route::Chat => gateway::chat_completions(&ctx.gateway, &snap, req, &caller, w).await,
            Route::Models => {
                let _ = w
                    .send_json(StatusCode::OK, &gateway::models_list(&snap, &caller))
                    .await;
            }
            Route::Live => {
                let _ = w.send_json(StatusCode::OK, br#"{"status":"alive"}"#).await;
            }
            Route::Ready => {
                let ready = ctx.shared.ready.load(Ordering::Relaxed) && !ctx.shared.is_draining();
                if ready {
                    let _ = w.send_json(StatusCode::OK, br#"{"status":"ready"}"#).await;
                } else {
                    let body = if ctx.shared.is_draining() {
                        &br#"{"status":"draining"}"#[..]
                    } else {
                        &br#"{"status":"starting"}"#[..]
                    };
                    let _ = w.send_json(StatusCode::SERVICE_UNAVAILABLE, body).await;
                }
            }
            Route::Metrics => {
                let text = metrics::render(&ctx.shared.registries);
                let _ = w
                    .send(StatusCode::OK, "text/plain; version=0.0.4", &[], &text)
                    .await;
            }
            Route::HealthDeployments | Route::Health => {
                let views = deployment_views(ctx, &snap).await;
                let body = if matches!(route, Route::Health) {
                    gateway::route::litellm_health(&snap, &views)
                } else {
                    serde_json::json!({ "deployments": views })
                };
                let _ = w
                    .send_json(StatusCode::OK, body.to_string().as_bytes())
                    .await;
            }
            Route::DebugPanic => panic!("panic requested through /debug/panic"),
            Route::DebugClock => {
                let (status, body) = move_clock(req, &caller);
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let _ = w.send_json(status, &body).await;
            }
        }
        let status = w.status().map(|s| s.as_u16()).unwrap_or(500);
        ctx.gateway.metrics.record_http(route.name(), status);
    }

    fn next_request_id(&self) -> String {
        self.ctx.ids.next()
    }

    fn draining(&self) -> bool {
        self.ctx.shared.is_draining()
    }

    fn on_rejected(&self, status: StatusCode) {
        self.ctx
            .gateway
            .metrics
            .record_http("rejected", status.as_u16());
    }
}
