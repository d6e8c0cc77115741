//! The CPH management API client (chapters 2.2, 4.3, 4.4, 7.1.1) against a wiremock control
//! plane: the requests it sends (method, path, query, body, headers, and an `SDK-HMAC-SHA256`
//! signature recomputed here independently of `cphub::cph::signer`), how it reads the
//! reference's example answers, and what it does when the control plane misbehaves: retries
//! only where repeating is safe, never resends a POST of unknown outcome, opens its circuit
//! breaker, renews IAM tokens, follows jobs, and refuses incomplete configuration.
//!
//! No database: plain `#[tokio::test]`s with tiny backoffs and timeouts.
//!
//! This file holds what the topics share: the reference's example bodies, the wiremock
//! helpers and the client builders. The topics: `verifier` (the independent signature
//! check), `operations` (every operation's request on the wire), `paging`, `errors` (error
//! bodies and per-phone errors), `retries` (retries and timeouts), `breaker`, `iam`, `jobs`
//! (following a job) and `config`.

mod breaker;
mod config;
mod deployment;
mod encode;
mod errors;
mod iam;
mod jobs;
mod operations;
mod paging;
mod retries;
mod verifier;

use cphub::config::Settings;
use cphub::cph::CphClient;
use serde_json::{Value, json};
use wiremock::{MockServer, Request, ResponseTemplate};

const PROJECT: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
const AK: &str = "TESTAK";
const SK: &str = "TESTSK";
const AKSK_AUTH: &str = "[cph.auth]\nak = \"TESTAK\"\nsk = \"TESTSK\"\n";
/// What the client signs: every header it sets itself, none that the HTTP stack adds.
const SIGNED_HEADERS: &str = "content-type;host;user-agent;x-project-id;x-sdk-date";

// ---------------------------------------------------------------------------------------
// The reference's examples. Where they are not JSON, the smallest fix is noted.
// ---------------------------------------------------------------------------------------

/// Chapter 4.3.1's example response; fixed: the `.....` placeholder (and the comma before
/// it) removed.
const REFERENCE_PHONE_LIST: &str = r#"
{
  "request_id": "6a63a18b8bab40ffb71ebd9cb80d0085",
  "phones": [
    {
      "phone_name": "mobile-0001",
      "server_id": "88b8449b896f3a4f0ad57222dd91909",
      "phone_id": "1234567b8bab40ffb711234cb80d0234",
      "phone_model_name": "AOSP-1U4G15G-001",
      "image_id": "88b8449b896f3a4f0ad57222dd91909",
      "vnc_enable": "true",
      "status": 2,
      "type": 0,
      "metadata": {
        "order_id": "CS1710111105S8IPB",
        "product_id": "00301-25217-0--0"
      },
      "create_time": "2017-10-10T00:00:00Z",
      "update_time": "2018-10-10T00:00:00Z"
    }
  ]
}"#;

/// Chapter 4.3.2's example response, verbatim: `property` is a JSON object here, although
/// the table (and the official SDK) type it as a string holding JSON.
const REFERENCE_PHONE_DETAIL: &str = r#"
{
  "request_id": "70bb40bef50e4a14b116a5a527fd7432",
  "phone_name": "mobile-0049",
  "server_id": "88b8449b896f3a4f0ad5722dd91909",
  "phone_id": "1564567b8bab40f34711234cb80d8574",
  "image_id": "88b8449b896f3a4f0ad5722dd91909",
  "vnc_enable": "true",
  "phone_model_name": "aphs1.large.2.aosp",
  "status": 2,
  "access_infos": [
    {
      "type": "server1",
      "device_ip": "10.237.0.61",
      "phone_ip": "10.237.0.61",
      "listen_port": 38080,
      "access_ip": "213.32.43.210",
      "public_ip": "213.32.43.210",
      "intranet_ip": "172.31.0.123",
      "server_ip": "172.31.0.123",
      "access_port": 14308
    },
    {
      "type": "server2",
      "device_ip": "10.237.0.61",
      "phone_ip": "10.237.0.61",
      "listen_port": 38081,
      "access_ip": "213.32.43.210",
      "public_ip": "213.32.43.210",
      "intranet_ip": "172.31.0.123",
      "server_ip": "172.31.0.123",
      "access_port": 14328
    }
  ],
  "property": {"phone_num": "13666666666", "imsi": "460021624617113", "iccid": "42947a38410b137c", "wifi_name": "test_wifi"},
  "metadata": {
    "order_id": "CS1710111105S8IPB",
    "product_id": "00301-25217-0--0"
  },
  "create_time": "2017-10-10T00:00:00Z",
  "update_time": "2018-11-12T00:00:00Z"
}"#;

/// Chapter 4.3.5's example request; fixed: the comma between the two phones added and the
/// over-escaped `\\"` inside the property strings reduced to `\"`.
const REFERENCE_RESET_REQUEST: &str = r#"
{
"phones": [
  {
    "phone_id": "a7f3a1c5258347d6b6f1def79e11f2bc",
    "property": "{\"phone_num\":\"13666666666\",\"imsi\":\"460021624617113\",\"iccid\":\"42947a38410b137c\",\"wifi_name\":\"test_wifi\"}"
  },
  {
    "phone_id": "1678567b8bab40f93711234cb80d0764",
    "property": "{\"phone_num\":\"13666666666\",\"imsi\":\"460021624617113\",\"iccid\":\"42947a38410b137c\",\"wifi_name\":\"test_wifi\"}"
  }
]
}"#;

/// Chapter 4.3.9's example request; fixed: the stray `{"test_wifi\","} } ] }` fragment
/// after the complete object dropped.
const REFERENCE_UPDATE_PROPERTY_REQUEST: &str = r#"
{
  "phones": [
    {
      "phone_id": "a7f3a1c5258347d6b6f1def79e11f2bc",
      "property": "{\"phone_num\": \"1366666666\", \"imsi\": \"460021624617113\", \"wifi_name\": \"test_wifi\"}"
    },
    {
      "phone_id": "1678567b8bab40f93711234cb80d0764",
      "property": "{\"phone_num\": \"1366666666\", \"imsi\": \"460021624617113\", \"wifi_name\": \"test_wifi\"}"
    }
  ]
}"#;

/// Chapter 4.3.7's example request, verbatim.
const REFERENCE_STOP_REQUEST: &str = r#"
{
  "phone_ids": [
    "1234567b8bab40ffb711234cb80d0234",
    "1678567b8bab40f93711234cb80d0764"
  ]
}"#;

/// The example response of chapters 4.3.5, 4.3.6 and 4.3.9 (identical in all three),
/// verbatim: one phone got a job, the other a per-item error.
const REFERENCE_BATCH_ANSWER: &str = r#"
{
  "request_id": "6837531fd3f54550927b930180a706bf",
  "jobs": [
    {
      "phone_id": "1234567b8bab40ffb711234cb80d0234",
      "job_id": "1564567b8bab40f34711234cb80d0123"
    },
    {
      "phone_id": "1678567b8bab40f93711234cb80d0764",
      "error_code": "CPS.0004",
      "error_msg": "Parameter: phone_id is invalid."
    }
  ]
}"#;

/// Chapter 4.3.7's example response, verbatim: two jobs.
const REFERENCE_STOP_ANSWER: &str = r#"
{
  "request_id": "6837531fd3f54550927b930180a706bf",
  "jobs": [{
    "phone_id": "1234567b8bab40ffb711234cb80d0234",
    "job_id": "1564567b8bab40f34711234cb80d0123"
  },
  {
    "phone_id": "1678567b8bab40f93711234cb80d0764",
    "job_id": "1564567b8bab40f34711234cb80d5678"
  }
]}"#;

/// Chapter 4.4.1's example response, verbatim.
const REFERENCE_JOB: &str = r#"
{
  "error_msg": null,
  "execute_msg": null,
  "job_id": "6837531fd3f54550927b930180a706bf",
  "end_time": "2019-04-26T07:00:06Z",
  "begin_time": "2019-04-26T07:00:00Z",
  "error_code": null,
  "request_id": "2676a3b4f7df49c297c6775989806d32",
  "status": 2
}"#;

/// Chapter 4.4.2's example response (its first, complete block; the page break repeats
/// the closing brackets).
const REFERENCE_JOB_LIST: &str = r#"
{
  "request_id": "6a63a18b8bab40ffb71ebd9cb80d0085",
  "jobs": [
    {
      "phone_id": "1234567b8bab40ffb711234cb80d0234",
      "server_id": "1e223c8e-3ad0-4bf0-a837-bc90d4f91d01",
      "node_id": "1e223c8e-3ad0-4bf0-a837-bc90d4f91d01",
      "job_id": "1564567b8bab40f34711234cb80d0123",
      "begin_time": "2017-10-25T00:00:00Z",
      "end_time": "2017-10-25T00:00:30Z",
      "status": -1,
      "error_code": "CPS0005",
      "error_msg": "Phone not found."
    },
    {
      "phone_id": "abc4567b8bab40ffb711234cb80d0abc",
      "server_id": "1e223c8e-3ad0-4bf0-a837-bc90d4f91d01",
      "node_id": "1e223c8e-3ad0-4bf0-a837-bc90d4f91d01",
      "job_id": "1564567b8bab40f34711234cb80d0456",
      "begin_time": "2017-10-25T00:00:00Z",
      "end_time": "2017-10-25T00:00:32Z",
      "status": 2,
      "error_code": "",
      "error_msg": ""
    }
  ]
}"#;

/// Chapter 7.1.1's example error body, verbatim.
const REFERENCE_ERROR: &str = r#"
{
  "request_id": "aad0860d089c482b943971f802a6718e",
  "error_code": "CPS.0001",
  "error_msg": "No permission to request resources."
}"#;

const JOB_ID: &str = "6837531fd3f54550927b930180a706bf";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn api(suffix: &str) -> String {
    format!("/v1/{PROJECT}/cloud-phone/{suffix}")
}

fn json_answer(status: u16, body: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body.as_bytes().to_vec(), "application/json")
}

/// The reference's job (chapter 4.4.1) with another status.
fn job_answer(status: i32) -> ResponseTemplate {
    let mut job: Value = serde_json::from_str(REFERENCE_JOB).unwrap();
    job["status"] = json!(status);
    ResponseTemplate::new(200).set_body_json(job)
}

/// A chapter 7.2 error: `status` with `code` (e.g. 400 CPS.0003).
fn cps_code(status: u16, code: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({"error_code": code, "error_msg": format!("{code} as in 7.2")}))
}

fn cps_error(status: u16) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({"error_code": "CPS.0005", "error_msg": "Phone is not found."}))
}

/// `[cph]` pointing at `server` with tiny backoffs and timeouts, `tweaks` replacing or
/// adding keys (values in TOML syntax), then `auth` (a `[cph.auth]` table).
fn cph_toml(server: &MockServer, tweaks: &[(&str, &str)], auth: &str) -> String {
    cph_toml_for(&server.uri(), tweaks, auth)
}

fn cph_toml_for(endpoint: &str, tweaks: &[(&str, &str)], auth: &str) -> String {
    let mut keys: Vec<(String, String)> = [
        ("endpoint", format!("\"{endpoint}\"")),
        ("project_id", format!("\"{PROJECT}\"")),
        ("retry_base_ms", "1".into()),
        ("retry_max_ms", "5".into()),
        ("request_timeout_ms", "500".into()),
        ("job_poll_interval_ms", "10".into()),
        ("job_deadline_secs", "1".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (key, value) in tweaks {
        keys.retain(|(k, _)| k != key);
        keys.push(((*key).to_owned(), (*value).to_owned()));
    }
    let mut toml = String::from("[cph]\n");
    for (key, value) in keys {
        toml.push_str(&format!("{key} = {value}\n"));
    }
    toml + auth
}

fn client_from(toml: &str) -> CphClient {
    let settings = Settings::with_overrides(toml).expect("valid settings");
    CphClient::new(&settings.cph).expect("client builds")
}

/// An AK/SK client of `server` with the tiny defaults of [`cph_toml`].
fn client(server: &MockServer) -> CphClient {
    client_from(&cph_toml(server, &[], AKSK_AUTH))
}

fn tweaked_client(server: &MockServer, tweaks: &[(&str, &str)]) -> CphClient {
    client_from(&cph_toml(server, tweaks, AKSK_AUTH))
}

async fn received(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.expect("recording is on")
}

/// The only request `server` received.
async fn only_request(server: &MockServer) -> Request {
    let mut requests = received(server).await;
    assert_eq!(requests.len(), 1, "{requests:?}");
    requests.remove(0)
}

/// The single value of header `name` (exactly one must have been sent).
fn header_value<'a>(request: &'a Request, name: &str) -> &'a str {
    let values: Vec<_> = request.headers.get_all(name).iter().collect();
    assert_eq!(values.len(), 1, "header {name}: {values:?}");
    values[0].to_str().expect("ASCII header value")
}

fn body_json(request: &Request) -> Value {
    serde_json::from_slice(&request.body).expect("JSON request body")
}
