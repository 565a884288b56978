//! What an email says: the headers and the two bodies (plain text, and HTML with every piece of text escaped and no
//! remote image), for a visitor's reply email and for the owner's news. Pure: the caller reads the store.

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::Message as Email;

use crate::store::{Conversation, Message, Queued, Recipient, Sender};

/// Everything an email is made of, read from the store and the config by the caller.
pub struct Parts<'a> {
    pub queued: &'a Queued,
    pub conversation: &'a Conversation,
    /// The conversation's last messages up to `queued.last`, oldest first: the context, and the new ones at the end.
    pub lines: &'a [Message],
    pub from: &'a Mailbox,
    pub owner: Option<&'a Mailbox>,
    /// The chat's name (`widget.title`): who the visitor talked to.
    pub chat_name: &'a str,
    /// The thread's root id (without angle brackets), shared by every email of this conversation to this side.
    pub thread_root: &'a str,
    /// Where the button leads: the page with `#natter-continue=...` for a visitor, the dashboard for the owner.
    pub link: &'a str,
    /// The one-click unsubscribe URL (visitor emails).
    pub unsubscribe: Option<&'a str>,
}

pub fn build(parts: &Parts<'_>) -> Result<Email, String> {
    let queued = parts.queued;
    let to: Mailbox = queued
        .to
        .parse()
        .map_err(|error| format!("the address {:?} is not usable: {error}", queued.to))?;
    let (subject, intro, button) = match queued.recipient {
        Recipient::Visitor => (
            format!("{}: a reply to your message", parts.chat_name),
            format!(
                "{} answered you. Your conversation, with the new reply at the end:",
                parts.chat_name
            ),
            "Continue the conversation",
        ),
        Recipient::Owner => {
            let who = parts
                .conversation
                .visitor_name
                .as_deref()
                .filter(|name| !name.is_empty())
                .unwrap_or("A visitor");
            let new = parts
                .lines
                .iter()
                .filter(|message| is_new(parts, message))
                .count();
            let subject = if queued.in_reply_to == parts.thread_root {
                format!("New conversation: {who}")
            } else if new == 1 {
                format!("{who} wrote again")
            } else {
                format!("{who} wrote {new} more messages")
            };
            (
                subject,
                format!("{who} wrote in the chat on your site:"),
                "Open the dashboard",
            )
        }
    };
    let mut builder = Email::builder()
        .from(parts.from.clone())
        .to(to)
        .subject(subject)
        .message_id(Some(format!("<{}>", queued.message_id)))
        .in_reply_to(format!("<{}>", queued.in_reply_to))
        .references(format!("<{}>", parts.thread_root))
        .raw_header(raw("Auto-Submitted", "auto-generated"))
        .date_now();
    if queued.in_reply_to != parts.thread_root {
        builder = builder.references(format!("<{}>", queued.in_reply_to));
    }
    if let (Recipient::Visitor, Some(owner)) = (queued.recipient, parts.owner) {
        builder = builder.reply_to(owner.clone());
    }
    if let Some(unsubscribe) = parts.unsubscribe {
        builder = builder
            .raw_header(raw("List-Unsubscribe", &format!("<{unsubscribe}>")))
            .raw_header(raw("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"));
    }
    builder
        .multipart(MultiPart::alternative_plain_html(
            text_body(parts, &intro, button),
            html_body(parts, &intro, button),
        ))
        .map_err(|error| error.to_string())
}

fn raw(name: &'static str, value: &str) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value.to_string())
}

/// The side whose messages an email carries: the owner's replies to a visitor, a visitor's messages to the owner.
fn new_side(recipient: Recipient) -> Sender {
    match recipient {
        Recipient::Visitor => Sender::Admin,
        Recipient::Owner => Sender::Visitor,
    }
}

fn speaker<'a>(parts: &'a Parts<'_>, message: &Message) -> &'a str {
    match (message.sender, parts.queued.recipient) {
        (Sender::Admin, _) => parts.chat_name,
        (Sender::Visitor, Recipient::Visitor) => "You",
        (Sender::Visitor, Recipient::Owner) => parts
            .conversation
            .visitor_name
            .as_deref()
            .filter(|name| !name.is_empty())
            .unwrap_or("Visitor"),
    }
}

fn is_new(parts: &Parts<'_>, message: &Message) -> bool {
    message.id >= parts.queued.first && message.sender == new_side(parts.queued.recipient)
}

fn text_body(parts: &Parts<'_>, intro: &str, button: &str) -> String {
    let mut text = format!("{intro}\n\n");
    for message in parts.lines {
        let marker = if is_new(parts, message) { "* " } else { "  " };
        let mut lines = message.content.lines();
        text.push_str(&format!(
            "{marker}{}: {}\n",
            speaker(parts, message),
            lines.next().unwrap_or_default()
        ));
        for line in lines {
            text.push_str(&format!("    {line}\n"));
        }
    }
    text.push_str(&format!("\n{button}: {}\n", parts.link));
    match parts.queued.recipient {
        Recipient::Visitor => {
            text.push_str("\nYou can answer by replying to this email, or in the chat.\n");
            if let Some(unsubscribe) = parts.unsubscribe {
                text.push_str(&format!(
                    "You get this email because you left your address in the chat. No more email about this conversation: {unsubscribe}\n"
                ));
            }
        }
        Recipient::Owner => text.push_str(
            "\nYou get this email because no dashboard was open and no push notification reached you (email.owner_when).\n",
        ),
    }
    text
}

fn html_body(parts: &Parts<'_>, intro: &str, button: &str) -> String {
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"></head>\
         <body style=\"font-family:sans-serif;line-height:1.4;color:#111\">",
    );
    html.push_str(&format!("<p>{}</p>", escape(intro)));
    html.push_str(
        "<table role=\"presentation\" cellpadding=\"6\" style=\"border-collapse:collapse\">",
    );
    for message in parts.lines {
        let weight = if is_new(parts, message) {
            "font-weight:bold"
        } else {
            "color:#555"
        };
        html.push_str(&format!(
            "<tr><td style=\"vertical-align:top;white-space:nowrap;{weight}\">{}</td>\
             <td style=\"white-space:pre-wrap;{weight}\">{}</td></tr>",
            escape(speaker(parts, message)),
            escape(&message.content)
        ));
    }
    html.push_str("</table>");
    html.push_str(&format!(
        "<p><a href=\"{}\" style=\"display:inline-block;padding:8px 14px;background:#2563eb;color:#fff;\
         text-decoration:none;border-radius:6px\">{}</a></p>",
        escape(parts.link),
        escape(button)
    ));
    let footer = match (parts.queued.recipient, parts.unsubscribe) {
        (Recipient::Visitor, Some(unsubscribe)) => format!(
            "You can answer by replying to this email, or in the chat. You get this email because you left your \
             address in the chat. <a href=\"{}\">No more email about this conversation</a>.",
            escape(unsubscribe)
        ),
        (Recipient::Visitor, None) => "You can answer by replying to this email, or in the chat.".into(),
        (Recipient::Owner, _) => "You get this email because no dashboard was open and no push notification \
                                  reached you (email.owner_when)."
            .into(),
    };
    html.push_str(&format!(
        "<p style=\"font-size:12px;color:#777\">{footer}</p></body></html>"
    ));
    html
}

/// Text for HTML: the five characters that could start markup or end an attribute.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '&' => escaped.push_str("&amp;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn message(id: u64, sender: Sender, content: &str) -> Message {
        Message {
            id,
            conversation_id: Uuid::nil(),
            sender,
            content: content.into(),
            created_at: String::new(),
            client_id: None,
        }
    }

    #[test]
    fn a_visitor_email_threads_escapes_and_offers_one_click_unsubscribe() {
        let conversation = Conversation {
            id: Uuid::nil(),
            token_hash: [0; 32],
            visitor_name: Some("Ann".into()),
            email: Some("ann@example.com".into()),
            unread_count: 0,
            last_message_id: Some(3),
            created_at: 0,
            updated_at: 0,
            page: None,
            admin_read_up_to: 0,
            visitor_read_up_to: 0,
        };
        let queued = Queued {
            message_id: "natter.x.3@chat.example.com".into(),
            in_reply_to: "natter.x.visitor@chat.example.com".into(),
            recipient: Recipient::Visitor,
            to: "ann@example.com".into(),
            first: 2,
            last: 3,
            attempts: 0,
        };
        let lines = [
            message(1, Sender::Visitor, "Is <b>this</b> on?"),
            message(2, Sender::Admin, "Yes & <script>alert(1)</script>"),
            message(3, Sender::Admin, "Second"),
        ];
        let from: Mailbox = "Blog <chat@example.com>".parse().unwrap();
        let owner: Mailbox = "me@example.com".parse().unwrap();
        let parts = Parts {
            queued: &queued,
            conversation: &conversation,
            lines: &lines,
            from: &from,
            owner: Some(&owner),
            chat_name: "Blog",
            thread_root: "natter.x.visitor@chat.example.com",
            link: "https://blog.example.com/post#natter-continue=abc",
            unsubscribe: Some("https://chat.example.com/email/unsubscribe?t=u"),
        };
        let html = html_body(&parts, "intro", "go");
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!html.contains("<img"));
        let formatted = String::from_utf8(build(&parts).unwrap().formatted()).unwrap();
        for header in [
            "Message-ID: <natter.x.3@chat.example.com>",
            "In-Reply-To: <natter.x.visitor@chat.example.com>",
            "Auto-Submitted: auto-generated",
            "Reply-To: me@example.com",
            "List-Unsubscribe: <https://chat.example.com/email/unsubscribe?t=u>",
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        ] {
            assert!(formatted.contains(header), "{header} in {formatted}");
        }
    }
}
