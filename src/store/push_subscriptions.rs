//! Web Push subscriptions, by endpoint URL. The store keeps each as the push module's JSON and does not read it.

use redb::ReadableTable;

use super::schema::PUSH_SUBSCRIPTIONS;
use super::writer::{Outcome, Tables, Write};
use super::{Store, StoreError};

/// The writes of this module, as the writer applies them (`Tables::apply_push_subscription_write`).
pub(super) enum PushSubscriptionWrite {
    Put { endpoint: String, json: Vec<u8> },
    Delete { endpoint: String },
}

impl From<PushSubscriptionWrite> for Write {
    fn from(write: PushSubscriptionWrite) -> Write {
        Write::PushSubscription(write)
    }
}

impl Store {
    pub async fn put_push_subscription(
        &self,
        endpoint: &str,
        json: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.write(PushSubscriptionWrite::Put {
            endpoint: endpoint.to_string(),
            json,
        })
        .await
        .map(drop)
    }

    pub async fn delete_push_subscription(&self, endpoint: &str) -> Result<(), StoreError> {
        self.write(PushSubscriptionWrite::Delete {
            endpoint: endpoint.to_string(),
        })
        .await
        .map(drop)
    }

    /// Every subscription: (endpoint, JSON).
    pub fn push_subscriptions(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let table = self.read()?.open_table(PUSH_SUBSCRIPTIONS)?;
        let mut subscriptions = Vec::new();
        for entry in table.iter()? {
            let (endpoint, json) = entry?;
            subscriptions.push((endpoint.value().to_string(), json.value().to_vec()));
        }
        Ok(subscriptions)
    }
}

impl Tables<'_, '_> {
    pub(super) fn apply_push_subscription_write(
        &mut self,
        write: PushSubscriptionWrite,
    ) -> Result<Outcome, StoreError> {
        match write {
            PushSubscriptionWrite::Put { endpoint, json } => {
                self.push_subscriptions
                    .insert(endpoint.as_str(), json.as_slice())?;
            }
            PushSubscriptionWrite::Delete { endpoint } => {
                self.push_subscriptions.remove(endpoint.as_str())?;
            }
        }
        Ok(Outcome::Done)
    }
}
