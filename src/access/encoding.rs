//! Binary values as text. Huawei does not publish the encodings of the key, IV and
//! ciphertext, so each is configurable (`access.*_encoding`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::config::Encoding;

pub fn encode(encoding: Encoding, bytes: &[u8]) -> String {
    match encoding {
        Encoding::Hex => hex::encode(bytes),
        Encoding::Base64 => STANDARD.encode(bytes),
    }
}

/// None when `text` is not valid in `encoding`. Hex accepts either case.
pub fn decode(encoding: Encoding, text: &str) -> Option<Vec<u8>> {
    match encoding {
        Encoding::Hex => hex::decode(text).ok(),
        Encoding::Base64 => STANDARD.decode(text).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let bytes = [0u8, 1, 254, 255, 16];
        for encoding in [Encoding::Hex, Encoding::Base64] {
            assert_eq!(decode(encoding, &encode(encoding, &bytes)).unwrap(), bytes);
        }
        assert_eq!(encode(Encoding::Hex, &bytes), "0001feff10");
        assert!(decode(Encoding::Hex, "0g").is_none());
        assert!(decode(Encoding::Hex, "abc").is_none());
        assert!(decode(Encoding::Base64, "***").is_none());
    }
}
