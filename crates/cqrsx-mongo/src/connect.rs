//! The first connection: open and ping (`client.rs`), then detect what the server can do
//! (`detect.rs`), which needs the open client.

use cqrsx_core::Result;

use crate::client::MongoClientManager;
use crate::config::MongoConfig;

impl MongoClientManager {
    /// Connects, pings and detects the server's capabilities.
    ///
    /// A first connection gives up after the config's `connect_timeout` (server selection
    /// included) with an [`cqrsx_core::Error::Connect`] naming the servers tried and why:
    /// refused, timed out, unreachable, authentication. Once connected, the driver reconnects
    /// on its own.
    pub async fn connect(config: MongoConfig) -> Result<Self> {
        let manager = Self::open(config).await?;
        let detected = crate::detect::capabilities(&manager).await?;
        Ok(manager.with_detected(detected))
    }
}
