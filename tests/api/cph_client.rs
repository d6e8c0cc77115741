//! The CPH management API client (chapters 2.2, 4.3, 4.4, 7.1.1) against a wiremock control
//! plane: the requests it sends (method, path, query, body, headers, and an `SDK-HMAC-SHA256`
//! signature recomputed here independently of `cphub::cph::signer`), how it reads the
//! reference's example answers, and what it does when the control plane misbehaves: retries
//! only where repeating is safe, never resends a POST of unknown outcome, opens its circuit
//! breaker, renews IAM tokens, follows jobs, and refuses incomplete configuration.
//!
//! No database: plain `#[tokio::test]`s with tiny backoffs and timeouts.

use std::time::{Duration, Instant};

use chrono::{NaiveDateTime, SecondsFormat, TimeDelta, Utc};
use cphub::config::Settings;
use cphub::cph::{CphClient, CphError, PhoneFilter, PhoneItem};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

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

/// `[cph.auth]` for IAM password tokens from `iam`.
fn iam_auth(iam: &MockServer) -> String {
    format!(
        "[cph.auth]\niam_endpoint = \"{}\"\nusername = \"cphub-user\"\n\
         password = \"s3cret-pass\"\ndomain = \"cphub-domain\"\n",
        iam.uri()
    )
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

/// The message of the `CphError::Config` that `CphClient::new` must return for `toml`.
fn config_error(toml: &str) -> String {
    let settings = Settings::with_overrides(toml).expect("valid settings");
    match CphClient::new(&settings.cph) {
        Err(CphError::Config(message)) => message,
        Err(other) => panic!("expected CphError::Config, got {other:?}"),
        Ok(_) => panic!("expected CphError::Config, the client was built"),
    }
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

fn iam_token_answer(token: &str, expires_in: TimeDelta) -> ResponseTemplate {
    let expires_at = (Utc::now() + expires_in).to_rfc3339_opts(SecondsFormat::Micros, true);
    ResponseTemplate::new(201)
        .insert_header("X-Subject-Token", token)
        .set_body_json(json!({"token": {"expires_at": expires_at, "methods": ["password"]}}))
}

// ---------------------------------------------------------------------------------------
// An independent SDK-HMAC-SHA256 verifier (tools/huawei-sdk/SIGNER.md), server side: from
// what was received, not from what the client meant to send.
// ---------------------------------------------------------------------------------------

/// `quote(text, safe='~')`: everything but `A-Z a-z 0-9 - _ . ~` as upper-case `%XX`.
fn sdk_quote(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn unquote(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| u8::from_str_radix(&text[i + 1..i + 3], 16).ok())
            .flatten();
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("UTF-8 after percent-decoding")
}

/// Path unquoted, each segment re-quoted, and a trailing `/`.
fn canonical_uri(wire_path: &str) -> String {
    let mut uri = unquote(wire_path)
        .split('/')
        .map(sdk_quote)
        .collect::<Vec<_>>()
        .join("/");
    if !uri.ends_with('/') {
        uri.push('/');
    }
    uri
}

/// Raw pairs sorted by key then value, re-quoted.
fn canonical_query(wire_query: &str) -> String {
    let mut pairs: Vec<(String, String)> = wire_query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (unquote(k), unquote(v))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", sdk_quote(k), sdk_quote(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The signature over one request. `headers` are the signed ones: lower-case names in
/// signed-header order, values as received.
fn expected_signature(
    sk: &str,
    method: &str,
    wire_path: &str,
    wire_query: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> String {
    let header_block: String = headers
        .iter()
        .map(|(n, v)| format!("{n}:{}\n", v.trim()))
        .collect();
    let signed = headers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        method.to_ascii_uppercase(),
        canonical_uri(wire_path),
        canonical_query(wire_query),
        header_block,
        signed,
        hex::encode(Sha256::digest(body)),
    );
    let date = &headers
        .iter()
        .find(|(n, _)| n == "x-sdk-date")
        .expect("x-sdk-date is signed")
        .1;
    let string_to_sign = format!(
        "SDK-HMAC-SHA256\n{date}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(sk.as_bytes()).unwrap();
    mac.update(string_to_sign.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The parts of `Authorization: SDK-HMAC-SHA256 Access=…, SignedHeaders=…, Signature=…`.
fn authorization_parts(value: &str) -> (String, String, String) {
    let rest = value
        .strip_prefix("SDK-HMAC-SHA256 ")
        .unwrap_or_else(|| panic!("not SDK-HMAC-SHA256: {value}"));
    let parts: Vec<&str> = rest.split(", ").collect();
    assert_eq!(parts.len(), 3, "{value}");
    let field = |i: usize, name: &str| {
        parts[i]
            .strip_prefix(&format!("{name}="))
            .unwrap_or_else(|| panic!("{name} in {value}"))
            .to_owned()
    };
    (
        field(0, "Access"),
        field(1, "SignedHeaders"),
        field(2, "Signature"),
    )
}

/// The request carries the headers of an AK/SK call to `server` and a signature that
/// verifies with `SK`.
fn assert_signed(request: &Request, server: &MockServer) {
    assert_eq!(header_value(request, "Content-Type"), "application/json");
    assert_eq!(header_value(request, "X-Project-Id"), PROJECT);
    assert_eq!(
        header_value(request, "Host"),
        server.address().to_string(),
        "Host names the endpoint's host and port"
    );
    let date = header_value(request, "X-Sdk-Date");
    let parsed = NaiveDateTime::parse_from_str(date, "%Y%m%dT%H%M%SZ")
        .unwrap_or_else(|e| panic!("X-Sdk-Date {date:?}: {e}"));
    assert_eq!(date.len(), "20240315T080910Z".len(), "{date}");
    let skew = (Utc::now().naive_utc() - parsed).num_seconds().abs();
    assert!(skew < 60, "X-Sdk-Date {date} is the current UTC time");

    let (access, signed_headers, signature) =
        authorization_parts(header_value(request, "Authorization"));
    assert_eq!(access, AK);
    assert_eq!(signed_headers, SIGNED_HEADERS);
    let headers: Vec<(String, String)> = signed_headers
        .split(';')
        .map(|name| (name.to_owned(), header_value(request, name).to_owned()))
        .collect();
    let expected = expected_signature(
        SK,
        request.method.as_str(),
        request.url.path(),
        request.url.query().unwrap_or_default(),
        &headers,
        &request.body,
    );
    assert_eq!(signature, expected, "signature of {request:?}");
}

// ---------------------------------------------------------------------------------------
// The verifier itself
// ---------------------------------------------------------------------------------------

/// SIGNER.md §3: the official SDK's signature for a `list_phones` call, reproduced by the
/// verifier the other tests rely on.
#[test]
fn the_test_verifier_reproduces_the_sdk_worked_example() {
    let headers: Vec<(String, String)> = [
        ("content-type", "application/json"),
        ("host", "cph.cn-east-3.myhuaweicloud.com"),
        (
            "user-agent",
            "huaweicloud-usdk-python/3.0; cphub-sdk-vectors/1",
        ),
        ("x-project-id", PROJECT),
        ("x-sdk-date", "20240315T080910Z"),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), v.to_owned()))
    .collect();

    let signature = expected_signature(
        "cphubTestSecretKey0123456789ABCDEFGHIJKLMNOP",
        "GET",
        &api("phones"),
        "limit=100&offset=0",
        &headers,
        b"",
    );

    assert_eq!(
        signature,
        "db419aa1fd8b70a76e7feee03b8695dfe3eeb92c062b3ae4cb1ca62f64bf10d6"
    );
}

// ---------------------------------------------------------------------------------------
// 1. Every operation: the request on the wire, the reference's answer read
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn list_phones_sends_a_signed_get_and_reads_the_reference_example() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("phones")))
        .respond_with(json_answer(200, REFERENCE_PHONE_LIST))
        .expect(1)
        .mount(&server)
        .await;

    let phones = client(&server)
        .list_phones(&PhoneFilter::default())
        .await
        .unwrap();

    let request = only_request(&server).await;
    assert_eq!(request.url.path(), api("phones"));
    assert_eq!(request.url.query(), Some("limit=100&offset=0"));
    assert!(request.body.is_empty());
    assert_signed(&request, &server);
    assert_eq!(phones.len(), 1);
    let phone = &phones[0];
    assert_eq!(phone.phone_id, "1234567b8bab40ffb711234cb80d0234");
    assert_eq!(phone.phone_name, "mobile-0001");
    assert_eq!(phone.server_id, "88b8449b896f3a4f0ad57222dd91909");
    assert_eq!(phone.status, 2);
    assert_eq!(phone.phone_model_name, "AOSP-1U4G15G-001");
    assert_eq!(phone.image_id, "88b8449b896f3a4f0ad57222dd91909");
    assert_eq!(phone.phone_type, 0);
    assert_eq!(phone.create_time.as_deref(), Some("2017-10-10T00:00:00Z"));
    assert_eq!(phone.update_time.as_deref(), Some("2018-10-10T00:00:00Z"));
}

#[tokio::test]
async fn phone_sends_a_signed_get_for_one_phone() {
    let server = MockServer::start().await;
    let phone_id = "1564567b8bab40f34711234cb80d8574";
    // The official SDK's form: `property` is a string holding JSON.
    let mut answer: Value = serde_json::from_str(REFERENCE_PHONE_DETAIL).unwrap();
    answer["property"] = json!(answer["property"].to_string());
    Mock::given(method("GET"))
        .and(path(api(&format!("phones/{phone_id}"))))
        .respond_with(ResponseTemplate::new(200).set_body_json(&answer))
        .expect(1)
        .mount(&server)
        .await;

    let detail = client(&server).phone(phone_id).await.unwrap();

    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "GET");
    assert_eq!(request.url.query(), None);
    assert_signed(&request, &server);
    assert_eq!(detail.phone.phone_id, phone_id);
    assert_eq!(detail.phone.phone_name, "mobile-0049");
    assert_eq!(detail.phone.phone_model_name, "aphs1.large.2.aosp");
    assert_eq!(detail.property.as_deref(), answer["property"].as_str());
    assert_eq!(detail.access_infos.len(), 2);
    assert_eq!(detail.access_infos[1]["access_port"], 14328);
}

/// CPH_WIRE.md §2: "A simulator should return a string; a client should accept both."
#[tokio::test]
async fn phone_reads_the_reference_example_whose_property_is_an_object() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("phones/1564567b8bab40f34711234cb80d8574")))
        .respond_with(json_answer(200, REFERENCE_PHONE_DETAIL))
        .expect(1)
        .mount(&server)
        .await;

    let detail = client(&server)
        .phone("1564567b8bab40f34711234cb80d8574")
        .await
        .expect("the reference's own example is readable");

    assert_eq!(detail.phone.status, 2);
    assert_eq!(detail.access_infos.len(), 2);
    let property: Value = serde_json::from_str(detail.property.as_deref().unwrap()).unwrap();
    assert_eq!(
        property,
        json!({"phone_num": "13666666666", "imsi": "460021624617113",
               "iccid": "42947a38410b137c", "wifi_name": "test_wifi"})
    );
}

/// The phones of a reference request example, as the client's callers pass them.
fn phone_items(example: &Value) -> Vec<PhoneItem> {
    example["phones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| PhoneItem {
            phone_id: p["phone_id"].as_str().unwrap().to_owned(),
            property: p["property"].as_str().map(str::to_owned),
        })
        .collect()
}

#[tokio::test]
async fn update_property_posts_the_reference_body_signed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-update-property")))
        .respond_with(json_answer(200, REFERENCE_BATCH_ANSWER))
        .expect(1)
        .mount(&server)
        .await;
    let example: Value = serde_json::from_str(REFERENCE_UPDATE_PROPERTY_REQUEST).unwrap();

    let outcome = client(&server)
        .update_property(phone_items(&example))
        .await
        .unwrap();

    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.url.query(), None);
    assert_eq!(body_json(&request), example);
    assert_signed(&request, &server);
    assert_eq!(
        outcome.request_id.as_deref(),
        Some("6837531fd3f54550927b930180a706bf")
    );
    assert_eq!(outcome.items.len(), 2);
}

#[tokio::test]
async fn restart_posts_one_object_per_phone_signed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-restart")))
        .respond_with(json_answer(200, REFERENCE_BATCH_ANSWER))
        .expect(1)
        .mount(&server)
        .await;
    let ids = [
        "a7f3a1c5258347d6b6f1def79e11f2bc".to_owned(),
        "1678567b8bab40f93711234cb80d0764".to_owned(),
    ];

    let outcome = client(&server).restart(&ids).await.unwrap();

    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(
        body_json(&request),
        json!({"phones": [{"phone_id": ids[0]}, {"phone_id": ids[1]}]})
    );
    assert_signed(&request, &server);
    assert_eq!(outcome.items.len(), 2);
}

#[tokio::test]
async fn reset_posts_each_phone_with_its_property_string_signed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-reset")))
        .respond_with(json_answer(200, REFERENCE_BATCH_ANSWER))
        .expect(1)
        .mount(&server)
        .await;
    let example: Value = serde_json::from_str(REFERENCE_RESET_REQUEST).unwrap();

    let outcome = client(&server).reset(phone_items(&example)).await.unwrap();

    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "POST");
    let body = body_json(&request);
    assert_eq!(body, example);
    assert!(
        body["phones"][0]["property"].is_string(),
        "property is JSON serialised into a string"
    );
    assert_signed(&request, &server);
    assert_eq!(outcome.items.len(), 2);
}

#[tokio::test]
async fn stop_posts_phone_ids_signed_and_reads_the_reference_answer() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-stop")))
        .respond_with(json_answer(200, REFERENCE_STOP_ANSWER))
        .expect(1)
        .mount(&server)
        .await;
    let example: Value = serde_json::from_str(REFERENCE_STOP_REQUEST).unwrap();
    let ids: Vec<String> = serde_json::from_value(example["phone_ids"].clone()).unwrap();

    let outcome = client(&server).stop(&ids).await.unwrap();

    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(body_json(&request), example);
    assert_signed(&request, &server);
    assert_eq!(outcome.failures().count(), 0);
    assert_eq!(
        outcome.jobs().collect::<Vec<_>>(),
        [
            (
                "1234567b8bab40ffb711234cb80d0234",
                "1564567b8bab40f34711234cb80d0123"
            ),
            (
                "1678567b8bab40f93711234cb80d0764",
                "1564567b8bab40f34711234cb80d5678"
            ),
        ]
    );
}

#[tokio::test]
async fn job_sends_a_signed_get_and_reads_the_reference_example() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .respond_with(json_answer(200, REFERENCE_JOB))
        .expect(1)
        .mount(&server)
        .await;

    let job = client(&server).job(JOB_ID).await.unwrap();

    let request = only_request(&server).await;
    assert_eq!(request.url.query(), None);
    assert_signed(&request, &server);
    assert_eq!(job.job_id, JOB_ID);
    assert_eq!(job.status, 2);
    assert!(job.is_finished());
    assert_eq!(job.begin_time.as_deref(), Some("2019-04-26T07:00:00Z"));
    assert_eq!(job.end_time.as_deref(), Some("2019-04-26T07:00:06Z"));
    assert_eq!(job.error_code, None);
    assert_eq!(job.error_msg, None);
    assert_eq!(job.execute_msg, None);
}

#[tokio::test]
async fn jobs_by_request_queries_the_request_id_and_reads_the_reference_example() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("jobs")))
        .and(query_param(
            "request_id",
            "6837531fd3f54550927b930180a706bf",
        ))
        .respond_with(json_answer(200, REFERENCE_JOB_LIST))
        .expect(1)
        .mount(&server)
        .await;

    let jobs = client(&server)
        .jobs_by_request("6837531fd3f54550927b930180a706bf")
        .await
        .unwrap();

    let request = only_request(&server).await;
    assert_eq!(
        request.url.query(),
        Some("request_id=6837531fd3f54550927b930180a706bf")
    );
    assert_signed(&request, &server);
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0].job_id, "1564567b8bab40f34711234cb80d0123");
    assert_eq!(
        jobs[0].phone_id.as_deref(),
        Some("1234567b8bab40ffb711234cb80d0234")
    );
    assert_eq!(jobs[0].status, -1);
    assert_eq!(jobs[0].error_code.as_deref(), Some("CPS0005"));
    assert_eq!(jobs[0].error_msg.as_deref(), Some("Phone not found."));
    assert_eq!(jobs[1].status, 2);
    assert_eq!(jobs[1].end_time.as_deref(), Some("2017-10-25T00:00:32Z"));
}

// ---------------------------------------------------------------------------------------
// 2. Paging and filters
// ---------------------------------------------------------------------------------------

fn numbered_phones(range: std::ops::Range<usize>) -> Value {
    range
        .map(|i| json!({"phone_id": format!("phone-{i:03}"), "server_id": "srv-1", "status": 2}))
        .collect()
}

#[tokio::test]
async fn list_phones_walks_every_page_in_order() {
    let server = MockServer::start().await;
    for (offset, range) in [(0, 0..100), (100, 100..200), (200, 200..250)] {
        Mock::given(method("GET"))
            .and(path(api("phones")))
            .and(query_param("offset", offset.to_string()))
            .and(query_param("limit", "100"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"phones": numbered_phones(range)})),
            )
            .expect(1)
            .mount(&server)
            .await;
    }

    let phones = client(&server)
        .list_phones(&PhoneFilter::default())
        .await
        .unwrap();

    let ids: Vec<_> = phones.iter().map(|p| p.phone_id.clone()).collect();
    let expected: Vec<_> = (0..250).map(|i| format!("phone-{i:03}")).collect();
    assert_eq!(ids, expected);
    assert_eq!(received(&server).await.len(), 3);
}

#[tokio::test]
async fn a_full_last_page_is_followed_by_one_empty_page() {
    let server = MockServer::start().await;
    for (offset, range) in [(0, 0..100), (100, 100..100)] {
        Mock::given(method("GET"))
            .and(path(api("phones")))
            .and(query_param("offset", offset.to_string()))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"phones": numbered_phones(range)})),
            )
            .expect(1)
            .mount(&server)
            .await;
    }

    let phones = client(&server)
        .list_phones(&PhoneFilter::default())
        .await
        .unwrap();

    assert_eq!(phones.len(), 100);
}

#[tokio::test]
async fn list_phones_filters_go_into_the_sorted_encoded_signed_query() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("phones")))
        .and(query_param("server_id", "edge server/1"))
        .and(query_param("status", "-7"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"phones": []})))
        .expect(1)
        .mount(&server)
        .await;
    let filter = PhoneFilter {
        server_id: Some("edge server/1".into()),
        status: Some(-7),
    };

    let phones = client(&server).list_phones(&filter).await.unwrap();

    assert!(phones.is_empty());
    let request = only_request(&server).await;
    // The wire query is the canonical one: sorted, `%20` for space, `%2F` for `/`.
    assert_eq!(
        request.url.query(),
        Some("limit=100&offset=0&server_id=edge%20server%2F1&status=-7")
    );
    assert_signed(&request, &server);
}

// ---------------------------------------------------------------------------------------
// 3. Per-item failures inside a 200
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn per_phone_errors_inside_a_200_are_failures_not_jobs() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-restart")))
        .respond_with(json_answer(200, REFERENCE_BATCH_ANSWER))
        .expect(1)
        .mount(&server)
        .await;

    let outcome = client(&server)
        .restart(&[
            "1234567b8bab40ffb711234cb80d0234".into(),
            "1678567b8bab40f93711234cb80d0764".into(),
        ])
        .await
        .unwrap();

    let failures: Vec<_> = outcome.failures().collect();
    assert_eq!(failures.len(), 1);
    assert_eq!(
        failures[0].phone_id.as_deref(),
        Some("1678567b8bab40f93711234cb80d0764")
    );
    assert_eq!(failures[0].error_code.as_deref(), Some("CPS.0004"));
    assert_eq!(
        failures[0].error_msg.as_deref(),
        Some("Parameter: phone_id is invalid.")
    );
    assert_eq!(failures[0].job_id, None);
    assert_eq!(
        outcome.jobs().collect::<Vec<_>>(),
        [(
            "1234567b8bab40ffb711234cb80d0234",
            "1564567b8bab40f34711234cb80d0123"
        )]
    );
}

// ---------------------------------------------------------------------------------------
// 4. Error bodies
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_error_body_becomes_a_typed_api_error_without_retry() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("phones/p-missing")))
        .respond_with(cps_error(400))
        .expect(1)
        .mount(&server)
        .await;

    let error = client(&server).phone("p-missing").await.unwrap_err();

    match error {
        CphError::Api {
            status: 400,
            ref code,
            ref message,
            retry_after: None,
            ..
        } => {
            assert_eq!(code, "CPS.0005");
            assert_eq!(message, "Phone is not found.");
        }
        other => panic!("expected a 400 CPS.0005 API error, got {other:?}"),
    }
}

#[tokio::test]
async fn the_reference_error_body_keeps_its_request_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-stop")))
        .respond_with(json_answer(403, REFERENCE_ERROR))
        .expect(1)
        .mount(&server)
        .await;

    let error = client(&server)
        .stop(&["1234567b8bab40ffb711234cb80d0234".into()])
        .await
        .unwrap_err();

    match error {
        CphError::Api {
            status: 403,
            code,
            message,
            request_id,
            ..
        } => {
            assert_eq!(code, "CPS.0001");
            assert_eq!(message, "No permission to request resources.");
            assert_eq!(
                request_id.as_deref(),
                Some("aad0860d089c482b943971f802a6718e")
            );
        }
        other => panic!("expected a 403 CPS.0001 API error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_error_without_a_json_body_is_named_after_its_status() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("jobs/j-1")))
        .respond_with(ResponseTemplate::new(404).set_body_string("Not Found"))
        .expect(1)
        .mount(&server)
        .await;

    let error = client(&server).job("j-1").await.unwrap_err();

    assert!(
        matches!(&error, CphError::Api { status: 404, code, message, .. }
            if code == "HTTP.404" && message == "Not Found"),
        "{error:?}"
    );
}

/// A 2xx whose body is garbage (a proxy's page, a truncated answer, the wrong shape, a
/// nesting bomb) is a typed error, sent once — repeating it would not change the answer —
/// and never a panic.
#[tokio::test]
async fn a_2xx_with_garbage_is_a_bad_response_sent_once() {
    let server = MockServer::start().await;
    let bodies = [
        String::new(),
        "<html>502 Bad Gateway</html>".into(),
        r#"{"job_id": "j-1", "status": "#.into(),
        r#"{"job_id": ["j-1"], "status": "running"}"#.into(),
        "[".repeat(100_000),
    ];
    for body in bodies {
        server.reset().await;
        Mock::given(method("GET"))
            .and(path(api("jobs/j-1")))
            .respond_with(json_answer(200, &body))
            .expect(1)
            .mount(&server)
            .await;

        let error = client(&server).job("j-1").await.unwrap_err();

        assert!(matches!(error, CphError::BadResponse(_)), "{error:?}");
        server.verify().await;
    }
}

// ---------------------------------------------------------------------------------------
// 5. Retries
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_get_answering_503_is_retried_until_it_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .respond_with(cps_error(503))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .respond_with(json_answer(200, REFERENCE_JOB))
        .expect(1)
        .mount(&server)
        .await;

    let job = client(&server).job(JOB_ID).await.unwrap();

    assert_eq!(job.status, 2);
    let requests = received(&server).await;
    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert_signed(request, &server);
    }
}

#[tokio::test]
async fn a_429_with_retry_after_zero_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .respond_with(cps_error(429).insert_header("Retry-After", "0"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .respond_with(json_answer(200, REFERENCE_JOB))
        .expect(1)
        .mount(&server)
        .await;

    let job = client(&server).job(JOB_ID).await.unwrap();

    assert_eq!(job.job_id, JOB_ID);
}

#[tokio::test]
async fn a_post_answering_429_is_resent_after_its_retry_after() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-stop")))
        .respond_with(cps_error(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-stop")))
        .respond_with(json_answer(200, REFERENCE_STOP_ANSWER))
        .expect(1)
        .mount(&server)
        .await;
    let started = Instant::now();

    let outcome = client(&server).stop(&["p-1".into()]).await.unwrap();

    assert_eq!(outcome.jobs().count(), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited {:?}, less than Retry-After (the backoff alone is at most 5 ms)",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_post_answering_503_is_resent_because_it_was_not_processed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-restart")))
        .respond_with(cps_error(503))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-restart")))
        .respond_with(json_answer(200, REFERENCE_BATCH_ANSWER))
        .expect(1)
        .mount(&server)
        .await;

    let outcome = client(&server).restart(&["p-1".into()]).await.unwrap();

    assert_eq!(outcome.items.len(), 2);
    let requests = received(&server).await;
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body, requests[1].body, "the same body resent");
    assert_signed(&requests[1], &server);
}

#[tokio::test]
async fn a_post_answering_500_is_not_resent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-reset")))
        .respond_with(cps_error(500))
        .expect(1)
        .mount(&server)
        .await;

    let error = client(&server)
        .reset(vec![PhoneItem {
            phone_id: "p-1".into(),
            property: None,
        }])
        .await
        .unwrap_err();

    assert!(
        matches!(error, CphError::Api { status: 500, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_get_that_keeps_failing_gives_up_after_max_attempts() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("phones")))
        .respond_with(cps_error(503))
        .expect(4)
        .mount(&server)
        .await;

    let error = client(&server)
        .list_phones(&PhoneFilter::default())
        .await
        .unwrap_err();

    match error {
        CphError::RetriesExhausted { attempts: 4, last } => {
            assert!(
                matches!(*last, CphError::Api { status: 503, .. }),
                "{last:?}"
            );
        }
        other => panic!("expected RetriesExhausted after 4 attempts, got {other:?}"),
    }
}

#[tokio::test]
async fn a_post_that_could_not_be_sent_is_retried() {
    // A port nobody listens on: every attempt is refused before anything is sent.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let client = client_from(&cph_toml_for(&endpoint, &[], AKSK_AUTH));

    let error = client.restart(&["p-1".into()]).await.unwrap_err();

    match error {
        CphError::RetriesExhausted { attempts: 4, last } => {
            assert!(matches!(*last, CphError::Unreachable(_)), "{last:?}");
        }
        other => panic!("expected RetriesExhausted after 4 attempts, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// 6. Timeouts
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_post_that_timed_out_is_not_resent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-restart")))
        .respond_with(
            json_answer(200, REFERENCE_BATCH_ANSWER).set_delay(Duration::from_millis(1500)),
        )
        .expect(1)
        .mount(&server)
        .await;

    let error = client(&server).restart(&["p-1".into()]).await.unwrap_err();

    assert!(
        matches!(&error, CphError::OutcomeUnknown(e) if e.is_timeout()),
        "{error:?}"
    );
    assert_eq!(received(&server).await.len(), 1);
}

#[tokio::test]
async fn a_get_that_timed_out_is_repeated() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .respond_with(json_answer(200, REFERENCE_JOB).set_delay(Duration::from_millis(1500)))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .respond_with(json_answer(200, REFERENCE_JOB))
        .expect(1)
        .mount(&server)
        .await;

    let job = client(&server).job(JOB_ID).await.unwrap();

    assert_eq!(job.status, 2);
}

// ---------------------------------------------------------------------------------------
// 7. Circuit breaker
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_breaker_opens_after_consecutive_failures_and_stops_calls() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("jobs/j-1")))
        .respond_with(cps_error(500))
        .expect(2)
        .mount(&server)
        .await;
    let client = tweaked_client(&server, &[("breaker_failures", "2"), ("max_attempts", "1")]);

    for _ in 0..2 {
        assert!(!client.breaker_open());
        let error = client.job("j-1").await.unwrap_err();
        assert!(
            matches!(&error, CphError::RetriesExhausted { attempts: 1, .. })
                || matches!(&error, CphError::Api { status: 500, .. }),
            "{error:?}"
        );
    }
    assert!(client.breaker_open());
    let error = client.job("j-1").await.unwrap_err();

    assert!(matches!(error, CphError::CircuitOpen), "{error:?}");
    assert!(client.breaker_open());
    assert_eq!(received(&server).await.len(), 2, "no request while open");
}

/// After `breaker_open_secs` one trial call goes out; when it succeeds the breaker closes
/// and calls flow again (the half-open steps themselves: `cph::retry`'s unit tests).
#[tokio::test]
async fn the_breaker_closes_again_when_the_control_plane_is_back() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("jobs/j-1")))
        .respond_with(cps_error(500))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(api("jobs/j-1")))
        .respond_with(job_answer(2))
        .mount(&server)
        .await;
    let tweaks = [
        ("breaker_failures", "2"),
        ("max_attempts", "1"),
        ("breaker_open_secs", "1"),
    ];
    let client = tweaked_client(&server, &tweaks);
    for _ in 0..2 {
        client.job("j-1").await.unwrap_err();
    }
    assert!(client.breaker_open());

    tokio::time::sleep(Duration::from_millis(1100)).await;

    client
        .job("j-1")
        .await
        .expect("the trial call goes through");
    assert!(!client.breaker_open());
    client.job("j-1").await.expect("closed: calls flow again");
    assert_eq!(received(&server).await.len(), 4);
}

#[tokio::test]
async fn client_errors_do_not_open_the_breaker() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("jobs/j-1")))
        .respond_with(cps_error(404))
        .expect(3)
        .mount(&server)
        .await;
    let client = tweaked_client(&server, &[("breaker_failures", "2"), ("max_attempts", "1")]);

    for _ in 0..3 {
        let error = client.job("j-1").await.unwrap_err();
        assert!(
            matches!(error, CphError::Api { status: 404, .. }),
            "{error:?}"
        );
    }

    assert!(!client.breaker_open());
}

// ---------------------------------------------------------------------------------------
// 8. IAM token authentication
// ---------------------------------------------------------------------------------------

fn iam_client(cph: &MockServer, iam: &MockServer) -> CphClient {
    client_from(&cph_toml(cph, &[], &iam_auth(iam)))
}

#[tokio::test]
async fn an_iam_token_is_fetched_once_and_sent_on_every_call() {
    let (cph, iam) = (MockServer::start().await, MockServer::start().await);
    Mock::given(method("POST"))
        .and(path("/v3/auth/tokens"))
        .respond_with(iam_token_answer("tok-1", TimeDelta::hours(24)))
        .expect(1)
        .mount(&iam)
        .await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .respond_with(json_answer(200, REFERENCE_JOB))
        .expect(2)
        .mount(&cph)
        .await;
    let client = iam_client(&cph, &iam);

    client.job(JOB_ID).await.unwrap();
    client.job(JOB_ID).await.unwrap();

    for request in received(&cph).await {
        assert_eq!(header_value(&request, "X-Auth-Token"), "tok-1");
        assert!(request.headers.get("Authorization").is_none());
        assert_eq!(header_value(&request, "Content-Type"), "application/json");
    }
    let token_request = only_request(&iam).await;
    assert!(token_request.headers.get("X-Auth-Token").is_none());
    assert_eq!(
        body_json(&token_request),
        json!({"auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {
                    "name": "cphub-user",
                    "password": "s3cret-pass",
                    "domain": {"name": "cphub-domain"}
                }}
            },
            "scope": {"project": {"id": PROJECT}}
        }})
    );
}

#[tokio::test]
async fn a_401_fetches_a_new_token_and_repeats_the_call_once() {
    let (cph, iam) = (MockServer::start().await, MockServer::start().await);
    Mock::given(method("POST"))
        .and(path("/v3/auth/tokens"))
        .respond_with(iam_token_answer("tok-1", TimeDelta::hours(24)))
        .up_to_n_times(1)
        .expect(1)
        .mount(&iam)
        .await;
    Mock::given(method("POST"))
        .and(path("/v3/auth/tokens"))
        .respond_with(iam_token_answer("tok-2", TimeDelta::hours(24)))
        .expect(1)
        .mount(&iam)
        .await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"error_code": "APIGW.0301", "error_msg": "Incorrect IAM authentication information"}),
        ))
        .up_to_n_times(1)
        .expect(1)
        .mount(&cph)
        .await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .and(header("X-Auth-Token", "tok-2"))
        .respond_with(json_answer(200, REFERENCE_JOB))
        .expect(1)
        .mount(&cph)
        .await;
    let client = iam_client(&cph, &iam);

    let job = client.job(JOB_ID).await.unwrap();

    assert_eq!(job.job_id, JOB_ID);
    let requests = received(&cph).await;
    assert_eq!(requests.len(), 2);
    assert_eq!(header_value(&requests[0], "X-Auth-Token"), "tok-1");
    assert_eq!(header_value(&requests[1], "X-Auth-Token"), "tok-2");
}

#[tokio::test]
async fn a_second_401_is_reported_not_retried_forever() {
    let (cph, iam) = (MockServer::start().await, MockServer::start().await);
    Mock::given(method("POST"))
        .and(path("/v3/auth/tokens"))
        .respond_with(iam_token_answer("tok-1", TimeDelta::hours(24)))
        .expect(2)
        .mount(&iam)
        .await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .respond_with(ResponseTemplate::new(401))
        .expect(2)
        .mount(&cph)
        .await;
    let client = iam_client(&cph, &iam);

    let error = client.job(JOB_ID).await.unwrap_err();

    assert!(
        matches!(error, CphError::Api { status: 401, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_token_expiring_within_the_margin_is_fetched_again() {
    let (cph, iam) = (MockServer::start().await, MockServer::start().await);
    // Default margin: 3600 s; this token has 30 minutes left.
    Mock::given(method("POST"))
        .and(path("/v3/auth/tokens"))
        .respond_with(iam_token_answer("tok-short", TimeDelta::minutes(30)))
        .expect(2)
        .mount(&iam)
        .await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .and(header("X-Auth-Token", "tok-short"))
        .respond_with(json_answer(200, REFERENCE_JOB))
        .expect(2)
        .mount(&cph)
        .await;
    let client = iam_client(&cph, &iam);

    client.job(JOB_ID).await.unwrap();
    client.job(JOB_ID).await.unwrap();
}

#[tokio::test]
async fn an_iam_answer_without_a_token_is_a_token_error() {
    let (cph, iam) = (MockServer::start().await, MockServer::start().await);
    Mock::given(method("POST"))
        .and(path("/v3/auth/tokens"))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"error": {"code": 401, "message": "The username or password is wrong."}}),
        ))
        .mount(&iam)
        .await;
    Mock::given(method("GET"))
        .respond_with(json_answer(200, REFERENCE_JOB))
        .expect(0)
        .mount(&cph)
        .await;
    let client = iam_client(&cph, &iam);

    let error = client.job(JOB_ID).await.unwrap_err();

    assert!(matches!(error, CphError::Token(_)), "{error:?}");
}

// ---------------------------------------------------------------------------------------
// 9. Following jobs
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn follow_job_polls_until_the_job_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .respond_with(job_answer(1))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .respond_with(job_answer(2))
        .expect(1)
        .mount(&server)
        .await;

    let job = client(&server).follow_job(JOB_ID).await.unwrap();

    assert_eq!(job.job_id, JOB_ID);
    assert_eq!(job.status, 2);
}

#[tokio::test]
async fn follow_job_returns_a_failed_job_with_its_error() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "job_id": JOB_ID, "status": -1, "phone_id": "1234567b8bab40ffb711234cb80d0234",
            "begin_time": "2017-10-25T00:00:00Z", "end_time": "2017-10-25T00:00:30Z",
            "error_code": "CPS0005", "error_msg": "Phone not found."
        })))
        .expect(1)
        .mount(&server)
        .await;

    let job = client(&server).follow_job(JOB_ID).await.unwrap();

    assert_eq!(job.status, -1);
    assert!(job.is_finished());
    assert_eq!(job.error_code.as_deref(), Some("CPS0005"));
    assert_eq!(job.error_msg.as_deref(), Some("Phone not found."));
}

#[tokio::test]
async fn follow_job_gives_up_at_the_deadline() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .respond_with(job_answer(1))
        .mount(&server)
        .await;
    let client = tweaked_client(
        &server,
        &[("job_deadline_secs", "1"), ("job_poll_interval_ms", "50")],
    );
    let started = Instant::now();

    let error = client.follow_job(JOB_ID).await.unwrap_err();

    let took = started.elapsed();
    match error {
        CphError::JobDeadline { job_id, waited } => {
            assert_eq!(job_id, JOB_ID);
            assert!(
                waited >= Duration::from_millis(900) && waited <= took,
                "waited {waited:?}"
            );
        }
        other => panic!("expected JobDeadline, got {other:?}"),
    }
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let polls = received(&server).await.len();
    assert!((10..=21).contains(&polls), "{polls} polls at 50 ms in 1 s");
}

// ---------------------------------------------------------------------------------------
// 10. Configuration errors
// ---------------------------------------------------------------------------------------

#[test]
fn a_missing_endpoint_is_a_config_error() {
    let message = config_error(&format!("[cph]\nproject_id = \"{PROJECT}\"\n{AKSK_AUTH}"));

    assert!(message.contains("endpoint"), "{message}");
}

#[test]
fn an_invalid_endpoint_is_a_config_error() {
    let message = config_error(&format!(
        "[cph]\nendpoint = \"not a url\"\nproject_id = \"{PROJECT}\"\n{AKSK_AUTH}"
    ));

    assert!(message.contains("endpoint"), "{message}");
}

#[test]
fn a_missing_project_id_is_a_config_error() {
    let message = config_error(&format!(
        "[cph]\nendpoint = \"http://127.0.0.1:9\"\n{AKSK_AUTH}"
    ));

    assert!(message.contains("project_id"), "{message}");
}

#[test]
fn an_empty_project_id_is_a_config_error() {
    let message = config_error(&format!(
        "[cph]\nendpoint = \"http://127.0.0.1:9\"\nproject_id = \"\"\n{AKSK_AUTH}"
    ));

    assert!(message.contains("project_id"), "{message}");
}

#[test]
fn an_ak_without_sk_is_a_config_error() {
    let message = config_error(&format!(
        "[cph]\nendpoint = \"http://127.0.0.1:9\"\nproject_id = \"{PROJECT}\"\n\
         [cph.auth]\nak = \"TESTAK\"\n"
    ));

    assert!(message.contains("sk"), "{message}");
}

#[test]
fn neither_aksk_nor_iam_is_a_config_error() {
    let message = config_error(&format!(
        "[cph]\nendpoint = \"http://127.0.0.1:9\"\nproject_id = \"{PROJECT}\"\n"
    ));

    assert!(
        message.contains("ak") && message.contains("iam"),
        "{message}"
    );
}

#[test]
fn an_incomplete_iam_login_is_a_config_error() {
    let message = config_error(&format!(
        "[cph]\nendpoint = \"http://127.0.0.1:9\"\nproject_id = \"{PROJECT}\"\n\
         [cph.auth]\niam_endpoint = \"http://127.0.0.1:9\"\nusername = \"u\"\ndomain = \"d\"\n"
    ));

    assert!(message.contains("password"), "{message}");
}
