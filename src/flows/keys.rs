//! Merchants and their API keys: secrets are high-entropy, shown once, stored as SHA-256 hashes.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::db::{self, Db};
use crate::domain::ids::{ApiKeyId, MerchantId};
use crate::domain::timestamp::Timestamp;
use crate::domain::Mode;

pub const TEST_PREFIX: &str = "fsk_test_";
pub const LIVE_PREFIX: &str = "fsk_";

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The mode a secret claims by its prefix; the stored key decides in the end.
pub fn mode_of_secret(secret: &str) -> Option<Mode> {
    if secret.starts_with(TEST_PREFIX) {
        Some(Mode::Test)
    } else if secret.starts_with(LIVE_PREFIX) {
        Some(Mode::Live)
    } else {
        None
    }
}

fn new_secret(mode: Mode) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    match mode {
        Mode::Test => format!("{TEST_PREFIX}{body}"),
        Mode::Live => format!("{LIVE_PREFIX}{body}"),
    }
}

fn redact(secret: &str) -> String {
    let prefix_len = if secret.starts_with(TEST_PREFIX) { TEST_PREFIX.len() } else { LIVE_PREFIX.len() };
    format!("{}...{}", &secret[..prefix_len], &secret[secret.len() - 4..])
}

pub struct CreatedKey {
    pub id: ApiKeyId,
    pub secret: String,
}

pub async fn create_merchant(db: &Db, name: &str, now: Timestamp) -> anyhow::Result<MerchantId> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        anyhow::bail!("--name must be 1 to 100 characters");
    }
    let id = MerchantId::generate();
    let mut conn = db.conn().await?;
    db::merchants::insert(&mut conn, &id, name, now).await?;
    Ok(id)
}

pub async fn create_key(
    db: &Db,
    merchant: &MerchantId,
    name: &str,
    mode: Mode,
    now: Timestamp,
) -> anyhow::Result<CreatedKey> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        anyhow::bail!("--name must be 1 to 100 characters");
    }
    let mut conn = db.conn().await?;
    if db::merchants::get(&mut conn, merchant.as_str()).await?.is_none() {
        anyhow::bail!("no merchant with id {merchant}");
    }
    let id = ApiKeyId::generate();
    let secret = new_secret(mode);
    db::api_keys::insert(
        &mut conn,
        db::api_keys::NewApiKey {
            id: &id,
            merchant_id: merchant,
            name,
            mode,
            secret_hash: &hash_secret(&secret),
            redacted: &redact(&secret),
        },
        now,
    )
    .await?;
    Ok(CreatedKey { id, secret })
}

/// On the first start with an empty database: a merchant account and its first test key.
pub async fn bootstrap(db: &Db, now: Timestamp) -> anyhow::Result<Option<(MerchantId, CreatedKey)>> {
    let mut conn = db.conn().await?;
    if db::merchants::count(&mut conn).await? > 0 {
        return Ok(None);
    }
    drop(conn);
    let merchant = create_merchant(db, "My store", now).await?;
    let key = create_key(db, &merchant, "Default test key", Mode::Test, now).await?;
    Ok(Some((merchant, key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_prefixed_and_never_repeat() {
        let a = new_secret(Mode::Test);
        let b = new_secret(Mode::Test);
        assert!(a.starts_with(TEST_PREFIX) && a.len() > 40);
        assert_ne!(a, b);
        assert_eq!(mode_of_secret(&a), Some(Mode::Test));
        let live = new_secret(Mode::Live);
        assert!(!live.starts_with(TEST_PREFIX));
        assert_eq!(mode_of_secret(&live), Some(Mode::Live));
    }

    #[test]
    fn redaction_keeps_only_the_prefix_and_last_four() {
        let s = new_secret(Mode::Test);
        let r = redact(&s);
        assert!(r.starts_with("fsk_test_...") && r.ends_with(&s[s.len() - 4..]));
        assert_eq!(hash_secret(&s).len(), 64);
    }
}
