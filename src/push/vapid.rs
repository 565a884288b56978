//! The VAPID key (RFC 8292): made on first start, kept in the store, so the public key that browsers subscribed with
//! stays the same across restarts (a new key would silently orphan every subscription).

use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use web_push_native::p256::SecretKey;

use crate::config::Origin;
use crate::store::Store;

/// The store's meta key for the 32-byte private scalar.
const META_KEY: &str = "vapid_private_key";
/// How long a token is valid. RFC 8292 allows at most 24 hours; half that leaves room for a clock that is off.
const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

pub struct Vapid {
    /// ES256 signing with ring, natter's one crypto provider (the P-256 arithmetic of web-push-native only derives
    /// the public point).
    key_pair: EcdsaKeyPair,
    /// The uncompressed public point, base64url: what `GET /push/key` answers and what `k=` carries.
    public_key: String,
    /// `push.subject`: the contact the push service may write to about abuse.
    subject: String,
}

impl Vapid {
    /// Loads the key from the store, or makes one and stores it (committed before the first subscription can use it).
    pub async fn load_or_create(store: &Store, subject: &str) -> anyhow::Result<Vapid> {
        let secret = match store
            .meta(META_KEY)
            .map_err(|error| anyhow::anyhow!("cannot read the VAPID key: {error:?}"))?
        {
            Some(bytes) => SecretKey::from_slice(&bytes).map_err(|_| {
                anyhow::anyhow!(
                    "the stored VAPID key is damaged; delete the data dir's store to start afresh"
                )
            })?,
            None => {
                let secret = generate_secret();
                store
                    .put_meta(META_KEY, secret.to_bytes().to_vec())
                    .await
                    .map_err(|error| {
                        anyhow::anyhow!("cannot store the new VAPID key: {error:?}")
                    })?;
                tracing::info!("made a new VAPID key for Web Push");
                secret
            }
        };
        let public_point = secret.public_key().to_sec1_bytes();
        let key_pair = EcdsaKeyPair::from_private_key_and_public_key(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &secret.to_bytes(),
            &public_point,
            &SystemRandom::new(),
        )
        .map_err(|_| anyhow::anyhow!("the VAPID key does not make a P-256 key pair"))?;
        let public_key = crate::auth::base64url(&public_point);
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
        let expires = crate::timestamp::now_millis() / 1000 + TOKEN_LIFETIME.as_secs() as i64;
        let header = crate::auth::base64url(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims =
            serde_json::json!({ "aud": audience.as_str(), "exp": expires, "sub": self.subject });
        let signing_input = format!(
            "{header}.{}",
            crate::auth::base64url(claims.to_string().as_bytes())
        );
        let signature = self
            .key_pair
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .map_err(|_| "signing the VAPID token failed".to_string())?;
        let token = format!(
            "{signing_input}.{}",
            crate::auth::base64url(signature.as_ref())
        );
        Ok(format!("vapid t={token}, k={}", self.public_key))
    }
}

/// A new P-256 private scalar from the system's random source.
fn generate_secret() -> SecretKey {
    let random = SystemRandom::new();
    loop {
        let mut bytes = [0u8; 32];
        random
            .fill(&mut bytes)
            .expect("the system random source works");
        // All but a 2^-128 sliver of 32-byte strings are valid scalars.
        if let Ok(secret) = SecretKey::from_slice(&bytes) {
            return secret;
        }
    }
}
