//! PostgreSQL through sqlx: the lazily connected pool, each rule's statement with its
//! parameter types (learnt by preparing it once), and rows turned into cache values.
//! Key captures are only ever bind parameters; SQL text comes from the config alone.

use std::sync::OnceLock;

use bytes::Bytes;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Column, Executor, Row, SqlSafeStr, Statement, TypeInfo};

use super::{FallbackError, Loaded};
use crate::config::{PostgresConfig, Shape};

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

/// The database behind read-through.
pub struct Database {
    pool: PgPool,
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
            .connect_lazy_with(options);
        Ok(Database { pool })
    }

    /// The pool, for LISTEN.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Prepares `sql` and returns its parameter types, failing on types strata cannot bind.
    pub async fn param_types(&self, rule: &RuleSql) -> Result<Vec<ParamType>, FallbackError> {
        if let Some(types) = rule.types.get() {
            return Ok(types.clone());
        }
        let statement =
            (&self.pool).prepare(AssertSqlSafe(rule.sql.clone()).into_sql_str()).await.map_err(classify)?;
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

    /// Prepares a batch statement: `$1` must be `text[]` and rows need two columns.
    pub async fn check_batch(&self, sql: &str) -> Result<(), FallbackError> {
        let statement =
            (&self.pool).prepare(AssertSqlSafe(sql.to_string()).into_sql_str()).await.map_err(classify)?;
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
        let row = query.fetch_optional(&self.pool).await.map_err(classify)?;
        Ok(row.and_then(|r| row_value(&r, shape)))
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
        let rows = sqlx::query(AssertSqlSafe(sql.to_string()))
            .bind(texts)
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let id = text_of(r, 0)?;
                let value = text_of(r, 1)?;
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
/// by name (hash rules).
fn row_value(row: &PgRow, shape: Shape) -> Option<Loaded> {
    match shape {
        Shape::String => text_of(row, 0).map(Loaded::String),
        Shape::Hash => {
            let fields: Vec<(Bytes, Bytes)> = row
                .columns()
                .iter()
                .enumerate()
                .filter_map(|(i, c)| Some((Bytes::from(c.name().to_string()), text_of(row, i)?)))
                .collect();
            Some(Loaded::Hash(fields))
        }
    }
}

/// A column as bytes, whatever its common type; `None` for NULL or an unsupported type.
fn text_of(row: &PgRow, i: usize) -> Option<Bytes> {
    if let Ok(v) = row.try_get::<Option<String>, _>(i) {
        return v.map(Bytes::from);
    }
    if let Ok(v) = row.try_get::<Option<Vec<u8>>, _>(i) {
        return v.map(Bytes::from);
    }
    if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
        return v.map(|n| Bytes::from(n.to_string()));
    }
    if let Ok(v) = row.try_get::<Option<i32>, _>(i) {
        return v.map(|n| Bytes::from(n.to_string()));
    }
    if let Ok(v) = row.try_get::<Option<i16>, _>(i) {
        return v.map(|n| Bytes::from(n.to_string()));
    }
    if let Ok(v) = row.try_get::<Option<f64>, _>(i) {
        return v.map(|n| Bytes::from(n.to_string()));
    }
    if let Ok(v) = row.try_get::<Option<bool>, _>(i) {
        return v.map(|b| Bytes::from_static(if b { b"1" } else { b"0" }));
    }
    None
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
