//! `tollgate orgs create|list` and `tollgate users create|list|export|delete`:
//! organizations and users, and a person's data for GDPR requests made to
//! whoever runs Tollgate (who holds the database, so sees every user).

use std::io::Write;

use chrono::{SubsecRound, Utc};
use clap::Subcommand;
use futures_util::StreamExt;

use super::CliError;
use crate::keys::Role;
use crate::store::{Scope, Store};
use crate::tenancy::{Org, User, check_name};

#[derive(Debug, Subcommand)]
pub enum OrgsCommand {
    /// Make an organization.
    Create {
        id: String,
        /// A display name (the id if not given).
        #[arg(long)]
        name: Option<String>,
    },
    /// List organizations.
    List,
}

pub async fn run_orgs(
    store: &Store,
    command: OrgsCommand,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        OrgsCommand::Create { id, name } => {
            check("id", &id)?;
            if let Some(name) = &name {
                check("--name", name)?;
            }
            let org = Org {
                name: name.unwrap_or_else(|| id.clone()),
                id,
                created_at: Utc::now().trunc_subsecs(6),
            };
            store.insert_org(&Scope::All, &org).await?;
            super::audit(
                store,
                "org.create",
                Some(org.id.clone()),
                Some(org.id.clone()),
            )
            .await;
            writeln!(out, "Created organization `{}`.", org.id)?;
        }
        OrgsCommand::List => {
            writeln!(out, "{:<24}  {:<32}  CREATED", "ID", "NAME")?;
            for org in store.orgs(&Scope::All).await? {
                writeln!(
                    out,
                    "{:<24}  {:<32}  {}",
                    org.id,
                    org.name,
                    org.created_at.format("%Y-%m-%d")
                )?;
            }
        }
    }
    Ok(())
}

fn check(field: &'static str, value: &str) -> Result<(), CliError> {
    check_name(field, value)
        .map_err(|(field, message)| CliError::Invalid(format!("{field}: {message}")))
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Make a user in an organization.
    Create {
        id: String,
        #[arg(long)]
        org: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "member")]
        role: Role,
    },
    /// List users (never deleted ones).
    List {
        #[arg(long)]
        org: Option<String>,
    },
    /// Write everything stored about a user as one JSON document (the same
    /// as `GET /api/v1/users/{id}/export`).
    Export { id: String },
    /// Erase a user: usage records, keys, budgets on them and personal
    /// fields; rollups keep anonymous totals. Cannot be undone.
    Delete {
        id: String,
        /// Confirms the erasure.
        #[arg(long)]
        yes: bool,
    },
}

pub async fn run(
    store: &Store,
    command: UsersCommand,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        UsersCommand::Create {
            id,
            org,
            email,
            name,
            role,
        } => {
            check("id", &id)?;
            for (field, value) in [("--email", &email), ("--name", &name)] {
                if let Some(value) = value {
                    check(field, value)?;
                }
            }
            if !store.org_exists(&org).await? {
                return Err(CliError::Invalid(format!("no organization `{org}`")));
            }
            let user = User {
                id,
                org_id: org,
                email,
                name,
                role,
                created_at: Utc::now().trunc_subsecs(6),
            };
            store.insert_user(&Scope::All, &user).await?;
            super::audit(
                store,
                "user.create",
                Some(user.id.clone()),
                Some(user.org_id.clone()),
            )
            .await;
            writeln!(out, "Created user `{}` in `{}`.", user.id, user.org_id)?;
        }
        UsersCommand::List { org } => {
            writeln!(
                out,
                "{:<24}  {:<16}  {:<9}  {:<28}  NAME",
                "ID", "ORG", "ROLE", "EMAIL"
            )?;
            for user in store.users(&Scope::All, org.as_deref()).await? {
                writeln!(
                    out,
                    "{:<24}  {:<16}  {:<9}  {:<28}  {}",
                    user.id,
                    user.org_id,
                    user.role.as_str(),
                    user.email.as_deref().unwrap_or("-"),
                    user.name.as_deref().unwrap_or("-"),
                )?;
            }
        }
        UsersCommand::Export { id } => {
            let user = store
                .user(&Scope::All, &id)
                .await?
                .ok_or_else(|| CliError::Invalid(format!("no user `{id}`")))?;
            let target = Some(user.id.clone());
            super::audit(store, "user.export", target, Some(user.org_id.clone())).await;
            let mut document =
                Box::pin(crate::http::user_document(store, &Scope::All, &user).await?);
            while let Some(chunk) = document.next().await {
                out.write_all(&chunk?)?;
            }
            writeln!(out)?;
        }
        UsersCommand::Delete { id, yes } => {
            if !yes {
                return Err(CliError::Invalid(format!(
                    "erasing `{id}` cannot be undone; run again with --yes"
                )));
            }
            let erasure = store
                .erase_user(&Scope::All, &id)
                .await?
                .ok_or_else(|| CliError::Invalid(format!("no user `{id}`")))?;
            super::audit(store, "user.delete", Some(erasure.pseudonym.clone()), None).await;
            writeln!(
                out,
                "Erased `{id}`: {} usage records, {} keys, {} budgets; {} audit entries now name {}.",
                erasure.usage_records,
                erasure.keys,
                erasure.budgets,
                erasure.audit_entries,
                erasure.pseudonym
            )?;
        }
    }
    Ok(())
}
