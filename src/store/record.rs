//! The conversation record as `CONVERSATIONS` stores it (schema version 4): a binary record of fixed fields and then
//! the optional texts. The writer rewrites a conversation's record with every message it gets; this one takes a third
//! of the bytes of the JSON it replaced (so fewer pages per commit) and no serializer to write.
//!
//! Layout, little-endian: `FORMAT`, id (16 bytes), token hash (32), unread count (u32), last message id (u64, 0 when
//! there is none: message ids start at 1), created and updated at (i64 each), admin and visitor read up to (u64 each),
//! a byte of flags (`NAME`, `EMAIL`, `PAGE`), then each text they name, in that order (a page is three: url, title,
//! referrer), as its length (u32) and UTF-8 bytes.
//!
//! Records of older stores are JSON (they start with `{`); they are read as such, and the next change to a
//! conversation writes it in this form.

use uuid::Uuid;

use super::{Conversation, Page, StoreError};

pub(super) const FORMAT: u8 = 1;

/// Which texts follow the fixed fields.
const NAME: u8 = 1;
const EMAIL: u8 = 2;
const PAGE: u8 = 4;

pub(super) fn encode(conversation: &Conversation, out: &mut Vec<u8>) {
    out.push(FORMAT);
    out.extend_from_slice(conversation.id.as_bytes());
    out.extend_from_slice(&conversation.token_hash);
    out.extend_from_slice(&conversation.unread_count.to_le_bytes());
    out.extend_from_slice(&conversation.last_message_id.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&conversation.created_at.to_le_bytes());
    out.extend_from_slice(&conversation.updated_at.to_le_bytes());
    out.extend_from_slice(&conversation.admin_read_up_to.to_le_bytes());
    out.extend_from_slice(&conversation.visitor_read_up_to.to_le_bytes());
    let flag = |present: bool, flag: u8| if present { flag } else { 0 };
    out.push(
        flag(conversation.visitor_name.is_some(), NAME)
            | flag(conversation.email.is_some(), EMAIL)
            | flag(conversation.page.is_some(), PAGE),
    );
    let page = conversation
        .page
        .iter()
        .flat_map(|page| [&page.url, &page.title, &page.referrer]);
    for text in conversation
        .visitor_name
        .iter()
        .chain(&conversation.email)
        .chain(page)
    {
        // Every text natter stores is a few KiB at most (the protocol's limits), far below u32::MAX.
        out.extend_from_slice(&(text.len() as u32).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    }
}

pub(super) fn decode(bytes: &[u8]) -> Result<Conversation, StoreError> {
    if bytes.first() == Some(&b'{') {
        return super::decode(bytes);
    }
    if bytes.first() != Some(&FORMAT) {
        return Err(malformed("unknown format"));
    }
    let mut reader = Reader { bytes, at: 1 };
    let id = Uuid::from_bytes(reader.array()?);
    let token_hash = reader.array()?;
    let unread_count = u32::from_le_bytes(reader.array()?);
    let last_message_id = Some(u64::from_le_bytes(reader.array()?)).filter(|&id| id != 0);
    let created_at = i64::from_le_bytes(reader.array()?);
    let updated_at = i64::from_le_bytes(reader.array()?);
    let admin_read_up_to = u64::from_le_bytes(reader.array()?);
    let visitor_read_up_to = u64::from_le_bytes(reader.array()?);
    let [flags] = reader.array()?;
    if flags & !(NAME | EMAIL | PAGE) != 0 {
        return Err(malformed("unknown flags"));
    }
    let mut text_if = |flag: u8| {
        if flags & flag == 0 {
            Ok(None)
        } else {
            reader.text().map(Some)
        }
    };
    let visitor_name = text_if(NAME)?;
    let email = text_if(EMAIL)?;
    let page = match text_if(PAGE)? {
        Some(url) => Some(Page {
            url,
            title: reader.text()?,
            referrer: reader.text()?,
        }),
        None => None,
    };
    if reader.at != bytes.len() {
        return Err(malformed("bytes after the last field"));
    }
    Ok(Conversation {
        id,
        token_hash,
        visitor_name,
        email,
        unread_count,
        last_message_id,
        created_at,
        updated_at,
        page,
        admin_read_up_to,
        visitor_read_up_to,
    })
}

fn malformed(what: &str) -> StoreError {
    StoreError::Storage(format!("a stored conversation does not decode: {what}"))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, length: usize) -> Result<&[u8], StoreError> {
        let end = self
            .at
            .checked_add(length)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| malformed("cut short"))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    fn text(&mut self) -> Result<String, StoreError> {
        let length = u32::from_le_bytes(self.array()?) as usize;
        let bytes = self.take(length)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| malformed("a text is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record without texts: `FORMAT` and the fixed fields, with the flags byte.
    const FIXED_LEN: usize = 1 + 16 + 32 + 4 + 8 + 8 + 8 + 8 + 8 + 1;

    fn conversation(texts: bool) -> Conversation {
        Conversation {
            id: Uuid::now_v7(),
            token_hash: std::array::from_fn(|index| index as u8 * 7),
            visitor_name: texts.then(|| "Ada ✓".to_string()),
            email: texts.then(|| "ada@example.com".to_string()),
            unread_count: 3,
            last_message_id: texts.then_some(u64::MAX - 1),
            created_at: -5,
            updated_at: 1_764_300_000_000,
            page: texts.then(|| Page {
                url: "https://blog.test/post".into(),
                title: String::new(),
                referrer: "https://search.test/?q=natter".into(),
            }),
            admin_read_up_to: 9,
            visitor_read_up_to: 11,
        }
    }

    fn encoded(conversation: &Conversation) -> Vec<u8> {
        let mut bytes = Vec::new();
        encode(conversation, &mut bytes);
        bytes
    }

    #[test]
    fn a_record_decodes_to_the_conversation_it_was_made_from() {
        for texts in [false, true] {
            let conversation = conversation(texts);
            let bytes = encoded(&conversation);
            assert_eq!(decode(&bytes).unwrap(), conversation);
        }
        let plain = encoded(&conversation(false));
        assert_eq!(plain.len(), FIXED_LEN);
        let json = serde_json::to_vec(&conversation(false)).unwrap();
        assert!(
            plain.len() * 2 < json.len(),
            "{} vs {}",
            plain.len(),
            json.len()
        );
    }

    #[test]
    fn a_record_of_an_older_store_is_read_as_json() {
        let conversation = conversation(true);
        let json = serde_json::to_vec(&conversation).unwrap();
        assert_eq!(decode(&json).unwrap(), conversation);
    }

    #[test]
    fn a_damaged_record_is_an_error_never_a_panic() {
        let bytes = encoded(&conversation(true));
        for length in 0..bytes.len() {
            assert!(decode(&bytes[..length]).is_err(), "cut at {length}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        let mut unknown = bytes.clone();
        unknown[0] = 2;
        assert!(decode(&unknown).is_err());
        let mut flags = bytes.clone();
        flags[FIXED_LEN - 1] |= 0x80;
        assert!(decode(&flags).is_err());
        // The name's first byte, made a lone continuation byte.
        let mut not_utf8 = bytes;
        not_utf8[FIXED_LEN + 4] = 0x80;
        assert!(decode(&not_utf8).is_err());
        // A length that points far past the end.
        let mut huge = encoded(&conversation(true));
        huge[FIXED_LEN..FIXED_LEN + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge).is_err());
    }
}
