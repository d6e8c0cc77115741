//! Batch operations: chapters 4.3.5 (reset), 4.3.6 (restart), 4.3.7 (stop) and 4.3.9
//! (update properties). Each answers at once, 201 (7.1.2: "the normal response code for the
//! POST operation"), with one job per phone, or a per-phone error in its place, exactly as
//! the examples show them: `{"phone_id", "job_id"}` or `{"phone_id", "error_code",
//! "error_msg"}`. A task per job finishes it after `job_delay`, which is when the phone
//! changes.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::ControlPlaneSettings;
use super::auth::ControlPlane;
use super::error::{ControlPlaneError, ItemError};
use super::faults::Operation as Api;
use super::wire::{created_json, parse_json, timestamp};
use crate::cph::model::status::{STOPPED, STOPPING};
use crate::cph::model::{job_status, status};
use crate::cph::properties::is_attribute;
use crate::http::request_id;
use crate::simulator::fleet::{
    Fleet, JobFailure, JobKind, PhoneFaults, SharedFleet, SimJob, SimPhone,
};


type Properties = BTreeMap<String, String>;

/// `{"phones": [{"phone_id", "property"?}]}` of update-property, restart and reset. The
/// property is kept raw so that a bad one fails only its own phone.
/// A restart's optional `image_id` (4.3.6, "the image to be updated") is not read: the fake
/// has one image, and cphub never sends it. A body without `phones` (or `phone_ids`), or
/// an item without `phone_id`, is refused whole with 7.2's parameter error (`CPS.0200`, by
/// [`parse_json`]); an empty list is `CPS.0009`. The reference is silent on both.
#[derive(Deserialize)]
struct PhonesBody {
    phones: Vec<PhoneItem>,
}

/// One entry of `phones`. Table 4-40 types `phone_id` as a "String array"; its example
/// (and Huawei's SDK) sends one string per entry, which is what is read here: an array is
/// refused as a malformed body.
#[derive(Deserialize)]
struct PhoneItem {
    phone_id: String,
    #[serde(default)]
    property: Option<Value>,
}

#[derive(Deserialize)]
struct PhoneIdsBody {
    phone_ids: Vec<String>,
}

/// What a job does to its phone when it ends; decided (and validated) when it is accepted.
#[derive(Debug, Clone, PartialEq)]
enum Operation {
    UpdateProperty(Properties),
    /// A restart may set properties too (chapter 4.3.6). The reference is silent on whether
    /// they replace the phone's others; unlike a reset (4.3.5) a restart restores no
    /// factory settings, so they are merged over the phone's own.
    Restart(Option<Properties>),
    /// A reset restores factory settings: these properties replace all others.
    Reset(Properties),
    Stop,
}

impl Operation {
    fn kind(&self) -> JobKind {
        match self {
            Operation::UpdateProperty(_) => JobKind::UpdateProperty,
            Operation::Restart(_) => JobKind::Restart,
            Operation::Reset(_) => JobKind::Reset,
            Operation::Stop => JobKind::Stop,
        }
    }

    /// The phone's status while the job runs; `None` leaves it as it is.
    fn running_status(&self) -> Option<i32> {
        match self {
            Operation::UpdateProperty(_) => None,
            Operation::Restart(_) => Some(status::RESTARTING),
            Operation::Reset(_) => Some(status::RESETTING),
            Operation::Stop => Some(STOPPING),
        }
    }

    /// Whether the phone's own state lets it take this job now. The reference is silent;
    /// a restart, reset or stop of a phone that is resetting, restarting or stopping is
    /// refused (`ItemError::Busy`), as a real service cannot run both at once. Properties
    /// may be updated in any state (4.3.9: they apply once the phone runs again).
    fn refused_by(&self, phone: &SimPhone) -> Option<ItemError> {
        let busy = matches!(
            phone.status,
            status::RESETTING | status::RESTARTING | STOPPING
        );
        (busy && !matches!(self, Operation::UpdateProperty(_))).then_some(ItemError::Busy)
    }

    /// Restarts fail always on a `restart_fails` phone, and restarts and resets at the
    /// configured rate.
    fn fails(&self, phone: &SimPhone, failure_rate: f64) -> bool {
        let roll = || rand::random_bool(failure_rate.clamp(0.0, 1.0));
        match self {
            Operation::Restart(_) => phone.faults.restart_fails || roll(),
            Operation::Reset(_) => roll(),
            Operation::UpdateProperty(_) | Operation::Stop => false,
        }
    }

    fn succeed(self, phone: &mut SimPhone) {
        match self {
            // 4.3.9: pending until the next restart (see `SimPhone::pending_properties`).
            Operation::UpdateProperty(properties) => phone.pending_properties.extend(properties),
            Operation::Restart(properties) => {
                let pending = std::mem::take(&mut phone.pending_properties);
                phone.properties.extend(pending);
                phone.properties.extend(properties.unwrap_or_default());
                phone.status = status::RUNNING;
                // A stuck phone stays stuck: only a reset helps it.
                phone.faults.silent = false;
                phone.boots += 1;
            }
            Operation::Reset(properties) => {
                phone.properties = properties;
                phone.pending_properties.clear();
                phone.status = status::RUNNING;
                // A reset cannot bring back a server that is down.
                phone.faults = PhoneFaults {
                    dark: phone.faults.dark,
                    ..PhoneFaults::default()
                };
                phone.boots += 1;
            }
            Operation::Stop => phone.status = STOPPED,
        }
    }

    /// Marks the phone failed; returns the job's `error_msg`.
    fn fail(&self, phone: &mut SimPhone) -> &'static str {
        match self {
            Operation::Restart(_) => {
                phone.status = status::RESTART_FAILED;
                "Service internal error. The phone failed to restart."
            }
            Operation::Reset(_) => {
                phone.status = status::RESET_FAILED;
                "Service internal error. The phone failed to reset."
            }
            Operation::UpdateProperty(_) | Operation::Stop => "Service internal error.",
        }
    }
}

/// One phone of a batch, with the operation to start on it or why none can start.
struct Order {
    phone_id: String,
    operation: Result<Operation, ItemError>,
}

pub(super) async fn update_property(
    req: HttpRequest,
    body: web::Bytes,
    cp: web::Data<ControlPlane>,
) -> Result<HttpResponse, ControlPlaneError> {
    cp.admit(&req, &body, Api::UpdateProperty)?;
    let body: PhonesBody = parse_json(&body)?;
    let orders = body.phones.into_iter().map(|item| {
        // 4.3.9 marks `property` mandatory but does not say how an entry without one is
        // answered: refused in its entry with 7.2's CPS.0200 "Invalid parameters.", the
        // rest of the batch going on, as the reference answers other per-phone refusals.
        let operation = match item.property {
            None | Some(Value::Null) => Err(ItemError::MissingProperty),
            Some(property) => parse_property(&property).map(Operation::UpdateProperty),
        };
        Order {
            phone_id: item.phone_id,
            operation,
        }
    });
    cp.run_batch(Api::UpdateProperty, orders.collect()).await
}

pub(super) async fn restart(
    req: HttpRequest,
    body: web::Bytes,
    cp: web::Data<ControlPlane>,
) -> Result<HttpResponse, ControlPlaneError> {
    cp.admit(&req, &body, Api::Restart)?;
    let body: PhonesBody = parse_json(&body)?;
    let orders = body.phones.into_iter().map(|item| Order {
        operation: optional_property(item.property).map(Operation::Restart),
        phone_id: item.phone_id,
    });
    cp.run_batch(Api::Restart, orders.collect()).await
}

pub(super) async fn reset(
    req: HttpRequest,
    body: web::Bytes,
    cp: web::Data<ControlPlane>,
) -> Result<HttpResponse, ControlPlaneError> {
    cp.admit(&req, &body, Api::Reset)?;
    let body: PhonesBody = parse_json(&body)?;
    let orders = body.phones.into_iter().map(|item| Order {
        operation: optional_property(item.property)
            .map(|properties| Operation::Reset(properties.unwrap_or_default())),
        phone_id: item.phone_id,
    });
    cp.run_batch(Api::Reset, orders.collect()).await
}

pub(super) async fn stop(
    req: HttpRequest,
    body: web::Bytes,
    cp: web::Data<ControlPlane>,
) -> Result<HttpResponse, ControlPlaneError> {
    cp.admit(&req, &body, Api::Stop)?;
    let body: PhoneIdsBody = parse_json(&body)?;
    let orders = body.phone_ids.into_iter().map(|phone_id| Order {
        phone_id,
        operation: Ok(Operation::Stop),
    });
    cp.run_batch(Api::Stop, orders.collect()).await
}

fn optional_property(property: Option<Value>) -> Result<Option<Properties>, ItemError> {
    match property {
        None | Some(Value::Null) => Ok(None),
        Some(property) => parse_property(&property).map(Some),
    }
}

/// A `property` must be a string holding a JSON object; values are kept as strings (the
/// appendix's integer ones, e.g. `com.cph.mainkeys`, as their decimal text).
///
/// Its keys must be attributes the reference names (appendix A.1, and the four of 4.3.5's
/// example request): the reference is silent on what the service does with any other key
/// and has no per-key refusal code, so the phone is refused with 7.2's parameter error
/// (`CPS.0200`, as every bad property here), its message naming the unknown keys. The
/// reference does not say a refusal names them either; cphub copes when it does not.
///
/// Values are not checked against appendix A.1's limits (`com.cph.mainkeys` 0 or 1, a
/// callback URL's 256 characters and character set, …): the reference states the limits
/// but is silent on how a value beyond them is refused, so the fake takes it. cphub checks
/// the callback URLs it sets against those limits before it sends them
/// (`config::property_url_problem`).
fn parse_property(property: &Value) -> Result<Properties, ItemError> {
    let invalid = |why: &str| ItemError::InvalidProperty(why.to_owned());
    let Value::String(text) = property else {
        return Err(invalid("expected a JSON object serialised into a string"));
    };
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(text) else {
        return Err(invalid("the string is not a JSON object"));
    };
    let unknown: Vec<&str> = (object.keys())
        .map(String::as_str)
        .filter(|key| !is_attribute(key))
        .collect();
    if !unknown.is_empty() {
        return Err(invalid(&format!(
            "{} is not a cloud phone attribute",
            unknown.join(", ")
        )));
    }
    object
        .into_iter()
        .map(|(key, value)| match value {
            Value::String(text) => Ok((key, text)),
            Value::Number(number) => Ok((key, number.to_string())),
            Value::Bool(flag) => Ok((key, flag.to_string())),
            _ => Err(invalid(&format!("the value of {key} is not a string"))),
        })
        .collect()
}

impl ControlPlane {
    /// Starts a job per acceptable phone and answers `{"request_id", "jobs": [...]}`, one
    /// entry per phone in the order given. Each job ends `job_delay` later in its own task.
    /// With refused entries asked for (`faults.rs`), nothing is done and every phone's entry
    /// is a CPS.0003. With a lost answer asked for, the jobs start all the same and the
    /// answer is the gateway's 502/504 naming the request. With slow answers asked for, the
    /// batch waits first, nothing done until then. With a late start asked for, the answer
    /// is a 504 at once and the batch is performed only afterwards.
    async fn run_batch(
        &self,
        api: Api,
        orders: Vec<Order>,
    ) -> Result<HttpResponse, ControlPlaneError> {
        if orders.is_empty() {
            return Err(ControlPlaneError::NoPhones);
        }
        self.settings.faults.slow_answer(api).await;
        let request_id = request_id::current();
        if let Some(delay) = self.settings.faults.take_late_start(api) {
            let (fleet, settings) = (self.fleet.clone(), self.settings.clone());
            let request_id = request_id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                perform(&fleet, &settings, &request_id, orders);
            });
            return Err(ControlPlaneError::AnswerLost(504));
        }
        let answers = if self.settings.faults.take_item_errors(api) {
            let refused = orders.iter().map(|o| ItemError::SystemError.answer(&o.phone_id));
            refused.collect()
        } else {
            perform(&self.fleet, &self.settings, &request_id, orders)
        };
        if let Some(lost) = self.settings.faults.take_lost_answer(api) {
            return Err(ControlPlaneError::AnswerLost(lost.status()));
        }
        Ok(created_json(
            json!({"request_id": request_id, "jobs": answers}),
        ))
    }
}

/// Starts a job per acceptable phone, each ending in its own task; the answer's entries,
/// one per phone in the order given.
fn perform(
    fleet: &SharedFleet,
    settings: &ControlPlaneSettings,
    request_id: &str,
    orders: Vec<Order>,
) -> Vec<Value> {
    let mut started = Vec::new();
    let mut answers = Vec::new();
    {
        let mut fleet = fleet.lock();
        for order in orders {
            match accept(&mut fleet, request_id, &order) {
                Ok(job_id) => {
                    answers.push(json!({"phone_id": order.phone_id, "job_id": job_id}));
                    if let Ok(operation) = order.operation {
                        started.push((job_id, order.phone_id, operation));
                    }
                }
                Err(error) => answers.push(error.answer(&order.phone_id)),
            }
        }
    }
    for (job_id, phone_id, operation) in started {
        finish_later(fleet, settings, job_id, phone_id, operation);
    }
    answers
}

fn finish_later(
    fleet: &SharedFleet,
    settings: &ControlPlaneSettings,
    job_id: String,
    phone_id: String,
    operation: Operation,
) {
    let fleet = fleet.clone();
    let delay = fleet.lock().job_delay(settings.job_delay);
    let failure_rate = settings.job_failure_rate;
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let mut fleet = fleet.lock();
        finish(&mut fleet, &job_id, &phone_id, operation, failure_rate);
    });
}

/// Records a running job for the order's phone and puts the phone in the job's status.
fn accept(fleet: &mut Fleet, request_id: &str, order: &Order) -> Result<String, ItemError> {
    // A phone the fleet does not have, however well-formed its id: CPS.0004 "Parameter:
    // phone_id is invalid.", as 4.3.5's, 4.3.6's and 4.3.9's examples answer one of 32 hex
    // digits in its entry. (A read of one, 4.3.2, is CPS.0005.)
    let Some(phone) = fleet.phone_mut(&order.phone_id) else {
        return Err(ItemError::InvalidPhoneId);
    };
    let operation = order.operation.as_ref().map_err(Clone::clone)?;
    if let Some(refusal) = operation.refused_by(phone) {
        return Err(refusal);
    }
    if let Some(running) = operation.running_status() {
        phone.status = running;
        phone.touch();
    }
    // The phone's server is kept with the job: 4.4.2's example answers a job whose phone
    // is gone (CPS0005) with its `server_id` and `node_id` still filled in.
    let server_id = phone.server_id.clone();
    let job = SimJob {
        job_id: new_id(),
        request_id: request_id.to_owned(),
        phone_id: Some(order.phone_id.clone()),
        server_id: Some(server_id),
        kind: operation.kind(),
        status: job_status::RUNNING,
        begin_time: timestamp(Utc::now()),
        end_time: None,
        error_code: None,
        error_msg: None,
    };
    let job_id = job.job_id.clone();
    fleet.jobs.insert(job_id.clone(), job);
    Ok(job_id)
}


/// Ends a job: the phone changes (or fails), the job records the outcome.
fn finish(fleet: &mut Fleet, job_id: &str, phone_id: &str, operation: Operation, rate: f64) {
    let rate = if fleet.job_failures_on { rate } else { 0.0 };
    let outcome = match fleet.phone_mut(phone_id) {
        None => Err(JobFailure::phone_gone()),
        Some(phone) => {
            let outcome = if operation.fails(phone, rate) {
                Err(JobFailure::system(operation.fail(phone)))
            } else {
                operation.succeed(phone);
                Ok(())
            };
            phone.touch();
            outcome
        }
    };
    if let Some(job) = fleet.jobs.get_mut(job_id) {
        job.end(timestamp(Utc::now()), outcome);
    }
}

fn new_id() -> String {
    Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_property_is_a_json_object_in_a_string() {
        let parsed = parse_property(&json!(r#"{"imsi": "x", "com.cph.mainkeys": 1}"#)).unwrap();
        assert_eq!(parsed["imsi"], "x");
        assert_eq!(parsed["com.cph.mainkeys"], "1");
        for bad in [
            json!({"a": "x"}),
            json!("[1]"),
            json!("{"),
            json!(r#"{"imsi": {}}"#),
            json!(r#"{"vendor.fan": "1"}"#),
        ] {
            assert!(
                matches!(parse_property(&bad), Err(ItemError::InvalidProperty(_))),
                "{bad}"
            );
        }
    }

    /// 4.4.2's example: the job of a phone that is gone fails with `CPS0005`, "Phone not
    /// found.", its `server_id` still the phone's server; one whose phone failed the
    /// operation with 7.2's `CPS.0003`.
    #[test]
    fn a_job_whose_phone_is_gone_fails_as_the_reference_shows() {
        let mut fleet = Fleet::new(2, 7);
        let gone = fleet.phones[1].phone_id.clone();
        let its_server = fleet.phones[1].server_id.clone();
        let order = |phone: &SimPhone| Order {
            phone_id: phone.phone_id.clone(),
            operation: Ok(Operation::Reset(Properties::new())),
        };
        let first = order(&fleet.phones[0]);
        let second = order(&fleet.phones[1]);
        let kept = accept(&mut fleet, "r", &first).unwrap();
        let lost = accept(&mut fleet, "r", &second).unwrap();
        fleet.phones.retain(|p| p.phone_id != gone);

        finish(&mut fleet, &lost, &gone, Operation::Reset(Properties::new()), 0.0);
        fleet.job_failures_on = true;
        let first_phone = first.phone_id.clone();
        finish(&mut fleet, &kept, &first_phone, Operation::Reset(Properties::new()), 1.0);

        let ended = |id: &str| {
            let job = &fleet.jobs[id];
            (job.status, job.error_code.clone(), job.error_msg.clone())
        };
        let phone_gone = (job_status::FAILED, Some("CPS0005".into()), Some("Phone not found.".into()));
        assert_eq!(ended(&lost), phone_gone);
        assert_eq!(ended(&kept).1.as_deref(), Some("CPS.0003"));
        assert_eq!(fleet.jobs[&lost].server_id.as_deref(), Some(its_server.as_str()));
    }

    #[test]
    fn restart_clears_silence_but_not_stuck_and_reset_clears_everything() {
        let mut fleet = Fleet::new(1, 7);
        let phone = &mut fleet.phones[0];
        phone.faults = PhoneFaults {
            silent: true,
            stuck: true,
            restart_fails: false,
            dark: false,
            update_fails: false,
        };
        phone.properties.insert("old".into(), "1".into());
        Operation::Restart(None).succeed(phone);
        assert_eq!(
            (phone.faults.silent, phone.faults.stuck, phone.boots),
            (false, true, 1)
        );
        Operation::UpdateProperty(Properties::from([("pending".into(), "3".into())]))
            .succeed(phone);
        assert!(
            !phone.properties.contains_key("pending"),
            "4.3.9: until a restart"
        );
        Operation::Reset(Properties::from([("new".into(), "2".into())])).succeed(phone);
        assert!(phone.pending_properties.is_empty());
        assert_eq!(phone.faults, PhoneFaults::default());
        assert_eq!(
            phone.properties,
            Properties::from([("new".into(), "2".into())])
        );
        assert_eq!(phone.boots, 2);
        phone.faults.dark = true;
        Operation::Reset(Properties::new()).succeed(phone);
        Operation::Restart(None).succeed(phone);
        assert!(
            phone.faults.dark && !phone.is_alive(),
            "its server is still down"
        );
    }
}
