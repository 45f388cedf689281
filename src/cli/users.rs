//! `tollgate users export|delete`: a person's data, for GDPR requests made
//! to whoever runs Tollgate (who holds the database, so sees every user).

use std::io::Write;

use clap::Subcommand;
use futures_util::StreamExt;

use super::CliError;
use crate::store::{Scope, Store};

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
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
