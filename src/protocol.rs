//! The ActionCable wire protocol: incoming frames parsed into typed commands once, outgoing frames built here.
//! Pure functions, no I/O, so every malformed input is unit-testable.
//!
//! A client frame is `{"command":"subscribe"|"unsubscribe"|"message","identifier":"<JSON string>","data":"<JSON
//! string>"}`. The identifier is kept byte for byte, because the client matches our answers to its subscriptions by
//! comparing that exact string.

use serde::Deserialize;
use uuid::Uuid;

use crate::error::ApiError;
use crate::store::Page;

/// The longest message content, in characters, after trimming.
pub const MAX_CONTENT_CHARS: usize = 4000;
const MAX_NAME_CHARS: usize = 80;
const MAX_EMAIL_CHARS: usize = 254;
const MAX_PAGE_FIELD_CHARS: usize = 2048;
/// An identifier is a tiny JSON object; anything longer is abuse.
const MAX_IDENTIFIER_BYTES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelName {
    Visitor,
    Admin,
}

/// One parsed client command.
#[derive(Debug, PartialEq)]
pub enum Command {
    Subscribe {
        identifier: String,
        channel: ChannelName,
    },
    Unsubscribe {
        identifier: String,
        channel: ChannelName,
    },
    Visitor {
        identifier: String,
        action: VisitorAction,
    },
    Admin {
        identifier: String,
        action: AdminAction,
    },
}

#[derive(Debug, PartialEq)]
pub enum VisitorAction {
    Sync { after: Option<u64> },
    Speak { content: String, client_id: Uuid },
    Typing { typing: bool },
    Identify { name: String, email: Option<String> },
    Read { up_to: u64 },
    Visit { page: Page },
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum AdminAction {
    Sync {
        #[serde(default)]
        after: Option<u64>,
    },
    Reply {
        conversation_id: Uuid,
        content: String,
        client_id: Uuid,
    },
    Typing {
        conversation_id: Uuid,
        typing: bool,
    },
    Read {
        conversation_id: Uuid,
        up_to: u64,
    },
}

/// Why a frame could not be understood. `identifier` is set when the frame named a channel, so the error can be sent
/// as that channel's `error` event; otherwise it goes out as a top-level `error` frame.
#[derive(Debug, PartialEq)]
pub struct ParseError {
    pub identifier: Option<String>,
    pub client_id: Option<Uuid>,
    pub error: ApiError,
}

#[derive(Deserialize)]
struct Frame {
    command: String,
    identifier: String,
    #[serde(default)]
    data: Option<String>,
}

#[derive(Deserialize)]
struct Identifier {
    channel: String,
}

#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum RawVisitorAction {
    Sync {
        #[serde(default)]
        after: Option<u64>,
    },
    Speak {
        content: String,
        client_id: Uuid,
    },
    Typing {
        typing: bool,
    },
    Identify {
        name: String,
        #[serde(default)]
        email: Option<String>,
    },
    Read {
        up_to: u64,
    },
    Visit {
        #[serde(default)]
        url: String,
        #[serde(default)]
        title: String,
        #[serde(default)]
        referrer: String,
    },
}

/// Parses one text frame from a client.
pub fn parse_command(text: &str) -> Result<Command, ParseError> {
    let bare = |error: ApiError| ParseError {
        identifier: None,
        client_id: None,
        error,
    };
    let frame: Frame = serde_json::from_str(text).map_err(|error| {
        bare(ApiError::bad_request(format!(
            "not an ActionCable command: {error}"
        )))
    })?;
    if frame.identifier.len() > MAX_IDENTIFIER_BYTES {
        return Err(bare(ApiError::too_long("the identifier is too long")));
    }
    let channel = parse_identifier(&frame.identifier).map_err(bare)?;
    let identifier = frame.identifier;
    let in_channel = |error: ApiError, client_id: Option<Uuid>| ParseError {
        identifier: Some(identifier.clone()),
        client_id,
        error,
    };
    match frame.command.as_str() {
        "subscribe" => Ok(Command::Subscribe {
            identifier,
            channel,
        }),
        "unsubscribe" => Ok(Command::Unsubscribe {
            identifier,
            channel,
        }),
        "message" => {
            let data = frame.data.ok_or_else(|| {
                in_channel(ApiError::bad_request("a message command needs data"), None)
            })?;
            match channel {
                ChannelName::Visitor => match parse_visitor_action(&data) {
                    Ok(action) => Ok(Command::Visitor { identifier, action }),
                    Err((error, client_id)) => Err(in_channel(error, client_id)),
                },
                ChannelName::Admin => match parse_admin_action(&data) {
                    Ok(action) => Ok(Command::Admin { identifier, action }),
                    Err((error, client_id)) => Err(in_channel(error, client_id)),
                },
            }
        }
        other => Err(in_channel(
            ApiError::bad_request(format!("unknown command {other:?}")),
            None,
        )),
    }
}

fn parse_identifier(identifier: &str) -> Result<ChannelName, ApiError> {
    let parsed: Identifier = serde_json::from_str(identifier).map_err(|_| {
        ApiError::bad_request("the identifier must be a JSON object with a channel")
    })?;
    match parsed.channel.as_str() {
        "VisitorChannel" => Ok(ChannelName::Visitor),
        "AdminChannel" => Ok(ChannelName::Admin),
        other => Err(ApiError::not_found(format!("unknown channel {other:?}"))),
    }
}

/// The client id of a `speak`/`reply` that failed validation, so the client can mark that message failed.
fn client_id_of(data: &str) -> Option<Uuid> {
    #[derive(Deserialize)]
    struct WithClientId {
        client_id: Uuid,
    }
    serde_json::from_str::<WithClientId>(data)
        .ok()
        .map(|with| with.client_id)
}

fn action_error(data: &str, error: &serde_json::Error) -> (ApiError, Option<Uuid>) {
    let message = error.to_string();
    let error = if message.contains("unknown variant") {
        ApiError::not_found(format!("unknown action: {message}"))
    } else {
        ApiError::bad_request(format!("invalid data: {message}"))
    };
    (error, client_id_of(data))
}

fn parse_visitor_action(data: &str) -> Result<VisitorAction, (ApiError, Option<Uuid>)> {
    let raw: RawVisitorAction =
        serde_json::from_str(data).map_err(|error| action_error(data, &error))?;
    Ok(match raw {
        RawVisitorAction::Sync { after } => VisitorAction::Sync { after },
        RawVisitorAction::Speak { content, client_id } => VisitorAction::Speak {
            content: content_text(&content).map_err(|error| (error, Some(client_id)))?,
            client_id,
        },
        RawVisitorAction::Typing { typing } => VisitorAction::Typing { typing },
        RawVisitorAction::Identify { name, email } => {
            let name = name.trim().to_string();
            if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
                return Err((
                    ApiError::invalid(format!(
                        "the name must be at most {MAX_NAME_CHARS} characters"
                    )),
                    None,
                ));
            }
            let email = email
                .map(|email| email.trim().to_string())
                .filter(|email| !email.is_empty());
            if let Some(email) = &email {
                if !looks_like_email(email) {
                    return Err((
                        ApiError::invalid("that does not look like an email address"),
                        None,
                    ));
                }
            }
            VisitorAction::Identify { name, email }
        }
        RawVisitorAction::Read { up_to } => VisitorAction::Read { up_to },
        RawVisitorAction::Visit {
            url,
            title,
            referrer,
        } => {
            for field in [&url, &title, &referrer] {
                if field.chars().count() > MAX_PAGE_FIELD_CHARS {
                    return Err((
                        ApiError::too_long(format!(
                            "url, title and referrer are at most {MAX_PAGE_FIELD_CHARS} characters"
                        )),
                        None,
                    ));
                }
            }
            VisitorAction::Visit {
                page: Page {
                    url,
                    title,
                    referrer,
                },
            }
        }
    })
}

fn parse_admin_action(data: &str) -> Result<AdminAction, (ApiError, Option<Uuid>)> {
    let mut action: AdminAction =
        serde_json::from_str(data).map_err(|error| action_error(data, &error))?;
    if let AdminAction::Reply {
        content, client_id, ..
    } = &mut action
    {
        *content = content_text(content).map_err(|error| (error, Some(*client_id)))?;
    }
    Ok(action)
}

/// Message content: trimmed, 1 to 4000 characters, no NUL.
pub fn content_text(content: &str) -> Result<String, ApiError> {
    let trimmed = content.trim();
    if trimmed.is_empty() {
        return Err(ApiError::invalid("the message is empty"));
    }
    if trimmed.chars().count() > MAX_CONTENT_CHARS {
        return Err(ApiError::too_long(format!(
            "a message is at most {MAX_CONTENT_CHARS} characters"
        )));
    }
    if trimmed.contains('\0') {
        return Err(ApiError::invalid("the message contains a NUL character"));
    }
    Ok(trimmed.to_string())
}

/// Characters an email address a visitor types never needs, and that would turn the owner's `mailto:` link into
/// something else: `?` and `&` add headers (a hidden `bcc`), `%` escapes, `,` and `;` more recipients, a second `@`
/// a second address; quotes, brackets and slashes have no place in a plain address either.
const NOT_IN_AN_ADDRESS: &str = "?&%,;:\"()[]<>\\/@";

/// A plain address: one `@`, a dotted domain, none of `NOT_IN_AN_ADDRESS` on either side.
fn looks_like_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    let plain = |part: &str| {
        !part.is_empty()
            && !part
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || NOT_IN_AN_ADDRESS.contains(c))
    };
    email.chars().count() <= MAX_EMAIL_CHARS
        && plain(local)
        && plain(domain)
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
}

// ---- server frames ----

pub fn welcome() -> String {
    r#"{"type":"welcome"}"#.to_string()
}

pub fn ping(unix_seconds: u64) -> String {
    format!(r#"{{"type":"ping","message":{unix_seconds}}}"#)
}

pub fn confirm(identifier: &str) -> String {
    subscription_answer(identifier, "confirm_subscription")
}

pub fn reject(identifier: &str) -> String {
    subscription_answer(identifier, "reject_subscription")
}

fn subscription_answer(identifier: &str, kind: &str) -> String {
    serde_json::json!({ "identifier": identifier, "type": kind }).to_string()
}

pub fn disconnect(reason: &str, reconnect: bool) -> String {
    serde_json::json!({ "type": "disconnect", "reason": reason, "reconnect": reconnect })
        .to_string()
}

/// A channel message: `identifier_json` is the identifier already encoded as a JSON string (quotes included), and
/// `event` is the event's JSON. Built by concatenation, because one event fans out to many sockets with different
/// identifiers and is encoded only once.
pub fn channel_message(identifier_json: &str, event: &str) -> String {
    let mut frame = channel_message_prefix(identifier_json);
    frame.reserve_exact(event.len() + 1);
    frame.push_str(event);
    frame.push('}');
    frame
}

/// A channel message up to its event: what a socket puts before every event of that channel.
pub fn channel_message_prefix(identifier_json: &str) -> String {
    let mut prefix = String::with_capacity(identifier_json.len() + 26);
    prefix.push_str(r#"{"identifier":"#);
    prefix.push_str(identifier_json);
    prefix.push_str(r#","message":"#);
    prefix
}

/// An `error` event for a channel, or a top-level `error` frame when the command named no usable channel.
pub fn error_frame(identifier: Option<&str>, error: &ApiError, client_id: Option<Uuid>) -> String {
    let mut event =
        serde_json::json!({ "type": "error", "code": error.code, "message": error.message });
    if let Some(client_id) = client_id {
        event["client_id"] = serde_json::json!(client_id);
    }
    match identifier {
        Some(identifier) => channel_message(&encode_identifier(identifier), &event.to_string()),
        None => event.to_string(),
    }
}

/// The identifier as a JSON string literal, ready for `channel_message`.
pub fn encode_identifier(identifier: &str) -> String {
    serde_json::Value::String(identifier.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VISITOR: &str = r#"{\"channel\":\"VisitorChannel\"}"#;

    fn message(data: &str) -> String {
        format!(
            r#"{{"command":"message","identifier":"{VISITOR}","data":{}}}"#,
            serde_json::Value::String(data.into())
        )
    }

    #[test]
    fn subscribe_keeps_the_identifier_byte_for_byte() {
        let text =
            r#"{"command":"subscribe","identifier":"{\"channel\": \"VisitorChannel\", \"x\": 1}"}"#;
        let Command::Subscribe {
            identifier,
            channel,
        } = parse_command(text).unwrap()
        else {
            panic!()
        };
        assert_eq!(identifier, r#"{"channel": "VisitorChannel", "x": 1}"#);
        assert_eq!(channel, ChannelName::Visitor);
        assert_eq!(
            confirm(&identifier),
            r#"{"identifier":"{\"channel\": \"VisitorChannel\", \"x\": 1}","type":"confirm_subscription"}"#
        );
    }

    #[test]
    fn speak_is_trimmed_and_bounded() {
        let client_id = Uuid::new_v4();
        let ok = parse_command(&message(&format!(
            r#"{{"action":"speak","content":"  hi  ","client_id":"{client_id}"}}"#
        )))
        .unwrap();
        assert_eq!(
            ok,
            Command::Visitor {
                identifier: r#"{"channel":"VisitorChannel"}"#.into(),
                action: VisitorAction::Speak {
                    content: "hi".into(),
                    client_id
                }
            }
        );
        let long = "é".repeat(MAX_CONTENT_CHARS + 1);
        let error = parse_command(&message(&format!(
            r#"{{"action":"speak","content":"{long}","client_id":"{client_id}"}}"#
        )))
        .unwrap_err();
        assert_eq!(error.error.code, "too_long");
        assert_eq!(error.client_id, Some(client_id));
        let exactly = "é".repeat(MAX_CONTENT_CHARS);
        assert!(parse_command(&message(&format!(
            r#"{{"action":"speak","content":"{exactly}","client_id":"{client_id}"}}"#
        )))
        .is_ok());
        let blank = parse_command(&message(&format!(
            r#"{{"action":"speak","content":"   ","client_id":"{client_id}"}}"#
        )))
        .unwrap_err();
        assert_eq!(blank.error.code, "invalid");
    }

    #[test]
    fn malformed_input_at_every_layer_is_an_error_not_a_panic() {
        for (text, code, has_identifier) in [
            ("not json", "bad_request", false),
            (r#"{"command":"subscribe"}"#, "bad_request", false),
            (
                r#"{"command":"subscribe","identifier":"nope"}"#,
                "bad_request",
                false,
            ),
            (
                r#"{"command":"subscribe","identifier":"{\"channel\":\"Nope\"}"}"#,
                "not_found",
                false,
            ),
            (
                r#"{"command":"dance","identifier":"{\"channel\":\"VisitorChannel\"}"}"#,
                "bad_request",
                true,
            ),
            (
                r#"{"command":"message","identifier":"{\"channel\":\"VisitorChannel\"}"}"#,
                "bad_request",
                true,
            ),
            (
                r#"{"command":"message","identifier":"{\"channel\":\"VisitorChannel\"}","data":"{}"}"#,
                "bad_request",
                true,
            ),
            (
                r#"{"command":"message","identifier":"{\"channel\":\"VisitorChannel\"}","data":"{\"action\":\"fly\"}"}"#,
                "not_found",
                true,
            ),
            (
                r#"{"command":"message","identifier":"{\"channel\":\"VisitorChannel\"}","data":"{\"action\":\"typing\",\"typing\":\"yes\"}"}"#,
                "bad_request",
                true,
            ),
            (
                r#"{"command":"message","identifier":"{\"channel\":\"VisitorChannel\"}","data":"[[[[[[[[[[[]]]]]]]]]]]"}"#,
                "bad_request",
                true,
            ),
        ] {
            let error = parse_command(text).unwrap_err();
            assert_eq!(error.error.code, code, "{text}");
            assert_eq!(error.identifier.is_some(), has_identifier, "{text}");
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_command(&deep).is_err());
    }

    #[test]
    fn identify_checks_the_email() {
        let ok = parse_command(&message(
            r#"{"action":"identify","name":" Ann ","email":"ann@example.com"}"#,
        ))
        .unwrap();
        assert_eq!(
            ok,
            Command::Visitor {
                identifier: r#"{"channel":"VisitorChannel"}"#.into(),
                action: VisitorAction::Identify {
                    name: "Ann".into(),
                    email: Some("ann@example.com".into())
                }
            }
        );
        assert!(parse_command(&message(
            r#"{"action":"identify","name":"Ann","email":"nope"}"#
        ))
        .is_err());
        // Regression (issue 15, item 10): the owner's mailto: link carried a hidden bcc.
        for email in [
            "a@b.example?bcc=x@evil.example",
            "a@b.example&cc=x@evil.example",
            "a@b.example,x@evil.example",
            "a%40b@evil.example",
            "\"a b\"@b.example",
            "a@b@c.example",
            "a@b.example/x",
        ] {
            let frame = message(&format!(
                r#"{{"action":"identify","name":"Ann","email":{}}}"#,
                serde_json::Value::from(email)
            ));
            assert!(parse_command(&frame).is_err(), "{email}");
        }
        for email in [
            "ann.o'neil+chat@example.co.uk",
            "jürgen@bücher.example",
            "a_b-c@x.example",
        ] {
            let frame = message(&format!(
                r#"{{"action":"identify","name":"Ann","email":"{email}"}}"#
            ));
            assert!(parse_command(&frame).is_ok(), "{email}");
        }
        assert!(parse_command(&message(&format!(
            r#"{{"action":"identify","name":"{}"}}"#,
            "a".repeat(81)
        )))
        .is_err());
    }

    #[test]
    fn channel_message_is_valid_json() {
        let frame = channel_message(
            &encode_identifier(r#"{"channel":"VisitorChannel"}"#),
            r#"{"type":"typing","typing":true}"#,
        );
        let value: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(value["identifier"], r#"{"channel":"VisitorChannel"}"#);
        assert_eq!(value["message"]["typing"], true);
    }
}
