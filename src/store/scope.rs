//! Whose rows a query may touch. Every read or change made for a caller
//! carries a [`Scope`], and the store adds its conditions to the SQL here,
//! in one place, on both backends. PostgreSQL enforces the same rules again
//! with row-level security (migration 0007).

use sqlx::QueryBuilder;

/// The rows a query may see or change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Scope {
    /// No caller context: nothing at all. The default, so a query that was
    /// never given a caller returns nothing rather than everything.
    #[default]
    Nobody,
    /// Every row: administrators, and Tollgate's own background work.
    All,
    /// One organization's rows.
    Org { org_id: String },
    /// One user's rows, plus the organization-wide rows members may read
    /// (alerts, budgets that are not another user's).
    User { org_id: String, user_id: String },
}

impl Scope {
    /// The organization the scope is confined to, if any.
    pub fn org_id(&self) -> Option<&str> {
        match self {
            Scope::Org { org_id } | Scope::User { org_id, .. } => Some(org_id),
            Scope::Nobody | Scope::All => None,
        }
    }

    /// The user the scope is confined to, if any.
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Scope::User { user_id, .. } => Some(user_id),
            _ => None,
        }
    }

    /// Whether a row of this organization and user is inside the scope, for
    /// checks made in Rust before a write (the SQL is scoped as well).
    pub fn covers(&self, org_id: &str, user_id: Option<&str>) -> bool {
        match self {
            Scope::Nobody => false,
            Scope::All => true,
            Scope::Org { org_id: own } => own == org_id,
            Scope::User {
                org_id: own,
                user_id: own_user,
            } => own == org_id && user_id == Some(own_user.as_str()),
        }
    }

    /// Whether the scope may create, change or delete an organization's
    /// settings (budgets, keys of others, users): administrators anywhere,
    /// organization administrators in their own; members never.
    pub fn may_manage(&self, org_id: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Org { org_id: own } => own == org_id,
            Scope::Nobody | Scope::User { .. } => false,
        }
    }

    /// The values PostgreSQL's policies read: `tollgate.role`,
    /// `tollgate.org`, `tollgate.user` ('' where the scope has none).
    pub(super) fn settings(&self) -> (&'static str, &str, &str) {
        match self {
            Scope::Nobody => ("", "", ""),
            Scope::All => ("admin", "", ""),
            Scope::Org { org_id } => ("org_admin", org_id, ""),
            Scope::User { org_id, user_id } => ("member", org_id, user_id),
        }
    }
}

/// How a table's rows belong to tenants.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tenancy {
    /// The column naming the row's organization.
    pub org: &'static str,
    /// The column naming the row's user; `None` when rows are per
    /// organization only.
    pub user: Option<&'static str>,
    /// Whether members read the organization's rows that belong to no user
    /// (alerts, org-wide budgets), or only their own.
    pub members_see_org_rows: bool,
    /// A key column that also makes a row someone's own (budgets on a key).
    pub key: Option<&'static str>,
}

/// The ledger and its per-user rollups: members see their own rows.
pub(super) const USAGE: Tenancy = Tenancy {
    org: "org_id",
    user: Some("user_id"),
    members_see_org_rows: false,
    key: None,
};

/// Per-organization rollups with no user dimension: members see none.
pub(super) const ORG_ROLLUP: Tenancy = Tenancy {
    org: "org_id",
    user: None,
    members_see_org_rows: false,
    key: None,
};

/// Alerts: members read their organization's.
pub(super) const ALERTS: Tenancy = Tenancy {
    org: "org_id",
    user: None,
    members_see_org_rows: true,
    key: None,
};

/// Budgets: members read their organization's and their own, not another
/// user's.
pub(super) const BUDGETS: Tenancy = Tenancy {
    org: "org_id",
    user: Some("user_id"),
    members_see_org_rows: true,
    key: Some("api_key_id"),
};

/// Gateway keys: members see their own.
pub(super) const KEYS: Tenancy = USAGE;

/// Users: members see themselves.
pub(super) const USERS: Tenancy = Tenancy {
    org: "org_id",
    user: Some("id"),
    members_see_org_rows: false,
    key: None,
};

/// Organizations: everyone sees their own.
pub(super) const ORGS: Tenancy = Tenancy {
    org: "id",
    user: None,
    members_see_org_rows: true,
    key: None,
};

/// Appends ` AND …` conditions confining a query to the scope. Column names
/// come from the constants above, never from input; values are bound.
pub(super) fn push<DB>(query: &mut QueryBuilder<DB>, scope: &Scope, tenancy: Tenancy)
where
    DB: sqlx::Database,
    for<'value> String: sqlx::Encode<'value, DB> + sqlx::Type<DB>,
{
    match scope {
        Scope::Nobody => {
            query.push(" AND 1 = 0");
        }
        Scope::All => {}
        Scope::Org { org_id } => {
            query
                .push(format_args!(" AND {} = ", tenancy.org))
                .push_bind(org_id.clone());
        }
        Scope::User { org_id, user_id } => {
            query
                .push(format_args!(" AND {} = ", tenancy.org))
                .push_bind(org_id.clone());
            match (tenancy.user, tenancy.members_see_org_rows) {
                (Some(column), true) => {
                    // Organization-wide rows are those on no user (and,
                    // for budgets, on no key: a key's spend is its user's).
                    let key = tenancy
                        .key
                        .map(|key| format!(" AND {key} IS NULL"))
                        .unwrap_or_default();
                    query
                        .push(format_args!(" AND (({column} IS NULL{key}) OR {column} = "))
                        .push_bind(user_id.clone())
                        .push(")");
                }
                (Some(column), false) => {
                    query
                        .push(format_args!(" AND {column} = "))
                        .push_bind(user_id.clone());
                }
                (None, true) => {}
                (None, false) => {
                    query.push(" AND 1 = 0");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(scope: &Scope, tenancy: Tenancy) -> String {
        let mut query = QueryBuilder::<sqlx::Sqlite>::new("SELECT 1 FROM t WHERE TRUE");
        push(&mut query, scope, tenancy);
        query.sql().as_str().to_owned()
    }

    #[test]
    fn scopes_become_bound_conditions() {
        let org = Scope::Org {
            org_id: "acme".into(),
        };
        let user = Scope::User {
            org_id: "acme".into(),
            user_id: "ann".into(),
        };
        assert!(sql(&Scope::Nobody, USAGE).ends_with("AND 1 = 0"));
        assert!(sql(&Scope::All, USAGE).ends_with("WHERE TRUE"));
        assert!(sql(&org, USAGE).ends_with("AND org_id = ?"));
        assert!(sql(&user, USAGE).ends_with("AND org_id = ? AND user_id = ?"));
        assert!(
            sql(&user, BUDGETS)
                .ends_with("AND ((user_id IS NULL AND api_key_id IS NULL) OR user_id = ?)")
        );
        assert!(sql(&user, ORG_ROLLUP).ends_with("AND 1 = 0"));
        assert!(sql(&user, ALERTS).ends_with("AND org_id = ?"));
        assert!(sql(&user, ORGS).ends_with("AND id = ?"));
    }

    #[test]
    fn covers_only_the_scope() {
        let user = Scope::User {
            org_id: "acme".into(),
            user_id: "ann".into(),
        };
        assert!(user.covers("acme", Some("ann")));
        assert!(!user.covers("acme", Some("bob")));
        assert!(!user.covers("acme", None));
        assert!(!user.covers("other", Some("ann")));
        assert!(!Scope::Nobody.covers("acme", None));
        assert!(Scope::All.covers("anything", None));
    }
}
