//! Lowercase hexadecimal, the text form of every binary value on the wire
//! (challenges, MACs, salts, SHA-256 sums) and in the key file.
//!
//! Encoding always writes lowercase. Decoding accepts either case, because
//! a peer that writes `AB` means the same byte as one that writes `ab`, and
//! rejects anything else: an odd length, a character outside `0-9 a-f A-F`,
//! or (for [`decode_array`]) a length other than the one expected. Every
//! failure is `None`: the callers only need to know that the text is not the
//! value they asked for, and each of them words its own error.

/// Writes `bytes` as lowercase hex, two characters a byte.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// Reads hex text of any even length into bytes.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

/// Reads hex text that must encode exactly `N` bytes (`2 * N` characters),
/// such as a 32-byte challenge or MAC.
pub fn decode_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut bytes = [0u8; N];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(bytes)
}

/// The value of one hex digit, or `None` for any other character.
fn nibble(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_writes_lowercase_pairs() {
        assert_eq!(encode(&[]), "");
        assert_eq!(encode(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }

    #[test]
    fn decode_accepts_both_cases() {
        assert_eq!(decode("000fA5fF"), Some(vec![0x00, 0x0f, 0xa5, 0xff]));
        assert_eq!(decode(""), Some(vec![]));
    }

    #[test]
    fn decode_rejects_odd_length_and_non_hex() {
        assert_eq!(decode("abc"), None);
        assert_eq!(decode("zz"), None);
        assert_eq!(decode("0g"), None);
        assert_eq!(decode(" 0"), None);
        // A multi-byte UTF-8 character is never a digit.
        assert_eq!(decode("é0"), None);
    }

    #[test]
    fn decode_array_wants_the_exact_length() {
        assert_eq!(decode_array::<2>("beef"), Some([0xbe, 0xef]));
        assert_eq!(decode_array::<2>("bee"), None);
        assert_eq!(decode_array::<2>("beefbe"), None);
        assert_eq!(decode_array::<2>("beeg"), None);
    }

    #[test]
    fn round_trip() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&bytes)), Some(bytes));
    }
}
