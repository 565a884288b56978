//! Pages that tried to open the chat from an origin natter does not allow.
//!
//! With the default `widget.allowed_origins = []`, a blog preview on `http://localhost:8088` is refused with a 403
//! that only the visitor's browser console shows, and the owner sees a chat that never connects. So natter remembers
//! each refused origin, logs it with the exact fix (at most once per origin every few minutes, so a busy page does
//! not flood the journal), and lists it for the dashboard, which tells the owner in plain words.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::config::Origin;
use crate::timestamp;

/// How often one origin is logged and announced to the dashboard again while it keeps being refused.
const TELL_AGAIN_AFTER: Duration = Duration::from_secs(5 * 60);
/// Origins remembered at once; past it the one seen longest ago is forgotten. A real site has a handful, and the
/// `Origin` header is the client's to choose, so the list must not grow with whatever a bot sends.
const REMEMBERED: usize = 32;
/// Refusals told (logged and announced) per `TELL_AGAIN_AFTER` across all origins, for a bot that sends a new
/// origin with every request.
const TOLD_PER_WINDOW: u32 = 20;

/// One refused origin as the dashboard lists it.
#[derive(Debug, Clone)]
struct Refusal {
    attempts: u64,
    /// Milliseconds since the epoch of the latest attempt.
    last_seen: i64,
    /// The order of the latest attempt among all (the clock's milliseconds can tie).
    latest: u64,
    /// When it was last logged and announced; `None` while the global budget held it back.
    last_told: Option<Instant>,
}

#[derive(Default)]
struct State {
    refusals: HashMap<Origin, Refusal>,
    /// The start of the current telling window and how many refusals were told in it.
    window_start: Option<Instant>,
    told_in_window: u32,
    /// Attempts recorded so far, which orders them.
    attempts: u64,
}

#[derive(Default)]
pub struct RefusedOrigins {
    state: Mutex<State>,
}

impl RefusedOrigins {
    /// Records a refused attempt from `origin`. Answers the entry to announce when this attempt should be told
    /// (logged and shown to the dashboard live): the first from an origin, then at most once per few minutes.
    pub fn record(&self, origin: &Origin) -> Option<Value> {
        let now = Instant::now();
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if !state.refusals.contains_key(origin) && state.refusals.len() >= REMEMBERED {
            if let Some(oldest) = state
                .refusals
                .iter()
                .min_by_key(|(_, refusal)| refusal.latest)
                .map(|(origin, _)| origin.clone())
            {
                state.refusals.remove(&oldest);
            }
        }
        let window_open = state
            .window_start
            .is_some_and(|start| now.duration_since(start) < TELL_AGAIN_AFTER);
        if !window_open {
            state.window_start = Some(now);
            state.told_in_window = 0;
        }
        let budget_left = state.told_in_window < TOLD_PER_WINDOW;
        state.attempts += 1;
        let latest = state.attempts;
        let refusal = state.refusals.entry(origin.clone()).or_insert(Refusal {
            attempts: 0,
            last_seen: 0,
            latest: 0,
            last_told: None,
        });
        refusal.attempts += 1;
        refusal.last_seen = timestamp::now_millis();
        refusal.latest = latest;
        let due = refusal
            .last_told
            .is_none_or(|told| now.duration_since(told) >= TELL_AGAIN_AFTER);
        if !(due && budget_left) {
            return None;
        }
        refusal.last_told = Some(now);
        let entry = entry(origin, refusal);
        state.told_in_window += 1;
        tracing::warn!(
            origin = %origin,
            "a page on {origin} tried to open the chat and was refused, because {origin} is not an allowed origin. \
             To allow it, add it to widget.allowed_origins in the config (allowed_origins = [\"{origin}\"]) or set \
             NATTER_ALLOWED_ORIGINS={origin}, then restart natter"
        );
        Some(entry)
    }

    /// Every remembered refusal, the latest first.
    pub fn list(&self) -> Vec<Value> {
        let state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut refusals: Vec<(&Origin, &Refusal)> = state.refusals.iter().collect();
        refusals.sort_by_key(|(_, refusal)| std::cmp::Reverse(refusal.latest));
        refusals
            .into_iter()
            .map(|(origin, refusal)| entry(origin, refusal))
            .collect()
    }
}

fn entry(origin: &Origin, refusal: &Refusal) -> Value {
    json!({
        "origin": origin,
        "attempts": refusal.attempts,
        "last_seen": timestamp::rfc3339(refusal.last_seen),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(text: &str) -> Origin {
        Origin::parse(text).unwrap()
    }

    #[test]
    fn an_origin_is_told_once_then_counted_quietly() {
        let refused = RefusedOrigins::default();
        let preview = origin("http://localhost:8088");
        let told = refused.record(&preview).expect("the first refusal is told");
        assert_eq!(told["origin"], "http://localhost:8088");
        assert_eq!(told["attempts"], 1);
        assert!(
            refused.record(&preview).is_none(),
            "the second within minutes is not"
        );
        assert!(refused
            .record(&origin("https://blog.example.com"))
            .is_some());
        let list = refused.list();
        assert_eq!(list.len(), 2);
        let preview_entry = list
            .iter()
            .find(|entry| entry["origin"] == "http://localhost:8088")
            .unwrap();
        assert_eq!(preview_entry["attempts"], 2);
    }

    #[test]
    fn a_flood_of_origins_is_bounded_in_memory_and_in_the_log() {
        let refused = RefusedOrigins::default();
        let told = (0..200)
            .filter(|number| {
                refused
                    .record(&origin(&format!("https://bot{number}.example")))
                    .is_some()
            })
            .count();
        assert_eq!(told, TOLD_PER_WINDOW as usize);
        assert_eq!(refused.list().len(), REMEMBERED);
        assert_eq!(refused.list()[0]["origin"], "https://bot199.example");
    }
}
