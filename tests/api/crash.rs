//! Crash safety: natter is killed with SIGKILL at a random moment while many clients send. After a restart, every
//! message that was acknowledged is stored exactly once and in order; resending the unacknowledged ones (as the
//! widget's outbox does) stores each of them once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::helpers::*;

const ROUNDS: usize = 6;
const SENDERS: usize = 16;

/// The real binary, started as the service would start it.
pub async fn start_natter(data_dir: &Path, listen: &str) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_natter"))
        .env("NATTER_LISTEN", listen)
        .env("NATTER_DATA_DIR", data_dir)
        .env("NATTER_ADMIN_PASSWORD", PASSWORD)
        .env("NATTER_ALLOWED_ORIGINS", BLOG)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("the natter binary starts");
    let address = listening_address(&mut child).await;
    (child, address)
}

/// A tiny deterministic generator, so a failing round can be replayed from its printed seed.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

struct Sent {
    token: String,
    client_id: String,
    content: String,
}

/// Sends messages one after another until the socket dies; answers (acknowledged id by client id, all sent).
async fn send_until_killed(
    address: SocketAddr,
    token: String,
    prefix: String,
) -> (HashMap<String, u64>, Vec<Sent>) {
    let mut acknowledged = HashMap::new();
    let mut sent = Vec::new();
    let Ok(client) = Client::connect(address, &format!("/cable?token={token}"), BLOG, None).await
    else {
        return (acknowledged, sent);
    };
    let mut client = client;
    if client.next().await.is_none() {
        return (acknowledged, sent);
    }
    let subscribe = json!({"command": "subscribe", "identifier": VISITOR_CHANNEL}).to_string();
    if !client.try_send_text(&subscribe).await {
        return (acknowledged, sent);
    }
    for index in 0.. {
        let client_id = uuid();
        let content = format!("{prefix} message {index}");
        let data =
            json!({"action": "speak", "content": content, "client_id": client_id}).to_string();
        let frame =
            json!({"command": "message", "identifier": VISITOR_CHANNEL, "data": data}).to_string();
        sent.push(Sent {
            token: token.clone(),
            client_id: client_id.clone(),
            content,
        });
        if !client.try_send_text(&frame).await {
            break;
        }
        let acked = loop {
            match client.next().await {
                None => break None,
                Some(frame)
                    if frame["message"]["type"] == "message"
                        && frame["message"]["message"]["client_id"] == client_id.as_str() =>
                {
                    break frame["message"]["message"]["id"].as_u64()
                }
                Some(_) => {}
            }
        };
        match acked {
            Some(id) => {
                acknowledged.insert(client_id, id);
            }
            None => break,
        }
    }
    (acknowledged, sent)
}

async fn history(address: SocketAddr, token: &str) -> Vec<Value> {
    let mut client = Client::connect(address, &format!("/cable?token={token}"), BLOG, None)
        .await
        .unwrap()
        .welcomed()
        .await;
    client.subscribe(VISITOR_CHANNEL).await;
    let mut messages = Vec::new();
    let mut after = Value::Null;
    loop {
        client
            .perform(VISITOR_CHANNEL, json!({"action": "sync", "after": after}))
            .await;
        let page = client.event("history").await;
        messages.extend(page["messages"].as_array().unwrap().iter().cloned());
        if page["more"] != true {
            return messages;
        }
        after = messages.last().unwrap()["id"].clone();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_nothing_acknowledged() {
    let data = tempfile::tempdir().unwrap();
    let tokens: Vec<String> = (0..SENDERS).map(|_| uuid()).collect();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed}");
    let mut random = seed;
    let mut acknowledged: BTreeMap<u64, String> = BTreeMap::new();
    let mut unacknowledged: Vec<Sent> = Vec::new();
    let mut listen = "127.0.0.1:0".to_string();
    for round in 0..ROUNDS {
        let (mut child, address) = start_natter(data.path(), &listen).await;
        listen = address.to_string();
        let senders: Vec<_> = tokens
            .iter()
            .enumerate()
            .map(|(index, token)| {
                tokio::spawn(send_until_killed(
                    address,
                    token.clone(),
                    format!("r{round} s{index}"),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100 + next_random(&mut random) % 900)).await;
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        for sender in senders {
            let (acked, sent) = sender.await.unwrap();
            for item in sent {
                match acked.get(&item.client_id) {
                    Some(id) => {
                        acknowledged.insert(*id, item.client_id.clone());
                    }
                    None => unacknowledged.push(item),
                }
            }
        }
    }
    assert!(
        acknowledged.len() > SENDERS,
        "the senders got messages acknowledged before each kill"
    );

    let (mut child, address) = start_natter(data.path(), &listen).await;
    let mut stored_ids = Vec::new();
    let mut stored_client_ids = HashSet::new();
    for token in &tokens {
        let messages = history(address, token).await;
        let ids: Vec<u64> = messages.iter().map(|m| m["id"].as_u64().unwrap()).collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "in order");
        for message in &messages {
            let client_id = message["client_id"].as_str().unwrap().to_string();
            assert!(
                stored_client_ids.insert(client_id),
                "a message is stored once: {message}"
            );
        }
        stored_ids.extend(ids);
    }
    for (id, client_id) in &acknowledged {
        assert!(
            stored_ids.contains(id),
            "acknowledged message {id} ({client_id}) survived (seed {seed})"
        );
    }

    // The outbox resends what was never acknowledged: each lands once, whether or not the crash had stored it.
    let mut by_token: HashMap<&str, Client> = HashMap::new();
    for item in &unacknowledged {
        if !by_token.contains_key(item.token.as_str()) {
            by_token.insert(
                &item.token,
                subscribed_visitor_at(address, &item.token).await,
            );
        }
        let client = by_token.get_mut(item.token.as_str()).unwrap();
        client.speak(&item.content, &item.client_id).await;
        client
            .next_where(|frame| frame["message"]["message"]["client_id"] == item.client_id.as_str())
            .await;
    }
    drop(by_token);
    let mut total = 0;
    for token in &tokens {
        let messages = history(address, token).await;
        let unique: HashSet<&str> = messages
            .iter()
            .map(|m| m["client_id"].as_str().unwrap())
            .collect();
        assert_eq!(
            unique.len(),
            messages.len(),
            "no duplicates after resending"
        );
        total += messages.len();
    }
    assert_eq!(
        total,
        acknowledged.len() + unacknowledged.len(),
        "every message sent is stored exactly once"
    );
    child.start_kill().unwrap();
}

async fn subscribed_visitor_at(address: SocketAddr, token: &str) -> Client {
    let mut client = Client::connect(address, &format!("/cable?token={token}"), BLOG, None)
        .await
        .unwrap()
        .welcomed()
        .await;
    assert_eq!(
        client.subscribe(VISITOR_CHANNEL).await["type"],
        "confirm_subscription"
    );
    client
}
