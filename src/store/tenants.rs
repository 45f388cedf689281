//! Organizations and users as the API manages them, scoped to the caller.

use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder, Sqlite};

use super::keys::micros;
use super::scope::{self, Scope};
use super::{Store, StoreError};
use crate::keys::Role;
use crate::tenancy::{Org, User};

impl Store {
    /// Organizations in the scope, by id.
    pub async fn orgs(&self, scope: &Scope) -> Result<Vec<Org>, StoreError> {
        fn build<DB>(scope: &Scope) -> QueryBuilder<DB>
        where
            DB: sqlx::Database,
            for<'value> String: sqlx::Encode<'value, DB> + sqlx::Type<DB>,
        {
            let mut query = QueryBuilder::<DB>::new(
                "SELECT id, name, created_at FROM organizations WHERE 1 = 1",
            );
            scope::push(&mut query, scope, scope::ORGS);
            query.push(" ORDER BY id");
            query
        }
        match self {
            Store::Sqlite(store) => {
                let rows: Vec<(String, String, i64)> = build::<Sqlite>(scope)
                    .build_query_as()
                    .fetch_all(&store.reader)
                    .await?;
                rows.into_iter()
                    .map(|(id, name, created_at)| {
                        Ok(Org {
                            id,
                            name,
                            created_at: micros(created_at)?,
                        })
                    })
                    .collect()
            }
            Store::Postgres(store) => {
                let mut transaction = store.scoped(scope).await?;
                let rows: Vec<(String, String, DateTime<Utc>)> = build::<Postgres>(scope)
                    .build_query_as()
                    .fetch_all(&mut *transaction)
                    .await?;
                transaction.commit().await?;
                Ok(rows
                    .into_iter()
                    .map(|(id, name, created_at)| Org {
                        id,
                        name,
                        created_at,
                    })
                    .collect())
            }
        }
    }

    /// Creates an organization (administrators only); an existing id is a
    /// conflict.
    pub async fn insert_org(&self, scope: &Scope, org: &Org) -> Result<(), StoreError> {
        if *scope != Scope::All {
            return Err(StoreError::OutOfScope);
        }
        let created = match self {
            Store::Sqlite(store) => sqlx::query(
                "INSERT INTO organizations (id, name, created_at) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&org.id)
            .bind(&org.name)
            .bind(org.created_at.timestamp_micros())
            .execute(&store.writer)
            .await?
            .rows_affected(),
            Store::Postgres(store) => {
                let mut transaction = store.scoped(scope).await?;
                let value = sqlx::query(
                "INSERT INTO organizations (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&org.id)
            .bind(&org.name)
            .bind(org.created_at)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
                transaction.commit().await?;
                value
            }
        };
        if created == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "organization `{}` already exists",
                org.id
            )))
        }
    }

    /// Users in the scope (of one organization among them, if given), by id.
    pub async fn users(
        &self,
        scope: &Scope,
        org_id: Option<&str>,
    ) -> Result<Vec<User>, StoreError> {
        self.select_users(scope, None, org_id).await
    }

    /// One user in the scope.
    pub async fn user(&self, scope: &Scope, id: &str) -> Result<Option<User>, StoreError> {
        Ok(self.select_users(scope, Some(id), None).await?.pop())
    }

    async fn select_users(
        &self,
        scope: &Scope,
        id: Option<&str>,
        org_id: Option<&str>,
    ) -> Result<Vec<User>, StoreError> {
        fn build<DB>(scope: &Scope, id: Option<&str>, org_id: Option<&str>) -> QueryBuilder<DB>
        where
            DB: sqlx::Database,
            for<'value> String: sqlx::Encode<'value, DB> + sqlx::Type<DB>,
        {
            let mut query = QueryBuilder::<DB>::new(
                "SELECT id, org_id, email, name, role, created_at FROM users WHERE deleted_at IS NULL",
            );
            if let Some(id) = id {
                query.push(" AND id = ").push_bind(id.to_owned());
            }
            if let Some(org_id) = org_id {
                query.push(" AND org_id = ").push_bind(org_id.to_owned());
            }
            scope::push(&mut query, scope, scope::USERS);
            query.push(" ORDER BY id");
            query
        }
        match self {
            Store::Sqlite(store) => {
                let rows: Vec<UserRow<i64>> = build::<Sqlite>(scope, id, org_id)
                    .build_query_as()
                    .fetch_all(&store.reader)
                    .await?;
                rows.into_iter()
                    .map(|row| {
                        let created_at = micros(row.created_at)?;
                        row.into_user(created_at)
                    })
                    .collect()
            }
            Store::Postgres(store) => {
                let mut transaction = store.scoped(scope).await?;
                let rows: Vec<UserRow<DateTime<Utc>>> = build::<Postgres>(scope, id, org_id)
                    .build_query_as()
                    .fetch_all(&mut *transaction)
                    .await?;
                transaction.commit().await?;
                rows.into_iter()
                    .map(|row| {
                        let created_at = row.created_at;
                        row.into_user(created_at)
                    })
                    .collect()
            }
        }
    }

    /// Creates a user in an organization the scope manages; an existing id
    /// (in any organization) is a conflict.
    pub async fn insert_user(&self, scope: &Scope, user: &User) -> Result<(), StoreError> {
        if !scope.may_manage(&user.org_id) {
            return Err(StoreError::OutOfScope);
        }
        let created = match self {
            Store::Sqlite(store) => sqlx::query(
                "INSERT INTO users (id, org_id, email, name, role, created_at) VALUES (?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(&user.id)
            .bind(&user.org_id)
            .bind(&user.email)
            .bind(&user.name)
            .bind(user.role.as_str())
            .bind(user.created_at.timestamp_micros())
            .execute(&store.writer)
            .await?
            .rows_affected(),
            Store::Postgres(store) => {
                let mut transaction = store.scoped(scope).await?;
                let value = sqlx::query(
                "INSERT INTO users (id, org_id, email, name, role, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(&user.id)
            .bind(&user.org_id)
            .bind(&user.email)
            .bind(&user.name)
            .bind(user.role.as_str())
            .bind(user.created_at)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
                transaction.commit().await?;
                value
            }
        };
        if created == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "user `{}` already exists",
                user.id
            )))
        }
    }

    /// Saves a user's email, name and role (never their id or organization);
    /// false when the scope has no such user.
    pub async fn update_user(&self, scope: &Scope, user: &User) -> Result<bool, StoreError> {
        match self.user(scope, &user.id).await? {
            None => return Ok(false),
            Some(stored) if stored.org_id != user.org_id => return Err(StoreError::OutOfScope),
            Some(_) => {}
        }
        let updated = match self {
            Store::Sqlite(store) => sqlx::query(
                "UPDATE users SET email = ?, name = ?, role = ? WHERE id = ? AND deleted_at IS NULL",
            )
            .bind(&user.email)
            .bind(&user.name)
            .bind(user.role.as_str())
            .bind(&user.id)
            .execute(&store.writer)
            .await?
            .rows_affected(),
            Store::Postgres(store) => {
                let mut transaction = store.scoped(scope).await?;
                let value = sqlx::query(
                "UPDATE users SET email = $1, name = $2, role = $3 WHERE id = $4 AND deleted_at IS NULL",
            )
            .bind(&user.email)
            .bind(&user.name)
            .bind(user.role.as_str())
            .bind(&user.id)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
                transaction.commit().await?;
                value
            }
        };
        Ok(updated == 1)
    }
}

#[derive(sqlx::FromRow)]
struct UserRow<T> {
    id: String,
    org_id: String,
    email: Option<String>,
    name: Option<String>,
    role: String,
    created_at: T,
}

impl<T> UserRow<T> {
    fn into_user(self, created_at: DateTime<Utc>) -> Result<User, StoreError> {
        Ok(User {
            id: self.id,
            org_id: self.org_id,
            email: self.email,
            name: self.name,
            role: self
                .role
                .parse::<Role>()
                .map_err(|error| StoreError::Corrupt(error.to_string()))?,
            created_at,
        })
    }
}

/// What erasing a user removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erasure {
    /// The anonymous id that now stands for the user in rollups and the
    /// audit log.
    pub pseudonym: String,
    pub usage_records: u64,
    pub keys: u64,
    pub budgets: u64,
    pub audit_entries: u64,
}

/// Statements that erase a user (`$1`) in one transaction, in order;
/// rollups and spend buckets keep their totals under the pseudonym (`$2`).
/// Budgets on the user or on their keys go (their leases and events
/// cascade), then the keys, then the user.
/// Every statement is confined to the user's organization (`$3`): ingested
/// records name users freely, so another organization may have a user of
/// the same name.
const ERASE_RECORDS: &str = "DELETE FROM ai_provider_usage WHERE user_id = $1 AND org_id = $3";
const ANONYMIZE: [&str; 4] = [
    "UPDATE ai_usage_daily SET user_id = $2 WHERE user_id = $1 AND org_id = $3",
    "UPDATE ai_usage_hourly SET user_id = $2 WHERE user_id = $1 AND org_id = $3",
    "UPDATE ai_usage_daily_tags SET user_id = $2 WHERE user_id = $1 AND org_id = $3",
    "UPDATE ai_budget_spend SET user_id = $2 WHERE user_id = $1 AND org_id = $3",
];
const ERASE_BUDGETS: &str = "DELETE FROM ai_usage_budgets WHERE org_id = $3 AND (user_id = $1 \
     OR api_key_id IN (SELECT id FROM api_keys WHERE user_id = $1 AND org_id = $3))";
const ERASE_KEYS: &str = "DELETE FROM api_keys WHERE user_id = $1 AND org_id = $3";
const ERASE_USER: &str = "DELETE FROM users WHERE id = $1 AND org_id = $3";
/// SQLite; PostgreSQL calls `tollgate_erase_audit_subject` (migration
/// 0008). Only the entries about the user (`user.*` actions in their
/// organization) are rewritten.
const ERASE_AUDIT_SQLITE: &str = "UPDATE audit_log SET target = $2 \
     WHERE target = $1 AND org_id = $3 AND action LIKE 'user.%'";

impl Store {
    /// Erases a user the scope manages: their usage records and keys, the
    /// budgets on them, their personal fields; rollups keep anonymous
    /// totals, the audit log a pseudonym. `None` when the scope has no such
    /// user.
    pub async fn erase_user(&self, scope: &Scope, id: &str) -> Result<Option<Erasure>, StoreError> {
        let Some(user) = self.user(scope, id).await? else {
            return Ok(None);
        };
        if !scope.may_manage(&user.org_id) {
            return Err(StoreError::OutOfScope);
        }
        let pseudonym = format!("erased-{}", uuid::Uuid::now_v7().simple());
        // The same statements on either backend's transaction; only the
        // audit step differs. Counts: (records, budgets, keys).
        macro_rules! erase_in {
            ($transaction:expr) => {{
                let run = |statement: &'static str| {
                    sqlx::query(statement)
                        .bind(id)
                        .bind(pseudonym.clone())
                        .bind(user.org_id.clone())
                };
                let records = run(ERASE_RECORDS).execute(&mut *$transaction).await?;
                for statement in ANONYMIZE {
                    run(statement).execute(&mut *$transaction).await?;
                }
                let budgets = run(ERASE_BUDGETS).execute(&mut *$transaction).await?;
                let keys = run(ERASE_KEYS).execute(&mut *$transaction).await?;
                run(ERASE_USER).execute(&mut *$transaction).await?;
                (
                    records.rows_affected(),
                    budgets.rows_affected(),
                    keys.rows_affected(),
                )
            }};
        }
        let (usage_records, budgets, keys, audit_entries) = match self {
            Store::Sqlite(store) => {
                let mut transaction = store.writer.begin().await?;
                let (records, budgets, keys) = erase_in!(transaction);
                let audit = sqlx::query(ERASE_AUDIT_SQLITE)
                    .bind(id)
                    .bind(&pseudonym)
                    .bind(&user.org_id)
                    .execute(&mut *transaction)
                    .await?;
                transaction.commit().await?;
                (records, budgets, keys, audit.rows_affected())
            }
            Store::Postgres(store) => {
                // The server's own transaction: the caller's right to erase
                // was checked above, and the audit log changes only through
                // the owner's function.
                let mut transaction = store.pool.begin().await?;
                let (records, budgets, keys) = erase_in!(transaction);
                let audit: i64 =
                    sqlx::query_scalar("SELECT tollgate_erase_audit_subject($1, $2, $3)")
                        .bind(id)
                        .bind(&pseudonym)
                        .bind(&user.org_id)
                        .fetch_one(&mut *transaction)
                        .await?;
                transaction.commit().await?;
                (records, budgets, keys, u64::try_from(audit).unwrap_or(0))
            }
        };
        let erasure = Erasure {
            pseudonym,
            usage_records,
            keys,
            budgets,
            audit_entries,
        };
        Ok(Some(erasure))
    }
}
