//! The control stream as the domain sees it (DESIGN.md §4): the protocol version edges must
//! speak, and the commands sent to a connected edge, as a port the gRPC adapter implements
//! (federation and the replication call it).

/// The protocol version this Foghorn speaks on the control stream.
pub const PROTOCOL_VERSION: u32 = 1;

/// Sends commands to the edges whose control stream this replica holds.
pub trait EdgeCommands: Send + Sync + std::fmt::Debug {
    /// Tells edge `node_id` to pull `stream` from `dtsc_url`; false when its control stream is
    /// not held here.
    fn origin_pull(&self, node_id: &str, stream: &str, dtsc_url: &str) -> bool;
}
