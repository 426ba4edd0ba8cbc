// The playground page in headless Chromium against a real API and worker (see scripts/e2e.sh).
// Steps run in order on one page; each leaves a screenshot in E2E_ARTIFACTS.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright-core';

const BASE_URL = process.env.RUNBOX_URL ?? 'http://127.0.0.1:8080';
const ARTIFACTS = resolve(process.env.E2E_ARTIFACTS ?? 'artifacts');
const DOCS_SCREENSHOT = process.env.E2E_DOCS_SCREENSHOT ?? '';
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const VIEWPORT = { width: 1366, height: 768 };
// The shape of a real key; this server does not require keys, so it ignores it.
const API_KEY = `rbx_${'e2e_playground-key'.padEnd(43, '0')}`;

let browser;
let page;
const problems = [];
let shot = 0;

async function screenshot(name) {
  shot += 1;
  const path = join(ARTIFACTS, `${String(shot).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path });
  return path;
}

// A 4xx from the API is an answer the page shows (a syntax error, the job list missing on an
// older server), but Chromium still logs it as a failed resource load; anything else counts.
function expectedApiAnswer(message) {
  if (!/status of 4\d\d/.test(message.text())) return false;
  try {
    const { pathname } = new URL(message.location().url);
    return /^\/(validate|execute|jobs)(\/|$)/.test(pathname);
  } catch {
    return false;
  }
}

const testid = (id) => page.getByTestId(id);
const isApiPath = (url) => /^\/(validate|execute|jobs)(\/|$)/.test(url.pathname);
const isEventsPath = (url) => /^\/jobs\/[0-9a-f-]{36}\/events$/.test(url.pathname);
const isEventsRequest = (request) => request.method() === 'GET' && isEventsPath(new URL(request.url()));

// Prints a line every 300 ms: long enough to be seen running, short enough to wait for.
const ticks = (count) =>
  `import time\ndef main():\n    for i in range(${count}):\n        print(f"tick {i}")\n        time.sleep(0.3)\n    return "done"\n`;
const tickLines = (count) => Array.from({ length: count }, (_, i) => `tick ${i}\n`).join('');

async function setScript(script) {
  // The hello example first, for its default timeout and memory.
  await testid('example-select').selectOption('hello');
  await testid('code').fill(script);
  await waitForText(testid('validation'), /Valid/);
}

/**
 * Waits until the stdout pane contains `text`, and returns what the panel showed at that very
 * moment (read in the page, so the job cannot finish between two reads).
 */
async function panelWhenPrinted(text) {
  const handle = await page.waitForFunction((wanted) => {
    const read = (id) => document.querySelector(`[data-testid="${id}"]`).textContent;
    const stdout = read('stdout');
    if (!stdout.includes(wanted)) return null;
    return {
      stdout,
      status: read('result-status'),
      http: read('result-http'),
      returned: !document.getElementById('json-block').hidden,
    };
  }, text, { timeout: 60_000 });
  return handle.jsonValue();
}

async function waitForText(locator, pattern, timeout = 30_000) {
  await locator.filter({ hasText: pattern }).first().waitFor({ timeout });
}

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  const context = await browser.newContext({ viewport: VIEWPORT, locale: 'en-GB', timezoneId: 'UTC' });
  page = await context.newPage();
  page.on('console', (message) => {
    if (message.type() === 'error' && !expectedApiAnswer(message)) {
      problems.push(`console: ${message.text()} (${message.location().url})`);
    }
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
});

after(async () => {
  await browser?.close();
});

test('the page opens with an editor, examples and a valid script', async () => {
  const response = await page.goto(`${BASE_URL}/`);
  assert.equal(response.status(), 200);
  assert.match(response.headers()['content-type'], /^text\/html/);
  assert.equal(await page.title(), 'runbox playground');

  const options = await testid('example-select').locator('option').allTextContents();
  assert.deepEqual(options, ['hello', 'print', 'numpy', 'pandas', 'error', 'timeout']);
  assert.match(await testid('code').inputValue(), /def main\(\):/);
  await waitForText(testid('validation'), /Valid/);
  assert.equal(await testid('link-docs').getAttribute('href'), '/docs');
  assert.equal(await testid('link-openapi').getAttribute('href'), '/openapi.json');

  for (const viewport of [VIEWPORT, { width: 1440, height: 900 }]) {
    await page.setViewportSize(viewport);
    const overflow = await page.evaluate(() => ({
      x: document.documentElement.scrollWidth - document.documentElement.clientWidth,
      y: document.documentElement.scrollHeight - document.documentElement.clientHeight,
    }));
    assert.deepEqual(overflow, { x: 0, y: 0 }, `page scrolls at ${viewport.width}x${viewport.height}`);
    await screenshot(`open-${viewport.width}x${viewport.height}`);
  }
  await page.setViewportSize(VIEWPORT);
});

test('the pandas example runs and shows its result', async () => {
  await testid('example-select').selectOption('pandas');
  assert.match(await testid('code').inputValue(), /import pandas as pd/);
  await testid('run-button').click();
  await waitForText(testid('result-status'), /^succeeded$/, 60_000);

  const result = JSON.parse(await testid('result-json').textContent());
  assert.deepEqual(result, { a: 6, b: 15 });
  assert.match(await testid('result-http').textContent(), /^POST \/jobs → 202 Accepted · events: succeeded$/);
  assert.match(await testid('duration').textContent(), /\d+ (ms|s)$/);
  assert.match(await testid('round-trip').textContent(), /\d+ (ms|s)$/);
  assert.equal(await testid('error-block').isVisible(), false);
  await screenshot('pandas-result');
});

test('a failing script shows its error and traceback', async () => {
  await testid('example-select').selectOption('error');
  await testid('run-button').click();
  await waitForText(testid('result-status'), /^failed$/, 60_000);
  assert.match(await testid('result-http').textContent(), /^POST \/jobs → 202 Accepted · events: failed$/);
  assert.match(await testid('error-kind').textContent(), /exception/);
  assert.match(await testid('error-text').textContent(), /ValueError/);
  assert.match(await testid('stdout').textContent(), /parsing/);
  await screenshot('error-result');
});

test('a script past its timeout is stopped', async () => {
  await testid('example-select').selectOption('timeout');
  assert.equal(await testid('timeout-input').inputValue(), '2');
  const [request] = await Promise.all([
    page.waitForRequest((r) => r.method() === 'POST' && new URL(r.url()).pathname === '/jobs'),
    testid('run-button').click(),
  ]);
  // A request the browser re-sends on its own returns the same job instead of running the
  // script a second time.
  assert.match(request.headers()['idempotency-key'] ?? '', /^[0-9a-f-]{32,36}$/);
  await waitForText(testid('result-status'), /^timed out$/, 60_000);
  assert.match(await testid('result-http').textContent(), /^POST \/jobs → 202 Accepted · events: timed out$/);
  assert.match(await testid('error-kind').textContent(), /timeout/);
  await screenshot('timeout-result');
});

test('a syntax error is marked on its line while typing, and cleared when fixed', async () => {
  const code = testid('code');
  await code.click();
  await page.keyboard.press('Control+A');
  await page.keyboard.press('Delete');
  // The editor indents after the colon by itself.
  await page.keyboard.type('def main():\n');
  await page.keyboard.type('total = 1 +\n');
  await page.keyboard.type('return total');
  assert.equal(await code.inputValue(), 'def main():\n    total = 1 +\n    return total');

  await waitForText(testid('validation'), /Line 2/);
  assert.equal(await testid('gutter-error').textContent(), '2');
  assert.equal(await testid('error-line').isVisible(), true);
  assert.match(await testid('error-flag').textContent(), /SyntaxError/);
  assert.match(await testid('validation').textContent(), /SyntaxError/);
  assert.equal(await code.getAttribute('aria-invalid'), 'true');
  await screenshot('syntax-error');

  // Fix line 2: the mark goes away.
  await page.keyboard.press('ArrowUp');
  await page.keyboard.press('End');
  await page.keyboard.type(' 2');
  await waitForText(testid('validation'), /Valid/);
  assert.equal(await testid('gutter-error').count(), 0);
  assert.equal(await testid('error-line').isVisible(), false);
});

test('a job submitted with hello reaches succeeded in the job list', async () => {
  await testid('example-select').selectOption('hello');
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/jobs'),
    testid('submit-button').click(),
  ]);
  assert.equal(response.status(), 202);
  const { id } = await response.json();
  assert.match(id, /^[0-9a-f-]{36}$/);
  await waitForText(testid('result-id'), id);

  const row = testid('jobs-list').locator(`[data-testid="job-row"][data-job-id="${id}"]`);
  await row.waitFor({ timeout: 10_000 });
  await testid('jobs-list')
    .locator(`[data-testid="job-row"][data-job-id="${id}"][data-status="succeeded"]`)
    .waitFor({ timeout: 60_000 });
  assert.match(await row.getByTestId('job-status').textContent(), /succeeded/);
  // The result panel followed the job it submitted.
  await waitForText(testid('result-status'), /^succeeded$/);
  assert.deepEqual(JSON.parse(await testid('result-json').textContent()), { message: 'hello' });
  await screenshot('async-job');
});

test('clicking a job in the list loads its outcome', async () => {
  const failed = testid('jobs-list').locator('[data-testid="job-row"][data-status="failed"]').first();
  await failed.click();
  await waitForText(testid('result-status'), /^failed$/);
  assert.match(await testid('result-http').textContent(), /^GET \/jobs\/[0-9a-f]{8}… → 200 OK$/);
  assert.match(await testid('error-text').textContent(), /ValueError/);
  assert.equal(await failed.getAttribute('aria-current'), 'true');

  // The view the README shows: the pandas example and its job's outcome.
  await testid('example-select').selectOption('pandas');
  await waitForText(testid('validation'), /Valid/);
  const pandas = testid('jobs-list').locator('[data-testid="job-row"][data-status="succeeded"]').last();
  await pandas.click();
  await waitForText(testid('result-json'), /"a": 6/);
  await page.mouse.move(0, 0);
  await screenshot('job-from-list');
  if (DOCS_SCREENSHOT) await page.screenshot({ path: DOCS_SCREENSHOT });
});

test('a running script shows its output as it prints it', async () => {
  await setScript(ticks(6));
  const [events] = await Promise.all([
    page.waitForRequest(isEventsRequest),
    testid('run-button').click(),
  ]);
  assert.match(await events.headerValue('accept'), /text\/event-stream/);

  const seen = await panelWhenPrinted('tick 0');
  assert.equal(seen.status, 'running');
  assert.equal(seen.returned, false);
  assert.doesNotMatch(seen.stdout, /tick 5/);
  assert.match(seen.http, /^POST \/jobs → 202 Accepted · events: running$/);
  assert.equal(await testid('run-button').isDisabled(), true);
  await screenshot('live-output');

  await waitForText(testid('result-status'), /^succeeded$/, 60_000);
  assert.equal(await testid('stdout').textContent(), tickLines(6));
  assert.equal(JSON.parse(await testid('result-json').textContent()), 'done');
  assert.match(await testid('result-http').textContent(), /^POST \/jobs → 202 Accepted · events: succeeded$/);
  assert.match(await testid('duration').textContent(), /\d+ (ms|s)$/);
  // The run is over with its outcome.
  await page.waitForFunction(() => !document.querySelector('[data-testid="run-button"]').disabled, null, { timeout: 5_000 });
});

test('a running job opened from the list is followed live, and no longer once left', async () => {
  await setScript(ticks(15));
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/jobs'),
    testid('submit-button').click(),
  ]);
  const { id } = await response.json();
  const eventsOf = (r) => isEventsRequest(r) && new URL(r.url()).pathname === `/jobs/${id}/events`;
  // The panel follows the job it submitted.
  assert.equal((await panelWhenPrinted('tick 0')).status, 'running');

  // Opening another job stops following this one.
  const [aborted] = await Promise.all([
    page.waitForEvent('requestfailed', eventsOf),
    testid('jobs-list').locator('[data-testid="job-row"][data-status="failed"]').first().click(),
  ]);
  assert.match(aborted.failure()?.errorText ?? '', /ABORTED/);
  await waitForText(testid('result-status'), /^failed$/);

  const row = testid('jobs-list').locator(`[data-testid="job-row"][data-job-id="${id}"]`);
  await Promise.all([page.waitForRequest(eventsOf), row.click()]);
  const seen = await panelWhenPrinted('tick 1');
  assert.equal(seen.status, 'running');
  assert.equal(seen.returned, false);
  assert.match(seen.http, /^GET \/jobs\/[0-9a-f]{8}… → 200 OK · events: running$/);
  assert.equal(await row.getAttribute('aria-current'), 'true');

  await waitForText(testid('result-status'), /^succeeded$/, 60_000);
  // The stream starts over from the job's first line: each printed once, none missing.
  assert.equal(await testid('stdout').textContent(), tickLines(15));
  assert.match(await testid('result-http').textContent(), /^GET \/jobs\/[0-9a-f]{8}… → 200 OK · events: succeeded$/);
});

test('a stream that breaks off resumes where it stopped', async () => {
  const requests = [];
  const record = (request) => {
    if (isEventsRequest(request)) requests.push(request);
  };
  page.on('request', record);
  // The first answer ends after the first event, with a keep-alive comment before it.
  await page.route(isEventsPath, (route) => route.fulfill({
    status: 200,
    contentType: 'text/event-stream',
    body: ': keep-alive\n\nid: 0\nevent: status\ndata: {"status":"queued"}\n\n',
  }), { times: 1 });
  try {
    await setScript(ticks(4));
    await testid('run-button').click();
    await waitForText(testid('result-status'), /^succeeded$/, 60_000);
  } finally {
    page.off('request', record);
    await page.unroute(isEventsPath);
  }
  assert.equal(requests.length, 2);
  assert.equal(await requests[0].headerValue('last-event-id'), null);
  assert.equal(await requests[1].headerValue('last-event-id'), '0');
  assert.equal(await testid('stdout').textContent(), tickLines(4));
  assert.match(await testid('result-http').textContent(), /· events: succeeded$/);
});

test('without the event stream, a run falls back to long-polling', async () => {
  // An older server, without the route.
  await page.route(isEventsPath, (route) => route.fulfill({
    status: 404,
    contentType: 'application/json',
    body: JSON.stringify({ error: 'no route for GET /jobs/…/events', code: 'not_found' }),
  }));
  try {
    await testid('example-select').selectOption('print');
    await waitForText(testid('validation'), /Valid/);
    const [poll] = await Promise.all([
      page.waitForRequest((r) => r.method() === 'GET' && /^\/jobs\/[0-9a-f-]{36}$/.test(new URL(r.url()).pathname)),
      testid('run-button').click(),
    ]);
    assert.equal(new URL(poll.url()).searchParams.get('wait'), '30');
    await waitForText(testid('result-status'), /^succeeded$/, 60_000);
  } finally {
    await page.unroute(isEventsPath);
  }
  assert.match(await testid('result-http').textContent(), /^POST \/jobs → 202 Accepted · polling: succeeded$/);
  assert.equal(JSON.parse(await testid('result-json').textContent()), 42);
  assert.equal(await testid('stdout').textContent(), 'hello\n');
});

// The key tests come after the README's screenshot and leave no key behind.
test('an API key typed in its field is sent as a bearer token and kept across reloads', async () => {
  const input = testid('api-key-input');
  assert.equal(await input.inputValue(), '');
  assert.equal(await input.getAttribute('type'), 'password');
  await input.fill(API_KEY);
  await testid('api-key-toggle').click();
  assert.equal(await input.getAttribute('type'), 'text');
  assert.equal(await testid('api-key-toggle').textContent(), 'Hide');
  await testid('api-key-toggle').click();
  assert.equal(await input.getAttribute('type'), 'password');

  await testid('example-select').selectOption('hello');
  const [request, events] = await Promise.all([
    page.waitForRequest((r) => r.method() === 'POST' && new URL(r.url()).pathname === '/jobs'),
    page.waitForRequest(isEventsRequest),
    testid('run-button').click(),
  ]);
  assert.equal(await request.headerValue('authorization'), `Bearer ${API_KEY}`);
  // The event stream is read with fetch() rather than EventSource, which cannot send the key.
  assert.equal(await events.headerValue('authorization'), `Bearer ${API_KEY}`);
  await waitForText(testid('result-status'), /^succeeded$/, 60_000);

  // After a reload the key is back in the field, and the page's first requests carry it.
  const [check] = await Promise.all([
    page.waitForRequest((r) => new URL(r.url()).pathname === '/validate'),
    page.reload(),
  ]);
  assert.equal(await check.headerValue('authorization'), `Bearer ${API_KEY}`);
  await waitForText(testid('validation'), /Valid/);
  assert.equal(await testid('api-key-input').inputValue(), API_KEY);
  assert.equal(await page.evaluate(() => localStorage.getItem('runbox.apiKey')), API_KEY);
  await screenshot('api-key-kept');
});

test('a 401 answer asks for an API key and the page keeps working', async () => {
  const input = testid('api-key-input');
  await input.fill('');
  // A server that requires keys, as the page sees it.
  await page.route(isApiPath, (route) => route.fulfill({
    status: 401,
    headers: { 'www-authenticate': 'Bearer' },
    contentType: 'application/json',
    body: JSON.stringify({ error: 'a valid API key is required', code: 'unauthenticated' }),
  }));
  try {
    await testid('example-select').selectOption('print');
    await waitForText(testid('validation'), /needs an API key/);
    await testid('jobs-refresh').click();
    await waitForText(testid('jobs-notice'), /needs a valid API key/);

    await testid('run-button').click();
    await waitForText(testid('result-status'), /^rejected$/);
    assert.match(await testid('result-http').textContent(), /^POST \/jobs → 401 Unauthorized$/);
    assert.equal(await testid('error-kind').textContent(), 'unauthenticated');
    const text = await testid('error-text').textContent();
    assert.match(text, /This server needs an API key: paste yours in the API key field above/);
    assert.match(text, /api keys create --name NAME/);
    assert.match(text, /a valid API key is required/);
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'api-key');
    await screenshot('api-key-needed');

    // A key the server refuses gets its own advice.
    await input.fill(API_KEY);
    await testid('run-button').click();
    await waitForText(testid('error-text'), /did not accept the API key/);
  } finally {
    await page.unroute(isApiPath);
  }

  // Clearing the field forgets the key; the page talks to the server as before.
  await input.fill('');
  assert.equal(await page.evaluate(() => localStorage.getItem('runbox.apiKey')), null);
  await waitForText(testid('validation'), /Valid/);
  await testid('jobs-refresh').click();
  await testid('jobs-notice').waitFor({ state: 'hidden', timeout: 10_000 });
  await testid('run-button').click();
  await waitForText(testid('result-status'), /^succeeded$/, 60_000);
  assert.match(await testid('stdout').textContent(), /hello/);
});

test('the page logged no errors', () => {
  assert.deepEqual(problems, []);
});
