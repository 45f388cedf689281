//! Organizations, users and gateway keys, on both backends.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use sqlx::{Postgres, QueryBuilder, Sqlite};

use super::scope::{self, Scope};
use super::{Store, StoreError};
use crate::keys::{ApiKey, KeyHash, Role};

/// A new key's stored fields.
#[derive(Debug, Clone)]
pub struct KeyRecord<'a> {
    pub key: &'a ApiKey,
    pub hash: &'a KeyHash,
}

impl Store {
    /// Creates the organization if it does not exist; says whether it did.
    pub async fn ensure_org(&self, org_id: &str) -> Result<bool, StoreError> {
        let created = match self {
            Store::Sqlite(store) => sqlx::query(
                "INSERT INTO organizations (id, name, created_at) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
            )
            .bind(org_id)
            .bind(org_id)
            .bind(Utc::now().timestamp_micros())
            .execute(&store.writer)
            .await?
            .rows_affected(),
            Store::Postgres(store) => sqlx::query(
                "INSERT INTO organizations (id, name, created_at) VALUES ($1, $2, now()) ON CONFLICT (id) DO NOTHING",
            )
            .bind(org_id)
            .bind(org_id)
            .execute(&store.pool)
            .await?
            .rows_affected(),
        };
        Ok(created == 1)
    }

    /// Creates the user in `org_id` if it does not exist. A user that exists
    /// in another organization is an error.
    pub async fn ensure_user(&self, user_id: &str, org_id: &str) -> Result<bool, StoreError> {
        let (created, owner): (u64, Option<String>) = match self {
            Store::Sqlite(store) => {
                let created = sqlx::query(
                    "INSERT INTO users (id, org_id, created_at) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
                )
                .bind(user_id)
                .bind(org_id)
                .bind(Utc::now().timestamp_micros())
                .execute(&store.writer)
                .await?
                .rows_affected();
                let owner = sqlx::query_scalar("SELECT org_id FROM users WHERE id = ?")
                    .bind(user_id)
                    .fetch_optional(&store.writer)
                    .await?;
                (created, owner)
            }
            Store::Postgres(store) => {
                let created = sqlx::query(
                    "INSERT INTO users (id, org_id, created_at) VALUES ($1, $2, now()) ON CONFLICT (id) DO NOTHING",
                )
                .bind(user_id)
                .bind(org_id)
                .execute(&store.pool)
                .await?
                .rows_affected();
                let owner = sqlx::query_scalar("SELECT org_id FROM users WHERE id = $1")
                    .bind(user_id)
                    .fetch_optional(&store.pool)
                    .await?;
                (created, owner)
            }
        };
        match owner {
            Some(owner) if owner != org_id => Err(StoreError::Conflict(format!(
                "user `{user_id}` belongs to organization `{owner}`"
            ))),
            _ => Ok(created == 1),
        }
    }

    pub async fn insert_key(&self, scope: &Scope, record: KeyRecord<'_>) -> Result<(), StoreError> {
        let key = record.key;
        if !(scope.may_manage(&key.org_id) || scope.covers(&key.org_id, key.user_id.as_deref())) {
            return Err(StoreError::OutOfScope);
        }
        match self {
            Store::Sqlite(store) => {
                sqlx::query(
                    "INSERT INTO api_keys (id, org_id, user_id, name, role, key_prefix, key_hash, created_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(key.id.to_string())
                .bind(&key.org_id)
                .bind(&key.user_id)
                .bind(&key.name)
                .bind(key.role.as_str())
                .bind(&key.key_prefix)
                .bind(record.hash.as_str())
                .bind(key.created_at.timestamp_micros())
                .execute(&store.writer)
                .await?;
            }
            Store::Postgres(store) => {
                let mut transaction = store.scoped(scope).await?;
                sqlx::query(
                    "INSERT INTO api_keys (id, org_id, user_id, name, role, key_prefix, key_hash, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(key.id)
                .bind(&key.org_id)
                .bind(&key.user_id)
                .bind(&key.name)
                .bind(key.role.as_str())
                .bind(&key.key_prefix)
                .bind(record.hash.as_str())
                .bind(key.created_at)
                .execute(&mut *transaction)
                .await?;
                transaction.commit().await?;
            }
        }
        Ok(())
    }

    /// The key with this hash, revoked or not.
    /// Its role is capped at its user's current role, so demoting a user
    /// demotes their keys.
    pub async fn key_by_hash(&self, hash: &KeyHash) -> Result<Option<ApiKey>, StoreError> {
        let Some(mut key) = self.stored_key_by_hash(hash).await? else {
            return Ok(None);
        };
        if let Some(user_id) = &key.user_id {
            let user_role: Option<String> = match self {
                Store::Sqlite(store) => {
                    sqlx::query_scalar("SELECT role FROM users WHERE id = ? AND org_id = ?")
                        .bind(user_id)
                        .bind(&key.org_id)
                        .fetch_optional(&store.reader)
                        .await?
                }
                Store::Postgres(store) => {
                    sqlx::query_scalar("SELECT role FROM users WHERE id = $1 AND org_id = $2")
                        .bind(user_id)
                        .bind(&key.org_id)
                        .fetch_optional(&store.pool)
                        .await?
                }
            };
            // A key whose user is gone keeps nothing above member.
            let user_role = match user_role {
                Some(role) => role
                    .parse::<Role>()
                    .map_err(|error| StoreError::Corrupt(error.to_string()))?,
                None => Role::Member,
            };
            if !user_role.includes(key.role) {
                key.role = user_role;
            }
        }
        Ok(Some(key))
    }

    async fn stored_key_by_hash(&self, hash: &KeyHash) -> Result<Option<ApiKey>, StoreError> {
        match self {
            Store::Sqlite(store) => {
                let row: Option<SqliteKeyRow> = sqlx::query_as(
                    "SELECT id, org_id, user_id, name, role, key_prefix, created_at, last_used_at, revoked_at \
                     FROM api_keys WHERE key_hash = ?",
                )
                .bind(hash.as_str())
                .fetch_optional(&store.reader)
                .await?;
                row.map(SqliteKeyRow::into_key).transpose()
            }
            Store::Postgres(store) => {
                let row: Option<PostgresKeyRow> = sqlx::query_as(
                    "SELECT id, org_id, user_id, name, role, key_prefix, created_at, last_used_at, revoked_at \
                     FROM api_keys WHERE key_hash = $1",
                )
                .bind(hash.as_str())
                .fetch_optional(&store.pool)
                .await?;
                row.map(PostgresKeyRow::into_key).transpose()
            }
        }
    }

    /// Keys in the scope (of one organization among them, if given),
    /// newest first.
    pub async fn list_keys(
        &self,
        scope: &Scope,
        org_id: Option<&str>,
    ) -> Result<Vec<ApiKey>, StoreError> {
        self.select_keys(scope, None, org_id).await
    }

    /// One key in the scope, revoked or not.
    pub async fn key(&self, scope: &Scope, id: Uuid) -> Result<Option<ApiKey>, StoreError> {
        Ok(self.select_keys(scope, Some(id), None).await?.pop())
    }

    async fn select_keys(
        &self,
        scope: &Scope,
        id: Option<Uuid>,
        org_id: Option<&str>,
    ) -> Result<Vec<ApiKey>, StoreError> {
        fn build<DB>(scope: &Scope, id: Option<String>, org_id: Option<&str>) -> QueryBuilder<DB>
        where
            DB: sqlx::Database,
            for<'value> String: sqlx::Encode<'value, DB> + sqlx::Type<DB>,
        {
            let mut query = QueryBuilder::<DB>::new(
                "SELECT id, org_id, user_id, name, role, key_prefix, created_at, last_used_at, revoked_at \
                 FROM api_keys WHERE 1 = 1",
            );
            if let Some(id) = id {
                query.push(" AND CAST(id AS TEXT) = ").push_bind(id);
            }
            if let Some(org_id) = org_id {
                query.push(" AND org_id = ").push_bind(org_id.to_owned());
            }
            scope::push(&mut query, scope, scope::KEYS);
            query.push(" ORDER BY created_at DESC, id");
            query
        }
        let id = id.map(|id| id.to_string());
        match self {
            Store::Sqlite(store) => {
                let rows: Vec<SqliteKeyRow> = build::<Sqlite>(scope, id, org_id)
                    .build_query_as()
                    .fetch_all(&store.reader)
                    .await?;
                rows.into_iter().map(SqliteKeyRow::into_key).collect()
            }
            Store::Postgres(store) => {
                let mut transaction = store.scoped(scope).await?;
                let rows: Vec<PostgresKeyRow> = build::<Postgres>(scope, id, org_id)
                    .build_query_as()
                    .fetch_all(&mut *transaction)
                    .await?;
                transaction.commit().await?;
                rows.into_iter().map(PostgresKeyRow::into_key).collect()
            }
        }
    }

    /// Revokes a key by id if the scope may: its owner, its organization's
    /// administrators, administrators. Says whether a live key was revoked.
    pub async fn revoke_key(&self, scope: &Scope, id: Uuid) -> Result<bool, StoreError> {
        let Some(key) = self.key(scope, id).await? else {
            return Ok(false);
        };
        if !(scope.may_manage(&key.org_id) || scope.covers(&key.org_id, key.user_id.as_deref())) {
            return Err(StoreError::OutOfScope);
        }
        let revoked = match self {
            Store::Sqlite(store) => sqlx::query(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            )
            .bind(Utc::now().timestamp_micros())
            .bind(id.to_string())
            .execute(&store.writer)
            .await?
            .rows_affected(),
            Store::Postgres(store) => {
                let mut transaction = store.scoped(scope).await?;
                let value = sqlx::query(
                    "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
                )
                .bind(id)
                .execute(&mut *transaction)
                .await?
                .rows_affected();
                transaction.commit().await?;
                value
            }
        };
        Ok(revoked == 1)
    }
}

#[derive(sqlx::FromRow)]
struct SqliteKeyRow {
    id: String,
    created_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
    #[sqlx(flatten)]
    common: CommonKeyColumns,
}

#[derive(sqlx::FromRow)]
struct PostgresKeyRow {
    id: Uuid,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    #[sqlx(flatten)]
    common: CommonKeyColumns,
}

#[derive(sqlx::FromRow)]
struct CommonKeyColumns {
    org_id: String,
    user_id: Option<String>,
    name: Option<String>,
    role: String,
    key_prefix: String,
}

impl CommonKeyColumns {
    fn into_key(
        self,
        id: Uuid,
        created_at: DateTime<Utc>,
        last_used_at: Option<DateTime<Utc>>,
        revoked_at: Option<DateTime<Utc>>,
    ) -> Result<ApiKey, StoreError> {
        Ok(ApiKey {
            id,
            org_id: self.org_id,
            user_id: self.user_id,
            name: self.name,
            role: self
                .role
                .parse::<Role>()
                .map_err(|error| StoreError::Corrupt(error.to_string()))?,
            key_prefix: self.key_prefix,
            created_at,
            last_used_at,
            revoked_at,
        })
    }
}

/// SQLite's INTEGER microseconds as a time (shared with `tenants` and
/// `audit`).
pub(super) fn micros(value: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(value)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {value}")))
}

impl SqliteKeyRow {
    fn into_key(self) -> Result<ApiKey, StoreError> {
        let id = Uuid::parse_str(&self.id)
            .map_err(|error| StoreError::Corrupt(format!("key id: {error}")))?;
        self.common.into_key(
            id,
            micros(self.created_at)?,
            self.last_used_at.map(micros).transpose()?,
            self.revoked_at.map(micros).transpose()?,
        )
    }
}

impl PostgresKeyRow {
    fn into_key(self) -> Result<ApiKey, StoreError> {
        self.common
            .into_key(self.id, self.created_at, self.last_used_at, self.revoked_at)
    }
}
