//! The admin's login sessions, by the SHA-256 of their token.

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::schema::SESSIONS;
use super::writer::{Outcome, Tables, Write};
use super::{decode, encode, Store, StoreError, TokenHash};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub username: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// The writes of this module, as the writer applies them (`Tables::apply_session_write`).
pub(super) enum SessionWrite {
    Put { hash: TokenHash, session: Session },
    Delete { hash: TokenHash },
    DeleteAllOf { username: String },
}

impl From<SessionWrite> for Write {
    fn from(write: SessionWrite) -> Write {
        Write::Session(write)
    }
}

impl Store {
    pub async fn put_session(&self, hash: TokenHash, session: Session) -> Result<(), StoreError> {
        self.write(SessionWrite::Put { hash, session })
            .await
            .map(drop)
    }

    pub async fn delete_session(&self, hash: TokenHash) -> Result<(), StoreError> {
        self.write(SessionWrite::Delete { hash }).await.map(drop)
    }

    /// Ends every session of a user (after a password change), and every expired one.
    pub async fn delete_sessions_of(&self, username: &str) -> Result<(), StoreError> {
        self.write(SessionWrite::DeleteAllOf {
            username: username.to_string(),
        })
        .await
        .map(drop)
    }

    pub fn session(&self, hash: &TokenHash) -> Result<Option<Session>, StoreError> {
        let table = self.read()?.open_table(SESSIONS)?;
        table
            .get(hash.as_slice())?
            .map(|value| decode(value.value()))
            .transpose()
    }
}

impl Tables<'_, '_> {
    pub(super) fn apply_session_write(
        &mut self,
        write: SessionWrite,
    ) -> Result<Outcome, StoreError> {
        match write {
            SessionWrite::Put { hash, session } => {
                self.sessions
                    .insert(hash.as_slice(), encode(&session).as_slice())?;
            }
            SessionWrite::Delete { hash } => {
                self.sessions.remove(hash.as_slice())?;
            }
            SessionWrite::DeleteAllOf { username } => {
                let now = self.now;
                let mut ended = Vec::new();
                for entry in self.sessions.iter()? {
                    let (hash, value) = entry?;
                    let keep =
                        serde_json::from_slice::<Session>(value.value()).is_ok_and(|session| {
                            session.username != username && session.expires_at > now
                        });
                    if !keep {
                        ended.push(hash.value().to_vec());
                    }
                }
                for hash in ended {
                    self.sessions.remove(hash.as_slice())?;
                }
            }
        }
        Ok(Outcome::Done)
    }
}
