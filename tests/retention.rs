//! Retention: only rows past their age go, in batches; open alerts stay
//! whatever their age; rollups keep their totals.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde_json::json;
use tollgate::alerts::{AlertStatus, AlertType, Applied, Condition, Severity};
use tollgate::audit::{AuditEntry, AuditFilter, AuditResult};
use tollgate::config::RetentionConfig;
use tollgate::money::NanoUsd;
use tollgate::store::{AlertFilter, RecordFilter, Scope, Store};
use tollgate::usage::{
    CostStatus, Provider, RecordStatus, TaskType, TokenCounts, UsageRecord, new_request_id,
};

both_backends!(only_rows_past_their_age_are_deleted);

fn record(created_at: DateTime<Utc>) -> UsageRecord {
    UsageRecord {
        request_id: new_request_id(),
        parent_request_id: None,
        created_at,
        org_id: "acme".to_owned(),
        user_id: Some("alice".to_owned()),
        api_key_id: None,
        provider: Provider::OpenAi,
        model: "gpt-4o".to_owned(),
        task_type: TaskType::Chat,
        tokens: TokenCounts {
            input: 100,
            output: 10,
            cached_input: 0,
            reasoning: 0,
        },
        cost: Some(NanoUsd::from_nanos(1_000)),
        estimated_cost: None,
        cost_status: CostStatus::Priced,
        latency_ms: 100,
        time_to_first_token_ms: None,
        status_code: Some(200),
        status: RecordStatus::Ok,
        error_type: None,
        stream: false,
        provider_request_id: None,
        metadata: json!({}),
    }
}

async fn alert(store: &Store, key: &str, at: DateTime<Utc>, resolve: bool) -> uuid::Uuid {
    let condition = Condition {
        alert_type: AlertType::Custom,
        dedupe_key: key.to_owned(),
        org_id: Some("acme".to_owned()),
        provider: None,
        model: None,
        severity: Severity::Low,
        title: key.to_owned(),
        message: "m".to_owned(),
        threshold_value: None,
        current_value: None,
    };
    let Applied::Created(id) = store.apply_condition(&condition, at).await.unwrap() else {
        panic!("a new alert");
    };
    if resolve {
        store
            .change_alert_status(&Scope::All, id, AlertStatus::Resolved, Some("ops"), at)
            .await
            .unwrap();
    }
    id
}

fn all_records() -> RecordFilter {
    RecordFilter {
        scope: Scope::All,
        ..RecordFilter::default()
    }
}

async fn only_rows_past_their_age_are_deleted(store: Store) {
    let now = Utc::now().trunc_subsecs(6);
    let old = now - Duration::days(500);
    let recent = now - Duration::days(10);
    // 7 old records (more than a batch of 3), 2 recent ones.
    let mut records: Vec<UsageRecord> =
        (0..7).map(|i| record(old + Duration::minutes(i))).collect();
    records.extend((0..2).map(|i| record(recent + Duration::minutes(i))));
    store.insert_usage(&records, chrono_tz::UTC).await.unwrap();
    let rollups_before = store.rollups(&all_records(), chrono_tz::UTC).await.unwrap();
    let old_resolved = alert(&store, "old-resolved", old, true).await;
    let old_open = alert(&store, "old-open", old, false).await;
    let recent_resolved = alert(&store, "recent-resolved", recent, true).await;
    for (at, action) in [
        (old, "key.create"),
        (old, "budget.update"),
        (recent, "key.revoke"),
    ] {
        store
            .insert_audit(&AuditEntry {
                id: 0,
                created_at: at,
                actor: "admin-token".to_owned(),
                org_id: Some("acme".to_owned()),
                action: action.to_owned(),
                target: None,
                result: AuditResult::Ok,
                client_addr: None,
                details: json!({}),
            })
            .await
            .unwrap();
    }
    let config = RetentionConfig {
        usage_records_days: Some(400),
        resolved_alerts_days: Some(365),
        webhook_deliveries_days: Some(30),
        audit_entries_days: Some(365),
        interval_seconds: 3600,
        batch_size: 3,
        pause_ms: 0,
    };
    let report = tollgate::retention::run(&store, &config, now)
        .await
        .unwrap();
    let deleted: Vec<u64> = report.deleted.iter().map(|(_, count)| *count).collect();
    assert_eq!(deleted, [7, 1, 0, 2], "{report:?}");

    let mut left = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .usage_records(&all_records(), cursor, 100)
            .await
            .unwrap();
        left.extend(page.records);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|record| record.created_at >= recent));
    assert_eq!(
        store.rollups(&all_records(), chrono_tz::UTC).await.unwrap(),
        rollups_before,
        "rollups keep their totals"
    );
    let alerts: Vec<uuid::Uuid> = store
        .alerts(&AlertFilter {
            limit: 100,
            scope: Scope::All,
            ..AlertFilter::default()
        })
        .await
        .unwrap()
        .iter()
        .map(|alert| alert.id)
        .collect();
    assert!(!alerts.contains(&old_resolved));
    assert!(
        alerts.contains(&old_open),
        "open alerts stay whatever their age"
    );
    assert!(alerts.contains(&recent_resolved));
    let audit = store
        .audit_entries(&AuditFilter {
            limit: 100,
            scope: Scope::All,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        audit
            .iter()
            .map(|entry| entry.action.as_str())
            .collect::<Vec<_>>(),
        ["key.revoke"]
    );
    // Nothing left to do: a second run deletes nothing.
    let again = tollgate::retention::run(&store, &config, now)
        .await
        .unwrap();
    assert!(
        again.deleted.iter().all(|(_, count)| *count == 0),
        "{again:?}"
    );
}
