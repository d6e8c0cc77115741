//! cphub: the operator-side service for cloud mobile gaming on Huawei Cloud Phone.
//! See docs/architecture.md for the components; each is one module here.

#![forbid(unsafe_code)]
// Without the `server` feature (the fuzz targets' build, fuzz/) only the parsers, the
// ciphers and the rules they need are compiled; what only the server uses of them is unused.
#![cfg_attr(not(feature = "server"), allow(dead_code, unused_imports))]

pub mod access;
pub mod config;
pub mod domain;
pub mod receiver;
pub mod telemetry;
pub mod usage;

/// The service's modules, compiled with the `server` feature only (see Cargo.toml).
macro_rules! server_modules {
    ($($name:ident),* $(,)?) => {
        $(
            #[cfg(feature = "server")]
            pub mod $name;
        )*
    };
}

server_modules!(
    api, cli, clock, console, cph, http, metrics, openapi, queue, rollout, routes, simulator,
    startup, store, watchdog, webhooks,
);
