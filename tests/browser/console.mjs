// End-to-end test of the jobu web console in Debian's Chromium, driven by playwright-core
// (no downloaded browser). tests/console_browser.rs starts a daemon and runs this script:
//
//   node tests/browser/console.mjs BASE_URL TOKEN SCRATCH_DIR [LOGIN_URL]
//
// (or JOBU_CONSOLE_URL, JOBU_CONSOLE_TOKEN, JOBU_CONSOLE_SCRATCH, JOBU_CONSOLE_LOGIN_URL; the
// login URL is the one jobu prints at a terminal, BASE_URL/?token=TOKEN by default). The daemon must have the
// shell handler enabled and SCRATCH_DIR must be writable by it. It exits 0 when every step
// passed; otherwise 1, naming the failed step, with a screenshot in SCRATCH_DIR.
// JOBU_CONSOLE_SCREENSHOTS=1 also saves a screenshot of each page there on success;
// JOBU_CHROMIUM names another Chromium binary than /usr/bin/chromium.

import { chromium } from 'playwright-core';
import path from 'node:path';
import { existsSync, mkdirSync } from 'node:fs';

const WAIT_MS = 30_000; // bound of every wait
const CHROMIUM = process.env.JOBU_CHROMIUM || '/usr/bin/chromium';

const [argBase, argToken, argScratch, argLogin] = process.argv.slice(2);
const base = (argBase || process.env.JOBU_CONSOLE_URL || '').replace(/\/+$/, '');
const token = argToken || process.env.JOBU_CONSOLE_TOKEN || '';
const scratch = argScratch || process.env.JOBU_CONSOLE_SCRATCH || '';
const loginUrl = argLogin || process.env.JOBU_CONSOLE_LOGIN_URL || `${base}/?token=${encodeURIComponent(token)}`;
const screenshots = Boolean(process.env.JOBU_CONSOLE_SCREENSHOTS);

if (!base || !token || !scratch) {
  console.error('usage: node console.mjs BASE_URL TOKEN SCRATCH_DIR');
  process.exit(2);
}
if (!new URL(base).hostname.match(/^(127\.0\.0\.1|localhost|\[::1\])$/)) {
  console.error(`refusing a non-local base URL: ${base}`);
  process.exit(2);
}
mkdirSync(scratch, { recursive: true });

const suffix = Math.random().toString(36).slice(2, 8);
const started = Date.now();
let current = 'start';
const problems = []; // uncaught page errors and CSP violations: each fails the run

function log(message) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${message}`);
}

async function step(name, body) {
  current = name;
  const t0 = Date.now();
  await body();
  if (problems.length) throw new Error(`the page reported: ${problems.join(' | ')}`);
  log(`ok  ${name} (${Date.now() - t0} ms)`);
}

/** Polls `read` until `accept(value)`; fails after WAIT_MS naming what it waited for. */
async function waitFor(what, read, accept, timeoutMs = WAIT_MS) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await read();
      if (accept(last)) return last;
    } catch (error) {
      last = `(error: ${error.message.split('\n')[0]})`;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}; last seen: ${JSON.stringify(last)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

/** Calls the API directly (as a script would), for the auto-refresh check. */
async function apiPost(urlPath) {
  const response = await fetch(`${base}${urlPath}`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
  });
  const text = await response.text();
  check(response.ok, `POST ${urlPath} answered ${response.status}: ${text}`);
  return JSON.parse(text);
}

let browser;
try {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    timeout: WAIT_MS,
  });
} catch (error) {
  console.error(`FAILED to start Chromium (${CHROMIUM}): ${error.message}`);
  process.exit(1);
}
const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
context.setDefaultTimeout(WAIT_MS);
const page = await context.newPage();
page.on('pageerror', (error) => problems.push(`uncaught ${error.message}`));
page.on('console', (message) => {
  if (message.type() === 'error' && /Content Security Policy/i.test(message.text())) problems.push(message.text());
});
page.on('dialog', (dialog) => {
  problems.push(`unexpected dialog: ${dialog.message()}`);
  dialog.dismiss().catch(() => {});
});

async function shot(name) {
  if (screenshots) await page.screenshot({ path: path.join(scratch, `console-${name}.png`), fullPage: true });
}

const row = (name) => page.locator(`[data-testid="cron-row"][data-cron-name="${name}"]`);
const jobRow = (id) => page.locator(`[data-testid="job-row"][data-job-id="${id}"]`);
const text = (locator) => async () => ((await locator.textContent()) || '').trim();

/** Fills the cron form (open) with the given values; unnamed fields keep what they have. */
async function fillCron(values) {
  for (const [field, value] of Object.entries(values)) {
    const input = page.getByTestId(`input-${field}`);
    if (typeof value === 'boolean') await input.setChecked(value);
    else if (field === 'misfire_policy') await input.selectOption(value);
    else await input.fill(String(value));
  }
}

/** Runs a cron from its row's Run form (params prefilled, a reason), follows the link to the
 * new execution, returns its id. */
async function triggerAndFollow(name) {
  await row(name).getByTestId('cron-trigger').click();
  await page.getByTestId('run-form').waitFor();
  await page.getByTestId('run-reason').fill('from the browser test');
  await page.getByTestId('run-submit').click();
  const link = page.getByTestId('trigger-link');
  await link.waitFor();
  const href = await link.getAttribute('href');
  const id = Number((href || '').split('/').pop());
  check(Number.isInteger(id) && id > 0, `trigger link has no execution id: ${href}`);
  await link.click();
  await page.waitForURL(`${base}/jobs/${id}`);
  await waitFor(`the detail page of execution #${id}`, text(page.getByTestId('job-title')), (t) => t === `Execution #${id}`);
  return id;
}

async function waitForStatus(id, status) {
  await waitFor(`execution #${id} to show ${status}`, text(page.getByTestId('job-status')), (s) => {
    if (s === status) return true;
    // A final state other than the awaited one will not change by itself.
    if (['SUCCESS', 'FAILED', 'TIMEOUT', 'CANCELLED'].includes(s) && s !== status) {
      throw new Error(`execution #${id} ended ${s}, expected ${status}`);
    }
    return false;
  });
}

const hello = `hello-${suffix}`;
const flaky = `flaky-${suffix}`;
const marker = path.join(scratch, `marker-${suffix}`);
let helloId;
let flakyId;
let helloRun;
let flakyRun;

try {
  await step('an unauthenticated visit to /crons shows the sign-in form', async () => {
    const response = await page.goto(`${base}/crons`);
    check(response && response.status() === 401, `GET /crons without a token answered ${response && response.status()}, expected 401`);
    await page.getByTestId('login-form').waitFor();
    await shot('login');
  });

  await step('a wrong token is refused', async () => {
    await page.getByTestId('login-token').fill(`wrong-${suffix}`);
    await page.getByTestId('login-submit').click();
    await waitFor('the refusal message', text(page.getByTestId('login-error')), (t) => /not accepted/i.test(t));
  });

  await step('the admin token opens the cron list', async () => {
    await page.getByTestId('login-token').fill(token);
    await page.getByTestId('login-submit').click();
    await page.getByTestId('cron-new').waitFor();
    await waitFor('the cron list to load', text(page.getByTestId('page-info')), (t) => t !== '');
    check(await page.getByTestId('nav-logout').isVisible(), 'no "Log out" link after signing in');
    const stored = await page.evaluate(() => sessionStorage.getItem('jobu_token'));
    check(stored === token, 'the token is not in sessionStorage');
    const cookies = await context.cookies(base);
    check(cookies.some((c) => c.name === 'jobu_token' && decodeURIComponent(c.value) === token), 'no jobu_token cookie');
  });

  await step('the form catches invalid params JSON in the browser', async () => {
    await page.getByTestId('cron-new').click();
    await fillCron({
      name: hello,
      description: 'says hello',
      cron_expression: '0 0 1 1 *',
      timezone: 'UTC',
      handler_name: 'shell',
      handler_params: '{"command": echo hello}',
    });
    await page.getByTestId('cron-submit').click();
    await waitFor('the params error', text(page.getByTestId('error-handler_params')), (t) => /not valid JSON/.test(t));
    check((await row(hello).count()) === 0, 'a cron was created despite bad params');
  });

  await step('an invalid expression shows the API error next to its field', async () => {
    await fillCron({ handler_params: '{"command": "echo hello"}', cron_expression: '61 * * * *' });
    await page.getByTestId('cron-submit').click();
    const message = await waitFor('the expression error', text(page.getByTestId('error-cron_expression')), (t) => t !== '');
    check(/61/.test(message), `the expression error does not mention 61: ${message}`);
    check((await text(page.getByTestId('error-handler_params'))()) === '', 'the params error was not cleared');
    await shot('crons-error');
  });

  await step('the fixed form creates the cron', async () => {
    await fillCron({ cron_expression: '0 0 1 1 *' });
    await page.getByTestId('cron-submit').click();
    await row(hello).waitFor();
    check(!(await page.locator('#cron-form-panel').isVisible()), 'the form stayed open after creating');
    helloId = Number(await row(hello).getAttribute('data-cron-id'));
    const cells = await row(hello).locator('td').allTextContents();
    check(cells.some((c) => c.includes('0 0 1 1 *')), `the row lacks the expression: ${cells}`);
    const next = await waitFor('the next fire time', async () => row(hello).getByTestId('cron-next').locator('time').getAttribute('datetime', { timeout: 1000 }), (t) => Boolean(t));
    check(next.startsWith(`${new Date().getUTCFullYear() + 1}-01-01T00:00:00`), `the next fire time is ${next}`);
  });

  await step('triggering it runs the shell command to SUCCESS', async () => {
    helloRun = await triggerAndFollow(hello);
    await waitForStatus(helloRun, 'SUCCESS');
    const result = await text(page.getByTestId('job-result'))();
    check(/hello/.test(result), `the result does not show the output: ${result}`);
    const props = await text(page.getByTestId('job-props'))();
    check(props.includes('from the browser test') && props.includes('admin'), `the run's reason and operator are not shown: ${props}`);
    check(await page.getByTestId('job-retry').isDisabled(), 'Retry is enabled on a SUCCESS');
    check(await page.getByTestId('job-cancel').isDisabled(), 'Cancel is enabled on a SUCCESS');
    await shot('job-success');
  });

  await step('a second cron fails its first attempt', async () => {
    await page.getByTestId('nav-crons').click();
    await row(hello).waitFor();
    await page.getByTestId('cron-new').click();
    const command = `test -f '${marker}' || { touch '${marker}'; echo first attempt fails >&2; exit 1; }`;
    await fillCron({
      name: flaky,
      cron_expression: '0 0 1 1 *',
      handler_name: 'shell',
      handler_params: JSON.stringify({ command }),
      max_retry: 0,
    });
    await page.getByTestId('cron-submit').click();
    await row(flaky).waitFor();
    flakyId = Number(await row(flaky).getAttribute('data-cron-id'));
    flakyRun = await triggerAndFollow(flaky);
    await waitForStatus(flakyRun, 'FAILED');
    const error = await waitFor('the error message', text(page.getByTestId('job-error')), (t) => t !== '');
    check(/first attempt fails/.test(error), `the error block lacks the stderr: ${error}`);
    check(await page.getByTestId('job-retry').isEnabled(), 'Retry is disabled on a FAILED execution');
    await shot('job-failed');
  });

  await step('Retry runs it again to SUCCESS', async () => {
    await page.getByTestId('job-retry').click();
    await waitForStatus(flakyRun, 'SUCCESS');
  });

  await step('the execution list shows both, and the status filter works', async () => {
    await page.getByTestId('nav-jobs').click();
    await page.waitForURL(`${base}/jobs`);
    await jobRow(helloRun).waitFor();
    await jobRow(flakyRun).waitFor();
    const cron = await text(jobRow(flakyRun).getByTestId('job-cron'))();
    check(cron === flaky, `the flaky row names cron ${JSON.stringify(cron)}`);

    await page.getByTestId('status-filter').selectOption('FAILED');
    await waitFor('FAILED rows only', async () => page.locator('[data-testid="job-row"]').count(), (n) => n === 0);
    check(/status=FAILED/.test(page.url()), `the filter is not in the address: ${page.url()}`);

    await page.getByTestId('status-filter').selectOption('SUCCESS');
    await jobRow(helloRun).waitFor();
    await jobRow(flakyRun).waitFor();
    const statuses = await page.locator('[data-testid="job-row"]').evaluateAll((rows) => rows.map((r) => r.dataset.status));
    check(statuses.every((s) => s === 'SUCCESS'), `the SUCCESS filter shows ${statuses}`);
    await shot('jobs');
  });

  await step('the list refreshes itself, and pauses when asked', async () => {
    await page.getByTestId('status-filter').selectOption('');
    await jobRow(helloRun).waitFor();
    const run = await apiPost(`/api/crons/${helloId}/trigger`);
    await jobRow(run.id).waitFor({ timeout: 10_000 });
    await page.getByTestId('auto-refresh').setChecked(false);
    await page.waitForTimeout(1000); // a refresh already under way may still land
    const before = await text(page.getByTestId('updated'))();
    await page.waitForTimeout(3500);
    const after = await text(page.getByTestId('updated'))();
    check(before === after, `the list refreshed while paused (${before} -> ${after})`);
  });

  await step('the cron filter of the list comes from ?cron_id=', async () => {
    await page.goto(`${base}/jobs?cron_id=${flakyId}`);
    await jobRow(flakyRun).waitFor();
    await waitFor('only the flaky cron', async () => page.locator('[data-testid="job-row"]').count(), (n) => n === 1);
    check(await page.getByTestId('cron-filter').isVisible(), 'the cron filter chip is hidden');
  });

  await step('a row opens its execution', async () => {
    await jobRow(flakyRun).locator('td').nth(2).click();
    await page.waitForURL(`${base}/jobs/${flakyRun}`);
    await waitForStatus(flakyRun, 'SUCCESS');
  });

  await step('edit, disable and delete crons', async () => {
    await page.getByTestId('nav-crons').click();
    await row(hello).getByTestId('cron-edit').click();
    await waitFor('the edit form', text(page.getByTestId('cron-form-title')), (t) => t === `Edit cron #${helloId}`);
    const params = await page.getByTestId('input-handler_params').inputValue();
    check(JSON.parse(params).command === 'echo hello', `the edit form shows params ${params}`);
    await fillCron({ description: 'says hello, edited' });
    await page.getByTestId('cron-submit').click();
    await waitFor('the edited description', text(row(hello)), (t) => t.includes('says hello, edited'));

    await row(hello).getByTestId('cron-toggle').click();
    await row(hello).getByTestId('cron-pause-input').fill('paused by the browser test');
    await row(hello).getByTestId('cron-pause-confirm').click();
    await waitFor('the cron to be disabled', text(row(hello).getByTestId('cron-enabled')), (t) => t === 'disabled');
    await waitFor('the pause note', text(row(hello).getByTestId('cron-pause-note')), (t) => t.includes('paused by the browser test'));

    await row(flaky).getByTestId('cron-delete').click();
    await row(flaky).getByTestId('cron-delete-confirm').click();
    await waitFor('the deleted row to go', async () => row(flaky).count(), (n) => n === 0);
    await shot('crons');
  });

  await step('enable and disable send the state wanted: a repeated request changes nothing', async () => {
    const sent = page.waitForRequest((r) => r.url().endsWith(`/api/crons/${helloId}/toggle`));
    await row(hello).getByTestId('cron-toggle').click();
    const body = (await sent).postData();
    check(body === JSON.stringify({ is_enabled: true }), `the Enable button sent ${JSON.stringify(body)}, not the state it wants`);
    await waitFor('the cron to be enabled', text(row(hello).getByTestId('cron-enabled')), (t) => t === 'enabled');
    // What the button sent, sent again by a script (a retry): it stays enabled.
    const response = await page.evaluate(async ([id, bearer]) => {
      const r = await fetch(`/api/crons/${id}/toggle`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${bearer}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ is_enabled: true }),
      });
      return { status: r.status, body: await r.json() };
    }, [helloId, token]);
    check(response.status === 200 && response.body.is_enabled === true, `a repeated enable answered ${JSON.stringify(response)}`);
  });

  await step('selected crons are paused with one note, then resumed', async () => {
    await row(hello).getByTestId('cron-select').check();
    await page.getByTestId('bulk-note').fill('bulk pause from the browser');
    await page.getByTestId('bulk-pause').click();
    await waitFor('the selected cron to be paused', text(row(hello).getByTestId('cron-enabled')), (t) => t === 'disabled');
    await waitFor('its pause note', text(row(hello).getByTestId('cron-pause-note')), (t) => t.includes('bulk pause from the browser'));
    await row(hello).getByTestId('cron-select').check();
    await page.getByTestId('bulk-resume').click();
    await waitFor('the selected cron to be enabled again', text(row(hello).getByTestId('cron-enabled')), (t) => t === 'enabled');
    check(await row(hello).getByTestId('cron-pause-note').count() === 0, 'the pause note stays after the resume');
  });

  await step('a backfill is previewed, created and followed until it is done', async () => {
    await row(hello).getByTestId('cron-backfill').click();
    await page.getByTestId('backfill-form').waitFor();
    // `hello` fires at 00:00 on 1 January: one fire time in this range.
    await page.getByTestId('backfill-from').fill('2026-01-01T00:00:00Z');
    await page.getByTestId('backfill-to').fill('2026-01-02T00:00:00Z');
    await page.getByTestId('backfill-reason').fill('browser backfill');
    await page.getByTestId('backfill-dry-run').click();
    await waitFor('the preview', text(page.getByTestId('backfill-summary')), (t) => t.startsWith('Would do: 1 to create'));
    await page.getByTestId('backfill-submit').click();
    await waitFor('the backfill', text(page.getByTestId('backfill-summary')), (t) => /^Backfill #\d+: 1 created/.test(t));
    await waitFor('its progress to reach the end', text(page.getByTestId('backfill-item').first()), (t) => t.includes('1 of 1 done') && t.includes('done'));
    await page.getByTestId('backfill-close').click();
  });

  await step('log out brings the sign-in form back', async () => {
    await page.getByTestId('nav-logout').click();
    await page.getByTestId('login-form').waitFor();
    const stored = await page.evaluate(() => sessionStorage.getItem('jobu_token'));
    check(stored === null, 'the token is still stored after logging out');
  });

  await step('the login URL from jobu\'s log signs a new browser in', async () => {
    const fresh = await browser.newContext({ viewport: { width: 1360, height: 900 } });
    try {
      const tab = await fresh.newPage();
      tab.on('pageerror', (error) => problems.push(`uncaught ${error.message}`));
      const response = await tab.goto(loginUrl);
      check(response && response.ok(), `the login URL answered ${response && response.status()}`);
      await tab.getByTestId('cron-new').waitFor();
      check(tab.url() === `${base}/crons`, `the login URL led to ${tab.url()}, expected ${base}/crons without the token`);
      await waitFor('the cron list to load', async () => tab.locator('[data-testid="cron-row"]').count(), (n) => n >= 1);
      const stored = await tab.evaluate(() => sessionStorage.getItem('jobu_token'));
      check(stored === token, 'the login URL did not give the console its token');
    } finally {
      await fresh.close();
    }
  });

  log(`console test passed: ${helloRun} and ${flakyRun} ran as expected`);
  await browser.close();
  process.exit(0);
} catch (error) {
  const picture = path.join(scratch, 'console-failure.png');
  await page.screenshot({ path: picture, fullPage: true }).catch(() => {});
  console.error(`FAILED at step "${current}" (page ${page.url()}): ${error.message}`);
  if (problems.length) console.error(`page errors: ${problems.join(' | ')}`);
  if (existsSync(picture)) console.error(`screenshot: ${picture}`);
  await browser.close().catch(() => {});
  process.exit(1);
}
