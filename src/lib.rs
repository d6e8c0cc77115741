//! cphub: the operator-side service for cloud mobile gaming on Huawei Cloud Phone.
//! See docs/architecture.md for the components; each is one module here.

#![forbid(unsafe_code)]
// Without the `server` feature (the fuzz targets' build, fuzz/) only the parsers, the
// ciphers and the rules they need are compiled; what only the server uses of them is unused.
#![cfg_attr(not(feature = "server"), allow(dead_code, unused_imports))]

pub mod access;
#[cfg(feature = "server")]
pub mod api;
#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "server")]
pub mod clock;
pub mod config;
#[cfg(feature = "server")]
pub mod cph;
pub mod domain;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod openapi;
#[cfg(feature = "server")]
pub mod queue;
pub mod receiver;
#[cfg(feature = "server")]
pub mod rollout;
#[cfg(feature = "server")]
pub mod routes;
#[cfg(feature = "server")]
pub mod simulator;
#[cfg(feature = "server")]
pub mod startup;
#[cfg(feature = "server")]
pub mod store;
pub mod telemetry;
pub mod usage;
#[cfg(feature = "server")]
pub mod watchdog;
#[cfg(feature = "server")]
pub mod webhooks;
