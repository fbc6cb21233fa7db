//! Format-blind byte mutations: bit flips, boundary integers written over any offset, small
//! arithmetic on integers, truncation, deletion, insertion, duplication and splicing.

use crate::rng::Rng;

/// Interesting little-endian integers: `0`, `1`, powers of two and their neighbours, the
/// limits of every width, `2^60` (a count no file can hold), and counts near the input length.
fn interesting(rng: &mut Rng, len: usize) -> u64 {
    const FIXED: &[u64] = &[
        0,
        1,
        2,
        3,
        4,
        7,
        8,
        16,
        31,
        32,
        33,
        64,
        127,
        128,
        255,
        256,
        0x7fff,
        0x8000,
        0xffff,
        0x1_0000,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_ffff,
        0x1_0000_0000,
        1 << 40,
        1 << 60,
        (1 << 60) + 1,
        0x7fff_ffff_ffff_ffff,
        0x8000_0000_0000_0000,
        u64::MAX - 31,
        u64::MAX - 7,
        u64::MAX - 1,
        u64::MAX,
    ];
    let len = len as u64;
    match rng.below(4) {
        0 => len.wrapping_add(rng.below(17) as u64).wrapping_sub(8),
        1 => len / (rng.range(2, 64) as u64),
        _ => *rng.pick(FIXED),
    }
}

fn write_le(buf: &mut [u8], at: usize, width: usize, v: u64) {
    let bytes = v.to_le_bytes();
    let end = (at + width).min(buf.len());
    buf[at..end].copy_from_slice(&bytes[..end - at]);
}

fn read_le(buf: &[u8], at: usize, width: usize) -> u64 {
    let mut b = [0u8; 8];
    let end = (at + width).min(buf.len());
    b[..end - at].copy_from_slice(&buf[at..end]);
    u64::from_le_bytes(b)
}

/// An offset biased toward the start of the input, where headers live.
fn offset(rng: &mut Rng, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    if rng.one_in(2) {
        rng.below(len.min(256))
    } else {
        rng.below(len)
    }
}

/// One format-blind edit of `buf`; `other` is another seed to splice from. The result is at
/// most `max_len` bytes.
pub fn mutate_once(buf: &mut Vec<u8>, rng: &mut Rng, other: &[u8], max_len: usize) {
    let len = buf.len();
    match rng.below(14) {
        0 | 1 if len > 0 => {
            let at = offset(rng, len);
            buf[at] ^= 1 << rng.below(8);
        }
        2 if len > 0 => {
            let at = offset(rng, len);
            buf[at] = *rng.pick(&[0u8, 1, 0x7f, 0x80, 0xff, b'"', b'{', b'}', b'[', b',', b'0'])
                ^ if rng.one_in(4) {
                    rng.below(256) as u8
                } else {
                    0
                };
        }
        3 | 4 if len > 0 => {
            // A boundary integer over 2, 4 or 8 bytes (aligned one time in two).
            let width = *rng.pick(&[2usize, 4, 8, 8]);
            let mut at = offset(rng, len);
            if rng.one_in(2) {
                at -= at % width;
            }
            let v = interesting(rng, len);
            write_le(buf, at, width, v);
        }
        5 if len > 0 => {
            // Small arithmetic on an integer in place.
            let width = *rng.pick(&[1usize, 2, 4, 8]);
            let at = offset(rng, len);
            let delta = rng.range(1, 35) as u64;
            let v = read_le(buf, at, width);
            let v = if rng.one_in(2) {
                v.wrapping_add(delta)
            } else {
                v.wrapping_sub(delta)
            };
            write_le(buf, at, width, v);
        }
        6 => {
            // Truncate (often just a little, sometimes into the header).
            let cut = if rng.one_in(2) {
                len.saturating_sub(rng.range(1, 64))
            } else {
                rng.below(len + 1)
            };
            buf.truncate(cut);
        }
        7 if len > 0 => {
            let at = rng.below(len);
            let n = rng.range(1, (len - at).min(256));
            buf.drain(at..at + n);
        }
        8 => {
            let at = rng.below(len + 1);
            let n = rng.range(1, 64);
            let fill: Vec<u8> = (0..n)
                .map(|_| {
                    if rng.one_in(2) {
                        rng.below(256) as u8
                    } else {
                        *rng.pick(&[0u8, 0xff, b' ', b'"'])
                    }
                })
                .collect();
            buf.splice(at..at, fill);
        }
        9 | 10 if len > 0 => {
            // Duplicate a range somewhere else.
            let from = rng.below(len);
            let n = rng.range(1, (len - from).min(512));
            let chunk = buf[from..from + n].to_vec();
            let at = rng.below(len + 1);
            if rng.one_in(2) {
                buf.splice(at..at, chunk);
            } else {
                let end = (at + n).min(len);
                buf.splice(at..end, chunk);
            }
        }
        11 if !other.is_empty() => {
            // Splice: a prefix of this input and a suffix of another.
            let a = rng.below(len + 1);
            let b = rng.below(other.len());
            buf.truncate(a);
            buf.extend_from_slice(&other[b..]);
        }
        12 if len > 0 => {
            // Overwrite a range with a copy of another part of the input.
            let from = rng.below(len);
            let to = rng.below(len);
            let n = rng.range(1, (len - from).min(len - to).min(64));
            let chunk = buf[from..from + n].to_vec();
            buf[to..to + n].copy_from_slice(&chunk);
        }
        _ => {
            let n = rng.range(1, 32);
            buf.extend((0..n).map(|_| rng.below(256) as u8));
        }
    }
    buf.truncate(max_len);
}

/// `1..=max` format-blind edits.
pub fn mutate(buf: &mut Vec<u8>, rng: &mut Rng, other: &[u8], max: usize, max_len: usize) {
    for _ in 0..rng.small_count(max) {
        mutate_once(buf, rng, other, max_len);
    }
}
