//! Channel cells, tor-spec §3–§4. (Owner: cells helper; constants fixed here first.)

/// Length of a fixed-size cell's payload (tor-spec §3): every relay cell body is this long.
pub const CELL_PAYLOAD_LEN: usize = 509;
