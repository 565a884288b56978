//! What `VisitorChannel` and `AdminChannel` do: every action of DESIGN.md, turned into store writes and hub events.
//!
//! A `Connection` is one socket's subscriptions and identity. Its reader task calls `handle` with each text frame;
//! answers to this socket go through its own outlet (with backpressure), events for others go through the hub. Every
//! event is sent only after the store has committed what it describes.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::app::App;
use crate::config::Origin;
use crate::error::ApiError;
use crate::hub::{Channel, Outbound, Outlet};
use crate::protocol::{self, AdminAction, ChannelName, Command, VisitorAction};
use crate::store::{conversation_ids, Appended, Conversation, Message, Page, TokenHash};
use crate::throttle::Network;
use crate::timestamp;

/// Messages one `sync` answers at most; the client asks again while `more` is true.
const SYNC_LIMIT: usize = 500;

/// Who is at the other end of a socket, as authenticated before the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// A visitor, known by the SHA-256 of their token.
    Visitor(TokenHash),
    /// The owner, known by the SHA-256 of their session token.
    Admin(TokenHash),
}

pub struct Connection {
    app: Arc<App>,
    identity: Identity,
    outlet: Outlet,
    /// Where the socket comes from, for the per-network throttles.
    network: Network,
    /// The identifier string of this socket's subscription to each channel (at most one each).
    visitor_subscription: Option<String>,
    admin_subscription: Option<String>,
    /// The page the visitor reported before their conversation existed; saved when it is created.
    page: Option<Page>,
    /// This visitor's conversation exists (they spoke on this socket), so a `speak` needs no store read to decide
    /// whether it opens a new conversation (which has its own throttle). If the owner deletes the conversation
    /// meanwhile, the next `speak` opens a new one without that throttle: once per socket, and still under the
    /// per-visitor message throttle.
    has_conversation: bool,
    /// The last `typing` state passed on to the owner from this socket: a repeat is not passed on again.
    typing: bool,
}

impl Connection {
    pub fn new(app: Arc<App>, identity: Identity, outlet: Outlet, network: Network) -> Connection {
        Connection {
            app,
            identity,
            outlet,
            network,
            visitor_subscription: None,
            admin_subscription: None,
            page: None,
            has_conversation: false,
            typing: false,
        }
    }

    pub fn app(&self) -> &App {
        &self.app
    }

    pub fn is_subscribed(&self) -> bool {
        self.visitor_subscription.is_some() || self.admin_subscription.is_some()
    }

    /// Handles one text frame. Errors are answered on the socket; the connection goes on.
    pub async fn handle(&mut self, text: &str) {
        match protocol::parse_command(text) {
            Ok(command) => self.dispatch(command).await,
            Err(error) => {
                self.send(protocol::error_frame(
                    error.identifier.as_deref(),
                    &error.error,
                    error.client_id,
                ))
                .await;
            }
        }
    }

    async fn dispatch(&mut self, command: Command) {
        match command {
            Command::Subscribe {
                identifier,
                channel,
            } => self.subscribe(identifier, channel).await,
            Command::Unsubscribe {
                identifier,
                channel,
            } => self.unsubscribe(&identifier, channel).await,
            Command::Visitor { identifier, action } => {
                let result = match (self.identity, self.visitor_subscription.as_deref()) {
                    (Identity::Visitor(token_hash), Some(subscribed))
                        if subscribed == identifier =>
                    {
                        self.visitor_action(&identifier, token_hash, action).await
                    }
                    _ => Err((
                        ApiError::forbidden("subscribe to VisitorChannel first"),
                        None,
                    )),
                };
                if let Err((error, client_id)) = result {
                    self.send(protocol::error_frame(Some(&identifier), &error, client_id))
                        .await;
                }
            }
            Command::Admin { identifier, action } => {
                let result = match self.admin_subscription.as_deref() {
                    Some(subscribed) if subscribed == identifier => {
                        self.admin_action(&identifier, action).await
                    }
                    _ => Err((ApiError::forbidden("subscribe to AdminChannel first"), None)),
                };
                if let Err((error, client_id)) = result {
                    self.send(protocol::error_frame(Some(&identifier), &error, client_id))
                        .await;
                }
            }
        }
    }

    async fn subscribe(&mut self, identifier: String, channel: ChannelName) {
        let subscribed = match channel {
            ChannelName::Visitor => self.visitor_subscription.is_some(),
            ChannelName::Admin => self.admin_subscription.is_some(),
        };
        // Joining announces the visitor to every admin: subscribing and unsubscribing in a loop is throttled like any
        // other action (a repeated subscribe is only confirmed again, and costs nothing).
        if !subscribed && self.visitor_throttle(false).is_err() {
            self.send(protocol::reject(&identifier)).await;
            return;
        }
        let (slot, allowed) = match channel {
            ChannelName::Visitor => (
                &mut self.visitor_subscription,
                matches!(self.identity, Identity::Visitor(_)),
            ),
            ChannelName::Admin => (
                &mut self.admin_subscription,
                matches!(self.identity, Identity::Admin(_)),
            ),
        };
        match slot {
            // The same subscribe again (a client retrying): confirm again, register once.
            Some(existing) if *existing == identifier => {
                self.send(protocol::confirm(&identifier)).await;
                return;
            }
            Some(_) => {
                self.send(protocol::reject(&identifier)).await;
                return;
            }
            None if !allowed => {
                self.send(protocol::reject(&identifier)).await;
                return;
            }
            None => *slot = Some(identifier.clone()),
        }
        self.send(protocol::confirm(&identifier)).await;
        let hub_channel = match channel {
            ChannelName::Visitor => Channel::Visitor,
            ChannelName::Admin => Channel::Admin,
        };
        let encoded: Arc<str> = Arc::from(protocol::encode_identifier(&identifier));
        self.send_outbound(Outbound::Subscribed(hub_channel, encoded))
            .await;
        match self.identity {
            Identity::Visitor(token_hash) => {
                if self.app.hub.join_visitor(token_hash, self.outlet.clone()) {
                    self.announce_presence(token_hash, true);
                }
            }
            Identity::Admin(session_hash) => {
                if self.app.hub.join_admin(session_hash, self.outlet.clone()) {
                    self.app
                        .hub
                        .to_all_visitors(&event(json!({ "type": "status", "admin_online": true })));
                }
            }
        }
    }

    async fn unsubscribe(&mut self, identifier: &str, channel: ChannelName) {
        let slot = match channel {
            ChannelName::Visitor => &mut self.visitor_subscription,
            ChannelName::Admin => &mut self.admin_subscription,
        };
        if slot.as_deref() == Some(identifier) {
            *slot = None;
            self.leave();
            let hub_channel = if channel == ChannelName::Visitor {
                Channel::Visitor
            } else {
                Channel::Admin
            };
            self.send_outbound(Outbound::Unsubscribed(hub_channel))
                .await;
        }
    }

    /// Takes this socket out of the hub and tells the others what that changes. Called on unsubscribe and when the
    /// socket closes; calling it twice is harmless.
    pub fn leave(&mut self) {
        match self.identity {
            Identity::Visitor(token_hash) => {
                if self.app.hub.leave_visitor(&token_hash, self.outlet.id) {
                    self.announce_presence(token_hash, false);
                }
            }
            Identity::Admin(_) => {
                if self.app.hub.leave_admin(self.outlet.id) {
                    self.app.hub.to_all_visitors(&event(
                        json!({ "type": "status", "admin_online": false }),
                    ));
                }
            }
        }
    }

    fn announce_presence(&self, token_hash: TokenHash, online: bool) {
        if let Ok(Some(conversation)) = self.app.store.conversation_of_token(&token_hash) {
            let page = if online {
                self.page.clone().or(conversation.page)
            } else {
                None
            };
            self.app.hub.to_admins(&event(json!({
                "type": "presence", "conversation_id": conversation.id, "online": online, "page": page,
            })));
        }
    }

    // ---- VisitorChannel ----

    async fn visitor_action(
        &mut self,
        identifier: &str,
        token_hash: TokenHash,
        action: VisitorAction,
    ) -> Result<(), (ApiError, Option<Uuid>)> {
        let app = self.app.clone();
        let store = &app.store;
        let hub = &app.hub;
        if let Err(wait) = self.visitor_throttle(matches!(action, VisitorAction::Speak { .. })) {
            let client_id = match &action {
                VisitorAction::Speak { client_id, .. } => Some(*client_id),
                _ => None,
            };
            return Err((throttled("actions", wait), client_id));
        }
        match action {
            VisitorAction::Sync { after } => {
                let conversation = store.conversation_of_token(&token_hash).map_err(no_id)?;
                let (messages, more) = match &conversation {
                    Some(conversation) => {
                        let page = store
                            .conversation_messages(conversation.id, after, None, SYNC_LIMIT)
                            .map_err(no_id)?;
                        (page.messages, page.more)
                    }
                    None => (Vec::new(), false),
                };
                let history = json!({
                    "type": "history",
                    "conversation": conversation.as_ref().map(visitor_view),
                    "messages": messages,
                    "more": more,
                    "admin_online": hub.admin_online(),
                });
                self.reply(identifier, &history).await;
            }
            VisitorAction::Speak { content, client_id } => {
                if let Err(wait) = app.throttles.messages.take(&token_hash) {
                    app.counters.throttled.fetch_add(1, Ordering::Relaxed);
                    return Err((throttled("messages", wait), Some(client_id)));
                }
                let exists = self.has_conversation
                    || store
                        .conversation_of_token(&token_hash)
                        .map_err(|error| (error.into(), Some(client_id)))?
                        .is_some();
                if !exists {
                    self.new_conversation_throttle()
                        .map_err(|error| (error, Some(client_id)))?;
                }
                let appended = store
                    .speak(token_hash, content, client_id)
                    .await
                    .map_err(|error| (error.into(), Some(client_id)))?;
                self.has_conversation = true;
                if appended.created {
                    if let Some(page) = self.page.take() {
                        // Best effort: the page is context, not a message; failing to save it loses nothing.
                        let _ = store.set_page(appended.conversation.id, page).await;
                    }
                }
                self.deliver(identifier, &appended).await;
            }
            // Only a change is passed on: a client repeating `typing: true` on every key costs the owner nothing.
            VisitorAction::Typing { typing } if typing != self.typing => {
                if let Some(conversation) =
                    store.conversation_of_token(&token_hash).map_err(no_id)?
                {
                    self.typing = typing;
                    hub.to_admins(&event(json!({ "type": "typing", "conversation_id": conversation.id, "typing": typing })));
                }
            }
            VisitorAction::Typing { .. } => {}
            VisitorAction::Identify { name, email } => {
                // Naming oneself opens a conversation when there is none yet: the same throttle as a first message.
                let exists = self.has_conversation
                    || store
                        .conversation_of_token(&token_hash)
                        .map_err(no_id)?
                        .is_some();
                if !exists {
                    self.new_conversation_throttle().map_err(no_id)?;
                }
                let conversation = store
                    .identify(token_hash, name, email)
                    .await
                    .map_err(no_id)?;
                self.has_conversation = true;
                hub.to_admins(&conversation_event(&app, &conversation));
                crate::email::address_left(&app.email, &conversation);
                self.reply(
                    identifier,
                    &json!({ "type": "identified", "conversation": visitor_view(&conversation) }),
                )
                .await;
            }
            VisitorAction::Read { up_to } => {
                if let Some(conversation) =
                    store.conversation_of_token(&token_hash).map_err(no_id)?
                {
                    if up_to > conversation.visitor_read_up_to {
                        store
                            .visitor_read(conversation.id, up_to)
                            .await
                            .map_err(no_id)?;
                        hub.to_admins(&event(json!({ "type": "read", "conversation_id": conversation.id, "up_to": up_to })));
                    }
                }
            }
            VisitorAction::Visit { page } => {
                // The owner's dashboard links to the page: only pages of the sites the widget is on.
                if !page_on_widget_site(&app, &page.url) {
                    return Err(no_id(ApiError::invalid(
                        "the page must be on a site the chat is set up for (widget.allowed_origins)",
                    )));
                }
                match store.conversation_of_token(&token_hash).map_err(no_id)? {
                    // The page the owner already sees: nothing to write, nothing to tell.
                    Some(conversation) if conversation.page.as_ref() == Some(&page) => {
                        self.page = Some(page);
                    }
                    Some(conversation) => {
                        let _ = store.set_page(conversation.id, page.clone()).await;
                        self.page = Some(page.clone());
                        hub.to_admins(&event(json!({
                        "type": "presence", "conversation_id": conversation.id, "online": true, "page": page,
                    })));
                    }
                    None => self.page = Some(page),
                }
            }
        }
        Ok(())
    }

    /// Takes a visitor's action from the per-network throttle and, for anything but a message (which has its own
    /// throttle), from the per-token one; when either is empty, answers how long to wait.
    fn visitor_throttle(&self, is_message: bool) -> Result<(), std::time::Duration> {
        let Identity::Visitor(token_hash) = self.identity else {
            return Ok(());
        };
        let throttles = &self.app.throttles;
        let result = throttles
            .network_actions
            .take(&self.network)
            .and_then(|()| {
                if is_message {
                    Ok(())
                } else {
                    throttles.actions.take(&token_hash)
                }
            });
        if result.is_err() {
            self.app.counters.throttled.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Takes a new conversation from this network's hourly allowance.
    fn new_conversation_throttle(&self) -> Result<(), ApiError> {
        self.app
            .throttles
            .conversations
            .take(&self.network)
            .map_err(|wait| {
                self.app.counters.throttled.fetch_add(1, Ordering::Relaxed);
                throttled("new conversations", wait)
            })
    }

    // ---- AdminChannel ----

    async fn admin_action(
        &mut self,
        identifier: &str,
        action: AdminAction,
    ) -> Result<(), (ApiError, Option<Uuid>)> {
        let app = self.app.clone();
        let store = &app.store;
        let hub = &app.hub;
        match action {
            AdminAction::Sync { after } => {
                let page = store.messages_after(after, SYNC_LIMIT).map_err(no_id)?;
                let conversations = match after {
                    None => store.conversations().map_err(no_id)?,
                    Some(_) => store
                        .conversations_by_id(&conversation_ids(&page.messages))
                        .map_err(no_id)?,
                };
                let summaries: Vec<Summary> = conversations
                    .iter()
                    .map(|conversation| summary(&app, conversation))
                    .collect();
                let sync = json!({ "type": "sync", "messages": page.messages, "conversations": summaries, "more": page.more });
                self.reply(identifier, &sync).await;
            }
            AdminAction::Reply {
                conversation_id,
                content,
                client_id,
            } => {
                let appended = store
                    .reply(conversation_id, content, client_id)
                    .await
                    .map_err(|error| (error.into(), Some(client_id)))?;
                self.deliver(identifier, &appended).await;
            }
            AdminAction::Typing {
                conversation_id,
                typing,
            } => {
                hub.to_visitor(
                    &visitor_of(&app, conversation_id)?,
                    &event(json!({ "type": "typing", "typing": typing })),
                );
            }
            AdminAction::Read {
                conversation_id,
                up_to,
            } => {
                let conversation = store
                    .admin_read(conversation_id, up_to)
                    .await
                    .map_err(no_id)?
                    .ok_or_else(|| (ApiError::not_found("no such conversation"), None))?;
                hub.to_visitor(
                    &conversation.token_hash,
                    &event(json!({ "type": "read", "up_to": up_to })),
                );
                hub.to_admins(&conversation_event(&app, &conversation));
            }
        }
        Ok(())
    }

    /// Tells everyone about a stored message. A resent one (duplicate client id) was already told: only the sender
    /// hears it again, so it can settle its outbox. The events embed the message's JSON as the store wrote it.
    async fn deliver(&mut self, identifier: &str, appended: &Appended) {
        let message = &appended.message;
        if appended.duplicate {
            let conversation_id = (self.admin_subscription.as_deref() == Some(identifier))
                .then_some(message.conversation_id);
            self.reply_json(
                identifier,
                &message_event(&appended.message_json, conversation_id),
            )
            .await;
            return;
        }
        let counter = match message.sender {
            crate::store::Sender::Visitor => &self.app.counters.messages_visitor,
            crate::store::Sender::Admin => &self.app.counters.messages_admin,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.app.hub.to_visitor(
            &appended.conversation.token_hash,
            &Arc::from(message_event(&appended.message_json, None)),
        );
        self.app.hub.to_admins(&Arc::from(message_event(
            &appended.message_json,
            Some(message.conversation_id),
        )));
        // A visitor's next message changes only what the dashboard works out from the message itself (the last
        // message, `updated_at`, one more unread), so it gets no summary: with many visitors talking, that halves
        // what every admin socket carries. A new conversation, and an owner's reply (which zeroes the unread count),
        // come with one.
        if appended.created || message.sender == crate::store::Sender::Admin {
            self.app.hub.to_admins(&conversation_event_of(summary_with(
                &self.app,
                &appended.conversation,
                Some(Cow::Borrowed(message)),
            )));
        }
        crate::push::message_stored(
            &self.app.push,
            &self.app.hub,
            &appended.conversation,
            message,
        );
        crate::email::message_stored(&self.app.email, &appended.conversation, message);
    }

    async fn reply(&self, identifier: &str, event: &Value) {
        self.reply_json(identifier, &event.to_string()).await;
    }

    async fn reply_json(&self, identifier: &str, event: &str) {
        self.send(protocol::channel_message(
            &protocol::encode_identifier(identifier),
            event,
        ))
        .await;
    }

    async fn send(&self, frame: String) {
        self.send_outbound(Outbound::Frame(frame)).await;
    }

    /// Answers to this socket wait for room in its queue (the client is reading its own answers); if the writer has
    /// gone, the socket is closing and the answer is moot.
    async fn send_outbound(&self, outbound: Outbound) {
        let _ = self.outlet.queue.send(outbound).await;
    }
}

/// An event's JSON, encoded once for every socket it goes to.
pub fn event(value: Value) -> Arc<str> {
    Arc::from(value.to_string())
}

fn no_id(error: impl Into<ApiError>) -> (ApiError, Option<Uuid>) {
    (error.into(), None)
}

fn throttled(what: &str, wait: std::time::Duration) -> ApiError {
    ApiError::throttled(format!(
        "too many {what}; try again in {} seconds",
        wait.as_secs().max(1)
    ))
}

fn visitor_of(app: &App, conversation_id: Uuid) -> Result<TokenHash, (ApiError, Option<Uuid>)> {
    let conversation = app
        .store
        .conversation(conversation_id)
        .map_err(no_id)?
        .ok_or_else(|| (ApiError::not_found("no such conversation"), None))?;
    Ok(conversation.token_hash)
}

/// Whether a page URL is on one of the widget's sites (or natter's own demo page).
fn page_on_widget_site(app: &App, url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    Origin::parse(&format!("{scheme}://{authority}"))
        .is_ok_and(|origin| app.is_widget_origin(&origin))
}

/// What the visitor sees of their own conversation.
fn visitor_view(conversation: &Conversation) -> Value {
    json!({
        "id": conversation.id,
        "visitor_name": conversation.visitor_name,
        "email": conversation.email,
        "admin_read_up_to": conversation.admin_read_up_to,
    })
}

/// A `message` event around a message's JSON; the admin's copy names the conversation.
fn message_event(message_json: &str, conversation_id: Option<Uuid>) -> String {
    // The wrapping takes 86 bytes for an admin, 29 for a visitor.
    let mut event = String::with_capacity(message_json.len() + 88);
    event.push_str(r#"{"type":"message","#);
    if let Some(id) = conversation_id {
        event.push_str(r#""conversation_id":""#);
        event.push_str(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
        event.push_str(r#"","#);
    }
    event.push_str(r#""message":"#);
    event.push_str(message_json);
    event.push('}');
    event
}

pub fn conversation_event(app: &App, conversation: &Conversation) -> Arc<str> {
    conversation_event_of(summary(app, conversation))
}

fn conversation_event_of(summary: Summary<'_>) -> Arc<str> {
    #[derive(Serialize)]
    struct ConversationEvent<'a> {
        r#type: &'static str,
        conversation: Summary<'a>,
    }
    let event = ConversationEvent {
        r#type: "conversation",
        conversation: summary,
    };
    Arc::from(serde_json::to_string(&event).expect("a summary always serializes"))
}

/// The admin's summary of a conversation (DESIGN.md), with live presence from the hub.
#[derive(Serialize)]
pub struct Summary<'a> {
    id: Uuid,
    visitor_name: &'a Option<String>,
    email: &'a Option<String>,
    unread_count: u32,
    last_message: Option<Cow<'a, Message>>,
    created_at: String,
    updated_at: String,
    online: bool,
    page: &'a Option<Page>,
    visitor_read_up_to: u64,
}

pub fn summary<'a>(app: &App, conversation: &'a Conversation) -> Summary<'a> {
    let last_message = conversation
        .last_message_id
        .and_then(|id| app.store.message(id).ok().flatten());
    summary_with(app, conversation, last_message.map(Cow::Owned))
}

/// A summary when the caller already holds the last message (it just stored it): no store read.
fn summary_with<'a>(
    app: &App,
    conversation: &'a Conversation,
    last_message: Option<Cow<'a, Message>>,
) -> Summary<'a> {
    Summary {
        id: conversation.id,
        visitor_name: &conversation.visitor_name,
        email: &conversation.email,
        unread_count: conversation.unread_count,
        last_message,
        created_at: timestamp::rfc3339(conversation.created_at),
        updated_at: timestamp::rfc3339(conversation.updated_at),
        online: app.hub.visitor_online(&conversation.token_hash),
        page: &conversation.page,
        visitor_read_up_to: conversation.visitor_read_up_to,
    }
}
