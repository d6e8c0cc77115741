//! Signed webhooks from the durable outbox (docs/webhooks.md).
//!
//! The outbox rows are written by database triggers (migration 0013) in the transaction of
//! the change they report; this module only reads them and sends: it fans each row out to
//! the configured endpoints (`store::outbox`), and one worker per endpoint claims that
//! endpoint's due deliveries under a lease, signs them the Standard Webhooks way and records
//! each attempt. Dependencies go one way: webhooks → store, domain, config, usage.

mod dispatch;
mod operate;
mod render;
mod sign;

pub use dispatch::{WebhookDispatcher, WebhookTasks};
pub use operate::{Deliveries, DeliveryDetail, OperateError};
pub use render::{Rendered, render};
pub use sign::signature;
