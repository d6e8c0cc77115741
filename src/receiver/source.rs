//! `callbacks.allowed_networks`: the callbacks cannot carry credentials (the phones send
//! what chapter 6 shows and nothing else), so besides the secret-looking base path their
//! protection is where they come from. A callback from elsewhere is refused before its body
//! is read, and counted.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, web};

use crate::config::Networks;
use crate::http::source::{ClientAddress, record_client};
use crate::http::{ErrorCode, error_response};
use crate::metrics::Metrics;

/// `callbacks.allowed_networks`, as the HTTP workers share it.
#[derive(Debug, Clone)]
pub struct AllowedNetworks(pub Networks);

/// Middleware of the callback scope.
pub async fn admit(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let allowed = req.app_data::<web::Data<AllowedNetworks>>().cloned();
    let refused = allowed.is_some_and(|allowed| !admitted(&req, &allowed.0));
    if !refused {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    if let Some(metrics) = req.app_data::<web::Data<Metrics>>() {
        metrics.callbacks_refused.inc();
    }
    let response = error_response(
        ErrorCode::SourceRefused,
        "callbacks are not accepted from this address (callbacks.allowed_networks)",
    );
    Ok(req.into_response(response).map_into_right_body())
}

/// Whether the request's client address (computed by the log span) is in `allowed`; an
/// empty list admits everyone.
fn admitted(req: &ServiceRequest, allowed: &Networks) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let known = req.extensions().get::<ClientAddress>().map(|c| c.0);
    known
        .or_else(|| record_client(req))
        .is_some_and(|addr| allowed.contains(addr))
}
