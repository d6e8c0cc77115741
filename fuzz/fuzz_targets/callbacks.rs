//! Any body POSTed to the callback routes: JSON → wire envelope → domain type, as the
//! handlers do. Must never panic; whatever parses must be valid.
#![no_main]

use std::sync::LazyLock;

use cphub::config::{AccessSettings, Settings};
use cphub::domain::{GameEvent, UtcTime};
use cphub::receiver::{EventEnvelope, HeartbeatEnvelope, SignCheckBody};
use libfuzzer_sys::fuzz_target;

static ACCESS: LazyLock<AccessSettings> =
    LazyLock::new(|| Settings::with_overrides("").expect("defaults load").access);

fuzz_target!(|body: &[u8]| {
    if let Ok(envelope) = serde_json::from_slice::<EventEnvelope>(body)
        && let Ok(event) = GameEvent::try_from(envelope)
    {
        assert!(!event.session_id.as_str().is_empty());
    }
    if let Ok(envelope) = serde_json::from_slice::<HeartbeatEnvelope>(body) {
        let _ = envelope.parse(UtcTime::now());
    }
    if let Ok(body) = serde_json::from_slice::<SignCheckBody>(body) {
        let _ = body.parse(&ACCESS);
    }
});
