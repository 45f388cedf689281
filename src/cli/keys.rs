//! `tollgate keys create|list|revoke`.

use std::io::Write;

use chrono::Utc;
use clap::Subcommand;
use uuid::Uuid;

use super::CliError;
use crate::config::Secret;
use crate::keys::{self, ApiKey, Role};
use crate::store::{KeyRecord, Scope, Store};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a gateway key; it is printed once and stored only as a hash.
    Create {
        /// The organization the key belongs to (created if new).
        #[arg(long)]
        org: String,
        /// The user the key belongs to (created in the org if new).
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value = "member")]
        role: Role,
        /// A name to recognise the key by.
        #[arg(long)]
        name: Option<String>,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        org: Option<String>,
    },
    /// Revoke a key by id; it stops working within the key cache's TTL.
    Revoke { id: Uuid },
}

/// Stores a new key for `org` (and `user`, both existing) and returns it with
/// its secret, which is shown nowhere else.
pub async fn create(
    store: &Store,
    org: &str,
    user: Option<&str>,
    role: Role,
    name: Option<String>,
) -> Result<(ApiKey, Secret), CliError> {
    let new_key = keys::generate().map_err(|error| CliError::Invalid(error.to_string()))?;
    let key = ApiKey {
        id: Uuid::now_v7(),
        org_id: org.to_owned(),
        user_id: user.map(str::to_owned),
        name,
        role,
        key_prefix: new_key.key_prefix.clone(),
        created_at: Utc::now(),
        last_used_at: None,
        revoked_at: None,
    };
    store
        .insert_key(
            &Scope::All,
            KeyRecord {
                key: &key,
                hash: &new_key.hash,
            },
        )
        .await?;
    Ok((key, new_key.secret))
}

impl clap::ValueEnum for Role {
    fn value_variants<'a>() -> &'a [Self] {
        Role::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

pub async fn run(store: &Store, command: KeysCommand, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        KeysCommand::Create {
            org,
            user,
            role,
            name,
        } => {
            let org = org.trim().to_owned();
            if org.is_empty() {
                return Err(CliError::Invalid("--org must not be empty".to_owned()));
            }
            store.ensure_org(&org).await?;
            if let Some(user) = &user {
                store.ensure_user(user, &org).await?;
            }
            let (key, secret) = create(store, &org, user.as_deref(), role, name).await?;
            let target = Some(key.id.to_string());
            super::audit(store, "key.create", target, Some(key.org_id.clone())).await;
            // The secret goes to standard output alone, so scripts can
            // capture it; everything else goes to standard error.
            writeln!(out, "{}", secret.expose())?;
            tracing::info!(id = %key.id, org = %key.org_id, "created a gateway key; it will not be shown again");
        }
        KeysCommand::List { org } => {
            writeln!(
                out,
                "{:<36}  {:<12}  {:<16}  {:<16}  {:<9}  {:<20}  STATUS",
                "ID", "PREFIX", "ORG", "USER", "ROLE", "NAME"
            )?;
            for key in store.list_keys(&Scope::All, org.as_deref()).await? {
                let status = match key.revoked_at {
                    Some(at) => format!("revoked {}", at.format("%Y-%m-%d")),
                    None => "active".to_owned(),
                };
                writeln!(
                    out,
                    "{:<36}  {:<12}  {:<16}  {:<16}  {:<9}  {:<20}  {status}",
                    key.id,
                    key.key_prefix,
                    key.org_id,
                    key.user_id.as_deref().unwrap_or("-"),
                    key.role.as_str(),
                    key.name.as_deref().unwrap_or("-"),
                )?;
            }
        }
        KeysCommand::Revoke { id } => {
            if store.revoke_key(&Scope::All, id).await? {
                super::audit(store, "key.revoke", Some(id.to_string()), None).await;
                writeln!(out, "Revoked key {id}.")?;
            } else {
                return Err(CliError::Invalid(format!("no active key with id {id}")));
            }
        }
    }
    Ok(())
}
