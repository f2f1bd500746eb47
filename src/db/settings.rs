//! Server-wide settings kept in the database, so every instance on one database agrees (the key that
//! signs page CSRF tokens, for one).

use super::Conn;

pub async fn get(conn: &mut Conn, name: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar::<_, String>("SELECT value FROM settings WHERE name = $1").bind(name).fetch_optional(conn).await
}

/// Stores `value` unless the setting exists already, and returns whichever value won.
pub async fn get_or_insert(conn: &mut Conn, name: &str, value: &str) -> Result<String, sqlx::Error> {
    sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(value)
        .execute(&mut *conn)
        .await?;
    Ok(get(conn, name).await?.unwrap_or_else(|| value.to_string()))
}
