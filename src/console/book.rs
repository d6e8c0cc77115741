//! What the pages read from, taken from the app's data in one extractor: nearly every page
//! needs the store and the time, and the fleet's pages also when a heartbeat is stale.

use actix_web::{FromRequest, HttpRequest, web};

use super::ConsoleError;
use crate::clock::Clock;
use crate::config::FleetSettings;
use crate::domain::UtcTime;
use crate::store::Store;

/// The store and the request's time, read once so one page tells one moment.
pub(super) struct Book {
    pub(super) store: web::Data<dyn Store>,
    pub(super) now: UtcTime,
    /// Heartbeats older than this are stale (`fleet.stale_after_secs`).
    pub(super) fresh_since: UtcTime,
}

impl Book {
    pub(super) fn store(&self) -> &dyn Store {
        &**self.store
    }
}

impl FromRequest for Book {
    type Error = ConsoleError;
    type Future = std::future::Ready<Result<Book, ConsoleError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(book(req).ok_or_else(missing))
    }
}

fn book(req: &HttpRequest) -> Option<Book> {
    let store = req.app_data::<web::Data<dyn Store>>()?.clone();
    let clock = req.app_data::<web::Data<dyn Clock>>()?;
    let fleet = req.app_data::<web::Data<FleetSettings>>()?;
    let now = clock.now();
    let fresh_since = now.minus(fleet.stale_after());
    Some(Book {
        store,
        now,
        fresh_since,
    })
}

/// The app is wired without them: a bug of the wiring, answered as a server error.
fn missing() -> ConsoleError {
    ConsoleError::Unwired("the store, the clock or the fleet settings")
}
