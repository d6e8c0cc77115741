//! The encoding servers' table (chapter 4.6.1): replaced by each sync, read by the API, the
//! CLI and the metrics.

use super::sql::{Sql, args};
use super::{ControlPlaneEncodeServer, EncodeServer, StoreError};
use crate::domain::UtcTime;

/// A sync lists every encoding server, so one it did not list is gone.
pub(super) async fn sync_encode_servers(
    tx: &mut impl Sql,
    servers: &[ControlPlaneEncodeServer],
    now: UtcTime,
) -> Result<(), StoreError> {
    tx.execute("DELETE FROM encode_servers", &[]).await?;
    let sql = "INSERT INTO encode_servers (encode_server_id, encode_server_name, server_id, \
                 server_type, status, synced_at) VALUES ($1, $2, $3, $4, $5, $6) \
               ON CONFLICT (encode_server_id) DO NOTHING";
    for server in servers {
        let args = args![
            server.encode_server_id.as_str(),
            server.encode_server_name.as_str(),
            server.server_id.as_str(),
            server.server_type,
            server.status,
            now,
        ];
        tx.execute(sql, &args).await?;
    }
    Ok(())
}

pub(super) async fn encode_servers(db: &mut impl Sql) -> Result<Vec<EncodeServer>, StoreError> {
    let sql = "SELECT encode_server_id, encode_server_name, server_id, server_type, status, \
                 status AS state, synced_at \
               FROM encode_servers ORDER BY encode_server_id";
    Ok(db.fetch_all(sql, &[]).await?)
}
