// Browser test of the admin dashboard at /admin/ai-usage, against a running
// server with the demo data set (`tollgate demo`).
//
//   TOLLGATE_URL=http://127.0.0.1:PORT TOLLGATE_ADMIN_KEY=tg_… \
//   TOLLGATE_MEMBER_KEY=tg_… TOLLGATE_MEMBER_USER=… TOLLGATE_OTHER_USER=… \
//   [TOLLGATE_ORG_ADMIN_KEY=tg_…] SCREENSHOT_DIR=/tmp/shots node tests/browser/dashboard.mjs
//
// Prints one line per step; exits 1 when any step fails.

import assert from 'node:assert/strict';
import { mkdir, readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`dashboard test: set ${name}`);
    process.exit(2);
  }
  return value;
}

const BASE = required('TOLLGATE_URL').replace(/\/+$/, '');
const ADMIN_KEY = required('TOLLGATE_ADMIN_KEY');
const MEMBER_KEY = required('TOLLGATE_MEMBER_KEY');
const MEMBER_USER = required('TOLLGATE_MEMBER_USER');
const OTHER_USER = required('TOLLGATE_OTHER_USER');
// Optional: an org_admin key, for the org admin's view.
const ORG_ADMIN_KEY = process.env.TOLLGATE_ORG_ADMIN_KEY || '';
const SCREENSHOT_DIR = process.env.SCREENSHOT_DIR || path.join(os.tmpdir(), 'tollgate-dashboard-screenshots');
const DASHBOARD = `${BASE}/admin/ai-usage`;
const TABS = ['overview', 'providers', 'alerts', 'projections', 'budgets', 'usage'];
const STEP_MS = 60_000;
const POLL_MS = 15_000;
const WAIT_MS = 30_000;

// ------------------------------------------------------------------ helpers

/** A GET (or other call) to the REST API with a bearer key, from Node. */
async function api(route, { key = ADMIN_KEY, method = 'GET', body } = {}) {
  const response = await fetch(`${BASE}/api/v1${route}`, {
    method,
    headers: {
      Authorization: `Bearer ${key}`,
      ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  return { status: response.status, json, text };
}

async function apiOk(route, options) {
  const result = await api(route, options);
  assert.equal(result.status, 200, `GET ${route} answered ${result.status}: ${result.text.slice(0, 300)}`);
  return result.json;
}

/** Console errors, page errors and CSP violations seen by every page. */
const problems = [];
const expectedNetworkErrors = [];

function watch(page, who) {
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    const text = message.text();
    // Chromium logs every 4xx answer to fetch as a console error. The test
    // provokes some on purpose (the login probe, a wrong key, a 403, a 422);
    // those are counted but not failures. Anything else is.
    const status = /status of (\d{3})/.exec(text);
    if (/^Failed to load resource/.test(text) && status && ['401', '403', '422'].includes(status[1])) {
      expectedNetworkErrors.push(`${who}: ${text} (${message.location().url || '?'})`);
      return;
    }
    problems.push(`${who} console error: ${text} (${message.location().url || '?'})`);
  });
  page.on('pageerror', (error) => problems.push(`${who} page error: ${error.message}`));
}

/** Records CSP violations in the page itself (init scripts bypass the CSP). */
async function recordCspViolations(context) {
  await context.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', (event) => {
      window.__cspViolations.push(`${event.violatedDirective} blocked ${event.blockedURI || '(inline)'} at ${event.sourceFile || '?'}:${event.lineNumber || '?'}`);
    });
  });
}

async function collectCsp(page, who) {
  if (page.isClosed()) return;
  const found = await page.evaluate(() => window.__cspViolations || []).catch(() => []);
  for (const violation of found) problems.push(`${who} CSP violation: ${violation}`);
}

const panel = (page, tab) => page.locator(`[data-panel="${tab}"]`);

async function generation(page, tab) {
  const value = await panel(page, tab).getAttribute('data-generation');
  return Number(value || 0);
}

/** Waits until the tab's panel has rendered data after `after`. */
async function waitLoaded(page, tab, after = 0) {
  await page.waitForFunction(
    ([name, previous]) => {
      const el = document.querySelector(`[data-panel="${name}"]`);
      return el && !el.hidden && el.getAttribute('data-loaded') === 'true' && Number(el.getAttribute('data-generation') || 0) > previous;
    },
    [tab, after],
    { timeout: WAIT_MS },
  );
}

/** Opens a tab and waits for fresh data in it. */
async function openTab(page, tab) {
  const before = await generation(page, tab);
  await page.locator(`[role="tab"][data-tab="${tab}"]`).click();
  await waitLoaded(page, tab, before);
}

/** Waits until the usage pager's label matches `pattern`. */
async function waitPage(page, pattern) {
  await page.waitForFunction((source) => new RegExp(source).test(document.querySelector('#page-label').textContent), pattern.source, { timeout: WAIT_MS });
}

/** Makes the visible tab load again now (as the 15 s poll would). */
async function reloadTab(page, tab) {
  const before = await generation(page, tab);
  await page.evaluate(() => document.dispatchEvent(new Event('visibilitychange')));
  await waitLoaded(page, tab, before);
}

const rows = (page, table) => page.locator(`[data-table="${table}"] tbody tr[data-id]`);

async function rowIds(page, table) {
  return rows(page, table).evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-id')));
}

async function metric(page, name) {
  const value = await page.locator(`[data-metric="${name}"]`).getAttribute('data-value');
  return value;
}

async function login(page, key) {
  await page.goto(DASHBOARD);
  const form = page.locator('form[data-form="login"]');
  await form.waitFor({ state: 'visible', timeout: WAIT_MS });
  await form.locator('input[name="key"]').fill(key);
  await form.locator('button[type="submit"]').click();
  await waitLoaded(page, 'overview');
}

let failures = 0;

async function step(name, body) {
  const started = Date.now();
  let timer;
  try {
    await Promise.race([
      body(),
      new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`step took longer than ${STEP_MS / 1000} s`)), STEP_MS); }),
    ]);
    console.log(`ok   ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
    return true;
  } catch (error) {
    failures += 1;
    console.log(`FAIL ${name}: ${error && error.message ? error.message.split('\n').slice(0, 6).join('\n     ') : error}`);
    return false;
  } finally {
    clearTimeout(timer);
  }
}

// ------------------------------------------------------------------ the run

await mkdir(SCREENSHOT_DIR, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

// A zone far from the server's: date presets must follow the server's zone.
const adminContext = await browser.newContext({ viewport: { width: 1280, height: 900 }, timezoneId: 'Pacific/Kiritimati' });
await recordCspViolations(adminContext);
const page = await adminContext.newPage();
watch(page, 'admin');
let memberPage = null;

try {
  const loggedIn = await step('1. login: form when signed out, wrong key refused, admin key signs in, HttpOnly SameSite=Strict cookie', async () => {
    await page.goto(DASHBOARD);
    const form = page.locator('form[data-form="login"]');
    await form.waitFor({ state: 'visible', timeout: WAIT_MS });
    assert.equal(await page.locator('#app').isVisible(), false, 'the dashboard is visible before signing in');
    await form.locator('input[name="key"]').fill('tg_this_is_not_a_valid_key_0000000000');
    await form.locator('button[type="submit"]').click();
    const error = form.locator('[role="alert"]');
    await error.waitFor({ state: 'visible', timeout: WAIT_MS });
    assert.ok((await error.textContent()).trim().length > 0, 'the wrong key shows no message');
    assert.equal(await page.locator('#app').isVisible(), false, 'a wrong key opened the dashboard');
    await form.locator('input[name="key"]').fill(ADMIN_KEY);
    await form.locator('button[type="submit"]').click();
    await waitLoaded(page, 'overview');
    const roleLabel = (await page.locator('[data-role-label]').textContent()).toLowerCase();
    assert.match(roleLabel, /admin/, `the role label says "${roleLabel}"`);
    assert.ok(await page.locator('[data-action="logout"]').isVisible(), 'no logout button');
    const cookies = await adminContext.cookies(BASE);
    const session = cookies.find((cookie) => /session/i.test(cookie.name)) || cookies[0];
    assert.ok(session, 'no cookie was set by the login');
    assert.equal(session.httpOnly, true, `cookie ${session.name} is not HttpOnly`);
    assert.equal(session.sameSite, 'Strict', `cookie ${session.name} is SameSite=${session.sameSite}`);
    const readable = await page.evaluate(() => document.cookie);
    assert.ok(!readable.includes(session.name), 'the session cookie is readable from script');
  });
  if (!loggedIn) throw new Error('cannot go on without signing in');

  await step('2. every tab renders data; screenshots (desktop 1280x900 and Overview at 390x844)', async () => {
    for (const tab of TABS) {
      await openTab(page, tab);
      const root = panel(page, tab);
      if (tab === 'overview') {
        assert.ok(Number(await metric(page, 'total_requests')) > 0, 'Overview shows no requests');
        await root.locator('[data-chart="daily"] canvas').first().waitFor({ timeout: WAIT_MS });
        assert.ok(await rows(page, 'top-models').count() > 0, 'no top models');
        assert.ok(await rows(page, 'top-users').count() > 0, 'no top users');
        assert.ok(await root.locator('[data-table="daily-data"] tbody tr').count() > 0, 'the daily chart has no data table');
      } else if (tab === 'providers') {
        assert.ok(await rows(page, 'providers').count() > 0, 'no provider balances');
        assert.ok(await rows(page, 'model-performance').count() > 0, 'no model performance rows');
      } else if (tab === 'alerts') {
        assert.ok(await rows(page, 'alerts-active').count() > 0, 'no open alerts (the demo has some)');
        assert.ok(await rows(page, 'alerts-history').count() > 0, 'no alert history');
        assert.ok(await root.locator('[data-table="webhooks"], #webhooks .empty').count() > 0, 'no webhooks section');
      } else if (tab === 'projections') {
        await root.locator('[data-chart="projection"] canvas').first().waitFor({ timeout: WAIT_MS });
        assert.ok((await root.locator('#projection-summary').textContent()).length > 0, 'no projection summary');
        assert.ok(await root.locator('[data-table="projection-data"] tbody tr').count() > 0, 'the projection chart has no data table');
      } else if (tab === 'budgets') {
        assert.ok(await root.locator('[data-table="budgets"], #budgets .empty').count() > 0, 'no budgets list or empty state');
      } else if (tab === 'usage') {
        assert.ok(await rows(page, 'records').count() > 0, 'no usage records');
        const href = await page.locator('#csv-link').getAttribute('href');
        assert.match(href, /\/api\/v1\/usage\/export\?format=csv/, `CSV link is ${href}`);
      }
      const errors = await root.locator('.error[role="alert"]:visible').allTextContents();
      assert.deepEqual(errors, [], `${tab} shows errors`);
      await page.screenshot({ path: path.join(SCREENSHOT_DIR, `${tab}.png`), fullPage: true });
    }
    await page.setViewportSize({ width: 390, height: 844 });
    await openTab(page, 'overview');
    await page.waitForTimeout(300);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 1, `the phone-width page scrolls sideways by ${overflow}px`);
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, 'overview-phone.png'), fullPage: true });
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  await step('3. numbers match the API (stats, model performance, budgets, active alerts)', async () => {
    await openTab(page, 'overview');
    const q = await panel(page, 'overview').getAttribute('data-query');
    assert.ok(q && q.includes('start_date='), `overview query is "${q}"`);
    const before = await apiOk(`/usage/stats?${q}`);
    const alertsBefore = (await apiOk('/alerts?status=active&limit=1000')).data.length;
    await reloadTab(page, 'overview');
    const shown = {
      requests: Number(await metric(page, 'total_requests')),
      cost: Number(await metric(page, 'total_cost_usd')),
      successRate: Number(await metric(page, 'success_rate')),
      tokens: Number(await metric(page, 'total_tokens')),
      alerts: Number(await metric(page, 'active_alerts')),
    };
    const after = await apiOk(`/usage/stats?${q}`);
    const alertsAfter = (await apiOk('/alerts?status=active&limit=1000')).data.length;
    const between = (what, value, low, high) => assert.ok(value >= low && value <= high, `${what}: page ${value}, API ${low} before and ${high} after`);
    between('total_requests', shown.requests, before.total_requests, after.total_requests);
    between('total_cost_usd', shown.cost, Number(before.total_cost_usd), Number(after.total_cost_usd));
    between('total_tokens', shown.tokens, before.total_input_tokens + before.total_output_tokens, after.total_input_tokens + after.total_output_tokens);
    const rates = [before.success_rate, after.success_rate].map(Number);
    between('success_rate', shown.successRate, Math.min(...rates) - 0.002, Math.max(...rates) + 0.002);
    between('active_alerts', shown.alerts, Math.min(alertsBefore, alertsAfter), Math.max(alertsBefore, alertsAfter));
    const raw = await page.locator('[data-metric="total_cost_usd"]').getAttribute('data-value');
    assert.match(raw, /^\d+(\.\d+)?$/, `total_cost_usd data-value "${raw}" is not the API's decimal string`);
    const costText = await page.locator('[data-metric="total_cost_usd"] .metric-value').textContent();
    assert.match(costText, /^\$[\d,]+\.\d{2,}$/, `cost shown as "${costText}"`);

    await openTab(page, 'providers');
    const pq = await panel(page, 'providers').getAttribute('data-query');
    const perfBefore = (await apiOk(`/models/performance?${pq}`)).data.length;
    await reloadTab(page, 'providers');
    const perfRows = await rows(page, 'model-performance').count();
    const perfAfter = (await apiOk(`/models/performance?${pq}`)).data.length;
    between('model-performance rows', perfRows, Math.min(perfBefore, perfAfter), Math.max(perfBefore, perfAfter));
    // Sorting by a header button sets aria-sort.
    const header = page.locator('[data-table="model-performance"] th:has(button[data-sort="cost"])');
    await header.locator('button').click();
    assert.match(await header.getAttribute('aria-sort'), /ascending|descending/, 'aria-sort not set after sorting');
    const costs = await page.locator('[data-table="model-performance"] tbody td[data-col="cost"] span').evaluateAll((spans) => spans.map((s) => Number((s.title || '').replace('$', ''))));
    const direction = await header.getAttribute('aria-sort');
    const sorted = costs.slice().sort((a, b) => (direction === 'ascending' ? a - b : b - a));
    assert.deepEqual(costs, sorted, `model performance is not sorted by cost (${direction})`);

    await openTab(page, 'budgets');
    const apiBudgets = (await apiOk('/budgets')).data.map((b) => b.id).sort();
    const pageBudgets = (await rowIds(page, 'budgets')).sort();
    assert.deepEqual(pageBudgets, apiBudgets, 'the budgets listed differ from the API');
  });

  let acknowledged = null;
  await step('4. acknowledging an alert changes its status in the page and in the API (then resolving it)', async () => {
    // A fresh alert of our own, so that a second run finds one to acknowledge
    // and the demo's own alerts stay as they are.
    const raised = await api('/alerts', {
      method: 'POST',
      body: { severity: 'critical', title: `Browser test alert ${new Date().toISOString()}`, message: 'Raised by tests/browser/dashboard.mjs; safe to resolve.' },
    });
    assert.equal(raised.status, 201, `raising a test alert answered ${raised.status}: ${raised.text.slice(0, 200)}`);
    const id = raised.json.id;
    acknowledged = id;
    await openTab(page, 'alerts');
    const row = page.locator(`[data-table="alerts-active"] tbody tr[data-id="${id}"]`);
    await row.waitFor({ timeout: WAIT_MS });
    assert.equal(await row.getAttribute('data-status'), 'active');
    // Critical alerts come first.
    const severities = await rows(page, 'alerts-active').evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-severity')));
    assert.equal(severities[0], 'critical', `open alerts start with ${severities[0]}`);
    const before = await generation(page, 'alerts');
    await row.locator('[data-action="acknowledge"]').click();
    await page.locator(`[data-table="alerts-active"] tr[data-id="${id}"][data-status="acknowledged"]`).waitFor({ timeout: WAIT_MS });
    await waitLoaded(page, 'alerts', before);
    const status = await page.locator(`[data-table="alerts-active"] tr[data-id="${id}"] [data-col="status"]`).textContent();
    assert.match(status, /acknowledged/i, `status cell says "${status}"`);
    assert.equal(await page.locator(`[data-table="alerts-active"] tr[data-id="${id}"] [data-action="acknowledge"]`).count(), 0, 'an acknowledged alert still offers Acknowledge');
    let alert = (await apiOk('/alerts?limit=1000')).data.find((a) => a.id === id);
    assert.ok(alert, `alert ${id} not found through the API`);
    assert.equal(alert.status, 'acknowledged', `the API says alert ${id} is ${alert.status}`);
    assert.ok(alert.acknowledged_at, 'acknowledged_at not set');

    await page.locator(`[data-table="alerts-active"] tr[data-id="${id}"] [data-action="resolve"]`).click();
    await page.locator(`[data-table="alerts-active"] tr[data-id="${id}"]`).waitFor({ state: 'detached', timeout: WAIT_MS });
    alert = (await apiOk('/alerts?limit=1000')).data.find((a) => a.id === id);
    assert.equal(alert.status, 'resolved', `after Resolve the API says ${alert.status}`);
    await page.locator(`[data-table="alerts-history"] tr[data-id="${id}"][data-status="resolved"]`).waitFor({ timeout: WAIT_MS });
  });

  await step('4b. after another tab signs in (new cookie and CSRF token), a change is retried with the new token', async () => {
    const raised = await api('/alerts', {
      method: 'POST',
      body: { severity: 'critical', title: `Browser test CSRF renewal ${new Date().toISOString()}`, message: 'Raised by tests/browser/dashboard.mjs; safe to resolve.' },
    });
    assert.equal(raised.status, 201, `raising a test alert answered ${raised.status}`);
    const id = raised.json.id;
    await openTab(page, 'alerts');
    const row = page.locator(`[data-table="alerts-active"] tbody tr[data-id="${id}"]`);
    await row.waitFor({ timeout: WAIT_MS });
    assert.match(await row.locator('[data-action="acknowledge"]').getAttribute('aria-label'), /^Acknowledge alert Browser test CSRF/);
    // "Another tab": a new login in the same browser replaces the cookie.
    const relogin = await page.evaluate((key) => fetch('/admin/ai-usage/session', {
      method: 'POST', credentials: 'same-origin', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ key }),
    }).then((r) => r.status), ADMIN_KEY);
    assert.equal(relogin, 200, `the second login answered ${relogin}`);
    await row.locator('[data-action="acknowledge"]').click();
    await page.locator(`[data-table="alerts-active"] tr[data-id="${id}"][data-status="acknowledged"]`).waitFor({ timeout: WAIT_MS });
    const alert = (await apiOk('/alerts?limit=1000')).data.find((a) => a.id === id);
    assert.equal(alert.status, 'acknowledged', `the API says ${alert.status}`);
    await api(`/alerts/${id}/resolve`, { method: 'POST' });
  });

  await step('5. budgets: invalid amount and API 422 shown at the form; a created budget is listed (and deleted again)', async () => {
    await openTab(page, 'budgets');
    const form = page.locator('form[data-form="budget"]');
    await form.waitFor({ state: 'visible' });
    const orgs = await form.locator('select[name="org_id"] option').evaluateAll((options) => options.map((o) => o.value).filter(Boolean));
    assert.ok(orgs.length > 0, 'no organization to choose');
    await form.locator('select[name="org_id"]').selectOption(orgs[0]);
    await form.locator('select[name="budget_type"]').selectOption('monthly');
    await form.locator('input[name="budget_amount_usd"]').fill('-5');
    await form.locator('button[type="submit"]').click();
    const amountError = form.locator('[data-error-for="budget_amount_usd"]');
    await amountError.waitFor({ state: 'visible', timeout: WAIT_MS });
    assert.match(await amountError.textContent(), /greater than|number/i, 'no message about the amount');
    assert.equal(await form.locator('input[name="budget_amount_usd"]').getAttribute('aria-invalid'), 'true', 'the amount is not marked invalid');
    await form.locator('input[name="budget_amount_usd"]').fill('0');
    await form.locator('button[type="submit"]').click();
    await amountError.waitFor({ state: 'visible' });

    // The API's own 422 (a time zone it does not know) is shown next to the field.
    await form.locator('input[name="budget_amount_usd"]').fill('4321.09');
    await form.locator('input[name="timezone"]').fill('Not/AZone');
    await form.locator('button[type="submit"]').click();
    const tzError = form.locator('[data-error-for="timezone"]');
    await tzError.waitFor({ state: 'visible', timeout: WAIT_MS });
    assert.match(await tzError.textContent(), /time zone/i, `timezone message: "${await tzError.textContent()}"`);
    assert.ok(await form.locator('[role="alert"]:visible').count() > 0, 'no form-level message');

    const existing = new Set((await apiOk('/budgets')).data.map((b) => b.id));
    await form.locator('input[name="timezone"]').fill('UTC');
    await form.locator('button[type="submit"]').click();
    await page.waitForFunction((ids) => Array.from(document.querySelectorAll('[data-table="budgets"] tbody tr[data-id]')).some((tr) => !ids.includes(tr.getAttribute('data-id'))), Array.from(existing), { timeout: WAIT_MS });
    const created = (await rowIds(page, 'budgets')).find((id) => !existing.has(id));
    const listed = (await apiOk('/budgets')).data.find((b) => b.id === created);
    assert.ok(listed, `budget ${created} is not listed by the API`);
    assert.equal(listed.budget_amount_usd, '4321.09');
    assert.equal(listed.org_id, orgs[0]);
    const rowText = await page.locator(`[data-table="budgets"] tr[data-id="${created}"]`).textContent();
    assert.match(rowText, /\$4,321\.09/, `the new row reads "${rowText}"`);

    // Delete asks for a second click, then the row goes.
    const del = page.locator(`[data-table="budgets"] tr[data-id="${created}"] [data-action="delete"]`);
    assert.match(await del.getAttribute('aria-label'), /^Delete budget .*monthly$/, 'the Delete button does not name its budget');
    await del.click();
    assert.match(await del.getAttribute('aria-label'), /^Confirm delete budget /);
    await del.click();
    await page.locator(`[data-table="budgets"] tr[data-id="${created}"]`).waitFor({ state: 'detached', timeout: WAIT_MS });
    assert.ok(!(await apiOk('/budgets')).data.some((b) => b.id === created), 'the deleted budget is still listed by the API');
  });

  await step('5b. usage explorer: a double click on Older pages once; Newer goes back', async () => {
    await openTab(page, 'usage');
    await waitPage(page, /^Page 1\b/);
    const first = await rowIds(page, 'records');
    const older = page.locator('[data-action="older"]');
    assert.ok(await older.isEnabled(), 'Older is disabled on page 1');
    await older.dblclick();
    await waitPage(page, /^Page [2-9]/);
    await page.waitForTimeout(800);
    const label = await page.locator('#page-label').textContent();
    assert.match(label, /^Page 2\b/, `after a double click on Older the pager says "${label}"`);
    const second = await rowIds(page, 'records');
    assert.ok(second.length > 0 && !second.some((id) => first.includes(id)), 'page 2 repeats records of page 1');
    assert.ok(await older.isEnabled(), 'Older stays disabled on page 2');
    await page.locator('[data-action="newer"]').click();
    await waitPage(page, /^Page 1\b/);
    assert.ok(await page.locator('[data-action="newer"]').isDisabled(), 'Newer is enabled on page 1');
  });

  await step('5c. CSV download saves the export; an export error is shown, not saved', async () => {
    await openTab(page, 'usage');
    const [download] = await Promise.all([page.waitForEvent('download', { timeout: WAIT_MS }), page.locator('#csv-link').click()]);
    assert.equal(download.suggestedFilename(), 'tollgate-usage.csv');
    const text = await readFile(await download.path(), 'utf8');
    assert.match(text.slice(0, 200), /^request_id,/, `the download starts "${text.slice(0, 80)}"`);
    let saved = 0;
    const count = () => { saved += 1; };
    page.on('download', count);
    await page.evaluate(() => { document.querySelector('#csv-link').href = '/api/v1/usage/export?format=csv&start_date=bogus'; });
    await page.locator('#csv-link').click();
    const error = page.locator('#csv-error');
    await error.waitFor({ state: 'visible', timeout: WAIT_MS });
    assert.match(await error.textContent(), /bogus/, `export error reads "${await error.textContent()}"`);
    await page.waitForTimeout(300);
    page.off('download', count);
    assert.equal(saved, 0, 'an error answer was saved as a download');
  });

  await step('5d. "Custom…" waits for Apply; an end date alone means the 30 days up to it; presets use the server zone', async () => {
    await openTab(page, 'overview');
    const zone = await page.evaluate(() => fetch('/admin/ai-usage/session', { credentials: 'same-origin' }).then((r) => r.json()).then((s) => s.timezone));
    assert.ok(zone, 'GET /admin/ai-usage/session has no timezone');
    const day = (ms) => new Intl.DateTimeFormat('en-CA', { timeZone: zone, year: 'numeric', month: '2-digit', day: '2-digit' }).format(new Date(ms));
    const preset = new URLSearchParams(await panel(page, 'overview').getAttribute('data-query')).get('start_date');
    assert.ok([day(Date.now() - 29 * 86400000), day(Date.now() - 29 * 86400000 - 60000)].includes(preset), `"Last 30 days" starts ${preset} (server zone ${zone})`);
    await page.locator('#f-preset').selectOption('custom');
    await page.waitForTimeout(300);
    assert.equal(await page.locator('#filters-error').isVisible(), false, 'choosing Custom… shows an error before any date');
    const end = day(Date.now());
    await page.locator('#f-end').fill(end);
    await page.locator('#filters button[type="submit"]').click();
    await page.waitForFunction((e) => (document.querySelector('[data-panel="overview"]').getAttribute('data-query') || '').includes(`end_date=${e}`), end, { timeout: WAIT_MS });
    const q = new URLSearchParams(await panel(page, 'overview').getAttribute('data-query'));
    const start = new Date(Date.parse(end) - 29 * 86400000).toISOString().slice(0, 10);
    assert.equal(q.get('start_date'), start, `an end date ${end} alone starts ${q.get('start_date')}`);
    await waitLoaded(page, 'overview', await generation(page, 'overview'));
    assert.deepEqual(await panel(page, 'overview').locator('.error[role="alert"]:visible').allTextContents(), []);
    await page.locator('[data-action="reset-filters"]').click();
    await page.waitForFunction(() => !(document.querySelector('[data-panel="overview"]').getAttribute('data-query') || '').includes('end_date='), null, { timeout: WAIT_MS });
  });

  await step('5e. "Pause auto-refresh" (keyboard) stops polling; resuming loads again', async () => {
    await openTab(page, 'usage');
    const toggle = page.locator('[data-action="pause"]');
    assert.equal(await toggle.getAttribute('aria-pressed'), 'false');
    assert.equal(await page.locator('#updated').getAttribute('aria-live'), null, 'the update time is a live region');
    await toggle.focus();
    await page.keyboard.press('Enter');
    assert.equal(await toggle.getAttribute('aria-pressed'), 'true', 'Enter did not press the toggle');
    await page.waitForTimeout(1000);
    const before = await generation(page, 'usage');
    await page.evaluate(() => document.dispatchEvent(new Event('visibilitychange')));
    await page.waitForTimeout(POLL_MS + 1500);
    assert.equal(await generation(page, 'usage'), before, 'the usage tab was reloaded while auto-refresh was paused');
    await page.keyboard.press('Space');
    assert.equal(await toggle.getAttribute('aria-pressed'), 'false', 'Space did not release the toggle');
    await waitLoaded(page, 'usage', before);
  });

  await step('6. a member sees only their own data and no admin-only parts', async () => {
    const memberContext = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    await recordCspViolations(memberContext);
    memberPage = await memberContext.newPage();
    watch(memberPage, 'member');
    await login(memberPage, MEMBER_KEY);
    const roleLabel = (await memberPage.locator('[data-role-label]').textContent()).toLowerCase();
    assert.match(roleLabel, /member/, `the role label says "${roleLabel}"`);
    assert.equal(await memberPage.locator('[data-role-label]').getAttribute('data-role'), 'member');
    assert.equal(await memberPage.locator('#f-org').isVisible(), false, 'a member sees the organization filter');
    assert.equal(await memberPage.locator('#f-user').isVisible(), false, 'a member sees the user filter');

    const users = await rowIds(memberPage, 'top-users');
    assert.ok(users.length > 0, 'the member sees no top users (no own usage?)');
    assert.deepEqual([...new Set(users)], [MEMBER_USER], `top users for the member: ${users.join(', ')}`);

    await openTab(memberPage, 'usage');
    const owners = await rows(memberPage, 'records').evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-user-id')));
    assert.ok(owners.length > 0, 'the member sees no usage records');
    assert.deepEqual([...new Set(owners)], [MEMBER_USER], `records belong to ${[...new Set(owners)].join(', ')}`);
    const cells = await memberPage.locator('[data-table="records"] td[data-col="user_id"]').allTextContents();
    assert.ok(cells.every((text) => text.trim() === MEMBER_USER), 'a user cell names someone else');

    const refused = await api(`/usage/stats?user_id=${encodeURIComponent(OTHER_USER)}`, { key: MEMBER_KEY });
    assert.equal(refused.status, 403, `the member asking for ${OTHER_USER} got ${refused.status}`);
    const ownStats = await api(`/usage/stats?user_id=${encodeURIComponent(MEMBER_USER)}`, { key: MEMBER_KEY });
    assert.equal(ownStats.status, 200, `the member asking for themselves got ${ownStats.status}`);

    await openTab(memberPage, 'providers');
    assert.equal(await memberPage.locator('#balances-card').isVisible(), false, 'a member sees provider balances');
    assert.equal(await memberPage.locator('[data-table="providers"]').count(), 0, 'a member has a balances table');
    await openTab(memberPage, 'alerts');
    assert.equal(await memberPage.locator('#webhooks-card').isVisible(), false, 'a member sees webhooks');
    assert.equal(await memberPage.locator('[data-table="webhooks"]').count(), 0, 'a member has a webhooks table');
    assert.equal(await memberPage.locator('[data-action="acknowledge"], [data-action="resolve"]').count(), 0, 'a member has acknowledge/resolve buttons');
    await openTab(memberPage, 'budgets');
    assert.equal(await memberPage.locator('form[data-form="budget"]').isVisible(), false, 'a member sees the budget form');
    for (const tab of TABS) {
      await openTab(memberPage, tab);
      const broken = await panel(memberPage, tab).locator('.error[role="alert"]:visible').allTextContents();
      assert.deepEqual(broken, [], `member's ${tab} tab shows errors`);
    }
    await memberPage.screenshot({ path: path.join(SCREENSHOT_DIR, 'member-usage.png'), fullPage: true });
  });

  if (ORG_ADMIN_KEY) {
    await step('6b. an org admin sees their organization and model performance, but no balances or webhooks', async () => {
      const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      await recordCspViolations(context);
      const orgPage = await context.newPage();
      watch(orgPage, 'org admin');
      await login(orgPage, ORG_ADMIN_KEY);
      const role = await orgPage.locator('[data-role-label]').getAttribute('data-role');
      assert.equal(role, 'org_admin', `the org admin key signs in as ${role} (a key is capped at its user's role: is the user an org_admin?)`);
      assert.equal(await orgPage.locator('#f-org').isVisible(), false, 'an org admin sees the organization filter');
      assert.ok(await orgPage.locator('#f-user').isVisible(), 'an org admin has no user filter');
      const users = await rowIds(orgPage, 'top-users');
      assert.ok(users.length > 1, 'an org admin sees only one user');
      await openTab(orgPage, 'providers');
      assert.equal(await orgPage.locator('#balances-card').isVisible(), false, 'an org admin sees provider balances');
      assert.ok(await rows(orgPage, 'model-performance').count() > 0, 'no model performance for an org admin');
      await openTab(orgPage, 'alerts');
      assert.equal(await orgPage.locator('#webhooks-card').isVisible(), false, 'an org admin sees webhooks');
      await openTab(orgPage, 'budgets');
      assert.ok(await orgPage.locator('form[data-form="budget"]').isVisible(), 'an org admin has no budget form');
      assert.ok(await orgPage.locator('#b-org').isDisabled(), 'an org admin can pick another organization');
      for (const tab of TABS) {
        await openTab(orgPage, tab);
        const broken = await panel(orgPage, tab).locator('.error[role="alert"]:visible').allTextContents();
        assert.deepEqual(broken, [], `org admin's ${tab} tab shows errors`);
      }
      await collectCsp(orgPage, 'org admin');
      await context.close();
    });
  }

  await step('7. a change through the session without X-CSRF-Token is refused (403)', async () => {
    let id = acknowledged;
    if (!id) id = ((await apiOk('/alerts?limit=1')).data[0] || {}).id || '00000000-0000-7000-8000-000000000000';
    const status = await page.evaluate((alertId) => fetch(`/api/v1/alerts/${alertId}/acknowledge`, { method: 'POST', credentials: 'same-origin' }).then((r) => r.status), id);
    assert.equal(status, 403, `POST without the CSRF header answered ${status}`);
    const wrong = await page.evaluate((alertId) => fetch(`/api/v1/alerts/${alertId}/acknowledge`, { method: 'POST', credentials: 'same-origin', headers: { 'X-CSRF-Token': 'forged' } }).then((r) => r.status), id);
    assert.equal(wrong, 403, `POST with a forged CSRF header answered ${wrong}`);
  });

  await step('8. keyboard: Tab reaches the tablist, ArrowRight selects the next tab', async () => {
    await page.goto(`${DASHBOARD}#overview`);
    await waitLoaded(page, 'overview');
    await page.evaluate(() => { document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0); });
    let onTab = null;
    for (let i = 0; i < 40 && !onTab; i += 1) {
      await page.keyboard.press('Tab');
      onTab = await page.evaluate(() => (document.activeElement && document.activeElement.getAttribute('role') === 'tab' ? document.activeElement.dataset.tab : null));
    }
    assert.equal(onTab, 'overview', `Tab reached tab "${onTab}" (expected the selected tab, overview)`);
    const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
    assert.notEqual(outline, 'none', 'the focused tab has no visible focus outline');
    const before = await generation(page, 'providers');
    await page.keyboard.press('ArrowRight');
    const focused = await page.evaluate(() => ({ tab: document.activeElement.dataset.tab, selected: document.activeElement.getAttribute('aria-selected') }));
    assert.deepEqual(focused, { tab: 'providers', selected: 'true' }, 'ArrowRight did not move to Providers');
    await waitLoaded(page, 'providers', before);
    assert.ok(await panel(page, 'providers').isVisible(), 'the Providers panel is not shown');
    assert.equal(await panel(page, 'overview').isVisible(), false, 'the Overview panel is still shown');
    await page.keyboard.press('ArrowLeft');
    assert.equal(await page.evaluate(() => document.activeElement.dataset.tab), 'overview', 'ArrowLeft did not go back');
  });

  await step('9. no console errors, page errors or CSP violations', async () => {
    await collectCsp(page, 'admin');
    if (memberPage) await collectCsp(memberPage, 'member');
    assert.deepEqual(problems, [], `${problems.length} problem(s):\n${problems.join('\n')}`);
    if (expectedNetworkErrors.length) console.log(`     (${expectedNetworkErrors.length} expected 4xx answers logged by the browser)`);
  });

  await step('10. logout reloads to the login form; nothing of the session stays in the page', async () => {
    await openTab(page, 'usage');
    assert.ok(await rows(page, 'records').count() > 0, 'no records before logging out');
    await page.locator('[data-action="logout"]').click();
    await page.locator('form[data-form="login"]').waitFor({ state: 'visible', timeout: WAIT_MS });
    assert.match(await page.locator('#login-error').textContent(), /signed out/i, 'no "signed out" message');
    assert.equal(await page.locator('#app').isVisible(), false, 'the dashboard is still visible');
    assert.equal(await page.locator('[data-table]').count(), 0, 'tables of the previous session are still in the page');
    assert.equal(await page.locator('[data-panel][data-loaded]').count(), 0, 'panels still marked as loaded');
    const status = await page.evaluate(() => fetch('/admin/ai-usage/session', { credentials: 'same-origin' }).then((r) => r.status));
    assert.equal(status, 401, `the session still answers ${status} after logging out`);
  });

  await step('11. signing in again after logout (as the member) shows only the member\'s data', async () => {
    const form = page.locator('form[data-form="login"]');
    await form.locator('input[name="key"]').fill(MEMBER_KEY);
    await form.locator('button[type="submit"]').click();
    await waitLoaded(page, 'overview');
    assert.equal(await page.locator('[data-role-label]').getAttribute('data-role'), 'member');
    await openTab(page, 'usage');
    assert.match(await page.locator('#page-label').textContent(), /^Page 1\b/);
    const owners = await rows(page, 'records').evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-user-id')));
    assert.ok(owners.length > 0, 'no records for the member');
    assert.deepEqual([...new Set(owners)], [MEMBER_USER], `records belong to ${[...new Set(owners)].join(', ')}`);
    assert.equal(await page.locator('[data-table="webhooks"], [data-table="providers"]').count(), 0, 'admin tables survived the logout');
    await page.locator('[data-action="logout"]').click();
    await page.locator('form[data-form="login"]').waitFor({ state: 'visible', timeout: WAIT_MS });
    await collectCsp(page, 'admin page after logout');
    assert.deepEqual(problems, [], `${problems.length} problem(s):\n${problems.join('\n')}`);
  });
} catch (error) {
  failures += 1;
  console.log(`FAIL ${error.message}`);
} finally {
  await browser.close();
}

console.log(failures ? `${failures} step(s) failed; screenshots in ${SCREENSHOT_DIR}` : `all steps passed; screenshots in ${SCREENSHOT_DIR}`);
process.exit(failures ? 1 : 0);
