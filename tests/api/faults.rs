//! Faults: a full disk. The sender gets a clear error and no acknowledgement, nothing is corrupted, and writing
//! resumes by itself when space returns.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::helpers::*;

/// A small tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
    _parent: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounting needs root (CI runs as root); elsewhere the test says it was skipped.
    fn mount(size: &str) -> Option<SmallDisk> {
        let parent = tempfile::tempdir().unwrap();
        let path = parent.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status();
        match mounted {
            Ok(status) if status.success() => Some(SmallDisk {
                path,
                _parent: parent,
            }),
            _ => None,
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fills the disk to the last byte with a file that can be deleted to make room again.
fn fill(directory: &Path) -> PathBuf {
    let filler = directory.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 4096];
    while file.write_all(&block).is_ok() {}
    let one = [0u8; 1];
    while file.write_all(&one).is_ok() {}
    let _ = file.sync_all();
    filler
}

#[tokio::test]
async fn a_full_disk_refuses_messages_clearly_and_writing_resumes_when_space_returns() {
    let Some(disk) = SmallDisk::mount("8m") else {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    };
    let data_dir = disk.path.join("data");
    let mut app = spawn_app_with(|config| config.server.data_dir = data_dir.clone()).await;
    let token = uuid();
    let mut visitor = subscribed_visitor(&app, &token).await;
    let mut acknowledged = Vec::new();
    for index in 0..3 {
        visitor.speak(format!("before {index}"), uuid()).await;
        acknowledged.push(
            visitor.event("message").await["message"]["id"]
                .as_u64()
                .unwrap(),
        );
    }

    let filler = fill(&disk.path);
    // Enough writes to need new pages: each either fails with an error naming its client id, or is acknowledged.
    let mut refused = Vec::new();
    for index in 0..200 {
        let client_id = uuid();
        let content = format!("while full {index} {}", "x".repeat(3000));
        visitor.speak(&content, &client_id).await;
        let answer = visitor.answer().await;
        match answer["message"]["type"].as_str() {
            Some("message") => {
                acknowledged.push(answer["message"]["message"]["id"].as_u64().unwrap())
            }
            _ => {
                assert_eq!(answer["message"]["code"], "storage", "{answer}");
                assert_eq!(answer["message"]["client_id"], client_id.as_str());
                refused.push((client_id, content));
            }
        }
        if refused.len() >= 3 {
            break;
        }
    }
    assert!(!refused.is_empty(), "a full disk must refuse some writes");

    std::fs::remove_file(&filler).unwrap();
    // The widget resends its outbox with the same client ids: now they are stored, once.
    for (client_id, content) in &refused {
        visitor.speak(&content, &client_id).await;
        let answer = visitor.answer().await;
        assert_eq!(
            answer["message"]["type"], "message",
            "writing resumed: {answer}"
        );
        acknowledged.push(answer["message"]["message"]["id"].as_u64().unwrap());
    }

    // Nothing acknowledged is lost or corrupted, across a restart.
    drop(visitor);
    app.restart().await;
    let mut visitor = subscribed_visitor(&app, &token).await;
    visitor
        .perform(VISITOR_CHANNEL, json!({"action": "sync"}))
        .await;
    let history = visitor.event("history").await;
    let stored: Vec<u64> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(stored, acknowledged);
    app.stop().await;
}
