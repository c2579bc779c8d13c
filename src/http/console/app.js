// jobu console: one script for every page; <body data-page> says which. Plain ES2020, no build
// step, no dependencies. Data is rendered with textContent only, never parsed as HTML: cron names,
// params and error messages are user input.
'use strict';

const TOKEN_KEY = 'jobu_token';
const PAGE_SIZE = 20;
const LIST_REFRESH_MS = 2500;
const DETAIL_REFRESH_MS = 2000;
const STATUSES = [
  'PENDING', 'RUNNING', 'SUCCESS', 'FAILED', 'TIMEOUT', 'CANCELLED',
  'WAITING', 'SKIPPED', 'MISSED', 'EXCLUDED',
];
const RETRYABLE = new Set(['FAILED', 'TIMEOUT', 'CANCELLED']);
const CANCELLABLE = new Set(['PENDING', 'RUNNING']);
const FINAL = new Set(['SUCCESS', 'FAILED', 'TIMEOUT', 'CANCELLED', 'SKIPPED', 'MISSED', 'EXCLUDED']);

// ---------------------------------------------------------------------------------------------
// Token: sessionStorage for the API's Bearer header, and a session cookie (no expiry) so the
// server lets this browser load console pages. A new tab has the cookie but an empty
// sessionStorage, so the cookie seeds it. The cookie wins when both are set: the server sets
// it too, when the console login URL from jobu's log (/?token=...) is opened.

function storage() {
  try {
    return window.sessionStorage;
  } catch {
    return null; // storage disabled: the cookie alone still works for pages
  }
}

function cookieToken() {
  for (const part of document.cookie.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0 || part.slice(0, eq).trim() !== TOKEN_KEY) continue;
    try {
      return decodeURIComponent(part.slice(eq + 1).trim());
    } catch {
      return '';
    }
  }
  return '';
}

function getToken() {
  const store = storage();
  const fromCookie = cookieToken();
  if (fromCookie) {
    if (store && store.getItem(TOKEN_KEY) !== fromCookie) store.setItem(TOKEN_KEY, fromCookie);
    return fromCookie;
  }
  return (store && store.getItem(TOKEN_KEY)) || '';
}

function cookieSuffix() {
  return '; path=/; SameSite=Strict' + (location.protocol === 'https:' ? '; Secure' : '');
}

function setToken(token) {
  const store = storage();
  if (store) store.setItem(TOKEN_KEY, token);
  document.cookie = `${TOKEN_KEY}=${encodeURIComponent(token)}${cookieSuffix()}`;
}

function clearToken() {
  const store = storage();
  if (store) store.removeItem(TOKEN_KEY);
  document.cookie = `${TOKEN_KEY}=; max-age=0${cookieSuffix()}`;
}

// ---------------------------------------------------------------------------------------------
// DOM helpers

const $ = (selector) => document.querySelector(selector);

/** Creates an element; string children become text nodes, so data is never parsed as HTML. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** A <time> in the browser's locale with the UTC ISO instant as its tooltip. */
function timeEl(iso) {
  if (!iso) return el('span', { class: 'muted' }, '—');
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return el('span', {}, iso);
  return el('time', { datetime: iso, title: date.toISOString() }, date.toLocaleString());
}

/** For a fire time that did not run: how many it stands for (MISSED), and why. */
function ledgerNote(job) {
  if (!['SKIPPED', 'MISSED', 'EXCLUDED'].includes(job.status)) return '';
  const span = job.fire_count > 1 && job.fire_time_until
    ? ` ${job.fire_count} fire times to ${new Date(job.fire_time_until).toLocaleString()}`
    : '';
  return el('span', { class: 'muted ledger-note', title: job.error_message || '', 'data-testid': 'ledger-note' }, span || ' not run');
}

function badge(status) {
  const known = STATUSES.includes(status) ? status : '';
  return el('span', { class: `badge ${known}`, 'data-testid': 'status-badge' }, status);
}

function dash(value) {
  return value === null || value === undefined || value === '' ? el('span', { class: 'muted' }, '—') : String(value);
}

function prettyJson(value) {
  return value === undefined ? '' : JSON.stringify(value, null, 2);
}

function posInt(text, fallback) {
  const n = Number(text);
  return Number.isInteger(n) && n > 0 ? n : fallback;
}

/** Shows a message in the page's #flash box; kind is ok, error or info. */
function flash(kind, ...content) {
  const box = $('#flash');
  if (!box) return;
  box.className = `message ${kind}`;
  box.replaceChildren(...content);
}

function clearFlash() {
  const box = $('#flash');
  if (box) {
    box.className = 'message';
    box.replaceChildren();
  }
}

/** Replaces the page's query string without reloading (filters and pages survive a reload). */
function setQuery(values) {
  const query = new URLSearchParams(location.search);
  for (const [key, value] of Object.entries(values)) {
    if (value === null || value === undefined || value === '' || (key === 'page' && value === 1)) {
      query.delete(key);
    } else {
      query.set(key, String(value));
    }
  }
  const search = query.toString();
  history.replaceState(null, '', location.pathname + (search ? `?${search}` : ''));
}

// ---------------------------------------------------------------------------------------------
// API access

class ApiError extends Error {
  constructor(status, body, text) {
    const message =
      body && typeof body.message === 'string'
        ? body.message
        : text || (status ? `HTTP ${status}` : 'The server did not answer');
    super(message);
    this.status = status;
    this.body = body;
    this.field = body && typeof body.field === 'string' ? body.field : null;
  }
}

// Pages stop their refresh timers through this once the API has refused the token.
const stopHooks = [];
let signedOut = false;

async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers, credentials: 'same-origin' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError(0, null, `Could not reach the server: ${error.message}`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (response.status === 401) {
    clearToken();
    showLogin(token ? 'The token was not accepted. Enter the admin token again.' : '');
  }
  if (!response.ok) throw new ApiError(response.status, data, text);
  return data;
}

// ---------------------------------------------------------------------------------------------
// Sign-in: the form of the login page, and the same form in place of a page whose API calls
// were refused.

function showLogin(message) {
  if (signedOut) return;
  signedOut = true;
  stopHooks.forEach((stop) => stop());
  const logout = $('#logout');
  if (logout) logout.hidden = true;
  document.title = 'Sign in · jobu';

  const input = el('input', {
    type: 'password',
    id: 'login-token',
    name: 'token',
    autocomplete: 'off',
    'data-testid': 'login-token',
  });
  const error = el('div', { id: 'login-error', class: 'message error', role: 'alert', 'data-testid': 'login-error' }, message);
  const form = el(
    'form',
    { id: 'login-form', method: 'post', novalidate: true, 'data-testid': 'login-form' },
    error,
    el('div', { class: 'field' }, el('label', { for: 'login-token' }, 'Admin token'), input),
    el('div', { class: 'form-actions' }, el('button', { type: 'submit', class: 'primary', id: 'login-submit', 'data-testid': 'login-submit' }, 'Sign in')),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) {
      error.textContent = 'Enter the token.';
      return;
    }
    setToken(token);
    // Not reload(): a login URL whose token was refused would be refused again.
    const url = new URL(location.href);
    url.searchParams.delete('token');
    if (url.href === location.href) location.reload();
    else location.replace(url.href);
  });
  const box = el(
    'section',
    { class: 'panel login-box', 'data-testid': 'login' },
    el('h1', {}, 'Sign in'),
    el(
      'p',
      {},
      'This jobu console needs the admin token: admin.auth_token, or the one jobu generated in its token file ' +
        '(data/admin_token by default; jobu logs a login URL with it at start). It is kept for this browser session only.',
    ),
    form,
  );
  $('#main').replaceChildren(box);
  input.focus();
}

function setupNav() {
  const logout = $('#logout');
  if (!logout) return;
  logout.hidden = !getToken();
  logout.addEventListener('click', (event) => {
    event.preventDefault();
    clearToken();
    location.reload();
  });
}

// ---------------------------------------------------------------------------------------------
// Pagination controls shared by the list pages.

function setupPager(go) {
  let current = { page: 1, pages: 1 };
  $('#page-prev').addEventListener('click', () => go(current.page - 1));
  $('#page-next').addEventListener('click', () => go(current.page + 1));
  return (data) => {
    current = data;
    const pages = Math.max(data.pages, 1);
    $('#page-info').textContent =
      data.total === 0 ? 'Nothing yet' : `Page ${data.page} of ${pages} · ${data.total} in all`;
    $('#page-prev').disabled = data.page <= 1;
    $('#page-next').disabled = data.page >= pages;
  };
}

// ---------------------------------------------------------------------------------------------
// /crons

const CRON_FIELDS = [
  'name', 'description', 'cron_expression', 'timezone', 'handler_name', 'handler_params',
  'is_enabled', 'overlap_policy', 'max_retry', 'timeout_seconds', 'misfire_policy',
  'excluded_dates', 'jitter_seconds', 'on_success', 'on_failure',
];
const CRON_DEFAULTS = {
  name: '', description: '', cron_expression: '', timezone: 'UTC', handler_name: '',
  handler_params: null, is_enabled: true, overlap_policy: 'allow', max_retry: 3,
  timeout_seconds: 300, misfire_policy: 'latest', excluded_dates: [], jitter_seconds: 0,
  on_success: [], on_failure: [],
};

/** "3, 5" -> [3, 5]; null when a part is not a cron id. */
function idList(text) {
  const parts = text.split(/[\s,]+/).filter(Boolean);
  const ids = parts.map(Number);
  return ids.every((n) => Number.isInteger(n) && n > 0) ? ids : null;
}

function cronsPage() {
  const state = { page: posInt(new URLSearchParams(location.search).get('page'), 1), editing: null, selected: new Set(), running: null, backfilling: null };
  const panel = $('#cron-form-panel');
  const form = $('#cron-form');
  const input = (field) => $(`#f-${field}`);
  let seq = 0;

  const renderPager = setupPager((page) => {
    state.page = page;
    setQuery({ page });
    load().catch(showLoadError);
  });

  function showLoadError(error) {
    if (error.status !== 401) flash('error', `Could not load crons: ${error.message}`);
  }

  async function load() {
    const mine = ++seq;
    const data = await api('GET', `/api/crons?page=${state.page}&size=${PAGE_SIZE}`);
    if (mine !== seq) return data;
    if (data.page > Math.max(data.pages, 1)) {
      // The last page emptied (a delete): show the new last page.
      state.page = Math.max(data.pages, 1);
      setQuery({ page: state.page });
      return load();
    }
    const body = $('#crons-body');
    body.replaceChildren(
      ...(data.items.length
        ? data.items.map(cronRow)
        : [el('tr', {}, el('td', { class: 'empty', colspan: 9 }, 'No crons yet. Create one with “New cron”.'))]),
    );
    renderPager(data);
    return data;
  }

  function cronRow(cron) {
    const actions = el('td', { class: 'actions' });
    const row = el(
      'tr',
      { 'data-testid': 'cron-row', 'data-cron-id': cron.id, 'data-cron-name': cron.name },
      el(
        'td',
        { class: 'muted' },
        (() => {
          const box = el('input', { type: 'checkbox', 'data-testid': 'cron-select', 'aria-label': `Select ${cron.name}` });
          box.checked = state.selected.has(cron.id);
          box.addEventListener('change', () => {
            if (box.checked) state.selected.add(cron.id);
            else state.selected.delete(cron.id);
            renderBulk();
          });
          return box;
        })(),
        ' ',
        String(cron.id),
      ),
      el(
        'td',
        {},
        el('a', { href: `/jobs?cron_id=${cron.id}`, title: 'Executions of this cron', 'data-testid': 'cron-name' }, cron.name),
        cron.description ? el('div', { class: 'sub' }, cron.description) : null,
      ),
      el('td', {}, el('code', {}, Array.isArray(cron.cron_expression) ? cron.cron_expression.join('; ') : cron.cron_expression)),
      el('td', {}, cron.timezone),
      el('td', {}, el('code', {}, cron.handler_name)),
      el(
        'td',
        {},
        el('span', { class: `badge ${cron.is_enabled ? 'on' : 'off'}`, 'data-testid': 'cron-enabled' }, cron.is_enabled ? 'enabled' : 'disabled'),
        !cron.is_enabled && (cron.pause_note || cron.paused_at)
          ? el(
            'div',
            { class: 'sub', 'data-testid': 'cron-pause-note', title: `paused ${cron.paused_at || ''} by ${cron.paused_by || '?'}` },
            cron.pause_note || 'paused',
            cron.paused_by ? el('span', { class: 'muted' }, ` · ${cron.paused_by}`) : null,
          )
          : null,
        cron.on_success.length || cron.on_failure.length
          ? el('div', { class: 'sub muted', 'data-testid': 'cron-chains' },
            [cron.on_success.length ? `then #${cron.on_success.join(', #')}` : null,
              cron.on_failure.length ? `on failure #${cron.on_failure.join(', #')}` : null].filter(Boolean).join(' · '))
          : null,
      ),
      nextFireCell(cron),
      el('td', {}, timeEl(cron.last_fire_time)),
      actions,
    );
    renderActions(actions, cron);
    return row;
  }

  // next_fire_time is the dispatchers' marker, which a new or edited cron gets only when
  // its first fire time comes near; until then the schedule itself says when that is.
  function nextFireCell(cron) {
    const cell = el('td', { 'data-testid': 'cron-next' });
    if (!cron.is_enabled) {
      cell.append(el('span', { class: 'muted' }, '—'));
    } else if (cron.next_fire_time) {
      cell.append(timeEl(cron.next_fire_time));
    } else {
      cell.append(el('span', { class: 'muted' }, '…'));
      api('GET', `/api/crons/${cron.id}/next?count=1`)
        .then((next) => cell.replaceChildren(timeEl(next && next.times[0] ? next.times[0].utc : null)))
        .catch(() => cell.replaceChildren(el('span', { class: 'muted' }, '?')));
    }
    return cell;
  }

  function renderActions(cell, cron) {
    const button = (label, testid, onClick, cls) => {
      const b = el('button', { type: 'button', class: `small ${cls || ''}`, 'data-testid': testid }, label);
      b.addEventListener('click', () => {
        b.disabled = true;
        Promise.resolve(onClick()).finally(() => {
          b.disabled = false;
        });
      });
      return b;
    };
    cell.replaceChildren(
      button('Edit', 'cron-edit', () => editCron(cron.id)),
      button(cron.is_enabled ? 'Disable' : 'Enable', 'cron-toggle', () => (cron.is_enabled ? askPause(cell, cron) : toggleCron(cron))),
      button('Run…', 'cron-trigger', () => openRun(cron)),
      button('Backfill…', 'cron-backfill', () => openBackfill(cron)),
      button('Delete', 'cron-delete', () => askDelete(cell, cron), 'danger'),
    );
  }

  // In-page confirmation (no window.confirm): the row's buttons become "Delete? Yes / Keep".
  function askDelete(cell, cron) {
    const yes = el('button', { type: 'button', class: 'small danger solid', 'data-testid': 'cron-delete-confirm' }, 'Delete');
    const no = el('button', { type: 'button', class: 'small', 'data-testid': 'cron-delete-cancel' }, 'Keep');
    yes.addEventListener('click', async () => {
      yes.disabled = true;
      try {
        await api('DELETE', `/api/crons/${cron.id}`);
        flash('ok', `Deleted cron “${cron.name}”. Its executions are kept.`);
        if (state.editing === cron.id) closeForm();
        await load();
      } catch (error) {
        if (error.status !== 401) flash('error', `Could not delete “${cron.name}”: ${error.message}`);
        renderActions(cell, cron);
      }
    });
    no.addEventListener('click', () => renderActions(cell, cron));
    cell.replaceChildren(el('span', { class: 'muted' }, 'Delete? '), yes, ' ', no);
    no.focus();
  }

  // Disabling asks for a note in the row (why it is paused; optional).
  function askPause(cell, cron) {
    const note = el('input', { type: 'text', maxlength: 1000, placeholder: 'why (optional)', 'data-testid': 'cron-pause-input', 'aria-label': 'Pause note' });
    const yes = el('button', { type: 'button', class: 'small solid', 'data-testid': 'cron-pause-confirm' }, 'Disable');
    const no = el('button', { type: 'button', class: 'small', 'data-testid': 'cron-pause-cancel' }, 'Keep');
    yes.addEventListener('click', async () => {
      yes.disabled = true;
      await toggleCron(cron, note.value.trim() || null);
      renderActions(cell, cron);
    });
    note.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') yes.click();
    });
    no.addEventListener('click', () => renderActions(cell, cron));
    cell.replaceChildren(note, ' ', yes, ' ', no);
    note.focus();
  }

  async function toggleCron(cron, pauseNote) {
    try {
      // The state wanted, not a flip: a repeated click or a retried request cannot undo it.
      const body = { is_enabled: !cron.is_enabled };
      if (pauseNote) body.pause_note = pauseNote;
      const updated = await api('POST', `/api/crons/${cron.id}/toggle`, body);
      flash('ok', `“${updated.name}” is now ${updated.is_enabled ? 'enabled' : 'disabled'}.`);
      await load();
    } catch (error) {
      if (error.status !== 401) flash('error', `Could not toggle “${cron.name}”: ${error.message}`);
    }
  }

  // Run now: a small form with the cron's params prefilled, a reason, and whether its
  // overlap policy applies.
  const runPanel = $('#run-form-panel');
  function openRun(cron) {
    state.running = cron;
    $('#run-form-title').textContent = `Run “${cron.name}” now`;
    $('#run-params').value = cron.handler_params === null || cron.handler_params === undefined ? '' : prettyJson(cron.handler_params);
    $('#run-reason').value = '';
    $('#run-respect-overlap').checked = true;
    $('#run-overlap-hint').textContent = cron.overlap_policy === 'allow'
      ? 'Its overlap policy is allow: it runs beside anything unfinished.'
      : `Its overlap policy is ${cron.overlap_policy}: unticked, it runs beside an unfinished execution anyway.`;
    $('#run-error').textContent = '';
    runPanel.hidden = false;
    runPanel.scrollIntoView({ block: 'nearest' });
    $('#run-reason').focus();
  }

  function closeRun() {
    state.running = null;
    runPanel.hidden = true;
  }

  async function submitRun(event) {
    event.preventDefault();
    const cron = state.running;
    if (!cron) return;
    const body = { respect_overlap: $('#run-respect-overlap').checked };
    const paramsText = $('#run-params').value.trim();
    const original = cron.handler_params === null || cron.handler_params === undefined ? '' : prettyJson(cron.handler_params);
    if (paramsText !== original.trim()) {
      if (paramsText === '') {
        body.params = null;
      } else {
        try {
          body.params = JSON.parse(paramsText);
        } catch (error) {
          $('#run-error').textContent = `Params are not valid JSON: ${error.message}`;
          return;
        }
      }
    }
    const reason = $('#run-reason').value.trim();
    if (reason) body.reason = reason;
    const submitButton = $('#run-submit');
    submitButton.disabled = true;
    try {
      const execution = await api('POST', `/api/crons/${cron.id}/trigger`, body);
      closeRun();
      flash(
        'ok',
        `Triggered “${cron.name}”: `,
        el('a', { href: `/jobs/${execution.id}`, 'data-testid': 'trigger-link' }, `execution #${execution.id}`),
        execution.status === 'WAITING' ? ' (waits behind the unfinished one)' : '',
      );
      load().catch(showLoadError);
    } catch (error) {
      if (error.status !== 401) $('#run-error').textContent = error.message;
    } finally {
      submitButton.disabled = false;
    }
  }

  // Backfill: past fire times of a cron that have no execution, previewed first (a dry
  // run), then created; the panel follows the backfills' progress until they are done.
  const backfillPanel = $('#backfill-panel');
  let backfillTimer = null;

  function isoMinutesAgo(minutes) {
    return new Date(Date.now() - minutes * 60000).toISOString().replace(/\.\d{3}Z$/, 'Z');
  }

  function openBackfill(cron) {
    state.backfilling = cron;
    $('#backfill-title').textContent = `Backfill “${cron.name}”`;
    $('#backfill-from').value = isoMinutesAgo(60);
    $('#backfill-to').value = isoMinutesAgo(0);
    $('#backfill-overlap').value = 'buffer_all';
    $('#backfill-reason').value = '';
    for (const box of document.querySelectorAll('[data-rerun]')) box.checked = false;
    $('#backfill-error').textContent = '';
    $('#backfill-preview').replaceChildren();
    backfillPanel.hidden = false;
    backfillPanel.scrollIntoView({ block: 'nearest' });
    followBackfills();
  }

  function closeBackfill() {
    state.backfilling = null;
    backfillPanel.hidden = true;
    clearTimeout(backfillTimer);
  }

  function backfillBody(dryRun) {
    const body = {
      from: $('#backfill-from').value.trim(),
      to: $('#backfill-to').value.trim(),
      overlap: $('#backfill-overlap').value,
      dry_run: dryRun,
      rerun: [...document.querySelectorAll('[data-rerun]')].filter((b) => b.checked).map((b) => b.dataset.rerun),
    };
    const reason = $('#backfill-reason').value.trim();
    if (reason) body.reason = reason;
    return body;
  }

  async function sendBackfill(dryRun) {
    const cron = state.backfilling;
    if (!cron) return;
    $('#backfill-error').textContent = '';
    try {
      const answer = await api('POST', `/api/crons/${cron.id}/backfill`, backfillBody(dryRun));
      const counts = `${answer.created} to create, ${answer.rerun} to run again, ${answer.left_alone} left alone, ${answer.excluded} excluded`;
      $('#backfill-preview').replaceChildren(
        el('p', { 'data-testid': 'backfill-summary' }, dryRun ? `Would do: ${counts}.` : `Backfill #${answer.backfill_id}: ${counts.replace('to create', 'created').replace('to run again', 'run again')}.`),
        answer.note ? el('p', { class: 'muted' }, answer.note) : null,
      );
      if (!dryRun) followBackfills();
    } catch (error) {
      if (error.status !== 401) $('#backfill-error').textContent = error.message;
    }
  }

  async function followBackfills() {
    clearTimeout(backfillTimer);
    const cron = state.backfilling;
    if (!cron) return;
    try {
      const data = await api('GET', `/api/crons/${cron.id}/backfills?size=5`);
      if (state.backfilling !== cron) return;
      $('#backfill-list').replaceChildren(
        ...(data.items.length
          ? data.items.map((b) => {
            const p = b.progress;
            const counts = Object.entries(p.by_status).filter(([, n]) => n > 0).map(([st, n]) => `${n} ${st}`).join(', ');
            return el(
              'li',
              { 'data-testid': 'backfill-item', 'data-backfill-id': b.id },
              el('strong', {}, `#${b.id}`),
              ` ${b.from} → ${b.to} (${b.overlap}): `,
              el('span', { 'data-testid': 'backfill-progress' }, `${p.total - p.by_status.PENDING - p.by_status.RUNNING - p.by_status.WAITING} of ${p.total} done${counts ? ` · ${counts}` : ''}`),
              p.done ? el('span', { class: 'badge SUCCESS' }, 'done') : el('span', { class: 'badge RUNNING' }, 'running'),
              b.reason ? el('div', { class: 'sub' }, b.reason) : null,
            );
          })
          : [el('li', { class: 'muted' }, 'No backfills of this cron yet.')]),
      );
      if (data.items.some((b) => !b.progress.done)) backfillTimer = setTimeout(followBackfills, 2000);
    } catch (error) {
      if (error.status !== 401) $('#backfill-error').textContent = `Could not load its backfills: ${error.message}`;
    }
  }

  // Bulk pause and resume of the selected crons, with one note.
  function renderBulk() {
    const n = state.selected.size;
    $('#bulk-count').textContent = n ? `${n} selected` : 'Select crons to pause or resume them together.';
    $('#bulk-pause').disabled = n === 0;
    $('#bulk-resume').disabled = n === 0;
  }

  async function bulk(action) {
    const ids = [...state.selected];
    const note = $('#bulk-note').value.trim();
    const body = { ids };
    if (note) body.note = note;
    try {
      const done = await api('POST', `/api/crons/${action}`, body);
      const verb = action === 'pause' ? 'Paused' : 'Resumed';
      flash('ok', `${verb} ${done.changed.length} cron(s)${done.unchanged.length ? `; ${done.unchanged.length} already ${action === 'pause' ? 'paused' : 'enabled'}` : ''}.`);
      state.selected.clear();
      $('#bulk-note').value = '';
      renderBulk();
      await load();
    } catch (error) {
      if (error.status !== 401) flash('error', `Could not ${action}: ${error.message}`);
    }
  }

  async function editCron(id) {
    try {
      openForm(await api('GET', `/api/crons/${id}`));
    } catch (error) {
      if (error.status !== 401) flash('error', `Could not load cron #${id}: ${error.message}`);
    }
  }

  function clearErrors() {
    $('#form-error').textContent = '';
    for (const field of CRON_FIELDS) {
      $(`#error-${field}`).textContent = '';
      input(field).closest('.field').classList.remove('invalid');
      input(field).removeAttribute('aria-invalid');
    }
  }

  function fieldError(field, message) {
    const target = $(`#error-${field}`);
    target.textContent = message;
    input(field).closest('.field').classList.add('invalid');
    input(field).setAttribute('aria-invalid', 'true');
  }

  function openForm(cron) {
    state.editing = cron ? cron.id : null;
    clearErrors();
    const values = { ...CRON_DEFAULTS, ...(cron || {}) };
    for (const field of CRON_FIELDS) {
      const node = input(field);
      const value = values[field];
      if (node.type === 'checkbox') node.checked = Boolean(value);
      else if (field === 'handler_params') node.value = value === null || value === undefined ? '' : prettyJson(value);
      else if (field === 'cron_expression' && Array.isArray(value)) node.value = value.join('; ');
      else if (field === 'excluded_dates' || field === 'on_success' || field === 'on_failure') node.value = (value || []).join(', ');
      else node.value = value === null || value === undefined ? '' : String(value);
    }
    $('#cron-form-title').textContent = cron ? `Edit cron #${cron.id}` : 'New cron';
    $('#cron-submit').textContent = cron ? 'Save' : 'Create';
    panel.hidden = false;
    panel.scrollIntoView({ block: 'nearest' });
    input('name').focus();
  }

  function closeForm() {
    state.editing = null;
    panel.hidden = true;
    clearErrors();
  }

  /** The request body, or the client-side errors by field (bad JSON, non-numbers). */
  function readForm() {
    const errors = {};
    const text = (field) => input(field).value.trim();
    const body = {
      name: text('name'),
      description: text('description') || null,
      // Several expressions separated by `;` are a list (the union of their times).
      cron_expression: (() => {
        const lines = input('cron_expression').value.split(/[;\n]/).map((l) => l.trim()).filter(Boolean);
        return lines.length > 1 ? lines : (lines[0] || '');
      })(),
      timezone: text('timezone') || 'UTC',
      handler_name: text('handler_name'),
      is_enabled: input('is_enabled').checked,
      overlap_policy: input('overlap_policy').value,
      misfire_policy: input('misfire_policy').value,
      excluded_dates: text('excluded_dates').split(/[\s,]+/).filter(Boolean),
    };
    for (const field of ['name', 'cron_expression', 'handler_name']) {
      if (!body[field]) errors[field] = 'Required.';
    }
    for (const field of ['on_success', 'on_failure']) {
      const ids = idList(text(field));
      if (ids === null) errors[field] = 'Cron ids separated by commas, such as 3, 5.';
      else body[field] = ids;
    }
    const params = text('handler_params');
    if (params === '') {
      body.handler_params = null;
    } else {
      try {
        body.handler_params = JSON.parse(params);
        const value = body.handler_params;
        if (value !== null && (typeof value !== 'object' || Array.isArray(value))) {
          errors.handler_params = 'Params must be a JSON object such as {"command": "echo hi"}, or empty.';
        }
      } catch (error) {
        errors.handler_params = `Params are not valid JSON: ${error.message}`;
      }
    }
    // The documented ranges, checked here too so the message lands next to the field.
    for (const [field, min, max] of [['max_retry', 0, 100], ['timeout_seconds', 1, 86400], ['jitter_seconds', 0, 86400]]) {
      const node = input(field);
      const raw = node.value.trim();
      if (raw === '' && !node.validity.badInput) continue; // left empty: the server's default
      const n = Number(raw);
      if (raw === '' || !Number.isInteger(n)) errors[field] = 'Enter a whole number.';
      else if (n < min || n > max) errors[field] = `Must be between ${min} and ${max}.`;
      else body[field] = n;
    }
    return { body, errors };
  }

  async function submit(event) {
    event.preventDefault();
    clearErrors();
    const { body, errors } = readForm();
    const invalid = Object.keys(errors);
    if (invalid.length) {
      invalid.forEach((field) => fieldError(field, errors[field]));
      input(invalid[0]).focus();
      return;
    }
    const submitButton = $('#cron-submit');
    submitButton.disabled = true;
    const editing = state.editing;
    try {
      const saved = editing
        ? await api('PUT', `/api/crons/${editing}`, body)
        : await api('POST', '/api/crons', body);
      closeForm();
      flash('ok', `${editing ? 'Saved' : 'Created'} cron “${saved.name}” (#${saved.id}).`);
      const data = await load();
      if (!editing && data && data.page < data.pages) {
        // New crons go last (the list is ordered by id): show the page that has it.
        state.page = data.pages;
        setQuery({ page: state.page });
        await load();
      }
    } catch (error) {
      if (error.status === 401) return;
      // The API names the field at fault ("handler_params.command" counts as handler_params).
      const field = error.field ? error.field.split(/[.[/]/)[0] : null;
      if (field && CRON_FIELDS.includes(field)) {
        fieldError(field, error.message);
        input(field).focus();
      } else {
        $('#form-error').textContent = error.message;
      }
    } finally {
      submitButton.disabled = false;
    }
  }

  form.addEventListener('submit', submit);
  $('#cron-new').addEventListener('click', () => openForm(null));
  $('#cron-cancel').addEventListener('click', closeForm);
  $('#run-form').addEventListener('submit', submitRun);
  $('#backfill-form').addEventListener('submit', (event) => {
    event.preventDefault();
    sendBackfill(false);
  });
  $('#backfill-dry-run').addEventListener('click', () => sendBackfill(true));
  $('#backfill-close').addEventListener('click', closeBackfill);
  $('#run-cancel').addEventListener('click', closeRun);
  $('#bulk-pause').addEventListener('click', () => bulk('pause'));
  $('#bulk-resume').addEventListener('click', () => bulk('resume'));
  renderBulk();

  fillTimezones();
  fillHandlers();
  load().catch(showLoadError);
}

function fillTimezones() {
  const list = $('#timezones');
  const zones = typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : [];
  list.replaceChildren(...['UTC', ...zones.filter((z) => z !== 'UTC')].map((z) => el('option', { value: z })));
}

/** Suggests the handlers this jobu accepts (GET /api/stats lists them). */
async function fillHandlers() {
  let names = ['noop', 'shell', 'sleep'];
  try {
    const stats = await api('GET', '/api/stats');
    if (stats && Array.isArray(stats.handlers) && stats.handlers.length) names = stats.handlers;
  } catch {
    // Suggestions only: the built-in names will do.
  }
  $('#handlers').replaceChildren(...[...names].sort().map((name) => el('option', { value: name })));
}

// ---------------------------------------------------------------------------------------------
// Auto-refresh: one request at a time, a fixed pause after each, skipped while the tab is hidden.

function refresher(load, intervalMs, shouldContinue) {
  let timer = null;
  let stopped = false;
  const schedule = () => {
    clearTimeout(timer);
    if (!stopped && shouldContinue()) timer = setTimeout(tick, intervalMs);
  };
  const tick = async () => {
    if (!document.hidden) {
      try {
        await load();
      } catch {
        // load() shows its own errors; keep trying.
      }
    }
    schedule();
  };
  stopHooks.push(() => {
    stopped = true;
    clearTimeout(timer);
  });
  return schedule;
}

// ---------------------------------------------------------------------------------------------
// /jobs

function jobsPage() {
  const query = new URLSearchParams(location.search);
  const state = {
    page: posInt(query.get('page'), 1),
    status: STATUSES.includes(query.get('status')) ? query.get('status') : '',
    cronId: posInt(query.get('cron_id'), null),
  };
  const statusFilter = $('#status-filter');
  const auto = $('#auto-refresh');
  statusFilter.value = state.status;
  let seq = 0;

  const renderPager = setupPager((page) => {
    state.page = page;
    setQuery({ page });
    load().catch(() => {});
  });

  async function load() {
    const mine = ++seq;
    const params = new URLSearchParams({ page: state.page, size: PAGE_SIZE });
    if (state.status) params.set('status', state.status);
    if (state.cronId) params.set('cron_id', state.cronId);
    let data;
    try {
      data = await api('GET', `/api/jobs?${params}`);
    } catch (error) {
      if (error.status !== 401 && mine === seq) flash('error', `Could not load executions: ${error.message}`);
      throw error;
    }
    if (mine !== seq) return;
    if ($('#flash').classList.contains('error')) clearFlash();
    $('#jobs-body').replaceChildren(
      ...(data.items.length
        ? data.items.map(jobRow)
        : [el('tr', {}, el('td', { class: 'empty', colspan: 9 }, 'No executions match.'))]),
    );
    renderPager(data);
    $('#updated').textContent = `Updated ${new Date().toLocaleTimeString()}`;
  }

  function jobRow(job) {
    const href = `/jobs/${job.id}`;
    const cron = job.cron_name
      ? el('a', { href: `/jobs?cron_id=${job.job_id}`, title: 'Executions of this cron' }, job.cron_name)
      : el('span', { class: 'muted' }, job.job_id ? `cron #${job.job_id}` : 'ad hoc');
    const row = el(
      'tr',
      { class: 'clickable', 'data-testid': 'job-row', 'data-job-id': job.id, 'data-status': job.status },
      el('td', {}, el('a', { href, 'data-testid': 'job-link' }, `#${job.id}`)),
      el('td', { 'data-testid': 'job-cron' }, cron),
      el('td', {}, el('code', {}, job.handler_name)),
      el('td', {}, timeEl(job.scheduled_time)),
      el('td', { 'data-testid': 'job-status' }, badge(job.status), ledgerNote(job)),
      el('td', {}, `${job.retry_count + 1} / ${job.max_retry + 1}`),
      el('td', {}, timeEl(job.started_at)),
      el('td', {}, timeEl(job.finished_at)),
      el('td', {}, job.worker_id ? el('span', { class: 'mono' }, job.worker_id) : dash(null)),
    );
    // The whole row opens the execution; links inside it keep their own targets.
    row.addEventListener('click', (event) => {
      if (!event.target.closest('a') && !window.getSelection().toString()) location.href = href;
    });
    return row;
  }

  async function showCronFilter() {
    if (!state.cronId) return;
    const label = $('#cron-filter-label');
    label.textContent = `cron #${state.cronId}`;
    $('#cron-filter').hidden = false;
    try {
      const cron = await api('GET', `/api/crons/${state.cronId}`);
      label.textContent = `cron “${cron.name}”`;
    } catch {
      // Deleted or unreadable: the id is label enough.
    }
  }

  const schedule = refresher(load, LIST_REFRESH_MS, () => auto.checked);

  statusFilter.addEventListener('change', () => {
    state.status = statusFilter.value;
    state.page = 1;
    setQuery({ status: state.status, page: 1 });
    load().catch(() => {});
  });
  $('#cron-filter-clear').addEventListener('click', () => {
    state.cronId = null;
    state.page = 1;
    $('#cron-filter').hidden = true;
    setQuery({ cron_id: null, page: 1 });
    load().catch(() => {});
  });
  auto.addEventListener('change', schedule);

  showCronFilter();
  load().catch(() => {}).finally(schedule);
}

// ---------------------------------------------------------------------------------------------
// /jobs/{id}

function jobPage() {
  const match = location.pathname.match(/^\/jobs\/(\d+)\/?$/);
  const id = match ? Number(match[1]) : null;
  const retry = $('#job-retry');
  const cancel = $('#job-cancel');
  let job = null;

  if (!id) {
    flash('error', 'This is not an execution address: it should be /jobs/<number>.');
    return;
  }
  $('#job-title').textContent = `Execution #${id}`;
  document.title = `Execution #${id} · jobu`;

  function render(data) {
    job = data;
    const status = $('#job-status');
    status.textContent = job.status;
    status.className = `badge ${STATUSES.includes(job.status) ? job.status : ''}`;
    retry.disabled = !RETRYABLE.has(job.status);
    cancel.disabled = !CANCELLABLE.has(job.status) || job.cancel_requested;

    const cron = job.cron_name
      ? el('a', { href: `/jobs?cron_id=${job.job_id}`, title: 'Executions of this cron' }, job.cron_name)
      : el('span', { class: 'muted' }, job.job_id ? `cron #${job.job_id}` : 'ad hoc');
    const duration =
      job.started_at && job.finished_at
        ? `${((new Date(job.finished_at) - new Date(job.started_at)) / 1000).toFixed(3)} s`
        : null;
    const props = [
      ['Cron', cron],
      ['Cron id', dash(job.job_id)],
      ['Handler', el('code', {}, job.handler_name)],
      ['Status', badge(job.status)],
      ['Param source', dash(job.param_source)],
      ['Reason', dash(job.reason)],
      ['Requested by', dash(job.requested_by)],
      ['Parent execution', job.parent_execution_id
        ? el('a', { href: `/jobs/${job.parent_execution_id}`, 'data-testid': 'job-parent' }, `#${job.parent_execution_id}`)
        : dash(null)],
      ['Backfill', dash(job.backfill_id === null || job.backfill_id === undefined ? null : `#${job.backfill_id}`)],
      ['Attempt', `${job.retry_count + 1} of at most ${job.max_retry + 1} (retry_count ${job.retry_count}, max_retry ${job.max_retry})`],
      ['Scheduled', timeEl(job.scheduled_time)],
      ['Run at', timeEl(job.run_at)],
      ['Started', timeEl(job.started_at)],
      ['Finished', timeEl(job.finished_at)],
      ['Duration', dash(duration)],
      ['Timeout', `${job.timeout_seconds} s`],
      ['Worker', job.worker_id ? el('span', { class: 'mono' }, job.worker_id) : dash(null)],
      ['Lease expires', timeEl(job.lease_expires_at)],
      ['Cancel requested', job.cancel_requested ? 'yes' : 'no'],
      ['Created', timeEl(job.created_at)],
      ['Updated', timeEl(job.updated_at)],
    ];
    $('#job-props').replaceChildren(
      ...props.flatMap(([name, value]) => [el('dt', {}, name), el('dd', { 'data-field': name }, value)]),
    );
    $('#job-params').textContent = job.params === undefined ? 'null' : prettyJson(job.params);
    $('#job-result').textContent = job.result === null || job.result === undefined ? (FINAL.has(job.status) ? 'null' : '(no result yet)') : prettyJson(job.result);
    $('#job-error').textContent = job.error_message || '';
    $('#job-error-panel').hidden = !job.error_message;
    $('#job-detail').hidden = false;
    $('#updated').textContent = `Updated ${new Date().toLocaleTimeString()}`;
  }

  let gone = false;
  async function load() {
    try {
      render(await api('GET', `/api/jobs/${id}`));
      if ($('#flash').classList.contains('error')) clearFlash();
    } catch (error) {
      if (error.status === 404) {
        gone = true;
        flash('error', `Execution #${id} does not exist (it may have been deleted).`);
      } else if (error.status !== 401) {
        flash('error', `Could not load execution #${id}: ${error.message}`);
      }
      throw error;
    }
  }

  // Refresh while the execution can still change.
  const schedule = refresher(load, DETAIL_REFRESH_MS, () => !gone && (!job || !FINAL.has(job.status)));

  async function act(button, action, done) {
    button.disabled = true;
    try {
      const updated = await api('POST', `/api/jobs/${id}/${action}`);
      render(updated);
      flash('ok', done(updated));
      schedule();
    } catch (error) {
      if (error.status !== 401) flash('error', `Could not ${action}: ${error.message}`);
      if (job) render(job);
    }
  }

  retry.addEventListener('click', () => act(retry, 'retry', () => 'Queued again: it runs now, with its attempts counted from 1.'));
  cancel.addEventListener('click', () =>
    act(cancel, 'cancel', (updated) =>
      updated.status === 'CANCELLED' ? 'Cancelled.' : 'Cancel requested: its worker stops it within a heartbeat.',
    ),
  );

  load().catch(() => {}).finally(schedule);
}

// ---------------------------------------------------------------------------------------------

function loginPage() {
  // The server answered a page with this form, so a token this browser holds was refused.
  const stale = Boolean(getToken());
  if (stale) clearToken();
  showLogin(stale ? 'The stored token was not accepted. Enter the admin token again.' : '');
}

document.addEventListener('DOMContentLoaded', () => {
  setupNav();
  const pages = { crons: cronsPage, jobs: jobsPage, job: jobPage, login: loginPage };
  const start = pages[document.body.dataset.page];
  if (start) start();
});
