//! What the console does to the fleet: restart or reset a phone, pause, resume or abort a
//! rollout. Each is two steps: a GET shows what will happen and asks to confirm (a page, so
//! it works from a keyboard and without script), the confirmation is a POST carrying the
//! CSRF token. The action runs through the service the API's route calls
//! (`Watchdog::manual`, `rollout::change_state`), and the console's guard writes its audit
//! line like the API's, with the token's name.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use maud::html;

use super::auth::{CsrfForm, Operator, csrf_field};
use super::{ConsoleError, PREFIX, layout};
use crate::api::ApiError;
use crate::clock::Clock;
use crate::domain::{Action, Outcome, PhoneId};
use crate::rollout::{Change, change_state};
use crate::store::Store;
use crate::watchdog::Watchdog;

fn phone_action(action: &str) -> Result<Action, ConsoleError> {
    match action {
        "restart" => Ok(Action::Restart),
        "reset" => Ok(Action::Reset),
        other => Err(ConsoleError::UnknownAction(other.into())),
    }
}

/// What a phone action does: 4.3.5 and 4.3.6 are asynchronous jobs, which cphub follows
/// (4.4.1) as it does for the API's restart and reset.
fn phone_effect(action: Action) -> &'static str {
    match action {
        Action::Reset => {
            "Restores the phone to factory settings (4.3.5); cphub follows the job and \
             re-applies the phone's callback properties."
        }
        _ => "Restarts the phone (4.3.6); cphub follows the job.",
    }
}

/// The page that asks to confirm: what will happen, a form posting to `action_url` with
/// the CSRF token, and the way back.
fn confirm_page(operator: &Operator, action_url: &str, question: &str, effect: &str, back: &str) -> HttpResponse {
    let body = html! {
        h1 { (question) }
        p { (effect) }
        form method="post" action=(action_url) {
            (csrf_field(operator))
            button.danger type="submit" { "Confirm" }
        }
        p { a href=(back) { "Cancel" } }
    };
    layout::html_ok(layout::page(operator, question, body))
}

/// A confirmation's target and action, once its CSRF token is the operator's.
fn confirmed<T>(
    operator: &Operator,
    form: &Option<web::Form<CsrfForm>>,
    path: web::Path<(T, String)>,
) -> Result<(T, String), ConsoleError> {
    operator.check_csrf(CsrfForm::presented(form))?;
    Ok(path.into_inner())
}

pub(super) async fn confirm_phone(
    operator: Operator,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ConsoleError> {
    let (phone, action) = path.into_inner();
    let id = PhoneId::parse("phone_id", phone)?;
    let action = phone_action(&action)?;
    let url = format!("{PREFIX}/phones/{id}/{action}");
    let question = format!("{action} phone {id}?");
    let back = format!("{PREFIX}/phones/{id}");
    Ok(confirm_page(&operator, &url, &question, phone_effect(action), &back))
}

pub(super) async fn phone(
    operator: Operator,
    path: web::Path<(String, String)>,
    form: Option<web::Form<CsrfForm>>,
    watchdog: Option<web::Data<Arc<Watchdog>>>,
) -> Result<HttpResponse, ConsoleError> {
    let (phone, action) = confirmed(&operator, &form, path)?;
    let id = PhoneId::parse("phone_id", phone)?;
    let action = phone_action(&action)?;
    let watchdog = watchdog.ok_or(ApiError::CphNotConfigured)?;
    watchdog.check_followed().map_err(ApiError::from)?;
    let recovery = watchdog.manual(&id, action).await.map_err(ApiError::from)?;
    // Refused by the control plane at once (7.2): said so, with its reason.
    let refused =
        matches!(recovery.outcome, Outcome::Error | Outcome::Failed) && recovery.job_id.is_none();
    let title = if refused { "Not started" } else { "Started" };
    let body = html! {
        h1 { (action) " of phone " (id) " " (title.to_lowercase()) }
        @if refused {
            p { "Recovery " (recovery.id) ": " (recovery.error.as_deref().unwrap_or("refused")) }
        } @else {
            p { "Recovery " (recovery.id) ", job " (recovery.job_id.as_deref().unwrap_or("—")) "." }
        }
        p { a href={ (PREFIX) "/phones/" (id) "#recoveries" } { "Back to the phone" } }
    };
    Ok(layout::html(
        actix_web::http::StatusCode::ACCEPTED,
        layout::page(&operator, title, body),
    ))
}

fn rollout_change(action: &str) -> Result<Change<'static>, ConsoleError> {
    match action {
        "pause" => Ok(Change::Pause {
            by: "operator",
            why: "paused from the console",
        }),
        "resume" => Ok(Change::Resume),
        "abort" => Ok(Change::Abort),
        other => Err(ConsoleError::UnknownAction(other.into())),
    }
}

pub(super) async fn confirm_rollout(
    operator: Operator,
    path: web::Path<(i64, String)>,
) -> Result<HttpResponse, ConsoleError> {
    let (id, action) = path.into_inner();
    rollout_change(&action)?;
    let url = format!("{PREFIX}/rollouts/{id}/{action}");
    let question = format!("{action} rollout {id}?");
    let effect = "Paused and aborted rollouts follow the updates already sent to their end.";
    let back = format!("{PREFIX}/rollouts/{id}");
    Ok(confirm_page(&operator, &url, &question, effect, &back))
}

pub(super) async fn rollout(
    operator: Operator,
    path: web::Path<(i64, String)>,
    form: Option<web::Form<CsrfForm>>,
    store: web::Data<dyn Store>,
    clock: web::Data<dyn Clock>,
) -> Result<HttpResponse, ConsoleError> {
    let (id, action) = confirmed(&operator, &form, path)?;
    let change = rollout_change(&action)?;
    let rollout =
        (change_state(&**store, clock.now(), id, change).await).map_err(ApiError::from)?;
    Ok(HttpResponse::SeeOther()
        .insert_header((
            actix_web::http::header::LOCATION,
            format!("{PREFIX}/rollouts/{}", rollout.id),
        ))
        .finish())
}
