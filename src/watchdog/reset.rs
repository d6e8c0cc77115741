//! What a reset sends. A reset restores factory settings (chapter 4.3.5), so it carries the
//! phone's own properties with cphub's callback ones over them (`reset_property` in
//! `mod.rs`). A key the reset refuses is reported, not silently dropped: the reset is sent
//! once more without the phone's own keys it refused, and the recovery's detail names each
//! key dropped and the refusal.

use super::Watchdog;
use crate::cph::properties::{refused_keys, without_keys};
use crate::cph::{BatchOutcome, CphError, PhoneItem};
use crate::domain::PhoneId;

/// Chapter 7.2's parameter error: what a property the service does not take is refused with
/// (the reference has no per-key code).
const PARAMETER_ERROR: &str = "CPS.0200";

/// A reset's property as it is sent, and what the log says of it.
#[derive(Debug, Clone)]
pub(super) struct ResetProperty {
    pub property: String,
    /// The phone's own keys it re-applies (cphub's callback keys excluded).
    pub own: Vec<String>,
    /// Why the phone's own properties are phone sync's last read of them rather than a read
    /// right before the reset; None when they were read then.
    pub fallback: Option<String>,
    pub note: String,
}

impl ResetProperty {
    pub fn new(property: String, own: Vec<String>, fallback: Option<String>) -> ResetProperty {
        let note = reapplied(&own, fallback.as_deref());
        ResetProperty {
            property,
            own,
            fallback,
            note,
        }
    }

    /// Drops `keys` (the phone's own, refused by the control plane with `message`) and says
    /// so, key by key, in the note.
    fn drop_refused(&mut self, keys: &[String], message: &str) -> Result<(), String> {
        self.property = without_keys(&self.property, keys).map_err(|e| e.to_string())?;
        self.own.retain(|key| !keys.contains(key));
        let dropped: Vec<String> = keys
            .iter()
            .map(|key| {
                format!("{key} dropped: the reset refused it ({PARAMETER_ERROR}: {message})")
            })
            .collect();
        let reapplied = reapplied(&self.own, self.fallback.as_deref());
        self.note = format!("{reapplied}; {}", dropped.join("; "));
        Ok(())
    }
}

fn reapplied(own: &[String], fallback: Option<&str>) -> String {
    let note = if own.is_empty() {
        "reset with cphub's callback properties; the phone had none of its own".to_owned()
    } else {
        format!(
            "reset re-applied the phone's own properties {} and cphub's callback properties",
            own.join(", ")
        )
    };
    match fallback {
        Some(why) => format!("{note} ({why})"),
        None => note,
    }
}

fn item(phone_id: &PhoneId, property: &str) -> Vec<PhoneItem> {
    vec![PhoneItem {
        phone_id: phone_id.to_string(),
        property: Some(property.to_owned()),
    }]
}

impl Watchdog {
    /// Sends the reset. Refused for keys of the phone's own (7.2 `CPS.0200`, the key named
    /// in the message or, when none is, one the reference does not list: appendix A.1), it
    /// is sent once more without them; nothing was done the first time, so this is not a
    /// second reset. cphub's callback keys are never dropped: without them the phone would
    /// not call back, and the refusal stands.
    pub(super) async fn send_reset(
        &self,
        phone_id: &PhoneId,
        reset: &mut ResetProperty,
    ) -> Result<BatchOutcome, CphError> {
        let answer = self.client.reset(item(phone_id, &reset.property)).await?;
        let Some((keys, message)) = refused_for_property(&answer, &reset.own) else {
            return Ok(answer);
        };
        if let Err(error) = reset.drop_refused(&keys, &message) {
            tracing::warn!(%phone_id, error, "the refused properties cannot be taken out");
            return Ok(answer);
        }
        tracing::warn!(%phone_id, dropped = keys.join(", "), message, "the reset refused some of the phone's own properties: sent again without them");
        self.client.reset(item(phone_id, &reset.property)).await
    }
}

/// The phone's own keys a refusal of the reset is about, and its message; None when the
/// reset was not refused for its property, or not for keys of the phone's own.
fn refused_for_property(answer: &BatchOutcome, own: &[String]) -> Option<(Vec<String>, String)> {
    let item = answer.failures().next()?;
    if item.error_code.as_deref() != Some(PARAMETER_ERROR) {
        return None;
    }
    let message = item.error_msg.clone().unwrap_or_default();
    let keys = refused_keys(own, &message);
    (!keys.is_empty()).then_some((keys, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appendix A.1, 4.3.5: each dropped key is named, with the refusal; the others stay.
    #[test]
    fn a_refused_key_is_dropped_and_named_4_3_5() {
        let own = vec!["ro.horizontal.screen".to_owned(), "vendor.fan".to_owned()];
        let property = r#"{"ro.horizontal.screen":"1","vendor.fan":"2","com.cph.cg.heartbeat_url":"http://h"}"#;
        let mut reset = ResetProperty::new(property.to_owned(), own, None);
        assert!(reset.note.contains("ro.horizontal.screen, vendor.fan"));

        reset
            .drop_refused(&["vendor.fan".to_owned()], "bad key vendor.fan")
            .unwrap();

        assert!(!reset.property.contains("vendor.fan"), "{}", reset.property);
        assert!(reset.property.contains("com.cph.cg.heartbeat_url"));
        assert_eq!(reset.own, ["ro.horizontal.screen"]);
        assert!(
            reset.note.contains(
                "vendor.fan dropped: the reset refused it (CPS.0200: bad key vendor.fan)"
            ),
            "{}",
            reset.note
        );
    }
}
