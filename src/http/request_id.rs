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
    static REQUEST_ID: String;
}

/// The id of the request being handled. Error bodies are rendered inside the request's
/// scope, so they find it here without every handler passing it down.
pub fn current() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| Uuid::new_v4().simple().to_string())
}

/// Middleware: must run inside `TracingLogger`, which assigns the id.
pub async fn scope(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = req
        .extensions()
        .get::<tracing_actix_web::RequestId>()
        .map(|id| id.simple().to_string())
        .unwrap_or_else(|| Uuid::new_v4().simple().to_string());
    let header = HeaderValue::from_str(&id).expect("hex is a valid header value");
    let mut res = REQUEST_ID.scope(id, next.call(req)).await?;
    res.headers_mut()
        .insert(HeaderName::from_static("x-request-id"), header);
    Ok(res)
}

/// The log span of every request. Unlike tracing-actix-web's default it carries the request
/// id in the same 32-hex form as the response body, and it never logs the raw path: the
/// callback base path may hold a secret segment, so the route is logged as a pattern with
/// the base path replaced by `{base_path}`.
pub struct RootSpan;

impl tracing_actix_web::RootSpanBuilder for RootSpan {
    fn on_request_start(request: &ServiceRequest) -> tracing::Span {
        use tracing::field::Empty;
        let id = request
            .extensions()
            .get::<tracing_actix_web::RequestId>()
            .map(|id| id.simple().to_string())
            .unwrap_or_default();
        tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            http.route = %route_label(request),
            request_id = %id,
            http.status_code = Empty,
            otel.status_code = Empty,
            exception.message = Empty,
            exception.details = Empty,
        )
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
