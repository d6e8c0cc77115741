//! Every response carries a request id: in the JSON body (`request_id`, 32 lowercase hex, as
//! chapter 6 shows) and in the `x-request-id` header. It is the id tracing-actix-web puts on
//! the request's log span, so a body can be matched to its log lines.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use uuid::Uuid;

use crate::config::BasePath;

tokio::task_local! {
    static REQUEST_ID: RequestId;
}

/// A request id as its 32 lowercase hex digits, kept inline: formatted once per request (in
/// the log span) and copied from there, never allocated.
#[derive(Clone, Copy)]
pub struct RequestId([u8; 32]);

impl RequestId {
    fn new(uuid: Uuid) -> Self {
        let mut hex = [0; 32];
        uuid.simple().encode_lower(&mut hex);
        RequestId(hex)
    }

    fn random() -> Self {
        RequestId::new(Uuid::new_v4())
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for RequestId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// The matched route's label, computed once per request by the log span and taken over by
/// the HTTP metrics.
pub struct RouteLabel(pub String);

/// The id of the request being handled. Error bodies are rendered inside the request's
/// scope, so they find it here without every handler passing it down.
pub fn current_id() -> RequestId {
    REQUEST_ID
        .try_with(|id| *id)
        .unwrap_or_else(|_| RequestId::random())
}

/// [`current_id`] as a `String`, for bodies built as JSON values.
pub fn current() -> String {
    current_id().to_string()
}

/// Middleware: must run inside `TracingLogger`, whose [`RootSpan`] formats the id.
pub async fn scope(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = req.extensions().get::<RequestId>().copied();
    let id = id.unwrap_or_else(RequestId::random);
    let header = HeaderValue::from_str(id.as_str()).expect("hex is a valid header value");
    let mut res = REQUEST_ID.scope(id, next.call(req)).await?;
    res.headers_mut()
        .insert(HeaderName::from_static("x-request-id"), header);
    Ok(res)
}

/// The log span of every request. Unlike tracing-actix-web's default it carries the request
/// id in the same 32-hex form as the response body, and it never logs the raw path: the
/// callback base path may hold a secret segment, so the route is logged as a pattern with
/// the base path replaced by `{base_path}`. It names the client address
/// (`http::source`: the peer, or what a trusted proxy forwarded).
pub struct RootSpan;

/// The route patterns whose request span is at DEBUG, not INFO: chapter 6.4's heartbeats,
/// every phone's every few seconds, the bulk of all requests. Their handler logs nothing
/// (answered from memory; a bad body is a 4xx, not logged), so at INFO their span showed in
/// no log line and cost a fifth of each heartbeat's CPU: 87k heartbeats a second with it,
/// 108k without (docs/benchmarks.md). With `log.level = "debug"` they have it again, and
/// traces export them.
const FLOOD_ROUTES: [&str; 1] = ["{base_path}/heartbeat"];

/// The request span's fields, at `$level`: `tracing` fixes a span's level where it is
/// written, so the two levels are two call sites of the one list.
macro_rules! request_span {
    ($level:expr, $request:expr, $route:expr, $client:expr, $id:expr) => {
        tracing::span!(
            $level,
            "HTTP request",
            http.method = %$request.method(),
            http.route = %$route,
            client.address = $client.map(tracing::field::display),
            request_id = %$id,
            // The operator API's caller: the token's name from api.tokens, never the token.
            token_name = tracing::field::Empty,
            // What the request was about, when its handler learns it (callbacks, mints).
            session_id = tracing::field::Empty,
            phone_id = tracing::field::Empty,
            http.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            exception.message = tracing::field::Empty,
            exception.details = tracing::field::Empty,
        )
    };
}

impl tracing_actix_web::RootSpanBuilder for RootSpan {
    fn on_request_start(request: &ServiceRequest) -> tracing::Span {
        let id = request
            .extensions()
            .get::<tracing_actix_web::RequestId>()
            .map(|id| RequestId::new(**id))
            .unwrap_or_else(RequestId::random);
        let route = route_label(request);
        let client = super::source::record_client(request);
        let span = match FLOOD_ROUTES.contains(&route.as_str()) {
            true => request_span!(tracing::Level::DEBUG, request, route, client, id),
            false => request_span!(tracing::Level::INFO, request, route, client, id),
        };
        let mut extensions = request.extensions_mut();
        extensions.insert(id);
        extensions.insert(RouteLabel(route));
        span
    }

    fn on_request_end<B: MessageBody>(
        span: tracing::Span,
        outcome: &Result<ServiceResponse<B>, Error>,
    ) {
        tracing_actix_web::DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// The matched route pattern with the callback base path hidden; "unmatched" otherwise.
pub fn route_label(request: &ServiceRequest) -> String {
    let Some(pattern) = request.match_pattern() else {
        return "unmatched".into();
    };
    let base = request.app_data::<actix_web::web::Data<BasePath>>();
    match base.and_then(|base| pattern.strip_prefix(base.as_str())) {
        Some(rest) => format!("{{base_path}}{rest}"),
        None => pattern,
    }
}
