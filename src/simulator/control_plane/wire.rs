//! What the handlers share to read requests and write answers: query pairs decoded as the
//! signer needs them, JSON bodies, `offset`/`limit` paging (chapter 4.3.1; 4.4.2's is Huawei's
//! SDK's, the reference shows only `request_id` there), the reference's timestamps, and the
//! `200`/`201` JSON answers (7.1.2).

use actix_web::HttpResponse;
use actix_web::http::header::{CacheControl, CacheDirective};
use chrono::{DateTime, Utc};
use percent_encoding::percent_decode_str;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ControlPlaneError;

const DEFAULT_PAGE: usize = 100;

/// `a=1&b=x%20y` → `[("a","1"), ("b","x y")]`, in the order sent.
pub(super) fn query_pairs(query: &str) -> Vec<(String, String)> {
    let decode = |text: &str| percent_decode_str(text).decode_utf8_lossy().into_owned();
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

/// Phone ids are 32 lowercase hex characters (every example of the reference); anything else
/// is not even a possible phone: 7.2's CPS.0004 "Invalid cloud phone ID", where a possible
/// one that does not exist is CPS.0005.
pub(super) fn is_phone_id(phone_id: &str) -> bool {
    phone_id.len() == 32
        && phone_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub(super) fn query_param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

pub(super) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ControlPlaneError> {
    serde_json::from_slice(body)
        .map_err(|e| ControlPlaneError::InvalidParameter(format!("request body: {e}")))
}

pub(super) fn timestamp(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// 200: "the normal response code for the GET and PUT operations" (7.1.2).
pub(super) fn ok_json(body: Value) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(CacheControl(vec![CacheDirective::NoStore]))
        .json(body)
}

/// 201: "the normal response code for the POST operation" (7.1.2).
pub(super) fn created_json(body: Value) -> HttpResponse {
    HttpResponse::Created()
        .insert_header(CacheControl(vec![CacheDirective::NoStore]))
        .json(body)
}

/// `offset` (default 0) and `limit` (default 100, 1..=max).
pub(super) fn page(
    pairs: &[(String, String)],
    max: usize,
) -> Result<(usize, usize), ControlPlaneError> {
    let number = |name, default| {
        query_param(pairs, name).map_or(Ok(default), |v| {
            v.parse::<usize>().map_err(|_| ControlPlaneError::BadPage)
        })
    };
    let offset = number("offset", 0)?;
    let limit = number("limit", DEFAULT_PAGE)?;
    if !(1..=max).contains(&limit) {
        return Err(ControlPlaneError::BadPage);
    }
    Ok((offset, limit))
}

/// `limit` items from `offset`. The reference defines `offset` only as "an integer greater
/// than 0 but less than the number of resources" (4.3.1, 4.4.2, 4.6.1, 5.1.2, 5.1.3, 5.3.1,
/// 5.3.6) and is silent on what one at or past the end is answered: the simulator takes the
/// strict reading, 400 CPS.0002 ("offset or limit is invalid", 7.2), so cphub is tested
/// against the less forgiving control plane. Offset 0 (the default) of an empty list is an
/// empty page.
pub(super) fn page_of<T>(
    items: impl Iterator<Item = T>,
    offset: usize,
    limit: usize,
) -> Result<Vec<T>, ControlPlaneError> {
    let mut items = items.skip(offset).peekable();
    if offset > 0 && items.peek().is_none() {
        return Err(ControlPlaneError::BadPage);
    }
    Ok(items.take(limit).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cph::signer;

    #[test]
    fn query_pairs_are_decoded_so_the_signer_can_reencode_them() {
        let pairs = query_pairs("limit=100&name=a%20b%2Fc&flag&&x=");
        assert_eq!(
            pairs,
            [
                ("limit".to_owned(), "100".to_owned()),
                ("name".into(), "a b/c".into()),
                ("flag".into(), "".into()),
                ("x".into(), "".into()),
            ]
        );
        assert_eq!(
            signer::canonical_query(&pairs),
            "flag=&limit=100&name=a%20b%2Fc&x="
        );
    }
}
