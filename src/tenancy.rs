//! Who is calling and what they may do: roles, the least role each route
//! needs, the scope a caller's queries run in, and the rules for handing out
//! keys and managing users and organizations. Pure.
//!
//! - `admin`: everything, every organization.
//! - `org_admin`: their organization — its usage, budgets, alerts, keys and
//!   users.
//! - `member`: their own usage and keys; their organization's alerts and
//!   budgets, read-only. A member key must belong to a user to use the API.
//!
//! Nobody can raise their own role or move to another organization: a key
//! only makes keys inside its own scope, and fields a caller may not set are
//! refused, never silently ignored.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::keys::{ApiKey, Role};
use crate::store::Scope;

/// The least role a route needs (declared for every route in `http`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Administrators only.
    Admin,
    /// Organization administrators (their organization) and administrators.
    OrgAdmin,
    /// Any caller with a user; what they see is scoped.
    Member,
}

impl Role {
    fn rank(self) -> u8 {
        match self {
            Role::Admin => 3,
            Role::OrgAdmin => 2,
            Role::Member => 1,
        }
    }

    /// Whether this role holds at least `other`'s rights.
    pub fn includes(self, other: Role) -> bool {
        self.rank() >= other.rank()
    }
}

/// Why a caller may not do something; the message is safe to show them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

fn denied(message: impl Into<String>) -> Denied {
    Denied(message.into())
}

/// An authenticated caller of the REST API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    pub org_id: String,
    pub user_id: Option<String>,
    /// The key the caller presented; `None` for the bootstrap admin token.
    pub key_id: Option<Uuid>,
}

impl Caller {
    /// The holder of `TOLLGATE_ADMIN_TOKEN`.
    pub fn bootstrap_admin() -> Caller {
        Caller {
            role: Role::Admin,
            org_id: crate::ingest::DEFAULT_ORG.to_owned(),
            user_id: None,
            key_id: None,
        }
    }

    pub fn from_key(key: &ApiKey) -> Caller {
        Caller {
            role: key.role,
            org_id: key.org_id.clone(),
            user_id: key.user_id.clone(),
            key_id: Some(key.id),
        }
    }

    /// How the audit log names the caller (never a secret).
    pub fn actor(&self) -> String {
        match self.key_id {
            Some(id) => format!("key:{id}"),
            None => "admin-token".to_owned(),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether the caller may call a route that needs `access`.
    pub fn may(&self, access: Access) -> Result<(), Denied> {
        let needed = match access {
            Access::Admin => Role::Admin,
            Access::OrgAdmin => Role::OrgAdmin,
            Access::Member => Role::Member,
        };
        if !self.role.includes(needed) {
            return Err(denied(format!(
                "this needs the {needed} role; the key has {}",
                self.role
            )));
        }
        if self.role == Role::Member && self.user_id.is_none() {
            return Err(denied(
                "this member key belongs to no user: it can call the gateway, \
                 but the API needs a key with a user (or an org_admin key)",
            ));
        }
        Ok(())
    }

    /// The rows the caller's queries may see.
    pub fn scope(&self) -> Scope {
        match (self.role, &self.user_id) {
            (Role::Admin, _) => Scope::All,
            (Role::OrgAdmin, _) => Scope::Org {
                org_id: self.org_id.clone(),
            },
            (Role::Member, Some(user_id)) => Scope::User {
                org_id: self.org_id.clone(),
                user_id: user_id.clone(),
            },
            (Role::Member, None) => Scope::Nobody,
        }
    }

    /// Checks filters a caller asked for (`?org_id=`, `?user_id=`): asking
    /// for another tenant's rows is refused rather than answered empty, so
    /// a mistake is visible.
    pub fn check_filter(&self, org_id: Option<&str>, user_id: Option<&str>) -> Result<(), Denied> {
        if self.is_admin() {
            return Ok(());
        }
        if let Some(org_id) = org_id
            && org_id != self.org_id
        {
            return Err(denied(format!(
                "org_id `{org_id}` is not your organization"
            )));
        }
        if self.role == Role::Member
            && let Some(user_id) = user_id
            && Some(user_id) != self.user_id.as_deref()
        {
            return Err(denied("members can only read their own usage"));
        }
        Ok(())
    }

    /// Checks a new key's organization, user and role: inside the caller's
    /// own scope, never above the caller's role.
    pub fn check_new_key(
        &self,
        org_id: &str,
        user_id: Option<&str>,
        role: Role,
    ) -> Result<(), Denied> {
        if !self.role.includes(role) {
            return Err(denied(format!(
                "a {} key cannot create a {role} key",
                self.role
            )));
        }
        if self.is_admin() {
            return Ok(());
        }
        if org_id != self.org_id {
            return Err(denied(format!(
                "keys can only be created in your organization (`{}`)",
                self.org_id
            )));
        }
        if self.role == Role::Member && user_id != self.user_id.as_deref() {
            return Err(denied("members can only create keys for themselves"));
        }
        Ok(())
    }

    /// Checks a new user's organization and role.
    pub fn check_new_user(&self, org_id: &str, role: Role) -> Result<(), Denied> {
        if !self.role.includes(role) {
            return Err(denied(format!(
                "a {} cannot create a {role} user",
                self.role
            )));
        }
        if !self.is_admin() && org_id != self.org_id {
            return Err(denied(format!(
                "users can only be created in your organization (`{}`)",
                self.org_id
            )));
        }
        Ok(())
    }

    /// Checks that the caller may change, revoke or erase something that
    /// holds `role`: never above their own.
    pub fn check_acts_on(&self, role: Role) -> Result<(), Denied> {
        if self.role.includes(role) {
            Ok(())
        } else {
            Err(denied(format!("a {} cannot change a {role}", self.role)))
        }
    }

    /// Checks a role change on `target`: never one's own, never above the
    /// caller's role, never of someone whose role is above the caller's.
    pub fn check_role_change(&self, target: &User, role: Role) -> Result<(), Denied> {
        if self.user_id.as_deref() == Some(target.id.as_str()) {
            return Err(denied("nobody can change their own role"));
        }
        if !self.role.includes(role) || !self.role.includes(target.role) {
            return Err(denied(format!(
                "a {} cannot give or take the {} role",
                self.role,
                if self.role.includes(role) {
                    target.role
                } else {
                    role
                }
            )));
        }
        Ok(())
    }
}

/// An organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Org {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// A person (or service) whose usage is tracked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: String,
    pub org_id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

/// Checks an id or name given for an organization or user: present, at most
/// 256 bytes, no control characters.
pub fn check_name(field: &'static str, value: &str) -> Result<(), (&'static str, String)> {
    if value.trim().is_empty() {
        return Err((field, "must not be empty".to_owned()));
    }
    if value.len() > 256 {
        return Err((field, "must be at most 256 bytes".to_owned()));
    }
    if value.chars().any(char::is_control) {
        return Err((field, "must not contain control characters".to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, org: &str, user: Option<&str>) -> Caller {
        Caller {
            role,
            org_id: org.into(),
            user_id: user.map(str::to_owned),
            key_id: Some(Uuid::nil()),
        }
    }

    fn user(id: &str, role: Role) -> User {
        User {
            id: id.into(),
            org_id: "acme".into(),
            email: None,
            name: None,
            role,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn routes_need_their_least_role() {
        let admin = caller(Role::Admin, "acme", None);
        let org_admin = caller(Role::OrgAdmin, "acme", None);
        let member = caller(Role::Member, "acme", Some("ann"));
        let keyless_member = caller(Role::Member, "acme", None);
        for access in [Access::Admin, Access::OrgAdmin, Access::Member] {
            assert!(admin.may(access).is_ok());
        }
        assert!(org_admin.may(Access::Admin).is_err());
        assert!(org_admin.may(Access::OrgAdmin).is_ok());
        assert!(member.may(Access::OrgAdmin).is_err());
        assert!(member.may(Access::Member).is_ok());
        assert!(keyless_member.may(Access::Member).is_err());
        assert_eq!(keyless_member.scope(), Scope::Nobody);
    }

    #[test]
    fn keys_are_made_only_inside_the_callers_scope() {
        let org_admin = caller(Role::OrgAdmin, "acme", None);
        let member = caller(Role::Member, "acme", Some("ann"));
        assert!(org_admin.check_new_key("acme", None, Role::Member).is_ok());
        assert!(
            org_admin
                .check_new_key("acme", None, Role::OrgAdmin)
                .is_ok()
        );
        assert!(org_admin.check_new_key("acme", None, Role::Admin).is_err());
        assert!(
            org_admin
                .check_new_key("other", None, Role::Member)
                .is_err()
        );
        assert!(
            member
                .check_new_key("acme", Some("ann"), Role::Member)
                .is_ok()
        );
        assert!(
            member
                .check_new_key("acme", Some("bob"), Role::Member)
                .is_err()
        );
        assert!(member.check_new_key("acme", None, Role::Member).is_err());
        assert!(
            member
                .check_new_key("acme", Some("ann"), Role::OrgAdmin)
                .is_err()
        );
    }

    #[test]
    fn filters_outside_the_scope_are_refused() {
        let org_admin = caller(Role::OrgAdmin, "acme", None);
        let member = caller(Role::Member, "acme", Some("ann"));
        assert!(org_admin.check_filter(Some("acme"), Some("bob")).is_ok());
        assert!(org_admin.check_filter(Some("other"), None).is_err());
        assert!(member.check_filter(None, Some("ann")).is_ok());
        assert!(member.check_filter(None, Some("bob")).is_err());
        assert!(member.check_filter(Some("other"), Some("ann")).is_err());
    }

    #[test]
    fn nobody_raises_their_own_role() {
        let org_admin = caller(Role::OrgAdmin, "acme", Some("olga"));
        assert!(
            org_admin
                .check_role_change(&user("olga", Role::OrgAdmin), Role::Admin)
                .is_err()
        );
        assert!(
            org_admin
                .check_role_change(&user("olga", Role::OrgAdmin), Role::Member)
                .is_err()
        );
        assert!(
            org_admin
                .check_role_change(&user("ann", Role::Member), Role::OrgAdmin)
                .is_ok()
        );
        assert!(
            org_admin
                .check_role_change(&user("ann", Role::Member), Role::Admin)
                .is_err()
        );
        assert!(
            org_admin
                .check_role_change(&user("root", Role::Admin), Role::Member)
                .is_err()
        );
        assert!(org_admin.check_new_user("acme", Role::Admin).is_err());
        assert!(org_admin.check_new_user("other", Role::Member).is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("id", "acme").is_ok());
        assert!(check_name("id", " ").is_err());
        assert!(check_name("id", "a\u{0}b").is_err());
        assert!(check_name("id", &"x".repeat(257)).is_err());
    }
}
