//! Time parsing: callback `time` fields and the usage report's window bounds. Whatever
//! parses stays within the years every backend orders alike, and a window is never empty.
#![no_main]

use chrono::Datelike;
use cphub::domain::UtcTime;
use cphub::usage::Window;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(time) = UtcTime::parse("time", text) {
        assert!((1970..=9999).contains(&time.datetime().year()));
    }
    let (from, to) = text.split_once('|').unwrap_or((text, text));
    for zone in [chrono_tz::UTC, chrono_tz::Asia::Shanghai, chrono_tz::America::Santiago] {
        if let Ok(window) = Window::parse(from, to, zone) {
            assert!(window.from < window.to);
            // Date bounds too: `0002-11-01` once slipped past the range check.
            for bound in [window.from, window.to] {
                assert!((1970..=9999).contains(&bound.datetime().year()));
            }
        }
    }
});
