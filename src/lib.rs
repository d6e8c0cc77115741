//! cphub: the operator-side service for cloud mobile gaming on Huawei Cloud Phone.
//! See docs/architecture.md for the components; each is one module here.

#![forbid(unsafe_code)]

pub mod access;
pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod cph;
pub mod domain;
pub mod http;
pub mod metrics;
pub mod openapi;
pub mod queue;
pub mod receiver;
pub mod rollout;
pub mod routes;
pub mod simulator;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod usage;
pub mod watchdog;
pub mod webhooks;
