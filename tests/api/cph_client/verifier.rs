//! An independent SDK-HMAC-SHA256 verifier (tools/huawei-sdk/SIGNER.md), server side: from
//! what was received, not from what the client meant to send. It shares no code with
//! `cphub::cph::signer`: that is its point. The other topics check every signed request
//! with [`assert_signed`]; the worked example below checks the verifier itself.

use chrono::{NaiveDateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use wiremock::{MockServer, Request};

use super::{AK, PROJECT, SIGNED_HEADERS, SK, api, header_value};

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
pub(super) fn assert_signed(request: &Request, server: &MockServer) {
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
