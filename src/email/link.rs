//! The signed codes in natter's emails: the continuation code in a visitor's link (the widget trades it for access to
//! the conversation, in any browser) and the unsubscribe token.
//!
//! A code is `base64url(purpose ‖ conversation id ‖ expiry ‖ tag)`: one byte of purpose, the 16-byte conversation id,
//! the expiry as 8 bytes of Unix seconds (big-endian), and the first 16 bytes of HMAC-SHA-256 over the rest, keyed with
//! 32 random bytes natter makes once and keeps in its store. So a code cannot be made or changed without the key (a
//! forgery is a 2^-128 guess), names one conversation and one purpose (an unsubscribe token opens nothing), and stops
//! working at its expiry. It holds no secret of the visitor's: the visitor token is never in an email.

use ring::hmac;
use uuid::Uuid;

use crate::auth::base64url;

/// What a code lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Open the conversation in a browser (the link in a visitor's email).
    Continue = 1,
    /// Stop email about the conversation (`List-Unsubscribe`).
    Unsubscribe = 2,
}

const TAG_BYTES: usize = 16;
const CODE_BYTES: usize = 1 + 16 + 8 + TAG_BYTES;

pub struct Signer {
    key: hmac::Key,
}

impl Signer {
    pub fn new(secret: &[u8]) -> Signer {
        Signer {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// A code for `purpose` on `conversation_id`, valid until `expires` (Unix seconds).
    pub fn sign(&self, purpose: Purpose, conversation_id: Uuid, expires: u64) -> String {
        let mut bytes = Vec::with_capacity(CODE_BYTES);
        bytes.push(purpose as u8);
        bytes.extend_from_slice(conversation_id.as_bytes());
        bytes.extend_from_slice(&expires.to_be_bytes());
        let tag = hmac::sign(&self.key, &bytes);
        bytes.extend_from_slice(&tag.as_ref()[..TAG_BYTES]);
        base64url(&bytes)
    }

    /// The conversation a code names, if the code is whole, for this purpose, and not expired at `now`.
    pub fn verify(&self, code: &str, purpose: Purpose, now: u64) -> Option<Uuid> {
        let bytes = decode_base64url(code)?;
        if bytes.len() != CODE_BYTES || bytes[0] != purpose as u8 {
            return None;
        }
        let (signed, tag) = bytes.split_at(CODE_BYTES - TAG_BYTES);
        let expected = hmac::sign(&self.key, signed);
        // Compared in constant time: how long the check takes says nothing about how much of the tag matched.
        let difference = expected.as_ref()[..TAG_BYTES]
            .iter()
            .zip(tag)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b));
        if difference != 0 {
            return None;
        }
        let expires = u64::from_be_bytes(signed[17..25].try_into().ok()?);
        if expires < now {
            return None;
        }
        Some(Uuid::from_bytes(signed[1..17].try_into().ok()?))
    }
}

fn decode_base64url(text: &str) -> Option<Vec<u8>> {
    use base64ct::Encoding;
    if text.len() > 128 {
        return None;
    }
    base64ct::Base64UrlUnpadded::decode_vec(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_opens_its_conversation_for_its_purpose_until_it_expires() {
        let signer = Signer::new(&[7; 32]);
        let conversation = Uuid::new_v4();
        let code = signer.sign(Purpose::Continue, conversation, 1_000);
        assert_eq!(
            signer.verify(&code, Purpose::Continue, 999),
            Some(conversation)
        );
        assert_eq!(
            signer.verify(&code, Purpose::Continue, 1_000),
            Some(conversation)
        );
        assert_eq!(signer.verify(&code, Purpose::Continue, 1_001), None);
        assert_eq!(
            signer.verify(&code, Purpose::Unsubscribe, 0),
            None,
            "a code is for one purpose"
        );
        assert_eq!(
            Signer::new(&[8; 32]).verify(&code, Purpose::Continue, 0),
            None,
            "another key"
        );
    }

    #[test]
    fn a_changed_code_is_refused() {
        let signer = Signer::new(&[7; 32]);
        let code = signer.sign(Purpose::Continue, Uuid::new_v4(), u64::MAX);
        let mut bytes = decode_base64url(&code).unwrap();
        for index in 0..bytes.len() {
            bytes[index] ^= 1;
            assert_eq!(
                signer.verify(&base64url(&bytes), Purpose::Continue, 0),
                None,
                "byte {index} flipped"
            );
            bytes[index] ^= 1;
        }
        assert!(signer.verify("", Purpose::Continue, 0).is_none());
        assert!(signer.verify("!!", Purpose::Continue, 0).is_none());
        assert!(signer
            .verify(&"A".repeat(4000), Purpose::Continue, 0)
            .is_none());
    }
}
