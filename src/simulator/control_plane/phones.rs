//! Phones: chapters 4.3.1 (the list, with its filters and paging) and 4.3.2 (one phone's
//! details, properties and access information).
//!
//! 4.3.1: "sorted in descending order of the creation time". The simulated phones were
//! created one minute apart in fleet order (`mobile-0001` first), so the list shows the
//! newest, the fleet's last phone, first.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value, json};

use super::auth::ControlPlane;
use super::error::ControlPlaneError;
use super::faults::Operation;
use super::wire::{ok_json, page, page_of, query_pairs, query_param, timestamp};
use crate::http::request_id;
use crate::simulator::fleet::SimPhone;

/// Chapter 4.3.1: `limit` "Value range: 1-100"; anything else is 400 CPS.0002 (7.2).
const MAX_PHONE_PAGE: usize = 100;
/// Chapter 4.3.1's status values; any other is 400 CPS.0010 (7.2).
const STATUSES: [i32; 13] = [0, 1, 2, 3, 4, 6, 7, 8, -5, -6, -7, -8, -9];
/// Fixed descriptive fields of every simulated phone.
const PHONE_MODEL: &str = "aphs1.large.2.aosp";
const IMAGE_ID: &str = "1564567b8bab40f34711234cb80d8574";

/// Query of the phone list.
struct PhoneQuery {
    offset: usize,
    limit: usize,
    server_id: Option<String>,
    status: Option<i32>,
    phone_name: Option<String>,
    phone_type: Option<i32>,
}

impl PhoneQuery {
    fn parse(pairs: &[(String, String)]) -> Result<Self, ControlPlaneError> {
        let (offset, limit) = page(pairs, MAX_PHONE_PAGE)?;
        let status = query_param(pairs, "status")
            .map(|s| match s.parse() {
                Ok(status) if STATUSES.contains(&status) => Ok(status),
                _ => Err(ControlPlaneError::BadStatus),
            })
            .transpose()?;
        let phone_type = query_param(pairs, "type")
            .map(|t| {
                t.parse()
                    .map_err(|_| ControlPlaneError::InvalidParameter("type is invalid.".into()))
            })
            .transpose()?;
        Ok(PhoneQuery {
            offset,
            limit,
            server_id: query_param(pairs, "server_id").map(str::to_owned),
            status,
            phone_name: query_param(pairs, "phone_name").map(str::to_owned),
            phone_type,
        })
    }

    /// Every simulated phone is a common one (type 0).
    fn matches(&self, phone: &SimPhone) -> bool {
        self.server_id
            .as_ref()
            .is_none_or(|s| *s == phone.server_id)
            && self.status.is_none_or(|s| s == phone.status)
            && self
                .phone_name
                .as_ref()
                .is_none_or(|n| phone.phone_name.contains(n.as_str()))
            && self.phone_type.is_none_or(|t| t == 0)
    }
}

pub(super) async fn list_phones(
    req: HttpRequest,
    body: web::Bytes,
    cp: web::Data<ControlPlane>,
) -> Result<HttpResponse, ControlPlaneError> {
    cp.admit(&req, &body, Operation::ListPhones)?;
    let query = PhoneQuery::parse(&query_pairs(req.uri().query().unwrap_or_default()))?;
    let fleet = cp.fleet.lock();
    // Newest first (4.3.1): the reverse of the fleet's creation order.
    let matching: Vec<(usize, &SimPhone)> = fleet
        .phones
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, phone)| !phone.released && query.matches(phone))
        .collect();
    let count = fleet.phones.len();
    let phones: Vec<Value> = page_of(matching.iter(), query.offset, query.limit)?
        .into_iter()
        .map(|(index, phone)| phone_summary(phone, *index, created(cp.started, *index, count)))
        .collect();
    // `count` (every matching phone, not the page's) is in Huawei's SDK's answer, not in the
    // reference's (4.3.1 shows `request_id` and `phones`); cphub does not read it.
    Ok(ok_json(json!({
        "request_id": request_id::current(),
        "count": matching.len(),
        "phones": phones,
    })))
}

pub(super) async fn show_phone(
    req: HttpRequest,
    body: web::Bytes,
    cp: web::Data<ControlPlane>,
) -> Result<HttpResponse, ControlPlaneError> {
    cp.admit(&req, &body, Operation::ShowPhone)?;
    let phone_id = req.match_info().get("phone_id").unwrap_or_default();
    let fleet = cp.fleet.lock();
    let (index, phone) = fleet
        .phones
        .iter()
        .enumerate()
        .find(|(_, phone)| phone.phone_id == phone_id && !phone.released)
        .ok_or_else(|| ControlPlaneError::unknown_phone(phone_id))?;
    let created = created(cp.started, index, fleet.phones.len());
    let mut detail = phone_summary(phone, index, created);
    if let Value::Object(fields) = &mut detail {
        fields.insert("request_id".into(), request_id::current().into());
        fields.insert("property".into(), property_string(&phone.properties).into());
        fields.insert("access_infos".into(), json!([access_info(index)]));
    }
    Ok(ok_json(detail))
}

/// When the phone at `index` of a fleet of `count` was created: one minute after the one
/// before it, the last one a minute before the control plane started.
fn created(started: DateTime<Utc>, index: usize, count: usize) -> String {
    let minutes_before = i64::try_from(count - index).unwrap_or(i64::MAX);
    timestamp(started - TimeDelta::minutes(minutes_before))
}

/// The fields chapter 4.3.1 lists for a phone. `index` (its place in the fleet) makes up
/// stable addresses and order ids.
fn phone_summary(phone: &SimPhone, index: usize, created: String) -> Value {
    json!({
        "phone_name": phone.phone_name,
        "server_id": phone.server_id,
        "phone_id": phone.phone_id,
        "phone_model_name": PHONE_MODEL,
        "image_id": IMAGE_ID,
        "vnc_enable": "false",
        "status": phone.status,
        "type": 0,
        "metadata": {"order_id": format!("CS{:015}", index + 1), "product_id": "00301-25217-0--0"},
        "update_time": phone.updated.map_or_else(|| created.clone(), timestamp),
        "create_time": created,
    })
}

/// Chapter 4.3.2's access details, with both the current and the expired field names.
fn access_info(index: usize) -> Value {
    let phone_ip = format!(
        "10.{}.{}.{}",
        200 + index / 65536,
        index / 256 % 256,
        index % 256
    );
    let server_ip = format!("172.31.{}.{}", index / 16 / 256 % 256, index / 16 % 256);
    json!({
        "type": "server1",
        "phone_ip": phone_ip, "device_ip": phone_ip,
        "server_ip": server_ip, "intranet_ip": server_ip,
        "public_ip": "127.0.0.1", "access_ip": "127.0.0.1",
        "listen_port": 38080,
        "access_port": 10000 + index % 50000,
    })
}

/// The properties as the API shows them: a JSON object serialised into a string.
fn property_string(properties: &BTreeMap<String, String>) -> String {
    let object: Map<String, Value> = properties
        .iter()
        .map(|(key, value)| (key.clone(), Value::String(value.clone())))
        .collect();
    Value::Object(object).to_string()
}
