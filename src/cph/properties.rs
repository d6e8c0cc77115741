//! The phone properties that point a phone's engine at cphub (appendix A.1), built once and
//! checked against the property rules before any call: `http`/`https`, at most 256
//! characters, letters, digits and `_.,/:-` only (so no query string; a shared secret goes
//! into `callbacks.base_path`).

use serde_json::{Map, Value};

use crate::config::{BasePath, Settings, property_url_problem};

pub const SIGN_CHECK_URL: &str = "com.cph.cg.sign_check_url";
pub const EVENT_NOTIFY_URL: &str = "com.cph.cg.event_notify_url";
pub const HEARTBEAT_URL: &str = "com.cph.cg.heartbeat_url";
pub const HEARTBEAT_INTERVAL: &str = "com.cph.cg.heartbeat_interval";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropertyError {
    #[error("{url:?} is not a valid phone property URL: {reason}")]
    InvalidUrl { url: String, reason: &'static str },
    #[error("heartbeat interval must be 1 to 9999999999 seconds")]
    InvalidInterval,
    #[error("no public URL: pass --public-url or set callbacks.public_url")]
    MissingPublicUrl,
    #[error("the phone's property is not a JSON object: {0}")]
    NotAnObject(String),
}

/// The three callback URLs cphub serves, as phones must be configured with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackUrls {
    pub sign_check: String,
    pub events: String,
    pub heartbeat: String,
}

impl CallbackUrls {
    /// `public_url` is where phones reach cphub, e.g. `https://cphub.example.com`.
    pub fn new(public_url: &str, base_path: &BasePath) -> Result<CallbackUrls, PropertyError> {
        let base = format!("{}{}", public_url.trim_end_matches('/'), base_path.as_str());
        let urls = CallbackUrls {
            sign_check: format!("{base}/sign-check"),
            events: format!("{base}/events"),
            heartbeat: format!("{base}/heartbeat"),
        };
        for url in [&urls.sign_check, &urls.events, &urls.heartbeat] {
            check_url(url)?;
        }
        Ok(urls)
    }

    /// The `property` value of chapter 4.3.5/4.3.9: a JSON object serialised into a string.
    pub fn property_json(&self, heartbeat_interval_secs: u64) -> Result<String, PropertyError> {
        let interval = heartbeat_interval_secs.to_string();
        if heartbeat_interval_secs == 0 || interval.len() > 10 {
            return Err(PropertyError::InvalidInterval);
        }
        let mut map = Map::new();
        map.insert(
            SIGN_CHECK_URL.into(),
            Value::String(self.sign_check.clone()),
        );
        map.insert(EVENT_NOTIFY_URL.into(), Value::String(self.events.clone()));
        map.insert(HEARTBEAT_URL.into(), Value::String(self.heartbeat.clone()));
        map.insert(HEARTBEAT_INTERVAL.into(), Value::String(interval));
        Ok(Value::Object(map).to_string())
    }
}

fn check_url(url: &str) -> Result<(), PropertyError> {
    match property_url_problem(url) {
        None => Ok(()),
        Some(reason) => Err(PropertyError::InvalidUrl {
            url: url.to_owned(),
            reason,
        }),
    }
}

/// The `property` string that points phones at this service: the callback URLs under
/// `public_url` (default `callbacks.public_url`) and the heartbeat interval (default
/// `fleet.heartbeat_interval_secs`).
pub fn callback_property(
    settings: &Settings,
    public_url: Option<&str>,
    heartbeat_interval: Option<u64>,
) -> Result<String, PropertyError> {
    let public_url = public_url
        .or(settings.callbacks.public_url.as_deref())
        .ok_or(PropertyError::MissingPublicUrl)?;
    let urls = CallbackUrls::new(public_url, &settings.callbacks.base_path)?;
    let interval = heartbeat_interval.unwrap_or(settings.fleet.heartbeat_interval_secs);
    urls.property_json(interval)
}

/// What a reset must send. A reset restores factory settings (chapter 4.3.5): every property
/// not in the call is gone afterwards — screen orientation, `com.cph.cg.app_port`, bandwidth
/// limits (appendix A.1). So the phone's current properties (`current`, the `property` of
/// chapter 4.3.2) go in too, with cphub's callback properties (`ours`) over them. Returns the
/// property string and the phone's own keys it keeps, sorted.
pub fn merge_for_reset(current: &str, ours: &str) -> Result<(String, Vec<String>), PropertyError> {
    let object = |text: &str| match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        _ if text.trim().is_empty() => Ok(Map::new()),
        _ => Err(PropertyError::NotAnObject(text.chars().take(200).collect())),
    };
    let mut merged = object(current)?;
    let ours = object(ours)?;
    let mut kept: Vec<String> = merged
        .keys()
        .filter(|key| !ours.contains_key(*key))
        .cloned()
        .collect();
    kept.sort();
    merged.extend(ours);
    Ok((Value::Object(merged).to_string(), kept))
}

/// The attributes a phone's `property` may carry: appendix A.1's list, and the four keys of
/// chapter 4.3.5's own example request (`phone_num`, `imsi`, `iccid`, `wifi_name`), which
/// A.1 does not list but the reference sends in a reset. The reference is silent on what
/// happens to any other key; the simulator refuses it (see `refused_keys`).
pub const ATTRIBUTES: [&str; 38] = [
    "sys.prop.writeimsi",
    "sys.prop.writephonenumber",
    "sys.prop.writewifissid",
    "com.cph.mainkeys",
    "gsm.sim.operator.iso-country",
    "gsm.sim.operator.numeric",
    "gsm.sim.operator.alpha",
    "gsm.operator.iso-country",
    "gsm.operator.numeric",
    "gsm.operator.alpha",
    "ro.hardware.gpurenderer",
    "disable.status.bar",
    "ro.permission.changed",
    "ro.horizontal.screen",
    "ro.install.auto",
    "ro.board.platform",
    "ro.build.product",
    "ro.product.device",
    "ro.com.cph.sfs_enable",
    "ro.product.manufacturer",
    "ro.product.name",
    "ro.com.cph.non_root",
    "ro.com.cph.audio_format",
    "ro.com.cph.notification_disable",
    "ro.com.cph.remote_input_method",
    SIGN_CHECK_URL,
    EVENT_NOTIFY_URL,
    HEARTBEAT_URL,
    HEARTBEAT_INTERVAL,
    "com.cph.cg.app_port",
    "com.cph.cg.h5_port",
    "ro.com.cph.cloud_app_engine",
    "ro.com.cph.toast_enable",
    "com.cph.bandwidth_limit",
    // Chapter 4.3.5's example request.
    "phone_num",
    "imsi",
    "iccid",
    "wifi_name",
];

/// Whether `key` is a phone attribute the reference names (appendix A.1, 4.3.5's example).
pub fn is_attribute(key: &str) -> bool {
    ATTRIBUTES.contains(&key)
}

/// Which of the phone's own keys (`own`) a reset refused for its property (7.2's parameter
/// error, `CPS.0200`) should be sent without: those the refusal's message names, word for
/// word; when it names none, those the reference does not list ([`is_attribute`]). Empty:
/// nothing to drop, the refusal is not about the phone's own keys.
pub fn refused_keys(own: &[String], message: &str) -> Vec<String> {
    let words: Vec<&str> = message
        .split(|c: char| c.is_whitespace() || ",;:'\"()[]{}".contains(c))
        .map(|word| word.trim_end_matches('.'))
        .collect();
    let named: Vec<String> = (own.iter())
        .filter(|key| words.contains(&key.as_str()))
        .cloned()
        .collect();
    if !named.is_empty() {
        return named;
    }
    own.iter()
        .filter(|key| !is_attribute(key))
        .cloned()
        .collect()
}

/// `property` (a JSON object in a string) without `keys`.
pub fn without_keys(property: &str, keys: &[String]) -> Result<String, PropertyError> {
    let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(property) else {
        return Err(PropertyError::NotAnObject(
            property.chars().take(200).collect(),
        ));
    };
    map.retain(|key, _| !keys.contains(key));
    Ok(Value::Object(map).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(path: &str) -> BasePath {
        BasePath::try_from(path.to_owned()).unwrap()
    }

    #[test]
    fn builds_the_three_routes_and_the_property_string() {
        let urls = CallbackUrls::new("https://cphub.example.com/", &base("/cph")).unwrap();
        assert_eq!(urls.sign_check, "https://cphub.example.com/cph/sign-check");
        let property: Value = serde_json::from_str(&urls.property_json(5).unwrap()).unwrap();
        assert_eq!(
            property[EVENT_NOTIFY_URL],
            "https://cphub.example.com/cph/events"
        );
        assert_eq!(
            property[HEARTBEAT_URL],
            "https://cphub.example.com/cph/heartbeat"
        );
        assert_eq!(property[HEARTBEAT_INTERVAL], "5");
    }

    /// Chapters 4.3.5 and 4.3.2, appendix A.1: a reset keeps the phone's own properties,
    /// and cphub's callback keys win over stale ones.
    #[test]
    fn reset_4_3_5_merges_the_phone_properties_under_cphubs() {
        let urls = CallbackUrls::new("http://h", &base("/cph")).unwrap();
        let ours = urls.property_json(5).unwrap();
        let current = r#"{"ro.horizontal.screen":"1","com.cph.cg.app_port":"8888",
            "com.cph.cg.heartbeat_url":"http://old/cph/heartbeat"}"#;
        let (merged, kept) = merge_for_reset(current, &ours).unwrap();
        let merged: Value = serde_json::from_str(&merged).unwrap();
        assert_eq!(merged["ro.horizontal.screen"], "1");
        assert_eq!(merged["com.cph.cg.app_port"], "8888");
        assert_eq!(merged[HEARTBEAT_URL], "http://h/cph/heartbeat");
        assert_eq!(merged[HEARTBEAT_INTERVAL], "5");
        assert_eq!(kept, ["com.cph.cg.app_port", "ro.horizontal.screen"]);
        assert_eq!(merge_for_reset("", &ours).unwrap().1, Vec::<String>::new());
        assert!(matches!(
            merge_for_reset("[1]", &ours),
            Err(PropertyError::NotAnObject(_))
        ));
    }

    /// Appendix A.1 and chapter 4.3.5: the keys a refusal names are dropped; when it names
    /// none, the phone's keys the reference does not list.
    #[test]
    fn reset_refusal_4_3_5_drops_the_keys_it_names_or_those_outside_a_1() {
        let own = ["ro.horizontal.screen".to_owned(), "vendor.fan".to_owned()];
        let named = "Parameter: property is invalid: ro.horizontal.screen is not allowed.";
        assert_eq!(refused_keys(&own, named), ["ro.horizontal.screen"]);
        assert_eq!(refused_keys(&own, "Invalid parameters."), ["vendor.fan"]);
        let screen = "Parameter: property is invalid: ro.horizontal.screens";
        assert_eq!(refused_keys(&own, screen), ["vendor.fan"], "word for word");
        assert!(refused_keys(&own[..1], "Invalid parameters.").is_empty());
        assert!(is_attribute("wifi_name") && is_attribute(HEARTBEAT_URL));
        let property = r#"{"vendor.fan":"1","ro.horizontal.screen":"1"}"#;
        let kept = without_keys(property, &["vendor.fan".to_owned()]).unwrap();
        assert_eq!(kept, r#"{"ro.horizontal.screen":"1"}"#);
    }

    #[test]
    fn refuses_urls_a_phone_would_refuse() {
        for public in [
            "ftp://cphub.example.com",
            "cphub.example.com",
            "https://cphub.example.com/?token=1",
            "https://cphub example.com",
            &format!("https://{}.com", "a".repeat(250)),
        ] {
            assert!(
                CallbackUrls::new(public, &base("/cph")).is_err(),
                "{public}"
            );
        }
        assert!(CallbackUrls::new("http://10.0.0.1:8080", &base("/cph/s3cr3t")).is_ok());
        let urls = CallbackUrls::new("http://h", &base("/cph")).unwrap();
        assert_eq!(urls.property_json(0), Err(PropertyError::InvalidInterval));
    }
}
