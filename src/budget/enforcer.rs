//! Enforcement: every gateway attempt reserves its maximum cost on each hard
//! budget that covers it before anything is sent upstream, settles to the
//! actual cost when its record is made, and lets go once that record is in
//! the ledger.
//!
//! Instances share a budget through leases (see ARCHITECTURE.md, "Budgets
//! across instances"): an instance claims a slice of a budget period in the
//! database and reserves against its slice in memory, so most requests need
//! no database round trip. A claim is granted only while the period's
//! ledger spend plus every live claim stays within the limit, so the total
//! spend can pass the limit only by what requests cost beyond their
//! estimates.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;
use uuid::Uuid;

use super::Budget;
use super::period::Period;
use super::status::{self, BudgetStatus};
use crate::analytics::projection;
use crate::money::NanoUsd;
use crate::store::{LeaseRequest, Store, StoreError};
use crate::usage::{Provider, UsageRecord};

/// How enforcement behaves.
#[derive(Debug, Clone)]
pub struct EnforcerSettings {
    /// How long a claim lives without renewal (a crashed instance's claims
    /// stop counting after this).
    pub lease_ttl: Duration,
    /// How often claims are renewed and unused slices returned, and soft
    /// thresholds checked.
    pub sync_interval: Duration,
    /// How often budget definitions are re-read (changes made through
    /// another instance show up within this).
    pub refresh_interval: Duration,
    /// When budget state cannot be read: refuse requests a hard budget
    /// covers (503) rather than let them through unchecked.
    pub fail_closed: bool,
    /// A slice asks for this fraction (1/n) of what is available.
    pub slice_divisor: i64,
}

impl Default for EnforcerSettings {
    fn default() -> Self {
        EnforcerSettings {
            lease_ttl: Duration::from_secs(30),
            sync_interval: Duration::from_secs(1),
            refresh_interval: Duration::from_secs(5),
            fail_closed: true,
            slice_divisor: 4,
        }
    }
}

/// Why a request may not go ahead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error(
        "budget {budget_id} ({kind}, {limit} USD) has no room for this request (up to {estimate} USD); it resets at {resets_at}"
    )]
    Exceeded {
        budget_id: Uuid,
        kind: super::BudgetType,
        limit: NanoUsd,
        estimate: NanoUsd,
        resets_at: DateTime<Utc>,
    },
    #[error(
        "budget state cannot be read ({0}); requests under a hard budget are refused until it can"
    )]
    Unavailable(String),
}

/// Who is about to spend, and at most how much.
#[derive(Debug, Clone)]
pub struct Charge<'a> {
    pub request_id: Uuid,
    pub org_id: &'a str,
    pub provider: Provider,
    pub user_id: Option<&'a str>,
    pub api_key_id: Option<Uuid>,
    pub estimate: NanoUsd,
}

/// Who spent: what a budget's scope is matched against.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Spender {
    org_id: String,
    provider: Provider,
    user_id: Option<String>,
    api_key_id: Option<Uuid>,
}

/// One budget period's share held by this instance.
#[derive(Debug)]
struct Account {
    period: Period,
    limit: NanoUsd,
    /// Granted to this instance and not yet reserved.
    unused: NanoUsd,
    /// Reserved by requests in flight, and settled amounts whose records
    /// are not yet in the ledger.
    held: NanoUsd,
    /// The claim may be used until then (it expires in the database a
    /// margin later).
    valid_until: Instant,
    last_reserved: Instant,
}

impl Account {
    fn claim(&self) -> NanoUsd {
        NanoUsd::from_nanos(self.unused.nanos().saturating_add(self.held.nanos()))
    }
}

type Accounts = HashMap<Uuid, Arc<Mutex<Option<Account>>>>;

/// What one reservation holds on one budget.
#[derive(Debug, Clone, Copy)]
struct Part {
    budget_id: Uuid,
    period_start: DateTime<Utc>,
    amount: NanoUsd,
}

/// Budget enforcement for this process: a cheap, cloneable handle.
#[derive(Debug, Clone)]
pub struct Budgets {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    settings: EnforcerSettings,
    instance_id: String,
    definitions: RwLock<Definitions>,
    accounts: RwLock<Accounts>,
    /// Settled amounts waiting for their records to reach the ledger.
    awaiting_ledger: RwLock<HashMap<Uuid, Vec<Part>>>,
    /// Who spent since the last threshold check: org, provider, user, key.
    active: RwLock<BTreeSet<Spender>>,
}

#[derive(Debug, Default)]
struct Definitions {
    by_org: HashMap<String, Arc<[Budget]>>,
    loaded_at: Option<Instant>,
}

/// A reservation; settle it with the attempt's actual cost. Dropped
/// unsettled, it releases what it holds.
#[derive(Debug)]
pub struct Hold {
    budgets: Budgets,
    request_id: Uuid,
    parts: Vec<Part>,
    settled: AtomicBool,
}

impl Hold {
    /// Moves the reservation to the actual cost (none for a failed attempt),
    /// held until the record is in the ledger.
    pub fn settle(&self, actual: Option<NanoUsd>) {
        if self.settled.swap(true, Ordering::AcqRel) {
            return;
        }
        self.budgets.settle(
            self.request_id,
            &self.parts,
            actual.unwrap_or(NanoUsd::ZERO),
        );
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.settle(None);
    }
}

fn saturating_sub(left: NanoUsd, right: NanoUsd) -> NanoUsd {
    NanoUsd::from_nanos(left.nanos().saturating_sub(right.nanos()).max(0))
}

fn add(left: NanoUsd, right: NanoUsd) -> NanoUsd {
    NanoUsd::from_nanos(left.nanos().saturating_add(right.nanos()))
}

/// Signed: bookkeeping that arrives out of order may dip below zero for a
/// moment and must not be clipped, or the books would drift.
fn sub(left: NanoUsd, right: NanoUsd) -> NanoUsd {
    NanoUsd::from_nanos(left.nanos().saturating_sub(right.nanos()))
}

impl Budgets {
    pub fn new(store: Store, settings: EnforcerSettings) -> Self {
        let mut id = [0u8; 8];
        let instance_id = match getrandom::fill(&mut id) {
            Ok(()) => id.iter().map(|byte| format!("{byte:02x}")).collect(),
            Err(_) => Uuid::now_v7().simple().to_string(),
        };
        Budgets {
            inner: Arc::new(Inner {
                store,
                settings,
                instance_id,
                definitions: RwLock::new(Definitions::default()),
                accounts: RwLock::new(HashMap::new()),
                awaiting_ledger: RwLock::new(HashMap::new()),
                active: RwLock::new(BTreeSet::new()),
            }),
        }
    }

    pub fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }

    /// Reads every budget definition; on failure the previous ones stay.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let budgets = self
            .inner
            .store
            .budgets(&crate::store::Scope::All, None)
            .await?;
        let mut by_org: HashMap<String, Vec<Budget>> = HashMap::new();
        for budget in budgets {
            by_org
                .entry(budget.org_id.clone())
                .or_default()
                .push(budget);
        }
        let mut definitions = self.write_definitions();
        definitions.by_org = by_org
            .into_iter()
            .map(|(org, budgets)| (org, Arc::from(budgets)))
            .collect();
        definitions.loaded_at = Some(Instant::now());
        Ok(())
    }

    fn write_definitions(&self) -> std::sync::RwLockWriteGuard<'_, Definitions> {
        self.inner
            .definitions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn org_budgets(&self, org_id: &str) -> Option<Arc<[Budget]>> {
        self.inner
            .definitions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .by_org
            .get(org_id)
            .cloned()
    }

    /// Whether definitions were ever read.
    fn loaded(&self) -> bool {
        self.inner
            .definitions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .loaded_at
            .is_some()
    }

    /// Whether a hard budget covers spending by this org, provider, user and
    /// key (as of the last definitions read; true when none were ever read,
    /// so that the reservation finds out).
    pub fn covered(
        &self,
        org_id: &str,
        provider: Provider,
        user_id: Option<&str>,
        api_key_id: Option<Uuid>,
    ) -> bool {
        if !self.loaded() {
            return true;
        }
        self.org_budgets(org_id).is_some_and(|budgets| {
            budgets.iter().any(|budget| {
                budget.hard_limit && budget.scope.covers(provider, user_id, api_key_id)
            })
        })
    }

    /// Reserves `charge.estimate` on every hard budget covering the charge.
    /// `Ok(None)` when none does.
    pub async fn reserve(&self, charge: &Charge<'_>) -> Result<Option<Hold>, BudgetError> {
        if !self.loaded()
            && let Err(error) = self.refresh().await
        {
            return self.unreadable(error);
        }
        let Some(budgets) = self.org_budgets(charge.org_id) else {
            return Ok(None);
        };
        let mut applicable: Vec<&Budget> = budgets
            .iter()
            .filter(|budget| {
                budget.hard_limit
                    && budget
                        .scope
                        .covers(charge.provider, charge.user_id, charge.api_key_id)
            })
            .collect();
        if applicable.is_empty() {
            return Ok(None);
        }
        // One order for every request, so two never wait on each other.
        applicable.sort_by_key(|budget| budget.id);
        let mut hold = Hold {
            budgets: self.clone(),
            request_id: charge.request_id,
            parts: Vec::with_capacity(applicable.len()),
            settled: AtomicBool::new(false),
        };
        let now = Utc::now();
        for budget in applicable {
            match self.reserve_on(budget, charge.estimate, now).await {
                Ok(part) => hold.parts.push(part),
                // Dropping `hold` releases what it took on earlier budgets.
                Err(error) => return Err(error),
            }
        }
        Ok(Some(hold))
    }

    fn unreadable<T>(&self, error: StoreError) -> Result<Option<T>, BudgetError> {
        tracing::warn!(%error, "budget state cannot be read");
        if self.inner.settings.fail_closed {
            Err(BudgetError::Unavailable(error.to_string()))
        } else {
            Ok(None)
        }
    }

    fn account(&self, budget_id: Uuid) -> Arc<Mutex<Option<Account>>> {
        if let Some(account) = self
            .inner
            .accounts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&budget_id)
        {
            return Arc::clone(account);
        }
        Arc::clone(
            self.inner
                .accounts
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(budget_id)
                .or_default(),
        )
    }

    async fn reserve_on(
        &self,
        budget: &Budget,
        estimate: NanoUsd,
        now: DateTime<Utc>,
    ) -> Result<Part, BudgetError> {
        let account = self.account(budget.id);
        let mut slot = account.lock().await;
        let period = status::current_period(budget, now);
        let current = slot.as_ref().is_some_and(|account| {
            account.period == period && account.valid_until > Instant::now()
        });
        if !current {
            // A new period, or a claim that could not be renewed: start from
            // what the database says. Amounts still held for the previous
            // period are settled against it by their records.
            let held = match slot.as_ref() {
                Some(account) if account.period == period => account.held,
                _ => NanoUsd::ZERO,
            };
            *slot = Some(Account {
                period,
                limit: NanoUsd::ZERO,
                unused: NanoUsd::ZERO,
                held,
                valid_until: Instant::now(),
                last_reserved: Instant::now(),
            });
        }
        let Some(account) = slot.as_mut() else {
            return Err(BudgetError::Unavailable("no account".to_owned()));
        };
        if !current || account.unused < estimate {
            self.extend(budget, account, estimate, now).await?;
        }
        if account.unused < estimate {
            return Err(BudgetError::Exceeded {
                budget_id: budget.id,
                kind: budget.budget_type,
                limit: account.limit,
                estimate,
                resets_at: period.end,
            });
        }
        account.unused = sub(account.unused, estimate);
        account.held = add(account.held, estimate);
        account.last_reserved = Instant::now();
        Ok(Part {
            budget_id: budget.id,
            period_start: period.start,
            amount: estimate,
        })
    }

    /// Asks the database for a larger claim.
    async fn extend(
        &self,
        budget: &Budget,
        account: &mut Account,
        estimate: NanoUsd,
        now: DateTime<Utc>,
    ) -> Result<(), BudgetError> {
        let store = &self.inner.store;
        let result: Result<(), StoreError> = async {
            let previous = status::previous_period(budget, account.period);
            let previous_spent = if budget.rollover_policy == super::RolloverPolicy::None {
                NanoUsd::ZERO
            } else {
                store.budget_spend(budget, previous).await?
            };
            let (_, limit) = status::period_limit(budget, account.period, previous_spent);
            account.limit = limit;
            let needed = saturating_sub(estimate, account.unused);
            // Ask for a slice of what is left, so that the next requests
            // need no round trip; never less than this request needs.
            let slice =
                NanoUsd::from_nanos(limit.nanos() / self.inner.settings.slice_divisor.max(1));
            let wanted = needed.max(slice);
            let ttl = chrono::Duration::from_std(self.inner.settings.lease_ttl)
                .unwrap_or(chrono::Duration::seconds(30));
            let current = LeaseRequest {
                budget_id: budget.id,
                period_start: account.period.start,
                claim: account.claim(),
                held: account.held,
                expires_at: now + ttl,
                set_claim: true,
            };
            let grant = store
                .extend_lease(
                    budget,
                    account.period,
                    limit,
                    &self.inner.instance_id,
                    current,
                    needed,
                    wanted,
                    now,
                )
                .await?;
            account.unused = add(account.unused, grant.granted);
            // Stop using the claim a safety margin before it expires.
            account.valid_until = Instant::now() + self.inner.settings.lease_ttl.mul_f64(0.8);
            Ok(())
        }
        .await;
        match result {
            Ok(()) => Ok(()),
            Err(error) => {
                tracing::warn!(%error, budget = %budget.id, "cannot extend a budget claim");
                if self.inner.settings.fail_closed {
                    Err(BudgetError::Unavailable(error.to_string()))
                } else {
                    // Fail open: let this request through unreserved.
                    account.unused = add(account.unused, estimate);
                    Ok(())
                }
            }
        }
    }

    fn settle(&self, request_id: Uuid, parts: &[Part], actual: NanoUsd) {
        let mut waiting = Vec::with_capacity(parts.len());
        for part in parts {
            let account = self.account(part.budget_id);
            // Settling never waits on a lease extension: when the account is
            // busy, the adjustment is made by a task of its own.
            let part = *part;
            let apply = move |slot: &mut Option<Account>| {
                if let Some(account) = slot.as_mut()
                    && account.period.start == part.period_start
                {
                    // What the estimate did not use goes back to the slice; a
                    // cost over the estimate is taken from it (and past it is
                    // the bounded overspend).
                    account.held = add(sub(account.held, part.amount), actual);
                    account.unused = add(account.unused, sub(part.amount, actual));
                }
            };
            let applied = match account.try_lock() {
                Ok(mut slot) => {
                    apply(&mut slot);
                    true
                }
                Err(_) => false,
            };
            if !applied {
                {
                    #[allow(
                        clippy::disallowed_methods,
                        reason = "a short bookkeeping task; nothing to wait for at shutdown"
                    )]
                    tokio::spawn(async move {
                        apply(&mut *account.lock().await);
                    });
                }
            }
            if actual > NanoUsd::ZERO {
                waiting.push(Part {
                    amount: actual,
                    ..part
                });
            }
        }
        if !waiting.is_empty() {
            self.inner
                .awaiting_ledger
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(request_id, waiting);
        }
    }

    /// Called by the recorder once records are in the ledger (or refused
    /// for good): what they held is now counted there.
    pub async fn in_ledger(&self, records: &[UsageRecord]) {
        let mut done = Vec::new();
        {
            let mut awaiting = self
                .inner
                .awaiting_ledger
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !awaiting.is_empty() {
                for record in records {
                    if let Some(parts) = awaiting.remove(&record.request_id) {
                        done.extend(parts);
                    }
                }
            }
        }
        {
            let mut active = self
                .inner
                .active
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for record in records {
                let spender = Spender {
                    org_id: record.org_id.clone(),
                    provider: record.provider,
                    user_id: record.user_id.clone(),
                    api_key_id: record.api_key_id,
                };
                if !active.contains(&spender) {
                    active.insert(spender);
                }
            }
        }
        for part in done {
            let account = self.account(part.budget_id);
            let mut slot = account.lock().await;
            if let Some(account) = slot.as_mut()
                && account.period.start == part.period_start
            {
                account.held = sub(account.held, part.amount);
            }
        }
    }

    /// The periodic work: renew claims (giving back unused slices of
    /// budgets idle since the last round), re-read definitions when due,
    /// and record soft thresholds that were reached.
    pub async fn sync(&self) {
        let stale = self
            .inner
            .definitions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .loaded_at
            .is_none_or(|at| at.elapsed() >= self.inner.settings.refresh_interval);
        if stale && let Err(error) = self.refresh().await {
            tracing::warn!(%error, "cannot re-read budget definitions; using the previous ones");
        }
        if let Err(error) = self.renew().await {
            tracing::warn!(%error, "cannot renew budget claims");
        }
        if let Err(error) = self.check_thresholds().await {
            tracing::warn!(%error, "cannot check budget thresholds");
        }
    }

    async fn renew(&self) -> Result<(), StoreError> {
        let accounts: Vec<(Uuid, Arc<Mutex<Option<Account>>>)> = self
            .inner
            .accounts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(id, account)| (*id, Arc::clone(account)))
            .collect();
        let now = Utc::now();
        let ttl = chrono::Duration::from_std(self.inner.settings.lease_ttl)
            .unwrap_or(chrono::Duration::seconds(30));
        let mut leases = Vec::with_capacity(accounts.len());
        // Idle accounts give their unused slice back. Their guards are held
        // until the smaller claims are written, so that nothing reserves
        // against a claim the database is about to lose; busy accounts only
        // have their claims' expiry (and held amount) renewed, which no
        // concurrent extension can contradict.
        let mut shrinking = Vec::new();
        for (budget_id, account) in &accounts {
            let mut slot = account.lock().await;
            let Some(open) = slot.as_mut() else {
                continue;
            };
            let idle = open.last_reserved.elapsed() >= self.inner.settings.sync_interval;
            let shrink = idle && open.unused != NanoUsd::ZERO;
            if shrink {
                open.unused = NanoUsd::ZERO;
            }
            leases.push(LeaseRequest {
                budget_id: *budget_id,
                period_start: open.period.start,
                claim: open.claim(),
                held: open.held,
                expires_at: now + ttl,
                set_claim: shrink,
            });
            if shrink {
                shrinking.push(slot);
            }
        }
        let result = self
            .inner
            .store
            .renew_leases(&self.inner.instance_id, &leases, now)
            .await;
        drop(shrinking);
        if result.is_ok() {
            let valid_until = Instant::now() + self.inner.settings.lease_ttl.mul_f64(0.8);
            for (_, account) in &accounts {
                if let Some(open) = account.lock().await.as_mut() {
                    open.valid_until = valid_until;
                }
            }
        }
        result
    }

    async fn check_thresholds(&self) -> Result<(), StoreError> {
        let active = std::mem::take(
            &mut *self
                .inner
                .active
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        // Only budgets some recent spender counts toward can have crossed a
        // threshold since the last check.
        let mut due: Vec<Budget> = Vec::new();
        let mut orgs: Vec<&str> = active
            .iter()
            .map(|spender| spender.org_id.as_str())
            .collect();
        orgs.dedup();
        for org in orgs {
            let Some(budgets) = self.org_budgets(org) else {
                continue;
            };
            due.extend(
                budgets
                    .iter()
                    .filter(|budget| {
                        (budget.hard_limit || !budget.soft_limit_percents.is_empty())
                            && active.iter().any(|spender| {
                                spender.org_id == budget.org_id
                                    && budget.scope.covers(
                                        spender.provider,
                                        spender.user_id.as_deref(),
                                        spender.api_key_id,
                                    )
                            })
                    })
                    .cloned(),
            );
        }
        let now = Utc::now();
        for budget in &due {
            let (status, _) = self.status_parts(budget, now).await?;
            // A hard budget's exhaustion is a threshold too: 100%.
            let mut thresholds = budget.soft_limit_percents.clone();
            if budget.hard_limit && !thresholds.contains(&100) {
                thresholds.push(100);
            }
            for percent in &thresholds {
                if status::reached(status.limit, status.spent, *percent)
                    && self
                        .inner
                        .store
                        .record_threshold_event(
                            budget.id,
                            status.period.start,
                            *percent,
                            status.limit,
                            status.spent,
                            now,
                        )
                        .await?
                {
                    metrics::counter!("tollgate_budget_threshold_events_total").increment(1);
                    tracing::warn!(
                        budget = %budget.id,
                        org = %budget.org_id,
                        percent,
                        spent_usd = %status.spent,
                        limit_usd = %status.limit,
                        "budget threshold reached"
                    );
                }
            }
        }
        Ok(())
    }

    /// Gives back every claim this instance holds, at shutdown (after the
    /// last exchange has been recorded), so that other instances need not
    /// wait for the claims to expire.
    pub async fn release_all(&self) {
        let waiting = self
            .inner
            .awaiting_ledger
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len();
        if waiting > 0 {
            // Their records wait in the spool; what they hold must keep
            // counting until they are in the ledger.
            tracing::info!(
                waiting,
                "keeping budget claims until they expire: some records are not in the ledger yet"
            );
            return;
        }
        if let Err(error) = self
            .inner
            .store
            .release_leases(&self.inner.instance_id)
            .await
        {
            tracing::warn!(%error, "cannot give back budget claims; they expire on their own");
        }
    }

    /// A budget's status: the ledger's spend, and what every instance holds.
    /// Where `budget` stands, with the limit's projected exhaustion from
    /// the analytics model fitted on the scope's last 13 weeks of daily
    /// spend (in the budget's time zone).
    pub async fn status(&self, budget: &Budget) -> Result<BudgetStatus, StoreError> {
        let now = Utc::now();
        let (status, _) = self.status_parts(budget, now).await?;
        let timezone = budget.timezone;
        let today = now.with_timezone(&timezone).date_naive();
        let first_day = today
            .checked_sub_days(chrono::Days::new(projection::MAX_HISTORY_DAYS as u64))
            .unwrap_or(today);
        let start = super::period::local_midnight(first_day, timezone);
        let today_start = super::period::local_midnight(today, timezone);
        let buckets = self
            .inner
            .store
            .budget_spend_by_bucket(budget, start, now)
            .await?;
        let days = usize::try_from((today - first_day).num_days()).unwrap_or(0);
        let mut history = vec![0_i64; days];
        let mut spent_today = 0_i64;
        for (at, nanos) in buckets {
            if at >= today_start {
                spent_today = spent_today.saturating_add(nanos);
                continue;
            }
            let day = at.with_timezone(&timezone).date_naive();
            if let Some(slot) = usize::try_from((day - first_day).num_days())
                .ok()
                .and_then(|index| history.get_mut(index))
            {
                *slot = slot.saturating_add(nanos);
            }
        }
        Ok(status::with_model_projection(
            status,
            timezone,
            now,
            first_day,
            &history,
            NanoUsd::from_nanos(spent_today),
        ))
    }

    /// Where `budget` stands, with the period-rate projection only (no
    /// history read): for frequent callers such as the metrics scrape.
    pub async fn current_status(&self, budget: &Budget) -> Result<BudgetStatus, StoreError> {
        self.status_parts(budget, Utc::now())
            .await
            .map(|(status, _)| status)
    }

    async fn status_parts(
        &self,
        budget: &Budget,
        now: DateTime<Utc>,
    ) -> Result<(BudgetStatus, Period), StoreError> {
        let store = &self.inner.store;
        let period = status::current_period(budget, now);
        let previous = status::previous_period(budget, period);
        let spent = store.budget_spend(budget, period).await?;
        let previous_spent = if budget.rollover_policy == super::RolloverPolicy::None {
            NanoUsd::ZERO
        } else {
            store.budget_spend(budget, previous).await?
        };
        let others = store
            .budget_held(budget.id, period.start, now, &self.inner.instance_id)
            .await?;
        let own = {
            let account = self.account(budget.id);
            let slot = account.lock().await;
            slot.as_ref()
                .filter(|account| account.period == period)
                .map_or(NanoUsd::ZERO, |account| account.held)
        };
        let reserved = add(others, own);
        Ok((
            status::status(budget, now, spent, previous_spent, reserved),
            period,
        ))
    }

    /// Re-reads budget definitions after a change through this instance, so
    /// that it applies here at once (other instances within
    /// `refresh_interval`).
    pub async fn changed(&self) {
        if let Err(error) = self.refresh().await {
            tracing::warn!(%error, "cannot re-read budget definitions after a change");
        }
    }
}
