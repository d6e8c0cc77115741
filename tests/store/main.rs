//! Store contract suite: the decisions of the `Store` trait pinned down directly, without
//! HTTP, on a fresh SQLite file and a fresh PostgreSQL database per test (every test runs on
//! both backends). See helpers.rs for the set-up; tests/api/ covers the same behaviour as
//! the phones and the operator see it.

mod helpers;

mod encode;
mod events;
mod heartbeats;
mod held_heartbeats;
mod incidents;
mod lock_order;
mod mint_batch;
mod minting;
mod partitions;
mod queue;
mod races;
mod retention;
mod rollouts;
mod usage;
mod webhooks;
mod writers;
