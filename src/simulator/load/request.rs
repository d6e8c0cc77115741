//! Heartbeat requests as bytes, built once per phone (and once per session it plays) so
//! that a beat costs a copy, not a JSON serialisation and an HTTP client's request build.
//! The body is the simulated phone's (6.4, `heartbeat_body`); only its `time` moves, and
//! RFC 3339 in whole seconds UTC is always 20 bytes, so it is patched in place.

use std::io;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use super::super::phone::{Assignment, heartbeat_body};

/// `2026-12-01T17:10:36Z`: the length of every time the body carries (years 1000–9999).
const TIME_LEN: usize = 20;

/// Where heartbeats go: the `Host` header and the path, from `--cphub` and
/// `--callbacks-path`.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host:port`, to connect to and to name in `Host`.
    pub authority: String,
    /// The path before each callback's name: `--cphub`'s own path, then `--callbacks-path`.
    prefix: String,
}

impl Endpoint {
    /// Raw TCP carries plain HTTP only: an `https://` cphub is refused, not half-served.
    pub fn parse(cphub: &str, callbacks_path: &str) -> io::Result<Endpoint> {
        let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
        let url = reqwest::Url::parse(cphub).map_err(|e| invalid(format!("--cphub: {e}")))?;
        if url.scheme() != "http" {
            return Err(invalid(format!(
                "--cphub {cphub}: the load generator's heartbeats speak plain http:// only"
            )));
        }
        let host = url
            .host_str()
            .ok_or_else(|| invalid("--cphub: no host".into()))?;
        let port = url.port_or_known_default().unwrap_or(80);
        Ok(Endpoint {
            authority: format!("{host}:{port}"),
            prefix: format!(
                "{}{}",
                url.path().trim_end_matches('/'),
                callbacks_path.trim_end_matches('/')
            ),
        })
    }

    /// The head of a JSON `POST` to `callback` (`heartbeat`, `events`, `sign-check`) whose
    /// body is `length` bytes.
    pub fn head(&self, callback: &str, length: usize) -> String {
        format!(
            "POST {}/{callback} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {length}\r\n\r\n",
            self.prefix, self.authority
        )
    }
}

/// One phone's heartbeat request, ready to write but for its time.
#[derive(Debug, Clone)]
pub struct BeatRequest {
    bytes: Vec<u8>,
    /// Where the body's `time` value starts.
    time_at: usize,
}

impl BeatRequest {
    pub fn new(endpoint: &Endpoint, phone_id: &str, session: Option<&Assignment>) -> BeatRequest {
        let body = body_bytes(&heartbeat_body(phone_id, session));
        let head = endpoint.head("heartbeat", body.len());
        let time_at = head.len() + time_offset(&body);
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&body);
        BeatRequest { bytes, time_at }
    }

    /// Appends the request to `out` with its `time` set to `now`.
    pub fn write_to(&self, out: &mut Vec<u8>, now: &BeatTime) {
        let at = out.len() + self.time_at;
        out.extend_from_slice(&self.bytes);
        out[at..at + TIME_LEN].copy_from_slice(&now.0);
    }
}

/// A heartbeat's `time`, formatted once per pacer wake-up rather than once per beat.
#[derive(Debug, Clone, Copy)]
pub struct BeatTime([u8; TIME_LEN]);

impl BeatTime {
    pub fn of(now: DateTime<Utc>) -> BeatTime {
        let text = now.to_rfc3339_opts(SecondsFormat::Secs, true);
        let mut bytes = [b'0'; TIME_LEN];
        // Only a year past 9999 could be longer; the time would then be left as 0s.
        if text.len() == TIME_LEN {
            bytes.copy_from_slice(text.as_bytes());
        }
        BeatTime(bytes)
    }
}

fn body_bytes(body: &Value) -> Vec<u8> {
    serde_json::to_vec(body).expect("a JSON value always serialises")
}

/// The offset of the `time` value in a serialised heartbeat body. Inside a JSON string
/// every quote is escaped, so `"time":"` can only be the key itself.
fn time_offset(body: &[u8]) -> usize {
    let key = b"\"time\":\"";
    let found = body.windows(key.len()).position(|w| w == key);
    let at = found.expect("a heartbeat body has a time") + key.len();
    debug_assert_eq!(body.get(at + TIME_LEN), Some(&b'"'));
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_parts(bytes: &[u8]) -> (String, Value) {
        let text = std::str::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len(), "Content-Length frames the body");
        (head.to_owned(), serde_json::from_str(body).unwrap())
    }

    #[test]
    fn a_prebuilt_beat_is_the_phones_heartbeat_with_the_time_of_its_sending() {
        let endpoint = Endpoint::parse("http://127.0.0.1:8080/", "/cph").unwrap();
        let session = Assignment {
            session_id: "s-1".into(),
            ticket: "t".into(),
            aes_key: String::new(),
            auth_ts: "0".into(),
            app_id: "com.game".into(),
        };
        let request = BeatRequest::new(&endpoint, "phone\"time\":\"-1", Some(&session));
        let sent_at = DateTime::parse_from_rfc3339("2031-02-03T04:05:06Z").unwrap();
        let mut out = b"previous".to_vec();
        request.write_to(&mut out, &BeatTime::of(sent_at.to_utc()));

        let (head, body) = request_parts(&out[b"previous".len()..]);
        assert!(head.starts_with("POST /cph/heartbeat HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert_eq!(body["event_type"], "heartbeat");
        assert_eq!(body["event"]["phone_id"], "phone\"time\":\"-1");
        assert_eq!(body["event"]["session_id"], "s-1");
        assert_eq!(body["event"]["app_id"], "com.game");
        assert_eq!(body["event"]["time"], "2031-02-03T04:05:06Z");
    }

    #[test]
    fn a_path_prefix_and_the_callbacks_path_are_kept_and_https_is_refused() {
        let endpoint = Endpoint::parse("http://cphub.local/base", "/cph").unwrap();
        assert_eq!(endpoint.authority, "cphub.local:80");
        assert!(endpoint.head("heartbeat", 2).starts_with("POST /base/cph/heartbeat HTTP/1.1\r\n"));
        let secret = Endpoint::parse("http://cphub.local", "/hooks-7f3a/").unwrap();
        let head = secret.head("events", 17);
        assert!(head.starts_with("POST /hooks-7f3a/events HTTP/1.1\r\nHost: cphub.local:80\r\n"));
        assert!(head.ends_with("Content-Length: 17\r\n\r\n"), "{head}");
        let refused = Endpoint::parse("https://cphub.local", "/cph").unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::InvalidInput);
    }
}
