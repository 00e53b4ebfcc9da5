//! Variable Byte Integers (section 1.5.5): 7 bits a byte, at most four
//! bytes, so at most 268,435,455. An encoding longer than needed is refused:
//! the standard says to use the minimum number of bytes ([MQTT-1.5.5-1]).

use bytes::BufMut;

use crate::Error;

/// The largest value a Variable Byte Integer can hold.
pub const MAX: u32 = 268_435_455;

/// Reads a variable byte integer from the start of `buf`.
/// `Ok(None)`: not all of its bytes are there yet.
/// `Ok(Some((value, length)))`: the value and how many bytes it took.
#[inline]
pub fn read(buf: &[u8]) -> Result<Option<(u32, usize)>, Error> {
    let mut value: u32 = 0;
    for (i, &byte) in buf.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            // A final zero byte after the first means a longer form than needed.
            if i > 0 && byte == 0 {
                return Err(Error::MalformedVarint);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 4 {
        Err(Error::MalformedVarint)
    } else {
        Ok(None)
    }
}

/// How many bytes `value` takes on the wire.
#[inline]
pub const fn len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes `value`, which the caller has checked is at most [`MAX`].
#[inline]
pub fn write(buf: &mut impl BufMut, mut value: u32) {
    loop {
        let mut byte = (value & 0x7F) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if value == 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The boundaries of table 1.5.5 (MQTT 3.1.1 table 2.4).
    #[test]
    fn spec_boundaries() {
        let cases: &[(u32, &[u8])] = &[
            (0, &[0x00]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ];
        for &(value, bytes) in cases {
            let mut out = Vec::new();
            write(&mut out, value);
            assert_eq!(out, bytes, "encoding {value}");
            assert_eq!(len(value), bytes.len());
            assert_eq!(read(bytes), Ok(Some((value, bytes.len()))));
        }
    }

    #[test]
    fn five_bytes_is_malformed() {
        assert_eq!(
            read(&[0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
            Err(Error::MalformedVarint)
        );
        assert_eq!(read(&[0x80, 0x80, 0x80, 0x80]), Err(Error::MalformedVarint));
    }

    #[test]
    fn overlong_forms_are_malformed() {
        assert_eq!(read(&[0x80, 0x00]), Err(Error::MalformedVarint));
        assert_eq!(read(&[0xFF, 0x80, 0x00]), Err(Error::MalformedVarint));
    }

    #[test]
    fn partial_is_incomplete() {
        assert_eq!(read(&[]), Ok(None));
        assert_eq!(read(&[0x80]), Ok(None));
        assert_eq!(read(&[0xFF, 0xFF, 0xFF]), Ok(None));
    }
}
