//! The VAPID key (RFC 8292): made on first start, kept in the store, so the public key that browsers subscribed with
//! stays the same across restarts (a new key would silently orphan every subscription).

use std::time::Duration;

use web_push_native::jwt_simple::algorithms::{
    ECDSAP256KeyPairLike, ECDSAP256PublicKeyLike, ES256KeyPair,
};
use web_push_native::jwt_simple::claims::Claims;

use crate::config::Origin;
use crate::store::Store;

/// The store's meta key for the 32-byte private scalar.
const META_KEY: &str = "vapid_private_key";
/// How long a token is valid. RFC 8292 allows at most 24 hours; half that leaves room for a clock that is off.
const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

pub struct Vapid {
    key_pair: ES256KeyPair,
    /// The uncompressed public point, base64url: what `GET /push/key` answers and what `k=` carries.
    public_key: String,
    /// `push.subject`: the contact the push service may write to about abuse.
    subject: String,
}

impl Vapid {
    /// Loads the key from the store, or makes one and stores it (committed before the first subscription can use it).
    pub async fn load_or_create(store: &Store, subject: &str) -> anyhow::Result<Vapid> {
        let key_pair = match store.meta(META_KEY).map_err(|error| anyhow::anyhow!("cannot read the VAPID key: {error:?}"))? {
            Some(bytes) => ES256KeyPair::from_bytes(&bytes)
                .map_err(|error| anyhow::anyhow!("the stored VAPID key is damaged ({error}); delete the data dir's store to start afresh"))?,
            None => {
                let key_pair = ES256KeyPair::generate();
                store
                    .put_meta(META_KEY, key_pair.to_bytes())
                    .await
                    .map_err(|error| anyhow::anyhow!("cannot store the new VAPID key: {error:?}"))?;
                tracing::info!("made a new VAPID key for Web Push");
                key_pair
            }
        };
        let public_key =
            crate::auth::base64url(&key_pair.public_key().public_key().to_bytes_uncompressed());
        Ok(Vapid {
            key_pair,
            public_key,
            subject: subject.to_string(),
        })
    }

    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// The `Authorization` header for a request to a push service at `audience`: `vapid t=<JWT>, k=<public key>`.
    /// web-push-native's own header leaves the port out of `aud`, which RFC 8292 keeps (the origin), so natter signs
    /// its own.
    pub fn authorization(&self, audience: &Origin) -> Result<String, String> {
        let claims = Claims::create(TOKEN_LIFETIME.into())
            .with_audience(audience.as_str())
            .with_subject(&self.subject);
        let token = self
            .key_pair
            .sign(claims)
            .map_err(|error| error.to_string())?;
        Ok(format!("vapid t={token}, k={}", self.public_key))
    }
}
