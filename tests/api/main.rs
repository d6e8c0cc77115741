//! Integration tests: the real application on a random port, a real SQLite file or a real
//! PostgreSQL database per test, driven over HTTP. See helpers.rs for the set-up.

mod helpers;

mod access;
mod allocation;
mod audit;
mod auth;
mod bad_input;
mod binary;
mod cli;
mod console;
mod console_browser;
mod cph_client;
mod db_faults;
mod diagnostics;
mod docs;
mod encode_servers;
mod events;
mod health;
mod heartbeat;
mod load;
mod metrics;
mod openapi;
mod pagination;
mod phone_sync;
mod queue;
mod reconnect;
mod rollout_webhooks;
mod rollouts;
mod scale_out;
mod schemathesis;
mod session_list;
mod sign_check_data;
mod simulation;
mod simulator_control_plane;
mod sources;
mod tokens;
mod traces;
mod usage;
mod watchdog;
mod webhooks;
mod webhooks_api;
mod webhooks_crash;
mod webhooks_fleet;
mod write_queue;
mod writers;
