//! Every size limit of the wire protocol. Receivers enforce them before and after decoding.

/// Largest encoded `/confab/direct/1` request, in bytes.
pub const MAX_DIRECT_REQUEST: usize = 128 * 1024;
/// Largest encoded `/confab/direct/1` response, in bytes.
pub const MAX_DIRECT_RESPONSE: usize = 1024;
/// Largest encoded gossipsub frame, in bytes (also the gossipsub `max_transmit_size`).
pub const MAX_GOSSIP_FRAME: usize = 128 * 1024;
/// Longest message text, in bytes of UTF-8.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Longest display name, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 64;
/// Longest free-form reason in a rejection, in bytes of UTF-8.
pub const MAX_REASON_BYTES: usize = 256;
