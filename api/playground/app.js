// runbox playground: edit a script, run it or queue it (POST /jobs), watch its output as it is
// printed (GET /jobs/<id>/events), watch jobs.
// Everything a script produces is untrusted: it only ever reaches the page through textContent.
'use strict';

(() => {
  const EXAMPLES = {
    hello: {
      script: 'def main():\n    return {"message": "hello"}\n',
    },
    print: {
      script: 'def main():\n    print("hello")\n    return 42\n',
    },
    numpy: {
      script:
        'import numpy as np\n\ndef main():\n    data = np.array([1.0, 2.0, 3.0, 4.0])\n' +
        '    return {"mean": data.mean(), "std": data.std()}\n',
    },
    pandas: {
      script:
        'import pandas as pd\n\ndef main():\n    df = pd.DataFrame({"a": [1, 2, 3], "b": [4, 5, 6]})\n' +
        '    return df.sum().to_dict()\n',
    },
    error: {
      script:
        'def parse(value):\n    return int(value)\n\ndef main():\n    print("parsing...")\n' +
        '    return parse("forty-two")\n',
    },
    timeout: {
      script:
        'import time\n\ndef main():\n    print("sleeping for 5 s", flush=True)\n    time.sleep(5)\n' +
        '    return "done"\n',
      timeout: 2,
    },
  };
  const DEFAULT_TIMEOUT = 10;
  const DEFAULT_MEMORY = 256;
  const LIST_LIMIT = 20;
  const TERMINAL = new Set(['succeeded', 'failed', 'timed_out', 'cancelled']);
  const KEY_STORAGE = 'runbox.apiKey';
  const STATUS_TEXT = {
    200: 'OK', 202: 'Accepted', 400: 'Bad Request', 401: 'Unauthorized', 404: 'Not Found',
    405: 'Method Not Allowed', 408: 'Request Timeout', 409: 'Conflict', 413: 'Payload Too Large',
    422: 'Unprocessable Content', 429: 'Too Many Requests', 500: 'Internal Server Error',
    503: 'Service Unavailable', 504: 'Gateway Timeout',
  };

  const $ = (id) => document.getElementById(id);
  const el = {
    example: $('example'), timeout: $('timeout'), memory: $('memory'),
    run: $('run'), submit: $('submit'), code: $('code'),
    gutterLines: $('gutter-lines'), errorLine: $('error-line'), errorCol: $('error-col'),
    errorFlag: $('error-flag'), validation: $('validation'),
    status: $('result-status'), http: $('result-http'), cancel: $('cancel'),
    meta: $('result-meta'), resultId: $('result-id'), resultExtra: $('result-extra'),
    highlight: $('highlight'),
    duration: $('m-duration'), cpu: $('m-cpu'), peak: $('m-memory'), rtt: $('m-rtt'),
    placeholder: $('result-placeholder'),
    errorBlock: $('error-block'), errorKind: $('error-kind'), errorText: $('error-text'),
    jsonBlock: $('json-block'), json: $('result-json'),
    stdoutBlock: $('stdout-block'), stdout: $('stdout'), stdoutTrunc: $('stdout-trunc'),
    stderrBlock: $('stderr-block'), stderr: $('stderr'), stderrTrunc: $('stderr-trunc'),
    jobs: $('jobs'), jobsEmpty: $('jobs-empty'), jobsNotice: $('jobs-notice'),
    jobsLocal: $('jobs-local'), jobsLive: $('jobs-live'), jobsLiveText: $('jobs-live-text'), jobsRefresh: $('jobs-refresh'),
    apiKey: $('api-key'), apiKeyToggle: $('api-key-toggle'),
  };

  // ---- API key ----------------------------------------------------------------------------

  // A header value must be visible ASCII: anything else makes fetch throw before sending, which
  // the page would report as an unreachable API.
  const KEY_CHARS = /^[\x21-\x7e]*$/;

  // Storage may be unavailable (disabled, or a sandboxed frame): the key then lasts one visit.
  function loadKey() {
    try {
      return localStorage.getItem(KEY_STORAGE) || '';
    } catch {
      return '';
    }
  }

  function saveKey(key) {
    try {
      if (key) localStorage.setItem(KEY_STORAGE, key);
      else localStorage.removeItem(KEY_STORAGE);
    } catch {
      // kept in the field only
    }
  }

  /** The key to send, or '' for none. */
  function apiKey() {
    const key = el.apiKey.value.trim();
    return KEY_CHARS.test(key) ? key : '';
  }

  function markKey() {
    const bad = !KEY_CHARS.test(el.apiKey.value.trim());
    el.apiKey.classList.toggle('invalid', bad);
    el.apiKey.setAttribute('aria-invalid', String(bad));
  }

  /** What to do about a 401: the page's advice first, then the server's own words. */
  function keyMessage(body) {
    const parts = [el.apiKey.value.trim()
      ? 'The server did not accept the API key in the field above: check that it is the whole key ' +
        '(rbx_ and 43 more characters), or ask for a new one.'
      : 'This server needs an API key: paste yours in the API key field above.'];
    parts.push('An administrator creates one with: api keys create --name NAME');
    if (body && typeof body.error === 'string' && body.error) parts.push(`The server said: ${body.error}`);
    return parts.join('\n');
  }

  // ---- HTTP -------------------------------------------------------------------------------

  // Large integers in results are exact on the server; keep them exact on the page too where
  // the browser can (JSON.rawJSON and the reviver's source text).
  const lossless = typeof JSON.rawJSON === 'function';
  function parseJson(text) {
    if (!lossless) return JSON.parse(text);
    return JSON.parse(text, (_key, value, context) =>
      typeof value === 'number' && Number.isInteger(value) && !Number.isSafeInteger(value) &&
      context && typeof context.source === 'string'
        ? JSON.rawJSON(context.source)
        : value);
  }

  /**
   * A fresh `Idempotency-Key`. Chromium re-sends a request answered 408 on a reused
   * connection (it takes that for an idle-connection timeout), and `/execute` answers 408
   * when the script timed out: with the key, the re-sent request gets the same job back
   * instead of running the script again.
   */
  function idempotencyKey() {
    if (crypto.randomUUID) return crypto.randomUUID(); // secure contexts only
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  function withKey(headers) {
    // A server that does not require keys ignores one, so it is sent whenever there is one.
    const key = apiKey();
    return key ? { ...headers, authorization: `Bearer ${key}` } : headers;
  }

  /** One request; never throws but when aborted. `status` is 0 when the API could not be reached. */
  async function api(method, path, body, signal, extraHeaders = {}) {
    const started = performance.now();
    const init = { method, headers: withKey({ accept: 'application/json', ...extraHeaders }), signal };
    if (body !== undefined) {
      init.headers['content-type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    try {
      const response = await fetch(path, init);
      const text = await response.text();
      let json = null;
      try {
        json = text ? parseJson(text) : null;
      } catch {
        json = null;
      }
      return { status: response.status, json, text, ms: performance.now() - started };
    } catch (error) {
      if (error && error.name === 'AbortError') throw error;
      return { status: 0, json: null, text: String(error), ms: performance.now() - started };
    }
  }

  function requestBody() {
    const body = { script: el.code.value };
    const timeout = el.timeout.value.trim();
    const memory = el.memory.value.trim();
    if (timeout !== '') body.timeout = Number(timeout);
    if (memory !== '') body.memory_mb = Number(memory);
    return body;
  }

  // ---- Formatting -------------------------------------------------------------------------

  function ms(value) {
    if (value === null || value === undefined) return '–';
    if (value < 1000) return `${Math.round(value)} ms`;
    return `${(value / 1000).toFixed(value < 10000 ? 2 : 1)} s`;
  }

  function bytes(value) {
    if (value === null || value === undefined) return '–';
    if (value < 1024 * 1024) return `${(value / 1024).toFixed(0)} KiB`;
    return `${(value / (1024 * 1024)).toFixed(1)} MiB`;
  }

  function clock(iso) {
    const date = iso ? new Date(iso) : null;
    if (!date || Number.isNaN(date.getTime())) return '';
    return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
  }

  function httpLabel(status) {
    return status ? `${status} ${STATUS_TEXT[status] || ''}`.trim() : 'no answer';
  }

  const statusLabel = (status) => status.replace('_', ' ');

  function setBadge(node, status) {
    node.className = `badge badge-${status}`;
    node.textContent = statusLabel(status);
  }

  // ---- Result panel -----------------------------------------------------------------------

  const panel = { jobId: null };

  function clearResult() {
    for (const block of [el.errorBlock, el.jsonBlock, el.stdoutBlock, el.stderrBlock]) block.hidden = true;
    el.stdoutBlock.classList.remove('streaming');
    el.stderrBlock.classList.remove('streaming');
    el.placeholder.hidden = true;
    for (const node of [el.duration, el.cpu, el.peak, el.rtt]) node.textContent = '–';
    el.http.textContent = '';
    el.http.className = 'http';
    el.meta.hidden = true;
    el.resultId.textContent = '';
    el.resultExtra.textContent = '';
    el.cancel.hidden = true;
  }

  function showPending(label, what) {
    clearResult();
    panel.jobId = null;
    setBadge(el.status, label);
    el.http.textContent = what;
  }

  function showOutput(block, pre, trunc, text, truncated) {
    const present = typeof text === 'string' && text.length > 0;
    block.hidden = !present;
    pre.textContent = present ? text : '';
    trunc.hidden = !truncated;
  }

  /** Adds a chunk of a running job's output to its pane. */
  function appendOutput(stream, text) {
    const stderr = stream === 'stderr';
    const [block, pre] = stderr ? [el.stderrBlock, el.stderr] : [el.stdoutBlock, el.stdout];
    // Keep the newest line in view unless the reader has scrolled up to an older one.
    const atEnd = block.hidden || pre.scrollHeight - pre.scrollTop - pre.clientHeight < 4;
    block.hidden = false;
    pre.append(text);
    if (atEnd) pre.scrollTop = pre.scrollHeight;
    block.classList.add('streaming');
    (stderr ? el.stdoutBlock : el.stderrBlock).classList.remove('streaming');
  }

  function clearOutput() {
    showOutput(el.stdoutBlock, el.stdout, el.stdoutTrunc, '', false);
    showOutput(el.stderrBlock, el.stderr, el.stderrTrunc, '', false);
    el.stdoutBlock.classList.remove('streaming');
    el.stderrBlock.classList.remove('streaming');
  }

  /** The HTTP line: the answer that showed the job, then how it is being followed. */
  function setHttpLine(request, http, note) {
    el.http.textContent = `${request} → ${httpLabel(http)}${note ? ` · ${note}` : ''}`;
    el.http.title = el.http.textContent;
  }

  function metaExtra(job) {
    const extra = [];
    if (typeof job.timeout === 'number') extra.push(`${job.timeout} s`);
    if (typeof job.memory_mb === 'number') extra.push(`${job.memory_mb} MiB`);
    if (job.attempt) extra.push(`attempt ${job.attempt}`);
    if (job.worker_id) extra.push(`worker ${job.worker_id}`);
    return extra.join(' · ');
  }

  function waitingText(status) {
    return status === 'queued' ? 'Queued: waiting for a worker…' : 'Running in the sandbox…';
  }

  /**
   * Updates the panel for a job that is still queued or running, leaving its output as it is.
   * `view` is the answer that showed the job ({ request, http }).
   */
  function showProgress(job, view, note) {
    setBadge(el.status, job.status);
    setHttpLine(view.request, view.http, note);
    el.meta.hidden = false;
    el.resultId.textContent = job.id;
    el.resultExtra.textContent = metaExtra(job);
    el.cancel.hidden = false;
    el.placeholder.hidden = false;
    el.placeholder.textContent = waitingText(job.status);
  }

  /**
   * Shows one answer: a job (from POST /jobs, GET /jobs/<id> or its events), an accepted job,
   * or an error body. `request` names what was asked; `http` and `rtt` describe the answer;
   * `note` says how the job was followed since.
   */
  function showAnswer({ request, http, rtt, body, note }) {
    clearResult();
    const isJob = body && typeof body === 'object' && typeof body.status === 'string' && typeof body.id === 'string';
    setHttpLine(request, http, note);
    el.http.className = http >= 200 && http < 300 ? 'http' : 'http bad';
    el.rtt.textContent = rtt === undefined ? '–' : ms(rtt);
    panel.jobId = isJob ? body.id : null;

    if (!isJob) {
      setBadge(el.status, http === 0 ? 'error' : 'rejected');
      el.errorBlock.hidden = false;
      const code = body && body.code ? body.code : (http ? `HTTP ${http}` : 'network');
      el.errorKind.textContent = code;
      if (http === 401) {
        el.errorText.textContent = keyMessage(body);
        // A refused key stays marked until it is edited.
        if (el.apiKey.value.trim()) {
          el.apiKey.classList.add('invalid');
          el.apiKey.setAttribute('aria-invalid', 'true');
        }
        el.apiKey.focus();
      } else {
        el.errorText.textContent = errorMessage(body, http);
      }
      return;
    }

    setBadge(el.status, body.status);
    el.meta.hidden = false;
    el.resultId.textContent = body.id;
    el.resultExtra.textContent = metaExtra(body);
    el.cancel.hidden = TERMINAL.has(body.status);
    el.duration.textContent = ms(body.duration_ms);
    el.cpu.textContent = ms(body.cpu_ms);
    el.peak.textContent = bytes(body.peak_memory_bytes);

    if (body.error || body.error_kind || body.code) {
      el.errorBlock.hidden = false;
      const kinds = [body.error_kind, body.code].filter((k, i, all) => k && all.indexOf(k) === i);
      el.errorKind.textContent = kinds.join(' · ');
      el.errorText.textContent = errorMessage(body, http);
    }
    if (body.status === 'succeeded') {
      el.jsonBlock.hidden = false;
      el.json.textContent = JSON.stringify(body.result, null, 2);
    }
    showOutput(el.stdoutBlock, el.stdout, el.stdoutTrunc, body.stdout, body.stdout_truncated);
    showOutput(el.stderrBlock, el.stderr, el.stderrTrunc, body.stderr, body.stderr_truncated);
    if (!TERMINAL.has(body.status)) {
      el.placeholder.hidden = false;
      el.placeholder.textContent = waitingText(body.status);
    }
  }

  function errorMessage(body, http) {
    if (!body || typeof body !== 'object') {
      return http === 0 ? 'Could not reach the API.' : `The API answered ${httpLabel(http)}.`;
    }
    const parts = [body.error || `The job ended as ${body.status}.`];
    if (body.line) parts.push(`at line ${body.line}${body.column ? `, column ${body.column}` : ''}`);
    if (body.field) parts.push(`field: ${body.field}`);
    if (body.exit_code !== null && body.exit_code !== undefined && body.status !== 'succeeded' && body.exit_code !== 0) {
      parts.push(`exit code ${body.exit_code}`);
    }
    if (body.signal) parts.push(`signal ${body.signal}`);
    return parts.join('\n');
  }

  // ---- Jobs: what this page knows, merged with the server's list --------------------------

  const known = new Map(); // id -> job summary seen by this page (its own submissions first)
  const list = { state: 'unknown', jobs: [], timer: null, inFlight: false };
  const followed = new Set();
  const RANK = { queued: 0, running: 1 };
  const rank = (job) => (TERMINAL.has(job.status) ? 2 : RANK[job.status] ?? 0);

  function remember(job) {
    if (!job || typeof job.id !== 'string') return;
    const old = known.get(job.id);
    if (old && rank(old) > rank(job)) return;
    known.set(job.id, { ...old, ...job });
  }

  function mergedJobs() {
    const byId = new Map();
    for (const job of list.jobs) byId.set(job.id, job);
    const oldestListed = list.jobs.length >= LIST_LIMIT
      ? list.jobs.reduce((min, job) => (job.created_at < min ? job.created_at : min), list.jobs[0].created_at)
      : '';
    for (const job of known.values()) {
      const listed = byId.get(job.id);
      if (listed) {
        if (rank(job) > rank(listed)) byId.set(job.id, { ...listed, ...job });
      } else if (list.state !== 'ok' || (job.created_at || '') >= oldestListed) {
        byId.set(job.id, job);
      }
    }
    return [...byId.values()]
      .sort((a, b) => (b.created_at || '').localeCompare(a.created_at || ''))
      .slice(0, list.state === 'ok' ? LIST_LIMIT : 50);
  }

  function jobRow(job) {
    const item = document.createElement('li');
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'job';
    button.dataset.testid = 'job-row';
    button.dataset.jobId = job.id;
    button.dataset.status = job.status;
    button.title = `job ${job.id}`;
    if (job.id === panel.jobId) button.setAttribute('aria-current', 'true');

    const badge = document.createElement('span');
    setBadge(badge, job.status);
    badge.dataset.testid = 'job-status';

    const main = document.createElement('span');
    main.className = 'job-main';
    const short = document.createElement('span');
    short.className = 'job-short';
    short.textContent = job.id.slice(0, 8);
    main.append(short);
    if (job.error_kind) {
      const kind = document.createElement('span');
      kind.className = 'job-kind';
      kind.textContent = job.error_kind;
      main.append(kind);
    }

    const when = document.createElement('span');
    when.className = 'job-when';
    when.textContent = clock(job.created_at);
    const took = document.createElement('span');
    took.className = 'job-took';
    took.textContent = job.duration_ms === null || job.duration_ms === undefined ? '' : ms(job.duration_ms);

    button.append(badge, main, when, took);
    button.addEventListener('click', () => openJob(job.id));
    item.append(button);
    return item;
  }

  function renderJobs() {
    const jobs = mergedJobs();
    el.jobs.replaceChildren(...jobs.map(jobRow));
    el.jobsEmpty.hidden = jobs.length > 0;
    el.jobsLocal.hidden = list.state !== 'unavailable';
    el.jobsNotice.hidden = list.state !== 'error' && list.state !== 'locked';
    el.jobsNotice.textContent = list.state === 'locked'
      ? 'The job list needs a valid API key: paste one in the API key field at the top.'
      : 'Could not load the job list; retrying.';
    const busy = jobs.some((job) => !TERMINAL.has(job.status));
    const live = { ok: busy ? 'fast' : 'slow', error: 'down', locked: 'down' }[list.state] || '';
    el.jobsLive.className = `live ${live}`;
    el.jobsLiveText.textContent = {
      ok: busy ? 'live · 1 s' : 'live · 5 s', unavailable: 'this page', unknown: 'loading', locked: 'no access',
    }[list.state] || 'offline';
    return busy;
  }

  async function refreshJobs() {
    clearTimeout(list.timer);
    if (list.inFlight) return;
    list.inFlight = true;
    const answer = await api('GET', `/jobs?limit=${LIST_LIMIT}`);
    list.inFlight = false;
    if (answer.status === 200 && answer.json && Array.isArray(answer.json.jobs)) {
      list.state = 'ok';
      list.jobs = answer.json.jobs.filter((job) => job && typeof job.id === 'string');
    } else if (answer.status === 404 || answer.status === 405) {
      list.state = 'unavailable';
      list.jobs = [];
    } else if (answer.status === 401) {
      list.state = 'locked';
      list.jobs = [];
    } else {
      list.state = 'error';
    }
    const busy = renderJobs();
    // Poll fast while something is moving; a server without the list is asked again rarely
    // (the page follows its own jobs by long-polling them), and so is one refusing the key
    // (a new key is tried as soon as it is typed).
    const delay = list.state === 'unavailable' || list.state === 'locked' ? 30000 : busy ? 1000 : 5000;
    if (!document.hidden) list.timer = setTimeout(refreshJobs, delay);
  }

  document.addEventListener('visibilitychange', () => {
    if (document.hidden) clearTimeout(list.timer);
    else refreshJobs();
  });

  /**
   * Long-polls one of this page's jobs until it finishes, keeping its row current where the
   * server does not list jobs. The result panel follows its job by itself (`watch`).
   */
  async function follow(id) {
    if (followed.has(id)) return;
    followed.add(id);
    let failures = 0;
    try {
      for (;;) {
        const answer = await api('GET', `/jobs/${encodeURIComponent(id)}?wait=10`);
        if (answer.status === 200 && answer.json) {
          failures = 0;
          remember(answer.json);
          renderJobs();
          if (TERMINAL.has(answer.json.status)) {
            refreshJobs();
            return;
          }
        } else if (answer.status === 404 || answer.status === 400) {
          return;
        } else {
          failures += 1;
          if (failures > 30) return;
          await new Promise((resolve) => setTimeout(resolve, 1000));
        }
      }
    } finally {
      followed.delete(id);
    }
  }

  // ---- Following the panel's job live -----------------------------------------------------

  // The panel follows one job at a time; a new run, a new submission or opening a job aborts
  // the previous one's requests.
  const live = { controller: null, id: null };
  // Reconnections in a row after the stream broke off, before long-polling takes over.
  const STREAM_RETRIES = 3;

  function takePanel() {
    if (live.controller) live.controller.abort();
    live.controller = new AbortController();
    live.id = null;
    return live.controller.signal;
  }

  /** Waits `delay` ms; rejects as soon as `signal` aborts. */
  function pause(delay, signal) {
    return new Promise((resolve, reject) => {
      if (signal.aborted) {
        reject(signal.reason);
        return;
      }
      const aborted = () => {
        clearTimeout(timer);
        reject(signal.reason);
      };
      const timer = setTimeout(() => {
        signal.removeEventListener('abort', aborted);
        resolve();
      }, delay);
      signal.addEventListener('abort', aborted, { once: true });
    });
  }

  /**
   * Reads a text/event-stream body, calling `onEvent({ id, type, data })` for each event until
   * the stream ends or `onEvent` returns true. EventSource would parse it too, but it cannot
   * send the API key. Rejects when the connection breaks or is aborted.
   */
  async function readEvents(stream, onEvent) {
    const reader = stream.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    let id = null; // like EventSource's last event id, it carries over to later events
    let type = '';
    let data = [];
    let stop = false;
    const line = (text) => {
      if (text === '') {
        if (data.length) stop = onEvent({ id, type: type || 'message', data: data.join('\n') }) === true;
        type = '';
        data = [];
        return;
      }
      if (text[0] === ':') return; // a comment: the server's keep-alive
      const colon = text.indexOf(':');
      const field = colon === -1 ? text : text.slice(0, colon);
      let value = colon === -1 ? '' : text.slice(colon + 1);
      if (value[0] === ' ') value = value.slice(1);
      if (field === 'data') data.push(value);
      else if (field === 'event') type = value;
      else if (field === 'id' && !value.includes('\0')) id = value;
    };
    try {
      for (;;) {
        const { done, value } = await reader.read();
        buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
        const breaks = /\r\n|\r|\n/g;
        let start = 0;
        for (let match = breaks.exec(buffer); match && !stop; match = breaks.exec(buffer)) {
          // A \r that ends the chunk may be the first half of a \r\n still on its way.
          if (!done && match[0] === '\r' && match.index === buffer.length - 1) break;
          line(buffer.slice(start, match.index));
          start = breaks.lastIndex;
        }
        buffer = buffer.slice(start);
        // A last event without its blank line is incomplete, and dropped as EventSource does.
        if (done || stop) return;
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  /**
   * Applies one event of the panel's job. Returns true for the last one, once the panel shows
   * how the job ended.
   */
  function applyEvent(id, view, event) {
    let data;
    try {
      data = parseJson(event.data);
    } catch {
      return false;
    }
    if (!data || typeof data !== 'object') return false;
    if (event.type === 'output') {
      if (typeof data.text === 'string' && data.text) appendOutput(data.stream, data.text);
      return false;
    }
    if (event.type !== 'status' || typeof data.status !== 'string') return false;
    if (TERMINAL.has(data.status)) {
      const job = { ...data, id: typeof data.id === 'string' ? data.id : id };
      remember(job);
      showAnswer({
        request: view.request, http: view.http, rtt: view.rtt(), body: job,
        note: `events: ${statusLabel(job.status)}`,
      });
      renderJobs();
      refreshJobs();
      return true;
    }
    remember({ id, ...data });
    // The stream's own status, even when the job list has already seen the job end: the panel
    // shows the end with the output that led to it.
    showProgress({ ...known.get(id), ...data, id }, view, `events: ${statusLabel(data.status)}`);
    renderJobs();
    return false;
  }

  /**
   * Follows the job's events into the panel. Resolves true once the panel shows how the job
   * ended (or why it cannot be followed), false when long-polling should take over: the server
   * has no event stream, or it kept breaking off.
   */
  async function streamJob(id, view, signal) {
    const path = `/jobs/${encodeURIComponent(id)}/events`;
    let lastId = null;
    let opened = false;
    let retries = 0;
    for (;;) {
      const headers = { accept: 'text/event-stream' };
      if (lastId !== null) headers['last-event-id'] = lastId;
      let response = null;
      try {
        response = await fetch(path, { headers: withKey(headers), signal, cache: 'no-store' });
      } catch (error) {
        if (signal.aborted) throw error;
      }
      if (response && response.status === 401) {
        const text = await response.text().catch((error) => {
          if (signal.aborted) throw error;
          return '';
        });
        let body = null;
        try {
          body = parseJson(text);
        } catch {
          body = null;
        }
        showAnswer({ request: `GET /jobs/${id.slice(0, 8)}…/events`, http: 401, body });
        return true;
      }
      const streaming = response && response.status === 200 && response.body &&
        /^text\/event-stream\b/i.test(response.headers.get('content-type') || '');
      if (streaming) {
        if (!opened) {
          // The stream starts from the job's first output: what a first look showed is replaced.
          clearOutput();
          opened = true;
        }
        let received = false;
        let ended = false;
        try {
          await readEvents(response.body, (event) => {
            received = true;
            if (event.id !== null) lastId = event.id;
            ended = applyEvent(id, view, event);
            return ended;
          });
        } catch (error) {
          if (signal.aborted) throw error;
        }
        if (ended) return true;
        if (received) retries = 0;
      } else {
        if (response && response.body) response.body.cancel().catch(() => {});
        // Without the route (an older server) or without an answer, long-polling still works.
        if (!opened) return false;
      }
      retries += 1;
      if (retries > STREAM_RETRIES) return false;
      setHttpLine(view.request, view.http, 'events: reconnecting…');
      await pause(500 * retries, signal);
    }
  }

  /** Long-polls the job into the panel until it ends: for when its events cannot be streamed. */
  async function pollJob(id, view, signal) {
    const request = `GET /jobs/${id.slice(0, 8)}…`;
    let failures = 0;
    for (;;) {
      const answer = await api('GET', `/jobs/${encodeURIComponent(id)}?wait=30`, undefined, signal);
      const job = answer.json;
      if (answer.status === 200 && job && job.id === id && typeof job.status === 'string') {
        failures = 0;
        remember(job);
        renderJobs();
        if (TERMINAL.has(job.status)) {
          showAnswer({ request: view.request, http: view.http, rtt: view.rtt(), body: job, note: `polling: ${statusLabel(job.status)}` });
          refreshJobs();
          return;
        }
        showProgress(job, view, `polling: ${statusLabel(job.status)}`);
      } else if ((answer.status === 0 || answer.status === 408 || answer.status === 429 || answer.status >= 500) &&
        failures < 5) {
        failures += 1;
        setHttpLine(view.request, view.http, 'polling: retrying…');
        await pause(1000 * failures, signal);
      } else {
        showAnswer({ request, http: answer.status, rtt: answer.ms, body: job });
        return;
      }
    }
  }

  /**
   * Keeps the panel on job `id` until the job ends or `signal` aborts. `view` is the answer
   * that showed the job first: { request, http, rtt() }, rtt() giving the round trip to show
   * with the outcome.
   */
  async function watch(id, view, signal) {
    live.id = id;
    try {
      if (!(await streamJob(id, view, signal))) await pollJob(id, view, signal);
    } catch (error) {
      if (!signal.aborted) throw error;
      // Another job took the panel; this one's row still has to reach its end.
      const job = known.get(id);
      if (job && !TERMINAL.has(job.status)) follow(id);
    } finally {
      if (live.controller && live.controller.signal === signal) live.id = null;
    }
  }

  async function openJob(id) {
    const signal = takePanel();
    panel.jobId = id;
    renderJobs();
    let answer;
    try {
      answer = await api('GET', `/jobs/${encodeURIComponent(id)}`, undefined, signal);
    } catch {
      return; // another job was opened meanwhile
    }
    if (signal.aborted) return;
    if (answer.status === 200 && answer.json) remember(answer.json);
    const request = `GET /jobs/${id.slice(0, 8)}…`;
    showAnswer({ request, http: answer.status, rtt: answer.ms, body: answer.json });
    panel.jobId = id;
    renderJobs();
    if (answer.status === 200 && answer.json && answer.json.status && !TERMINAL.has(answer.json.status)) {
      await watch(id, { request, http: answer.status, rtt: () => answer.ms }, signal);
    }
  }

  // ---- Run, submit, cancel ----------------------------------------------------------------

  let running = false;

  function setBusy(button, busy, text) {
    button.disabled = busy;
    button.classList.toggle('busy', busy);
    button.querySelector('.btn-text').textContent = text;
  }

  /**
   * POST /jobs with the editor's script. Resolves with the job the panel should follow and the
   * request's round trip, or null when the panel shows why there is none (or another job took
   * the panel meanwhile).
   */
  async function queueJob(signal) {
    const body = requestBody();
    const answer = await api('POST', '/jobs', body, undefined, { 'idempotency-key': idempotencyKey() });
    const accepted = answer.json;
    if (answer.status !== 202 || !accepted || typeof accepted.id !== 'string') {
      if (!signal.aborted) showAnswer({ request: 'POST /jobs', http: answer.status, rtt: answer.ms, body: accepted });
      return null;
    }
    const job = {
      id: accepted.id,
      status: accepted.status || 'queued',
      created_at: new Date().toISOString(),
      timeout: body.timeout,
      memory_mb: body.memory_mb,
    };
    remember(job);
    renderJobs();
    refreshJobs();
    if (signal.aborted) {
      follow(job.id);
      return null;
    }
    showAnswer({ request: 'POST /jobs', http: answer.status, rtt: answer.ms, body: job });
    return { job, ms: answer.ms };
  }

  async function run() {
    if (running) return;
    running = true;
    const signal = takePanel();
    setBusy(el.run, true, 'Running…');
    showPending('queued', 'POST /jobs');
    el.placeholder.hidden = false;
    el.placeholder.textContent = 'Submitting the script…';
    const started = performance.now();
    try {
      const queued = await queueJob(signal);
      // Like waiting on /execute, a run lasts until the outcome is in, and its round trip is
      // the whole wait; the output shows as it is printed meanwhile.
      if (queued) {
        await watch(queued.job.id, { request: 'POST /jobs', http: 202, rtt: () => performance.now() - started }, signal);
      }
    } finally {
      running = false;
      setBusy(el.run, false, 'Run');
    }
  }

  async function submit() {
    setBusy(el.submit, true, 'Submitting…');
    const signal = takePanel();
    let queued;
    try {
      queued = await queueJob(signal);
    } finally {
      setBusy(el.submit, false, 'Submit job');
    }
    if (queued) await watch(queued.job.id, { request: 'POST /jobs', http: 202, rtt: () => queued.ms }, signal);
  }

  async function cancel() {
    const id = panel.jobId;
    if (!id) return;
    el.cancel.disabled = true;
    const answer = await api('POST', `/jobs/${encodeURIComponent(id)}/cancel`);
    el.cancel.disabled = false;
    if (answer.status === 200 && answer.json) remember(answer.json);
    // A job followed live shows its end from its own stream, with the output before it.
    if (panel.jobId === id && !(answer.status === 200 && live.id === id)) {
      showAnswer({ request: `POST /jobs/${id.slice(0, 8)}…/cancel`, http: answer.status, rtt: answer.ms, body: answer.json });
    }
    renderJobs();
    refreshJobs();
  }

  // ---- Editor: gutter, error mark, keys ---------------------------------------------------

  const metrics = { char: 0, line: 20, padX: 14, padY: 10 };
  const mark = { line: 0, column: 0, message: '' };

  function measure() {
    const style = getComputedStyle(el.code);
    metrics.line = parseFloat(style.lineHeight) || 20;
    metrics.padX = parseFloat(style.paddingLeft) || 0;
    metrics.padY = parseFloat(style.paddingTop) || 0;
    const probe = document.createElement('span');
    probe.style.cssText = `position:absolute;visibility:hidden;white-space:pre;font:${style.font}`;
    probe.textContent = 'M'.repeat(100);
    document.body.append(probe);
    metrics.char = probe.getBoundingClientRect().width / 100 || 8;
    probe.remove();
  }

  // A small Python highlighter for the layer under the (transparent) textarea text.
  const KEYWORDS = new Set(('and as assert async await break class continue def del elif else except ' +
    'finally for from global if import in is lambda nonlocal not or pass raise return try while with ' +
    'yield match case').split(' '));
  const CONSTANTS = new Set(['True', 'False', 'None']);
  const BUILTINS = new Set(('abs all any bool bytes dict divmod enumerate filter float format frozenset ' +
    'getattr hasattr hash int isinstance iter len list map max min next object open pow print range ' +
    'repr reversed round set setattr sorted str sum super tuple type zip Exception ValueError ' +
    'TypeError KeyError IndexError RuntimeError').split(' '));
  const TOKEN = new RegExp([
    /(#[^\n]*)/.source,
    /((?:[rRbBuUfF]{1,2})?(?:'{3}[\s\S]*?(?:'{3}|$(?![\s\S]))|"{3}[\s\S]*?(?:"{3}|$(?![\s\S]))|'(?:\\.|[^'\\\n])*'?|"(?:\\.|[^"\\\n])*"?))/.source,
    /(\b(?:0[xXoObB][\da-fA-F_]+|\d[\d_]*\.?[\d_]*(?:[eE][+-]?\d+)?j?|\.\d[\d_]*(?:[eE][+-]?\d+)?j?)\b)/.source,
    /(@[A-Za-z_][\w.]*)/.source,
    /([A-Za-z_]\w*)/.source,
  ].join('|'), 'g');

  function highlight() {
    const text = el.code.value;
    const nodes = [];
    let last = 0;
    let afterDef = false;
    const push = (cls, value) => {
      const span = document.createElement('span');
      span.className = cls;
      span.textContent = value;
      nodes.push(span);
    };
    for (const match of text.matchAll(TOKEN)) {
      if (match.index > last) nodes.push(document.createTextNode(text.slice(last, match.index)));
      last = match.index + match[0].length;
      const [token, comment, string, number, decorator, word] = match;
      if (comment) push('tok-com', token);
      else if (string) push('tok-str', token);
      else if (number) push('tok-num', token);
      else if (decorator) push('tok-deco', token);
      else if (word) {
        const attribute = text[match.index - 1] === '.';
        if (afterDef) push('tok-fn', token);
        else if (attribute) nodes.push(document.createTextNode(token));
        else if (KEYWORDS.has(word)) push('tok-kw', token);
        else if (CONSTANTS.has(word)) push('tok-const', token);
        else if (word === 'self' || word === 'cls') push('tok-self', token);
        else if (BUILTINS.has(word)) push('tok-builtin', token);
        else nodes.push(document.createTextNode(token));
        afterDef = word === 'def' || word === 'class';
        continue;
      } else nodes.push(document.createTextNode(token));
      afterDef = false;
    }
    if (last < text.length) nodes.push(document.createTextNode(text.slice(last)));
    // A trailing newline needs a line of its own to keep the layer as tall as the textarea.
    nodes.push(document.createTextNode('\n'));
    el.highlight.replaceChildren(...nodes);
  }

  let gutterCount = 0;
  function renderGutter() {
    const count = el.code.value.split('\n').length;
    if (count !== gutterCount) {
      const lines = [];
      for (let i = 1; i <= count; i += 1) {
        const line = document.createElement('div');
        line.textContent = String(i);
        lines.push(line);
      }
      el.gutterLines.replaceChildren(...lines);
      gutterCount = count;
    }
    [...el.gutterLines.children].forEach((line, i) => {
      line.classList.toggle('err', i + 1 === mark.line);
      if (i + 1 === mark.line) line.dataset.testid = 'gutter-error';
      else delete line.dataset.testid;
    });
    positionMark();
  }

  function positionMark() {
    const { scrollTop, scrollLeft, clientWidth } = el.code;
    el.gutterLines.style.transform = `translateY(${-scrollTop}px)`;
    el.highlight.style.transform = `translate(${-scrollLeft}px, ${-scrollTop}px)`;
    const shown = mark.line > 0;
    el.errorLine.hidden = !shown;
    el.errorCol.hidden = !shown || !mark.column;
    el.errorFlag.hidden = !shown;
    if (!shown) return;
    const top = metrics.padY + (mark.line - 1) * metrics.line - scrollTop;
    el.errorLine.style.top = `${top}px`;
    el.errorCol.style.top = `${top}px`;
    el.errorCol.style.left = `${metrics.padX + (mark.column - 1) * metrics.char - scrollLeft}px`;
    el.errorCol.style.width = `${metrics.char}px`;

    // The message goes after the end of the marked line, or under it when the line is long.
    const text = el.code.value.split('\n')[mark.line - 1] || '';
    let left = metrics.padX + (text.length + 3) * metrics.char - scrollLeft;
    let flagTop = top;
    if (clientWidth - left < 220) {
      left = Math.max(metrics.padX, metrics.padX + (mark.column - 1) * metrics.char - scrollLeft);
      left = Math.min(left, Math.max(metrics.padX, clientWidth - 260));
      flagTop = top + metrics.line;
    }
    el.errorFlag.style.top = `${flagTop}px`;
    el.errorFlag.style.left = `${left}px`;
    el.errorFlag.style.maxWidth = `${Math.max(120, clientWidth - left - 12)}px`;
    el.errorFlag.textContent = mark.message;
  }

  function setMark(line, column, message) {
    mark.line = line;
    mark.column = column;
    mark.message = message;
    el.code.setAttribute('aria-invalid', line ? 'true' : 'false');
    renderGutter();
  }

  function insertText(text) {
    // execCommand keeps the browser's undo history; setRangeText is the fallback.
    if (!document.execCommand('insertText', false, text)) {
      const { selectionStart, selectionEnd } = el.code;
      el.code.setRangeText(text, selectionStart, selectionEnd, 'end');
      el.code.dispatchEvent(new Event('input'));
    }
  }

  /** Indents (or with `outdent` dedents) every line the selection touches by four spaces. */
  function indentLines(outdent) {
    const { value, selectionStart, selectionEnd } = el.code;
    const start = value.lastIndexOf('\n', selectionStart - 1) + 1;
    const endBreak = value.indexOf('\n', selectionEnd - (selectionEnd > selectionStart && value[selectionEnd - 1] === '\n' ? 1 : 0));
    const end = endBreak === -1 ? value.length : endBreak;
    const block = value.slice(start, end);
    const changed = block
      .split('\n')
      .map((line) => (outdent ? line.replace(/^ {1,4}/, '') : `    ${line}`))
      .join('\n');
    if (changed === block) return;
    el.code.setSelectionRange(start, end);
    insertText(changed);
    el.code.setSelectionRange(start, start + changed.length);
  }

  let tabEscapes = false; // after Escape, Tab leaves the editor (no keyboard trap)
  el.code.addEventListener('keydown', (event) => {
    const mod = event.ctrlKey || event.metaKey;
    if (mod && event.key === 'Enter') {
      event.preventDefault();
      if (event.shiftKey) submit();
      else run();
      return;
    }
    if (event.key === 'Escape') {
      tabEscapes = true;
      return;
    }
    if (event.key === 'Tab' && !tabEscapes && !mod && !event.altKey) {
      event.preventDefault();
      const { value, selectionStart, selectionEnd } = el.code;
      if (event.shiftKey || value.slice(selectionStart, selectionEnd).includes('\n')) {
        indentLines(event.shiftKey);
      } else {
        const column = selectionStart - (value.lastIndexOf('\n', selectionStart - 1) + 1);
        insertText(' '.repeat(4 - (column % 4)));
      }
      return;
    }
    tabEscapes = false;
    if (event.key === 'Enter' && !mod && !event.shiftKey && !event.altKey) {
      // Keep the indentation, and open a block after a colon.
      const { value, selectionStart } = el.code;
      const lineStart = value.lastIndexOf('\n', selectionStart - 1) + 1;
      const before = value.slice(lineStart, selectionStart);
      let indent = (before.match(/^ */) || [''])[0];
      if (/:\s*(#.*)?$/.test(before)) indent += '    ';
      event.preventDefault();
      insertText(`\n${indent}`);
    }
  });

  el.code.addEventListener('scroll', positionMark);
  window.addEventListener('resize', positionMark);

  // ---- Validation while typing ------------------------------------------------------------

  const check = { timer: null, controller: null };

  function setValidation(kind, text) {
    el.validation.className = `validation ${kind}`;
    el.validation.querySelector('.validation-text').textContent = text;
    el.validation.title = text;
  }

  function markFields(field) {
    el.timeout.classList.toggle('invalid', field === 'timeout');
    el.memory.classList.toggle('invalid', field === 'memory_mb');
    el.timeout.setAttribute('aria-invalid', String(field === 'timeout'));
    el.memory.setAttribute('aria-invalid', String(field === 'memory_mb'));
  }

  function scheduleValidation() {
    clearTimeout(check.timer);
    check.timer = setTimeout(validate, 300);
  }

  async function validate() {
    if (check.controller) check.controller.abort();
    const controller = new AbortController();
    check.controller = controller;
    let answer;
    try {
      answer = await api('POST', '/validate', requestBody(), controller.signal);
    } catch {
      return; // superseded by a newer check
    }
    if (check.controller !== controller) return;
    check.controller = null;
    const body = answer.json;
    if (answer.status === 200 && body && body.ok) {
      setMark(0, 0, '');
      markFields(null);
      setValidation('ok', `Valid: ${body.main === 'async def' ? 'async def main()' : 'def main()'} found`);
    } else if (answer.status === 401) {
      setMark(0, 0, '');
      markFields(null);
      setValidation('', el.apiKey.value.trim()
        ? 'Could not check the script: the server did not accept the API key'
        : 'Could not check the script: this server needs an API key');
    } else if (body && body.error) {
      const line = Number.isInteger(body.line) ? body.line : 0;
      const column = Number.isInteger(body.column) ? body.column : 0;
      const short = body.error.replace(/\s*\(line \d+, column \d+\)$/, '');
      setMark(line, column, short);
      markFields(body.field || null);
      const where = line ? `Line ${line}${column ? `, column ${column}` : ''}: ` : '';
      setValidation('bad', `${where}${short}`);
    } else {
      setMark(0, 0, '');
      markFields(null);
      setValidation('', answer.status ? `Could not check the script (${httpLabel(answer.status)})` : 'Could not reach the API to check the script');
    }
  }

  // ---- Wiring -----------------------------------------------------------------------------

  function loadExample(name) {
    const example = EXAMPLES[name];
    if (!example) return;
    el.code.value = example.script;
    el.timeout.value = String(example.timeout ?? DEFAULT_TIMEOUT);
    el.memory.value = String(example.memory_mb ?? DEFAULT_MEMORY);
    el.code.scrollTop = 0;
    highlight();
    setMark(0, 0, '');
    validate();
  }

  el.code.addEventListener('input', () => {
    highlight();
    renderGutter();
    scheduleValidation();
  });
  el.timeout.addEventListener('input', scheduleValidation);
  el.memory.addEventListener('input', scheduleValidation);
  el.example.addEventListener('change', () => loadExample(el.example.value));
  el.run.addEventListener('click', run);
  el.submit.addEventListener('click', submit);
  el.cancel.addEventListener('click', cancel);
  el.jobsRefresh.addEventListener('click', refreshJobs);

  let keyTimer = null;
  el.apiKey.addEventListener('input', () => {
    markKey();
    saveKey(el.apiKey.value.trim());
    // The check and the job list may have been refused: ask again with the new key once typing pauses.
    clearTimeout(keyTimer);
    keyTimer = setTimeout(() => {
      validate();
      refreshJobs();
    }, 400);
  });
  // Another tab of this page changed the key: use the same one here.
  window.addEventListener('storage', (event) => {
    if (event.key !== KEY_STORAGE && event.key !== null) return;
    el.apiKey.value = loadKey();
    markKey();
  });
  el.apiKeyToggle.addEventListener('click', () => {
    const show = el.apiKey.type === 'password';
    el.apiKey.type = show ? 'text' : 'password';
    el.apiKeyToggle.textContent = show ? 'Hide' : 'Show';
    el.apiKeyToggle.setAttribute('aria-label', show ? 'Hide the API key' : 'Show the API key');
  });

  for (const input of [el.timeout, el.memory, el.apiKey]) {
    input.addEventListener('keydown', (event) => {
      if ((event.ctrlKey || event.metaKey) && event.key === 'Enter') {
        event.preventDefault();
        if (event.shiftKey) submit();
        else run();
      }
    });
  }

  measure();
  if (document.fonts && document.fonts.ready) {
    document.fonts.ready.then(() => {
      measure();
      positionMark();
    });
  }
  el.apiKey.value = loadKey();
  markKey();
  loadExample(el.example.value);
  el.placeholder.hidden = false;
  refreshJobs();
})();
