//! The callback receiver: what the phones' engine POSTs to the URLs set in their
//! `com.cph.cg.*` properties (chapter 6). Routes live under `callbacks.base_path`.
//!
//! The wire types parse without the server: the build without the `server` feature (the
//! fuzz targets', fuzz/) compiles `wire` alone, and leaves out the handlers and their
//! actix-web and database dependencies.

mod wire;

pub(crate) use wire::optional_integer;
pub use wire::{EventEnvelope, HeartbeatEnvelope, SignCheckBody};

#[cfg(feature = "server")]
mod events;
#[cfg(feature = "server")]
mod heartbeat;
#[cfg(feature = "server")]
mod service;
#[cfg(feature = "server")]
mod sign_check;
#[cfg(feature = "server")]
mod source;

#[cfg(feature = "server")]
use service::acknowledged;
#[cfg(feature = "server")]
pub use service::{Acknowledged, CallbackDoc, ReceiverError, endpoints, routes};
#[cfg(feature = "server")]
pub use source::AllowedNetworks;
