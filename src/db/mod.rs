//! All SQL lives under here: one file per table group, each function taking a connection (a
//! transaction or a pooled connection). The same statements run on SQLite and PostgreSQL through
//! sqlx's `Any` driver, so they use only `$n` placeholders, BIGINT, TEXT and portable syntax; where
//! the two spell a thing differently (building JSON), one function here writes each one's spelling.

pub mod api_keys;
pub mod billing_settings;
pub mod checkout_sessions;
pub mod customers;
pub mod events;
pub mod idempotency;
pub mod merchants;
pub mod payments;
pub mod prices;
pub mod products;
pub mod refunds;
pub mod settings;
pub mod stripe_events;
pub mod subscriptions;
pub mod test_clocks;
pub mod webhook_deliveries;
pub mod webhook_endpoints;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyConnection, AnyPool, Executor, Transaction};

pub type Conn = AnyConnection;
pub type Tx = Transaction<'static, Any>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone, Debug)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Db {
    /// Opens a pool for `sqlite:` or `postgres:` URLs. A SQLite file's folder is created if needed.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            anyhow::bail!(
                "DATABASE_URL must start with sqlite: or postgres: (got `{}`)",
                url.split(':').next().unwrap_or("")
            );
        };
        let url = if backend == Backend::Sqlite { prepare_sqlite_url(url)? } else { url.to_string() };
        let options = AnyConnectOptions::from_str(&url)
            .map_err(|e| anyhow::anyhow!("DATABASE_URL is not a valid database URL: {e}"))?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            // A SQLite file cannot drop a connection; checking one on every acquire costs a round
            // trip to its worker thread. A PostgreSQL server can, so there the check stays.
            .test_before_acquire(backend == Backend::Postgres)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the one writer; NORMAL is durable with WAL.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        // 1 MiB of page cache per connection keeps the server's memory small.
                        conn.execute("PRAGMA cache_size = -1024").await?;
                        // The WAL is copied back into the database by `checkpoint_in_background`,
                        // off the writers' path; a commit does it itself only past this size.
                        conn.execute(WAL_AUTOCHECKPOINT_PAGES).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the database at DATABASE_URL: {e}"))?;
        if backend == Backend::Sqlite {
            checkpoint_in_background(&pool, &options).await?;
        }
        Ok(Db { pool, backend })
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&self.pool).await.map_err(|e| anyhow::anyhow!("database migration failed: {e}"))?;
        Ok(())
    }

    /// A transaction that will write. On SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`), so a read-then-write transaction can wait for another writer instead of failing
    /// when it tries to upgrade.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        self.pool.begin_with(self.begin_statement()).await
    }

    /// [`Db::begin`] on a connection the caller holds (see `billing::run_due_for`).
    pub async fn begin_on<'c>(&self, conn: &'c mut Conn) -> Result<Transaction<'c, Any>, sqlx::Error> {
        sqlx::Connection::begin_with(conn, self.begin_statement()).await
    }

    fn begin_statement(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        }
    }

    pub async fn conn(&self) -> Result<sqlx::pool::PoolConnection<Any>, sqlx::Error> {
        self.pool.acquire().await
    }

    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}

/// How big the WAL may grow before a committing connection copies it back itself.
const WAL_AUTOCHECKPOINT_PAGES: &str = "PRAGMA wal_autocheckpoint = 16384";
/// How often the background checkpoint runs.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Copies the SQLite WAL back into the database file from a connection of its own, every
/// `CHECKPOINT_EVERY`, until `pool` closes. With SQLite's default, the commit that takes the WAL
/// past 1,000 pages does that copy (and its fsync) itself while holding the write lock: a billing
/// batch writes more than that, so every batch paid for a checkpoint (a quarter of a renewal pass,
/// BENCHMARKS.md "Renewals"). A passive checkpoint never blocks writers or readers; it copies
/// what no reader still needs, and the next writer starts the WAL over once all of it is copied.
async fn checkpoint_in_background(pool: &AnyPool, options: &AnyConnectOptions) -> anyhow::Result<()> {
    use sqlx::{ConnectOptions, Connection};
    let mut conn =
        options.connect().await.map_err(|e| anyhow::anyhow!("cannot open the database at DATABASE_URL: {e}"))?;
    let pool = pool.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if pool.is_closed() {
                break;
            }
            if let Err(e) = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").await {
                tracing::warn!(error = ?e, "WAL checkpoint failed; a commit will do it past its size");
            }
        }
        let _ = conn.close().await;
    });
    Ok(())
}

fn prepare_sqlite_url(url: &str) -> anyhow::Result<String> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path != ":memory:" && !path.is_empty() {
        if let Some(parent) = std::path::Path::new(path).parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    anyhow::anyhow!("cannot create the folder {} for the database: {e}", parent.display())
                })?;
            }
        }
    }
    let mut url = url.to_string();
    if !query.split('&').any(|p| p.starts_with("mode=")) {
        url.push(if query.is_empty() { '?' } else { '&' });
        url.push_str("mode=rwc");
    }
    Ok(url)
}

/// Values bound to a dynamically built statement. NULLs keep their type (PostgreSQL wants one).
#[derive(Clone, Debug)]
pub enum Arg {
    Text(String),
    Int(i64),
    OptText(Option<String>),
    OptInt(Option<i64>),
}

impl Arg {
    pub fn text(s: impl Into<String>) -> Arg {
        Arg::Text(s.into())
    }

    pub fn opt_text<S: AsRef<str>>(s: Option<S>) -> Arg {
        Arg::OptText(s.map(|s| s.as_ref().to_string()))
    }
}

fn bind_arg<'q>(
    q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    arg: &'q Arg,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    match arg {
        Arg::Text(s) => q.bind(s.as_str()),
        Arg::Int(i) => q.bind(*i),
        Arg::OptText(s) => q.bind(s.as_deref()),
        Arg::OptInt(i) => q.bind(*i),
    }
}

fn bind_arg_as<'q, T>(
    q: sqlx::query::QueryAs<'q, Any, T, sqlx::any::AnyArguments<'q>>,
    arg: &'q Arg,
) -> sqlx::query::QueryAs<'q, Any, T, sqlx::any::AnyArguments<'q>> {
    match arg {
        Arg::Text(s) => q.bind(s.as_str()),
        Arg::Int(i) => q.bind(*i),
        Arg::OptText(s) => q.bind(s.as_deref()),
        Arg::OptInt(i) => q.bind(*i),
    }
}

/// A statement built piece by piece (filters, cursors) with `$n` placeholders numbered for us.
#[derive(Debug, Default)]
pub struct Sql {
    pub text: String,
    pub args: Vec<Arg>,
    /// Plain `?` placeholders instead of `$n` (see [`Sql::for_conn`]).
    positional: bool,
}

impl Sql {
    pub fn new(text: &str) -> Sql {
        Sql { text: text.to_string(), args: Vec::new(), positional: false }
    }

    /// A statement for `conn` whose placeholders are all added with [`Sql::bind`] (`text` has
    /// none). On SQLite they are plain `?`: SQLite finds a named parameter such as `$7` by a linear
    /// search of the statement's names, when it prepares the statement and again for every value
    /// bound, which costs quadratic time in a statement with thousands of them.
    pub fn for_conn(conn: &Conn, text: &str) -> Sql {
        Sql { text: text.to_string(), args: Vec::new(), positional: conn.backend_name() == "SQLite" }
    }

    pub fn push(&mut self, text: &str) -> &mut Sql {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder for `arg`.
    pub fn bind(&mut self, arg: Arg) -> &mut Sql {
        self.args.push(arg);
        if self.positional {
            self.text.push('?');
        } else {
            self.text.push_str(&format!("${}", self.args.len()));
        }
        self
    }

    pub fn query_as<'q, T>(&'q self) -> sqlx::query::QueryAs<'q, Any, T, sqlx::any::AnyArguments<'q>>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow>,
    {
        let mut q = sqlx::query_as::<_, T>(&self.text);
        for arg in &self.args {
            q = bind_arg_as(q, arg);
        }
        q
    }

    pub fn query(&self) -> sqlx::query::Query<'_, Any, sqlx::any::AnyArguments<'_>> {
        let mut q = sqlx::query(&self.text);
        for arg in &self.args {
            q = bind_arg(q, arg);
        }
        q
    }

    /// Appends `(ids...)`, a list of placeholders, for `... IN `.
    pub fn in_list<S: AsRef<str>>(&mut self, ids: impl IntoIterator<Item = S>) -> &mut Sql {
        self.push("(");
        for (i, id) in ids.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(Arg::text(id.as_ref()));
        }
        self.push(")")
    }

    /// Appends `(a, b, ...), (c, d, ...)`: one parenthesised group of placeholders per row.
    pub fn rows(&mut self, rows: Vec<Vec<Arg>>) -> &mut Sql {
        for (r, row) in rows.into_iter().enumerate() {
            self.push(if r == 0 { "(" } else { ", (" });
            for (i, v) in row.into_iter().enumerate() {
                if i > 0 {
                    self.push(", ");
                }
                self.bind(v);
            }
            self.push(")");
        }
        self
    }
}

// -------------------------------------------------------------------------------------------------
// Many rows per statement. The cost of a statement is mostly the trip to the database (a worker
// thread for SQLite, the network for PostgreSQL), so the billing engine writes a batch of rows with
// one statement per table instead of one per row.
// -------------------------------------------------------------------------------------------------

/// Values bound in one statement at most: under the bundled SQLite's 32,766 and PostgreSQL's 65,535.
pub const MAX_BOUND: usize = 32_000;

/// Ids in one `IN (...)` list at most.
pub const MAX_IN_LIST: usize = 1_000;

/// Rows of `width` values that fit in one statement.
pub fn rows_per_statement(width: usize) -> usize {
    (MAX_BOUND / width.max(1)).max(1)
}

/// `rows` cut into statements' worth of rows of `width` values.
fn statements_of(mut rows: Vec<Vec<Arg>>, width: usize) -> Vec<Vec<Vec<Arg>>> {
    let per = rows_per_statement(width);
    let mut out = Vec::new();
    while rows.len() > per {
        let rest = rows.split_off(per);
        out.push(std::mem::replace(&mut rows, rest));
    }
    if !rows.is_empty() {
        out.push(rows);
    }
    out
}

/// `INSERT INTO table (columns) VALUES (row), (row), ... <suffix>`, as many statements as the
/// number of bound values needs.
pub async fn insert_rows(
    conn: &mut Conn,
    table: &str,
    columns: &[&str],
    rows: Vec<Vec<Arg>>,
    suffix: &str,
) -> Result<(), sqlx::Error> {
    insert_rows_counted(conn, table, columns, rows, suffix).await.map(|_| ())
}

/// [`insert_rows`], saying how many rows were written (fewer than given when `suffix` has an
/// `ON CONFLICT DO NOTHING`).
pub async fn insert_rows_counted(
    conn: &mut Conn,
    table: &str,
    columns: &[&str],
    rows: Vec<Vec<Arg>>,
    suffix: &str,
) -> Result<u64, sqlx::Error> {
    let mut written = 0;
    for chunk in statements_of(rows, columns.len()) {
        written += insert_sql(conn, table, columns, chunk, suffix).query().execute(&mut *conn).await?.rows_affected();
    }
    Ok(written)
}

/// Every row of `head` (a SELECT ending in `WHERE <column> IN `) over `ids`, one statement per
/// [`MAX_IN_LIST`] ids.
pub async fn select_in<'a, T>(
    conn: &mut Conn,
    head: &str,
    ids: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<T>, sqlx::Error>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
{
    let ids: Vec<&str> = ids.into_iter().collect();
    let mut out = Vec::new();
    for chunk in ids.chunks(MAX_IN_LIST) {
        let mut sql = Sql::for_conn(conn, head);
        sql.in_list(chunk.iter().copied());
        out.extend(sql.query_as::<T>().fetch_all(&mut *conn).await?);
    }
    Ok(out)
}

/// A row read as one JSON object (see [`json_object`]) and parsed with serde. Through sqlx's `Any`
/// driver every column of every row costs a conversion and a copy of its name, which for a wide
/// row like a subscription's took more time than SQLite spent finding it; one column does not.
pub struct JsonRow<T>(pub T);

impl<'r, T: serde::de::DeserializeOwned> sqlx::FromRow<'r, sqlx::any::AnyRow> for JsonRow<T> {
    fn from_row(row: &'r sqlx::any::AnyRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        let text: &str = row.try_get(0)?;
        serde_json::from_str(text)
            .map(JsonRow)
            .map_err(|e| sqlx::Error::ColumnDecode { index: "0".into(), source: Box::new(e) })
    }
}

/// The SQL for a JSON object of `columns` (each under its own name) and `extra` fields (name,
/// expression), on `conn`'s database: integers stay JSON numbers and TEXT stays strings, so
/// [`JsonRow`] reads what the columns hold. An expression that is itself JSON (an aggregate,
/// another object) is embedded as JSON.
pub fn json_object(conn: &Conn, columns: &[&str], extra: &[(&str, &str)]) -> String {
    let pairs: Vec<String> = columns
        .iter()
        .map(|c| (*c, *c))
        .chain(extra.iter().copied())
        .map(|(name, expr)| format!("'{name}', {expr}"))
        .collect();
    if conn.backend_name() == "SQLite" {
        format!("json_object({})", pairs.join(", "))
    } else {
        format!("json_build_object({})", pairs.join(", "))
    }
}

/// `json` (a JSON expression) as the text a [`JsonRow`] reads: `Any` has no PostgreSQL `json`
/// type.
pub fn json_text(conn: &Conn, json: &str) -> String {
    if conn.backend_name() == "SQLite" {
        json.to_string()
    } else {
        format!("({json})::text")
    }
}

/// Rows read as one JSON array in one cell (see [`json_array_agg`]): through sqlx's `Any` driver
/// each row costs several microseconds on top of its columns, more than SQLite takes to build it.
pub struct JsonRows<T>(pub Vec<T>);

impl<'r, T: serde::de::DeserializeOwned> sqlx::FromRow<'r, sqlx::any::AnyRow> for JsonRows<T> {
    fn from_row(row: &'r sqlx::any::AnyRow) -> Result<Self, sqlx::Error> {
        JsonRow::from_row(row).map(|JsonRow(rows)| JsonRows(rows))
    }
}

/// The SQL for a JSON array of `object` (a [`json_object`]) over a query's rows, in `order` if
/// given: `[]` when there are none.
pub fn json_array_agg(conn: &Conn, object: &str, order: Option<&str>) -> String {
    let order = order.map(|o| format!(" ORDER BY {o}")).unwrap_or_default();
    if conn.backend_name() == "SQLite" {
        format!("json_group_array({object}{order})")
    } else {
        format!("COALESCE(json_agg({object}{order}), '[]'::json)")
    }
}

/// `SELECT <the rows' objects as one JSON array text>`, to which the caller adds the FROM: read it
/// with [`JsonRows`] (or [`select_json_in`]).
pub fn select_json_rows(conn: &Conn, object: &str, order: Option<&str>) -> String {
    format!("SELECT {}", json_text(conn, &json_array_agg(conn, object, order)))
}

/// [`select_in`] for a statement whose head is a [`select_json_rows`].
pub async fn select_json_in<'a, T>(
    conn: &mut Conn,
    head: &str,
    ids: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<T>, sqlx::Error>
where
    T: serde::de::DeserializeOwned + Send + Unpin,
{
    let chunks = select_in::<JsonRows<T>>(conn, head, ids).await?;
    Ok(chunks.into_iter().flat_map(|JsonRows(rows)| rows).collect())
}

/// The SQL for a JSON array of `object` (an expression over `table`'s rows chosen by `filter`),
/// in `order`, to embed in an enclosing [`json_object`]: `[]` when no row matches.
pub fn json_array_of(conn: &Conn, object: &str, table: &str, filter: &str, order: &str) -> String {
    let array = format!("(SELECT {} FROM {table} WHERE {filter})", json_array_agg(conn, object, Some(order)));
    if conn.backend_name() == "SQLite" {
        // A subquery's value loses SQLite's JSON mark; `json()` puts it back, so that the
        // enclosing `json_object` embeds the array instead of quoting it.
        format!("json({array})")
    } else {
        array
    }
}

fn insert_sql(conn: &Conn, table: &str, columns: &[&str], rows: Vec<Vec<Arg>>, suffix: &str) -> Sql {
    debug_assert!(rows.iter().all(|r| r.len() == columns.len()), "a row of {table} has the wrong width");
    let mut sql = Sql::for_conn(conn, &format!("INSERT INTO {table} ({}) VALUES ", columns.join(", ")));
    sql.rows(rows);
    if !suffix.is_empty() {
        sql.push(" ").push(suffix);
    }
    sql
}

/// A conditional update of many rows in one statement:
///
/// `WITH v (k, e0.., s0..) AS (VALUES ...) UPDATE table SET <set> FROM v
///  WHERE key = v.k AND expect[0] = v.e0 AND ... RETURNING key`
///
/// Each row is `[key, expected values..., new values...]`. An entry of `set` is a column (`status`:
/// `status = v.sN`) or an assignment whose `?` stands for the row's value (`gateway_ref =
/// COALESCE(?, gateway_ref)`); `also` is appended as it is (`version = version + 1`). Returns the
/// keys of the rows it changed: a row whose expected values no longer hold is left alone. Keys must
/// be distinct.
pub async fn update_rows(
    conn: &mut Conn,
    table: &str,
    key: &str,
    expect: &[&str],
    set: &[&str],
    also: &str,
    rows: Vec<Vec<Arg>>,
) -> Result<Vec<String>, sqlx::Error> {
    let width = 1 + expect.len() + set.len();
    let mut names = vec!["k".to_string()];
    names.extend((0..expect.len()).map(|i| format!("e{i}")));
    names.extend((0..set.len()).map(|i| format!("s{i}")));
    let mut assignments: Vec<String> = set
        .iter()
        .enumerate()
        .map(|(i, s)| if s.contains('?') { s.replace('?', &format!("v.s{i}")) } else { format!("{s} = v.s{i}") })
        .collect();
    if !also.is_empty() {
        assignments.push(also.to_string());
    }
    let mut conditions = vec![format!("{key} = v.k")];
    conditions.extend(expect.iter().enumerate().map(|(i, c)| format!("{c} = v.e{i}")));
    let mut changed = Vec::new();
    for chunk in statements_of(rows, width) {
        debug_assert!(chunk.iter().all(|r| r.len() == width), "a row for {table} has the wrong width");
        let keys: Option<Vec<String>> = chunk
            .iter()
            .map(|row| match row.first() {
                Some(Arg::Text(k)) => Some(k.clone()),
                _ => None,
            })
            .collect();
        let mut sql = Sql::for_conn(conn, &format!("WITH v ({}) AS (VALUES ", names.join(", ")));
        sql.rows(chunk);
        sql.push(&format!(") UPDATE {table} SET {} FROM v WHERE {}", assignments.join(", "), conditions.join(" AND ")));
        // Usually every row still stands as expected, and the count of changed rows says so
        // without sending each key back (a row costs more to send than to write). Otherwise the
        // statement is undone to a savepoint and run again returning the keys it changed.
        if let Some(keys) = keys.filter(|_| sqlx::Connection::is_in_transaction(&*conn)) {
            let mut savepoint = sqlx::Connection::begin(&mut *conn).await?;
            if sql.query().execute(&mut *savepoint).await?.rows_affected() == keys.len() as u64 {
                savepoint.commit().await?;
                changed.extend(keys);
                continue;
            }
            savepoint.rollback().await?;
        }
        sql.push(&format!(" RETURNING {key}"));
        changed.extend(sql.query_as::<(String,)>().fetch_all(&mut *conn).await?.into_iter().map(|(k,)| k));
    }
    Ok(changed)
}

/// The newest-first page of a list, by id; `has_more` says whether another page follows.
#[derive(Clone, Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_more: bool,
}

/// Where a list page starts: `starting_after` walks to older objects, `ending_before` to newer.
#[derive(Clone, Debug, Default)]
pub struct Cursor {
    pub limit: u32,
    pub starting_after: Option<String>,
    pub ending_before: Option<String>,
}

impl Cursor {
    /// Appends the cursor condition, order and limit to a statement whose WHERE clause is open.
    pub fn finish(&self, sql: &mut Sql, id_column: &str) {
        if let Some(after) = &self.starting_after {
            sql.push(&format!(" AND {id_column} < ")).bind(Arg::Text(after.clone()));
        }
        if let Some(before) = &self.ending_before {
            sql.push(&format!(" AND {id_column} > ")).bind(Arg::Text(before.clone()));
        }
        let order = if self.ending_before.is_some() { "ASC" } else { "DESC" };
        sql.push(&format!(" ORDER BY {id_column} {order} LIMIT ")).bind(Arg::Int(i64::from(self.limit) + 1));
    }

    /// Turns the rows fetched with `finish` into a newest-first page.
    pub fn page<T>(&self, mut rows: Vec<T>) -> Page<T> {
        let has_more = rows.len() > self.limit as usize;
        rows.truncate(self.limit as usize);
        if self.ending_before.is_some() {
            rows.reverse();
        }
        Page { items: rows, has_more }
    }
}

pub fn flag(b: bool) -> i64 {
    i64::from(b)
}

/// True when a write failed because a unique constraint already holds the value.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.kind() == sqlx::error::ErrorKind::UniqueViolation
                || db.message().contains("UNIQUE constraint failed")
                || db.code().as_deref() == Some("23505")
        }
        _ => false,
    }
}
