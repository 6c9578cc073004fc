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

/// Largest encoded `/confab/bootstrap/1` request (an avatar upload is the largest).
pub const MAX_BOOTSTRAP_REQUEST: usize = 512 * 1024;
/// Largest encoded `/confab/bootstrap/1` response (an avatar, a page of users or friends).
pub const MAX_BOOTSTRAP_RESPONSE: usize = 512 * 1024;
/// Largest encoded `/confab/notify/1` frame (either direction).
pub const MAX_NOTIFY_FRAME: usize = 8 * 1024;
/// Largest avatar image, in bytes.
pub const MAX_AVATAR_BYTES: usize = 256 * 1024;
/// Shortest username, in characters.
pub const MIN_USERNAME_CHARS: usize = 3;
/// Longest username, in characters (ASCII).
pub const MAX_USERNAME_CHARS: usize = 32;
/// Longest password accepted at all, in bytes (hashing cost must not depend on an attacker).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest profile status line ("signature"), in bytes of UTF-8.
pub const MAX_SIGNATURE_BYTES: usize = 256;
/// Longest search query, in bytes.
pub const MAX_QUERY_BYTES: usize = 64;
/// Most users one search returns.
pub const MAX_SEARCH_RESULTS: usize = 50;
/// Most friends (and pending requests) one account may have.
pub const MAX_FRIENDS: usize = 1000;

/// Most entries in one mailbox page.
pub const MAX_SYNC_PAGE: u32 = 500;
/// A mailbox page stops growing at this many encoded bytes (so it fits in a response).
pub const SYNC_PAGE_BYTES: usize = 384 * 1024;
/// Conversations listed in an offline summary at most.
pub const MAX_SUMMARY_SENDERS: usize = 100;
/// Most conversations one account may mute.
pub const MAX_MUTED: usize = 1024;
/// Most users and groups one account may block.
pub const MAX_BLOCKED: usize = 1024;
/// The longest conversation address in settings, in bytes.
pub const MAX_ADDRESS_BYTES: usize = 160;
/// Most members of one group.
pub const MAX_GROUP_MEMBERS: usize = 256;
/// Most groups one account may be a member of.
pub const MAX_GROUPS_PER_USER: usize = 256;
/// Largest chunk of a file on `/confab/file/1`, in bytes (the chunk size files are cut into).
pub const MAX_FILE_CHUNK: usize = 1024 * 1024;
/// Most chunk hashes in one page of a hash list.
pub const MAX_HASH_LIST_PAGE: usize = 8192;
/// Largest encoded `/confab/file/1` request.
pub const MAX_FILE_REQUEST: usize = 256;
/// Largest encoded `/confab/file/1` response (a full chunk or hash list page, plus framing).
pub const MAX_FILE_RESPONSE: usize = MAX_FILE_CHUNK + 1024;
/// Longest attachment file name, in bytes of UTF-8.
pub const MAX_FILE_NAME_BYTES: usize = 255;
/// Longest attachment MIME type, in bytes.
pub const MAX_MIME_BYTES: usize = 127;
/// Largest image thumbnail carried in a message, in bytes.
pub const MAX_THUMBNAIL_BYTES: usize = 24 * 1024;
/// Most message ids in one receipt.
pub const MAX_RECEIPT_IDS: usize = 256;
/// Most devices in a [`crate::bootstrap::BootstrapResponse::Devices`] answer.
pub const MAX_DEVICES: usize = 16;
/// Most addresses listed for one device, and the longest one in bytes.
pub const MAX_DEVICE_ADDRS: usize = 8;
/// The longest multiaddr accepted in a device listing, in bytes.
pub const MAX_ADDR_BYTES: usize = 256;
