//! The on-disk record frame of the payload log.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "SLF1" (lets a reader find the next frame after damage)
//!      4     4  payload length, u32 LE
//!      8     4  CRC32C of bytes 4..8 and the payload, u32 LE
//!     12     …  payload:
//!                 seq          u64 LE   per-sink sequence number, from 1, no gaps
//!                 received_ms  i64 LE   when sluice received the record
//!                 flags        u8       bit 0: `NEEDS_META` (see below)
//!                 route_len    u16 LE, route (UTF-8)
//!                 source_len   u16 LE, source (UTF-8)
//!                 data         the record, to the end of the payload
//! ```
//!
//! `NEEDS_META` marks the frames of a group commit that also moved a
//! poller checkpoint (or migrated old rows): such a frame counts only once
//! the metadata transaction that moved the checkpoint has committed, so a
//! page's records and its cursor stay one unit across a crash (see
//! `log::recover`).

/// Marks the start of every frame.
pub const MAGIC: [u8; 4] = *b"SLF1";
/// Bytes before the payload.
pub const HEADER: usize = 12;
/// Fixed payload bytes before the route.
const FIXED: usize = 8 + 8 + 1 + 2;
/// The largest payload a frame may declare (a record is bounded far below
/// this by the push and poller limits); anything larger is damage.
pub const MAX_PAYLOAD: usize = 1 << 30;
/// Flag: counts only once its group commit's metadata has committed.
pub const NEEDS_META: u8 = 1;

/// A decoded frame, borrowing from the buffer it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Sequence number within its sink's log.
    pub seq: u64,
    /// When sluice received the record (Unix ms).
    pub received_ms: i64,
    /// Flags (`NEEDS_META`).
    pub flags: u8,
    /// The record's route.
    pub route: &'a str,
    /// The source it came from.
    pub source: &'a str,
    /// The record.
    pub data: &'a [u8],
}

/// What [`decode`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, valid frame and its length on disk (header included).
    Frame(Frame<'a>, usize),
    /// The buffer ends inside a frame that looks valid so far: `usize` is
    /// the whole frame's length, so the caller can read that much.
    Short(usize),
    /// Not a valid frame here (bad magic, length, CRC or fields).
    Bad,
}

/// The bytes a frame for these fields takes on disk.
pub fn encoded_len(route: &str, source: &str, data: &[u8]) -> usize {
    HEADER + FIXED + 2 + route.len() + source.len() + data.len()
}

/// Appends one frame to `out`.
///
/// Routes and sources longer than 65535 bytes are cut (at a character
/// boundary): they are config names or transform-set routes, far shorter.
pub fn encode(
    out: &mut Vec<u8>,
    seq: u64,
    received_ms: i64,
    flags: u8,
    route: &str,
    source: &str,
    data: &[u8],
) {
    let route = cut(route);
    let source = cut(source);
    let payload = FIXED + 2 + route.len() + source.len() + data.len();
    let start = out.len();
    out.reserve(HEADER + payload);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(payload as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&received_ms.to_le_bytes());
    out.push(flags);
    out.extend_from_slice(&(route.len() as u16).to_le_bytes());
    out.extend_from_slice(route.as_bytes());
    out.extend_from_slice(&(source.len() as u16).to_le_bytes());
    out.extend_from_slice(source.as_bytes());
    out.extend_from_slice(data);
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&out[start + 4..start + 8]),
        &out[start + HEADER..],
    );
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

fn cut(s: &str) -> &str {
    if s.len() <= u16::MAX as usize {
        return s;
    }
    let mut end = u16::MAX as usize;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Decodes the frame at the start of `buf`.
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    if buf.len() < HEADER {
        // Too short to judge the length: ask for a header's worth, unless
        // what is there already is not the start of a frame.
        return if MAGIC.starts_with(&buf[..buf.len().min(4)]) {
            Decoded::Short(HEADER)
        } else {
            Decoded::Bad
        };
    }
    if buf[..4] != MAGIC {
        return Decoded::Bad;
    }
    let payload = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    if !(FIXED + 2..=MAX_PAYLOAD).contains(&payload) {
        return Decoded::Bad;
    }
    let total = HEADER + payload;
    if buf.len() < total {
        return Decoded::Short(total);
    }
    let stored = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&buf[4..8]), &buf[HEADER..total]);
    if crc != stored {
        return Decoded::Bad;
    }
    match fields(&buf[HEADER..total]) {
        Some(frame) => Decoded::Frame(frame, total),
        None => Decoded::Bad,
    }
}

/// The fields of a frame already checked by [`decode`] (no CRC again):
/// `buf` is exactly that frame.
pub fn decode_checked(buf: &[u8]) -> Option<Frame<'_>> {
    fields(buf.get(HEADER..)?)
}

fn fields(p: &[u8]) -> Option<Frame<'_>> {
    let u16_at = |i: usize| Some(u16::from_le_bytes([*p.get(i)?, *p.get(i + 1)?]) as usize);
    let seq = u64::from_le_bytes(p.get(0..8)?.try_into().ok()?);
    let received_ms = i64::from_le_bytes(p.get(8..16)?.try_into().ok()?);
    let flags = *p.get(16)?;
    let route_len = u16_at(17)?;
    let route_end = 19 + route_len;
    let route = std::str::from_utf8(p.get(19..route_end)?).ok()?;
    let source_len = u16_at(route_end)?;
    let source_end = route_end + 2 + source_len;
    let source = std::str::from_utf8(p.get(route_end + 2..source_end)?).ok()?;
    Some(Frame {
        seq,
        received_ms,
        flags,
        route,
        source,
        data: p.get(source_end..)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(seq: u64, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(
            &mut out,
            seq,
            1_700_000_000_123,
            0,
            "jumpcloud.sso",
            "jc",
            data,
        );
        out
    }

    #[test]
    fn round_trip_and_length() {
        let buf = one(7, b"{\"a\":1}");
        assert_eq!(buf.len(), encoded_len("jumpcloud.sso", "jc", b"{\"a\":1}"));
        let Decoded::Frame(f, n) = decode(&buf) else {
            panic!("not decoded")
        };
        assert_eq!(n, buf.len());
        assert_eq!(
            (f.seq, f.received_ms, f.flags, f.route, f.source, f.data),
            (
                7,
                1_700_000_000_123,
                0,
                "jumpcloud.sso",
                "jc",
                &b"{\"a\":1}"[..]
            )
        );
    }

    #[test]
    fn every_single_byte_flip_is_caught() {
        let buf = one(1, b"{\"user\":\"jane\"}");
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    !matches!(decode(&bad), Decoded::Frame(..)),
                    "flip of bit {bit} at byte {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn a_cut_frame_is_short_not_bad() {
        let buf = one(1, b"0123456789");
        for cut in 1..buf.len() {
            match decode(&buf[..cut]) {
                Decoded::Short(n) => assert!(n > cut && n <= buf.len(), "cut {cut}: {n}"),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        assert_eq!(decode(b"XYZ"), Decoded::Bad);
    }
}
