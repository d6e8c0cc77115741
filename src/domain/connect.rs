//! Where a player's client reaches a phone: its server and the ports the control plane maps
//! to the public network (chapter 4.3.2, Table 4-30 `access_infos`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One entry of a phone's `access_infos`, the part a client needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AccessInfo {
    /// The user-defined port type (`type`, at most 16 bytes), e.g. `server1`.
    #[serde(rename = "type")]
    pub port_type: String,
    /// The public IP address of the phone's server (`public_ip`, or the expired `access_ip`).
    pub public_ip: String,
    /// The port mapped to the public network: what the client dials.
    pub access_port: i64,
    /// The phone's own listening port behind it.
    pub listen_port: i64,
}

/// What the mint answer tells the platform about where to connect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Connect {
    /// The phone's server (chapter 4.3.1 `server_id`); null until the control plane listed it.
    pub server_id: Option<String>,
    /// Empty until phone sync read the phone's detail, and always without a control plane.
    pub access: Vec<AccessInfo>,
}
