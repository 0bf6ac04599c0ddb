//! PostgreSQL through sqlx: the lazily opened connections (`conns`), each rule's statement with its
//! parameter types (learnt by preparing it once), and rows turned into cache values.
//! Key captures are only ever bind parameters; SQL text comes from the config alone.

use std::sync::OnceLock;

use bytes::Bytes;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Column, Executor, Row, SqlSafeStr, Statement, TypeInfo, ValueRef};

use super::conns::{Conns, IDLE_CHECK};
use super::settings::{PostgresConfig, Shape};
use super::{FallbackError, Loaded};

/// How a capture is bound, from the statement's parameter type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// smallint
    Int2,
    /// integer
    Int4,
    /// bigint
    Int8,
    /// real / double precision
    Float,
    /// boolean
    Bool,
    /// text, varchar, char, name (and anything strata binds as text)
    Text,
}

impl ParamType {
    fn from_name(name: &str) -> Option<ParamType> {
        Some(match name {
            "INT2" => ParamType::Int2,
            "INT4" => ParamType::Int4,
            "INT8" => ParamType::Int8,
            "FLOAT4" | "FLOAT8" => ParamType::Float,
            "BOOL" => ParamType::Bool,
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => ParamType::Text,
            _ => return None,
        })
    }
}

/// One SQL statement of a rule and its parameter types, once known.
#[derive(Debug)]
pub struct RuleSql {
    /// The SQL text from the config.
    pub sql: String,
    types: OnceLock<Vec<ParamType>>,
}

impl RuleSql {
    /// A statement not yet prepared.
    pub fn new(sql: String) -> RuleSql {
        RuleSql { sql, types: OnceLock::new() }
    }
}

/// The database behind read-through: rules' statements on `conns`; LISTEN through sqlx's
/// pool.
pub struct Database {
    pool: PgPool,
    conns: Conns,
}

impl Database {
    /// A pool that connects on first use, so strata starts while PostgreSQL is down.
    pub fn connect_lazy(config: &PostgresConfig, url: &str) -> Result<Database, FallbackError> {
        let statement_ms = config.statement_timeout.as_millis().to_string();
        let options: PgConnectOptions = url
            .parse::<PgConnectOptions>()
            .map_err(|e| FallbackError::Config(format!("postgres.url: {e}")))?
            .options([("statement_timeout", statement_ms.as_str())])
            .application_name("strata");
        let pool = PgPoolOptions::new()
            .max_connections(config.pool_size)
            .acquire_timeout(config.connect_timeout)
            // sqlx pings every connection it hands out by default: a round trip to
            // PostgreSQL before each miss's query. Only a connection idle for a while
            // (PostgreSQL may have restarted meanwhile) is checked first.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= IDLE_CHECK {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(options.clone());
        // PostgreSQL ends a cut-off query by its own statement timeout at the latest.
        let recover_within = config.statement_timeout + config.connect_timeout;
        let conns = Conns::new(options, config.pool_size, config.connect_timeout, recover_within);
        Ok(Database { pool, conns })
    }

    /// The pool, for LISTEN.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Prepares `sql` on a query connection, which keeps it for the queries that follow.
    async fn prepare(&self, sql: String) -> Result<sqlx::postgres::PgStatement, FallbackError> {
        let mut lease = self.conns.lease().await?;
        let prepared = lease.conn().prepare(AssertSqlSafe(sql).into_sql_str()).await;
        lease.finished(&prepared);
        prepared.map_err(classify)
    }

    /// Prepares `sql` and returns its parameter types, failing on types strata cannot bind.
    pub async fn param_types(&self, rule: &RuleSql) -> Result<Vec<ParamType>, FallbackError> {
        if let Some(types) = rule.types.get() {
            return Ok(types.clone());
        }
        let statement = self.prepare(rule.sql.clone()).await?;
        let names: Vec<String> = match statement.parameters() {
            Some(sqlx::Either::Left(types)) => types.iter().map(|t| t.name().to_string()).collect(),
            _ => Vec::new(),
        };
        let types = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                ParamType::from_name(name).ok_or_else(|| {
                    FallbackError::Config(format!(
                        "parameter ${} of '{}' has type {name}; cast it in SQL, e.g. ${}::text::{}",
                        i + 1,
                        rule.sql,
                        i + 1,
                        name.to_lowercase()
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let _ = rule.types.set(types.clone());
        Ok(types)
    }

    /// Prepares a rule's statement and checks that strata can read every result column.
    pub async fn check_columns(&self, rule: &RuleSql) -> Result<(), FallbackError> {
        let statement = self.prepare(rule.sql.clone()).await?;
        if statement.columns().is_empty() {
            return Err(FallbackError::Config(format!("'{}' returns no columns", rule.sql)));
        }
        for column in statement.columns() {
            let name = column.type_info().name();
            if !READABLE_TYPES.contains(&name) && name != "JSONB" {
                return Err(unreadable(column.name(), name));
            }
        }
        Ok(())
    }

    /// Prepares a batch statement: `$1` must be `text[]` and rows need two columns.
    pub async fn check_batch(&self, sql: &str) -> Result<(), FallbackError> {
        let statement = self.prepare(sql.to_string()).await?;
        let params: Vec<String> = match statement.parameters() {
            Some(sqlx::Either::Left(types)) => types.iter().map(|t| t.name().to_string()).collect(),
            _ => Vec::new(),
        };
        if params != ["TEXT[]"] {
            return Err(FallbackError::Config(format!(
                "'{sql}' must take $1 as text[] (got {params:?}); use = ANY($1)"
            )));
        }
        if statement.columns().len() != 2 {
            return Err(FallbackError::Config(format!("'{sql}' must return two columns: capture, value")));
        }
        Ok(())
    }

    /// Runs a rule's query for one key's captures. `Ok(None)`: no row, or a capture that
    /// cannot be a value of its parameter's type (so no row could match it).
    pub async fn load(
        &self,
        rule: &RuleSql,
        shape: Shape,
        captures: &[&[u8]],
    ) -> Result<Option<Loaded>, FallbackError> {
        let types = self.param_types(rule).await?;
        let mut query = sqlx::query(AssertSqlSafe(rule.sql.clone()));
        for (i, ty) in types.iter().enumerate() {
            let Some(capture) = captures.get(i) else { return Ok(None) };
            query = match bind_one(query, *ty, capture) {
                Some(q) => q,
                None => return Ok(None),
            };
        }
        let mut lease = self.conns.lease().await?;
        let row = query.fetch_optional(lease.conn()).await;
        lease.finished(&row);
        let row = row.map_err(classify)?;
        row.map_or(Ok(None), |r| row_value(&r, shape))
    }

    /// Runs a batch query with `$1` = the captures as `text[]`; rows are `(capture, value)`.
    pub async fn load_batch(
        &self,
        sql: &str,
        captures: &[&[u8]],
    ) -> Result<Vec<(Bytes, Bytes)>, FallbackError> {
        let texts: Vec<String> = captures
            .iter()
            .filter_map(|c| std::str::from_utf8(c).ok().filter(|s| !s.contains('\0')))
            .map(str::to_string)
            .collect();
        let mut lease = self.conns.lease().await?;
        let rows = sqlx::query(AssertSqlSafe(sql.to_string())).bind(texts).fetch_all(lease.conn()).await;
        lease.finished(&rows);
        let rows = rows.map_err(classify)?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let id = text_of(r, 0).ok()??;
                let value = text_of(r, 1).ok()??;
                Some((id, value))
            })
            .collect())
    }
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds one capture by type; `None` when the text is not a value of that type.
fn bind_one<'q>(query: PgQuery<'q>, ty: ParamType, capture: &[u8]) -> Option<PgQuery<'q>> {
    let text = std::str::from_utf8(capture).ok()?;
    Some(match ty {
        ParamType::Int2 => query.bind(text.parse::<i16>().ok()?),
        ParamType::Int4 => query.bind(text.parse::<i32>().ok()?),
        ParamType::Int8 => query.bind(text.parse::<i64>().ok()?),
        ParamType::Float => query.bind(text.parse::<f64>().ok()?),
        ParamType::Bool => query.bind(match text {
            "1" | "t" | "true" => true,
            "0" | "f" | "false" => false,
            _ => return None,
        }),
        // PostgreSQL text cannot hold NUL, so such a key has no row.
        ParamType::Text if text.contains('\0') => return None,
        ParamType::Text => query.bind(text.to_string()),
    })
}

/// The cache value of a row: its first column (string rules) or every non-NULL column
/// by name (hash rules). A NULL value column (string rules) reads as no row.
fn row_value(row: &PgRow, shape: Shape) -> Result<Option<Loaded>, FallbackError> {
    match shape {
        Shape::String => Ok(text_of(row, 0)?.map(Loaded::String)),
        Shape::Hash => {
            let mut fields = Vec::with_capacity(row.columns().len());
            for (i, column) in row.columns().iter().enumerate() {
                if let Some(value) = text_of(row, i)? {
                    fields.push((Bytes::from(column.name().to_string()), value));
                }
            }
            Ok(Some(Loaded::Hash(fields)))
        }
    }
}

/// Column types strata turns into cache values; others must be cast in the SQL.
pub const READABLE_TYPES: [&str; 12] = [
    "TEXT", "VARCHAR", "BPCHAR", "NAME", "BYTEA", "INT2", "INT4", "INT8", "FLOAT4", "FLOAT8", "BOOL", "JSON",
];

/// A column as bytes; `None` for NULL; an error naming the type when strata cannot read
/// it (rather than mistaking the row for a missing one).
fn text_of(row: &PgRow, i: usize) -> Result<Option<Bytes>, FallbackError> {
    let raw = row.try_get_raw(i).map_err(|e| FallbackError::Query(e.to_string()))?;
    if raw.is_null() {
        return Ok(None);
    }
    let type_name = raw.type_info().name().to_string();
    let number = |v: String| Ok(Some(Bytes::from(v)));
    let bad = |e: sqlx::Error| FallbackError::Query(e.to_string());
    match type_name.as_str() {
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => {
            Ok(Some(Bytes::from(row.try_get::<String, _>(i).map_err(bad)?)))
        }
        "BYTEA" => Ok(Some(Bytes::from(row.try_get::<Vec<u8>, _>(i).map_err(bad)?))),
        "INT2" => number(row.try_get::<i16, _>(i).map_err(bad)?.to_string()),
        "INT4" => number(row.try_get::<i32, _>(i).map_err(bad)?.to_string()),
        "INT8" => number(row.try_get::<i64, _>(i).map_err(bad)?.to_string()),
        "FLOAT4" => number(row.try_get::<f32, _>(i).map_err(bad)?.to_string()),
        "FLOAT8" => number(row.try_get::<f64, _>(i).map_err(bad)?.to_string()),
        "BOOL" => {
            Ok(Some(Bytes::from_static(if row.try_get::<bool, _>(i).map_err(bad)? { b"1" } else { b"0" })))
        }
        "JSON" | "JSONB" => {
            json_text(raw.as_bytes().map_err(|e| FallbackError::Query(e.to_string()))?, &type_name)
        }
        other => Err(unreadable(row.columns()[i].name(), other)),
    }
}

/// json arrives as its text; jsonb's binary form is a version byte (1) and the text.
fn json_text(bytes: &[u8], type_name: &str) -> Result<Option<Bytes>, FallbackError> {
    let text = match (type_name, bytes.split_first()) {
        ("JSONB", Some((1, rest))) => rest,
        ("JSONB", _) => return Err(FallbackError::Query("unknown jsonb format".into())),
        _ => bytes,
    };
    Ok(Some(Bytes::copy_from_slice(text)))
}

/// The error for a column strata cannot turn into a value.
pub fn unreadable(column: &str, type_name: &str) -> FallbackError {
    FallbackError::Query(format!(
        "column '{column}' has type {type_name}, which strata does not read; cast it in the SQL, e.g. {column}::text"
    ))
}

/// Connection trouble counts against the database breaker; SQL errors do not.
fn classify(e: sqlx::Error) -> FallbackError {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
            FallbackError::Unavailable(e.to_string())
        }
        sqlx::Error::Database(db) if db.code().as_deref() == Some("57014") => {
            FallbackError::Unavailable(format!("statement timeout: {db}"))
        }
        other => FallbackError::Query(other.to_string()),
    }
}
