// phasegate console: plain JavaScript, no framework, nothing loaded from
// elsewhere. Views are rendered from the console's JSON API; live data
// arrives on one EventSource (/api/events) fed by the server's single
// poller of the coordinator. Everything that came from the network is put
// into the page as text (textContent), never as HTML.
'use strict';

(() => {
  // ---------------------------------------------------------------- helpers

  /** An element: h('td', {class: 'num'}, 'text', child, [more]). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      if (Array.isArray(c)) append(el, c);
      else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }

  const pad = (n) => String(n).padStart(2, '0');

  /** 3725000 → "1h 02m 05s". */
  function duration(ms) {
    const s = Math.max(0, Math.ceil(ms / 1000));
    const hours = Math.floor(s / 3600);
    const minutes = Math.floor((s % 3600) / 60);
    const seconds = s % 60;
    if (hours) return `${hours}h ${pad(minutes)}m ${pad(seconds)}s`;
    if (minutes) return `${minutes}m ${pad(seconds)}s`;
    return `${seconds}s`;
  }

  /** A configured duration, short: 600000 → "10m", 5400000 → "1h 30m", 2500 → "2.5s". */
  function span(ms) {
    if (ms < 60000) return `${Math.round(ms / 100) / 10}s`;
    const s = Math.round(ms / 1000);
    const parts = [[Math.floor(s / 86400), 'd'], [Math.floor((s % 86400) / 3600), 'h'], [Math.floor((s % 3600) / 60), 'm'], [s % 60, 's']];
    return parts.filter(([n]) => n).map(([n, unit]) => `${n}${unit}`).join(' ');
  }

  /** A moment as local time, with the date unless it is today. */
  function when(ms) {
    if (!ms) return '—';
    const d = new Date(ms);
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    const today = new Date();
    if (d.toDateString() === today.toDateString()) return time;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
  }

  const words = (s) => String(s || '').replace(/_/g, ' ');

  /** The server's clock now (bake countdowns count against it). */
  const serverNow = () => Date.now() + state.clockOffset;

  class ApiError extends Error {
    constructor(code, message, status) {
      super(message);
      this.code = code;
      this.status = status;
    }
  }

  async function api(path, options) {
    let response;
    try {
      response = await fetch(path, options);
    } catch (e) {
      throw new ApiError('unavailable', `the console cannot be reached (${e.message})`, 0);
    }
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;
    }
    if (!response.ok) {
      const err = (body && body.error) || {};
      throw new ApiError(err.code || 'internal', err.message || `HTTP ${response.status}`, response.status);
    }
    return body;
  }

  // ------------------------------------------------------------------ state

  const state = {
    session: null,
    rollouts: null, // {active: [Trigger], omitted, finished_seq}
    agents: null, // {agents: [AgentInfo]}
    error: null, // the poller's last error, or null
    clockOffset: 0,
    connected: false,
    view: null,
  };

  const main = document.getElementById('main');

  // ------------------------------------------------------------- live feed

  function setLive(on) {
    state.connected = on;
    const el = document.getElementById('live');
    el.className = `live ${on && !state.error ? 'on' : 'off'}`;
    el.textContent = !on ? 'reconnecting…' : state.error ? 'coordinator unreachable' : 'live';
  }

  function setBanner() {
    const banner = document.getElementById('banner');
    if (state.error) {
      banner.textContent = `The coordinator cannot be polled: ${state.error}. Showing the last known state.`;
      banner.hidden = false;
    } else {
      banner.hidden = true;
      banner.textContent = '';
    }
  }

  function parse(event) {
    try {
      return JSON.parse(event.data);
    } catch (e) {
      return null;
    }
  }

  function connect() {
    const source = new EventSource('/api/events');
    source.addEventListener('open', () => setLive(true));
    source.addEventListener('error', () => setLive(false));
    source.addEventListener('clock', (e) => {
      const data = parse(e);
      if (data) state.clockOffset = data.now_ms - Date.now();
    });
    source.addEventListener('rollouts', (e) => {
      const data = parse(e);
      if (!data) return;
      state.rollouts = data;
      if (state.view && state.view.onRollouts) state.view.onRollouts();
    });
    source.addEventListener('agents', (e) => {
      const data = parse(e);
      if (!data) return;
      state.agents = data;
      if (state.view && state.view.onAgents) state.view.onAgents();
    });
    source.addEventListener('status', (e) => {
      const data = parse(e);
      if (!data) return;
      state.error = data.error;
      setLive(true);
      setBanner();
    });
  }

  // Bake countdowns tick every second without re-rendering anything.
  setInterval(() => {
    for (const el of document.querySelectorAll('[data-ends-at]')) {
      el.textContent = duration(Number(el.dataset.endsAt) - serverNow());
    }
  }, 1000);

  // ------------------------------------------------------------- rendering

  /**
   * Replaces the view's content, keeping keyboard focus on the element
   * with the same data-key, so live updates never steal it.
   */
  function render(container, ...nodes) {
    const focused = document.activeElement;
    const key = focused && container.contains(focused) && focused.dataset ? focused.dataset.key : null;
    container.replaceChildren(...nodes.flat().filter(Boolean));
    if (key) {
      const again = container.querySelector(`[data-key="${CSS.escape(key)}"]`);
      if (again) again.focus();
    }
  }

  function badge(text, kind) {
    return h('span', { class: `badge ${kind || ''}`, text });
  }

  /** The status, or the current phase's state; `data-state` says which. */
  function statusBadge(t) {
    if (t.status !== 'in_progress') {
      return h('span', { class: 'state', 'data-state': t.status }, badge(t.status, t.status === 'completed' ? 'ok' : 'bad'));
    }
    const parts = [badge(words(t.phase_state || 'in progress'), t.phase_state === 'awaiting_approval' ? 'warn' : '')];
    if (t.paused) parts.push(' ', badge(`paused: ${words(t.paused_reason || 'manual')}`, 'warn'));
    return h('span', { class: 'state', 'data-state': t.phase_state || t.status, 'data-paused': t.paused ? 'true' : null }, parts);
  }

  function entityLink(t) {
    return h('a', { href: `#/trigger/${encodeURIComponent(t.id)}`, 'data-key': `t-${t.id}` }, `${t.entity.kind} ${t.entity.name}`);
  }

  function phaseOf(t) {
    const phases = (t.pipeline_snapshot && t.pipeline_snapshot.phases) || [];
    return phases[t.current_phase] || null;
  }

  /** Where each phase stands: done, current or to come. */
  function phaseClass(t, index) {
    if (t.status === 'completed') return 'done';
    if (t.status === 'aborted') return index <= t.current_phase ? 'aborted' : '';
    if (index < t.current_phase) return 'done';
    if (index === t.current_phase) return t.paused ? 'current paused' : 'current';
    return '';
  }

  function steps(t) {
    const phases = (t.pipeline_snapshot && t.pipeline_snapshot.phases) || [];
    const label = (p, i) => {
      const cls = phaseClass(t, i);
      const where = cls.startsWith('current') ? words(t.phase_state) : cls === 'done' ? 'done' : cls === 'aborted' ? 'aborted' : 'to come';
      return h('li', { class: cls, title: `${p.id}: ${where}`, 'aria-label': `phase ${p.id}: ${where}` }, p.id);
    };
    return h('ol', { class: 'steps', 'aria-label': 'phases' }, phases.map(label));
  }

  function bake(t) {
    if (t.phase_ends_at_ms) {
      return h('span', {}, h('span', { class: 'mono countdown', 'data-ends-at': t.phase_ends_at_ms, text: duration(t.phase_ends_at_ms - serverNow()) }), ' left');
    }
    if (t.remaining_wait_ms !== null && t.remaining_wait_ms !== undefined) {
      return h('span', { class: 'mono' }, `${duration(t.remaining_wait_ms)} left (paused)`);
    }
    return h('span', { class: 'muted' }, '—');
  }

  function approvals(t) {
    const phase = phaseOf(t);
    if (!phase || !phase.approval || !phase.approval.required || t.status !== 'in_progress') {
      return h('span', { class: 'muted' }, '—');
    }
    const got = (t.approvals || []).length;
    const need = phase.approval.min_approvals || 1;
    return h('span', { class: 'num approvals' }, `${got} / ${need}`);
  }

  const escapeRegExp = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

  /** Whether segment `name` matches `pattern` (a name, or a glob with `*`). */
  function globMatch(pattern, name) {
    const source = pattern.split('*').map(escapeRegExp).join('.*');
    return new RegExp(`^${source}$`).test(name);
  }

  /** The trigger's segments in pipeline order: by the first phase naming each. */
  function segmentEntries(t) {
    const phases = (t.pipeline_snapshot && t.pipeline_snapshot.phases) || [];
    const rank = (name) => {
      const i = phases.findIndex((p) => p.segments.some((pattern) => globMatch(pattern, name)));
      return i < 0 ? phases.length : i;
    };
    return Object.entries(t.segments || {}).sort(([a], [b]) => rank(a) - rank(b) || a.localeCompare(b));
  }

  function segments(t) {
    const entries = segmentEntries(t);
    if (!entries.length) return h('span', { class: 'muted' }, '—');
    return h('div', { class: 'segs' }, entries.map(([name, s]) => {
      const unhealthy = s.version_active && s.agents_healthy < s.agents_known;
      const cls = `seg ${s.version_active ? 'active' : ''} ${unhealthy ? 'unhealthy' : ''}`;
      // Compact: all healthy says nothing more; the title has every count.
      const sick = s.agents_known - s.agents_healthy;
      const text = s.version_active
        ? `${name} ${s.agents_applied}/${s.agents_known}${sick > 0 ? ` · ${sick} unhealthy` : ''}`
        : `${name} —`;
      const title = `${name}: ${s.version_active ? 'new version active' : 'new version not yet active'}; ${s.agents_known} known, ${s.agents_live} live, ${s.agents_applied} applied, ${s.agents_healthy} healthy`;
      return h('span', { class: cls, title, 'aria-label': title }, text, analyses(t, name));
    }));
  }

  /**
   * The latest analysis results of a segment (`trigger.analysis[segment]`,
   * from coordinators that run metric analyses): `name value`, marked
   * by result; none when the pipeline has no analysis.
   */
  function analyses(t, segment) {
    const list = (t.analysis && t.analysis[segment]) || [];
    if (!list.length) return null;
    return h('span', { class: 'analyses' }, list.map((a) => {
      const value = a.value === null || a.value === undefined ? words(a.result) : String(Math.round(a.value * 1000) / 1000);
      const kind = a.failing ? 'bad' : a.result === 'success' ? 'ok' : a.result === 'failure' ? 'bad' : 'warn';
      const title = `${a.name} in ${segment}: ${words(a.result)}${a.failing ? ' (failing)' : ''}, ${a.consecutive || 1} in a row, by ${a.agent_id} at ${when(a.at_ms)}${a.detail ? `: ${a.detail}` : ''}`;
      return h('span', { class: `analysis ${kind}`, title, 'data-analysis': a.name, 'data-result': a.result }, `${a.name} ${value}`);
    }));
  }

  // ----------------------------------------------------------- rollouts view

  function rolloutsView() {
    const view = { finishedCursor: '', cursors: [], finishedSeq: null };
    const activeBox = h('div', { class: 'panel', id: 'active' });
    const finishedBox = h('div', { class: 'panel', id: 'finished' });
    const pager = h('div', { class: 'pager' });

    function renderActive() {
      const r = state.rollouts;
      if (!r) {
        render(activeBox, h('p', { class: 'empty' }, 'Waiting for the first poll of the coordinator…'));
        return;
      }
      if (!r.active.length) {
        render(activeBox, h('p', { class: 'empty' }, 'No rollout is running.'));
        return;
      }
      const rows = r.active.map((t) => h('tr', { 'data-trigger': t.id, 'data-entity': t.entity.name },
        h('td', { class: 'nowrap' }, entityLink(t), h('div', { class: 'muted mono' }, `v${t.from_version} → v${t.to_version}`)),
        h('td', { class: 'nowrap' }, t.pipeline, h('div', { class: 'muted', title: 'started' }, `${when(t.created_at_ms)} · ${t.created_by}`)),
        h('td', {}, steps(t)),
        h('td', {}, statusBadge(t)),
        h('td', { class: 'num' }, bake(t)),
        h('td', { class: 'num' }, approvals(t)),
        h('td', {}, segments(t))));
      render(activeBox, h('table', {},
        h('caption', { class: 'sr-only' }, 'Active rollouts'),
        h('thead', {}, h('tr', {}, ['Entity', 'Pipeline, started', 'Phases', 'State', 'Bake', 'Approvals', 'Segments: applied / known'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, rows)),
      r.omitted ? h('p', { class: 'empty' }, `${r.omitted} more active rollouts are not shown.`) : null);
    }

    async function loadFinished() {
      let page;
      try {
        page = await api(`/api/finished?cursor=${encodeURIComponent(view.finishedCursor)}`);
      } catch (e) {
        render(finishedBox, h('p', { class: 'empty' }, `Cannot list finished rollouts: ${e.message}`));
        return;
      }
      if (state.view !== view) return;
      if (!page.triggers.length) {
        render(finishedBox, h('p', { class: 'empty' }, 'No finished rollout on this page.'));
      } else {
        render(finishedBox, h('table', {},
          h('thead', {}, h('tr', {}, ['Entity', 'Pipeline', 'Status', 'Versions', 'Started', 'Finished'].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, page.triggers.map((t) => h('tr', { 'data-trigger': t.id },
            h('td', {}, entityLink(t)),
            h('td', {}, t.pipeline),
            h('td', {}, statusBadge(t)),
            h('td', { class: 'mono' }, `v${t.from_version} → v${t.to_version}`),
            h('td', { class: 'num' }, when(t.created_at_ms), h('div', { class: 'muted' }, t.created_by)),
            h('td', { class: 'num' }, when(t.updated_at_ms)))))));
      }
      const newer = h('button', { type: 'button', 'data-key': 'newer', disabled: !view.cursors.length, onclick: () => {
        view.finishedCursor = view.cursors.pop() || '';
        loadFinished();
      } }, '← Newer');
      const older = h('button', { type: 'button', 'data-key': 'older', disabled: !page.next_cursor, onclick: () => {
        view.cursors.push(view.finishedCursor);
        view.finishedCursor = page.next_cursor;
        loadFinished();
      } }, 'Older →');
      render(pager, newer, older, h('span', { class: 'muted' }, `page ${view.cursors.length + 1}`));
    }

    view.mount = () => {
      render(main,
        h('h1', {}, 'Rollouts'),
        h('h2', {}, 'Active'), activeBox,
        h('h2', {}, 'Finished'), finishedBox, pager);
      renderActive();
      loadFinished();
      if (!state.rollouts) {
        api('/api/rollouts').then((r) => {
          if (!state.rollouts) {
            state.rollouts = r;
            renderActive();
          }
        }).catch(() => {});
      }
    };
    view.onRollouts = () => {
      renderActive();
      const seq = state.rollouts.finished_seq;
      // A rollout finished: the first page of finished ones has news.
      if (view.finishedSeq !== null && seq !== view.finishedSeq && !view.cursors.length) loadFinished();
      view.finishedSeq = seq;
    };
    return view;
  }

  // ------------------------------------------------------------ trigger view

  /** The actions that fit the trigger's state; the role decides the rest. */
  function availableActions(t) {
    if (t.status !== 'in_progress') return [];
    const list = [];
    if (t.phase_state === 'awaiting_approval') list.push(['approve', 'Approve phase', 'primary']);
    list.push(t.paused ? ['resume', 'Resume', ''] : ['pause', 'Pause', '']);
    list.push(['skip', 'Skip phase', '']);
    list.push(['rollout', 'Roll out everywhere', '']);
    list.push(['abort', 'Abort…', 'danger']);
    return list;
  }

  // Every action that moves the rollout on names the phase the page shows,
  // so a stale page gets `conflict` and never acts on another phase. Pause
  // and abort stop it whatever the phase: SPEC §4 makes their phase_id
  // optional so that stopping never loses a race with automatic progress,
  // and an abort refused because a bake just ended would cost the
  // operator the seconds that matter.
  const namesPhase = new Set(['approve', 'resume', 'skip', 'rollout']);

  const done = {
    approve: 'Approved.',
    pause: 'Paused.',
    resume: 'Resumed.',
    skip: 'Phase skipped.',
    rollout: 'Rolled out everywhere.',
    abort: 'Aborted: every segment returns to the old version.',
  };

  function triggerView(id) {
    const view = { trigger: null, diff: null };
    const head = h('div');
    const actions = h('div', { class: 'actions', role: 'group', 'aria-label': 'Actions' });
    const message = h('div', { class: 'message', id: 'action-message', role: 'status', 'aria-live': 'polite' });
    const body = h('div');

    function say(kind, text, extra) {
      message.className = `message ${kind}`;
      message.setAttribute('role', kind === 'ok' ? 'status' : 'alert');
      message.dataset.kind = kind;
      render(message, h('span', { class: 'text', text }), extra || null);
    }

    async function act(action, phaseId, comment) {
      const t = view.trigger;
      const payload = { comment: comment || null, phase_id: namesPhase.has(action) ? phaseId : null };
      for (const b of actions.querySelectorAll('button')) b.disabled = true;
      try {
        const r = await api(`/api/triggers/${encodeURIComponent(t.id)}/${action}`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify(payload),
        });
        say('ok', done[action]);
        show(r.trigger);
        renderActions();
      } catch (e) {
        if (e.code === 'conflict') {
          say('warn', 'This rollout moved on, reload.', h('button', { type: 'button', 'data-key': 'reload', onclick: () => load(true) }, 'Reload'));
        } else if (e.code === 'forbidden') {
          const who = state.session && state.session.credentials ? `The identity of ${state.session.credentials}` : `${(state.session && state.session.actor) || 'You'}`;
          say('bad', `Refused: ${who} may not ${action} this rollout. ${e.message}`);
        } else {
          say('bad', `${action} failed: ${e.code}: ${e.message}`);
        }
        renderActions();
      }
    }

    function askAbort() {
      const dialog = document.getElementById('abort-dialog');
      const t = view.trigger;
      document.getElementById('abort-what').textContent =
        `Every segment of ${t.entity.kind} ${t.entity.name} returns to v${t.from_version}${t.from_version === 0 ? ' (absent)' : ''}. This cannot be undone.`;
      const comment = document.getElementById('abort-comment');
      comment.value = '';
      const confirm = document.getElementById('abort-confirm');
      const cancel = document.getElementById('abort-cancel');
      const close = (go) => {
        confirm.onclick = null;
        cancel.onclick = null;
        dialog.close();
        if (go) act('abort', t.current_phase_id, comment.value);
        else {
          const b = actions.querySelector('[data-key="act-abort"]');
          if (b) b.focus();
        }
      };
      confirm.onclick = () => close(true);
      cancel.onclick = () => close(false);
      dialog.oncancel = (e) => {
        e.preventDefault();
        close(false);
      };
      dialog.showModal();
      comment.focus();
    }

    function renderActions() {
      const t = view.trigger;
      const list = availableActions(t);
      render(actions, list.map(([action, label, cls]) => h('button', {
        type: 'button',
        class: cls,
        'data-key': `act-${action}`,
        'data-action': action,
        onclick: () => (action === 'abort' ? askAbort() : act(action, t.current_phase_id, null)),
      }, label)));
    }

    function renderHead() {
      const t = view.trigger;
      render(head,
        h('p', { class: 'crumb' }, h('a', { href: '#/' }, '← Rollouts')),
        h('h1', {}, `${t.entity.kind} ${t.entity.name}: v${t.from_version} → v${t.to_version} `, statusBadge(t)),
        h('dl', { class: 'summary' },
          h('div', {}, h('dt', {}, 'Pipeline'), h('dd', {}, t.pipeline)),
          h('div', {}, h('dt', {}, 'Phase'), h('dd', { id: 'phase' }, t.status === 'in_progress' ? `${t.current_phase_id} (${t.current_phase + 1} of ${(t.pipeline_snapshot.phases || []).length})` : '—')),
          h('div', {}, h('dt', {}, 'Bake'), h('dd', {}, bake(t))),
          h('div', {}, h('dt', {}, 'Approvals'), h('dd', {}, approvals(t))),
          h('div', {}, h('dt', {}, 'Started'), h('dd', {}, `${when(t.created_at_ms)} by ${t.created_by}`)),
          h('div', {}, h('dt', {}, 'Trigger'), h('dd', { class: 'mono' }, t.id))));
    }

    function phaseCard(t, p, i) {
      const cls = phaseClass(t, i);
      const current = cls.startsWith('current');
      const meta = [`segments ${p.segments.join(', ')}`];
      if (p.pass_percentage !== 100) meta.push(`${p.pass_percentage}% of units`);
      if (p.wait_ms) meta.push(`bake ${span(p.wait_ms)}`);
      if (p.approval && p.approval.required) {
        const who = p.approval.approvers && p.approval.approvers.length ? p.approval.approvers.join(', ') : 'anyone';
        meta.push(`approval: ${p.approval.min_approvals} of ${who}`);
      }
      for (const a of p.analysis || []) {
        if (a.success) meta.push(`analysis ${a.name}: ${a.success.op} ${a.success.threshold}`);
      }
      return h('li', { class: cls, 'data-phase': p.id },
        h('div', { class: 'phase-name' }, `${i + 1}. ${p.id} `,
          current ? statusBadge(t) : badge(cls === 'done' ? 'done' : cls === 'aborted' ? 'rolled back' : 'to come', cls === 'done' ? 'ok' : cls === 'aborted' ? 'bad' : 'plain')),
        h('div', { class: 'phase-meta' }, meta.join(' · ')),
        current && t.approvals && t.approvals.length
          ? h('div', { class: 'phase-meta' }, `approved by ${t.approvals.map((a) => a.actor).join(', ')}`)
          : null);
    }

    function segmentTable(t) {
      const entries = segmentEntries(t);
      if (!entries.length) return h('p', { class: 'empty' }, 'No segment with agents.');
      return h('table', {},
        h('thead', {}, h('tr', {}, ['Segment', 'New version', 'Known', 'Live', 'Applied', 'Healthy'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, entries.map(([name, s]) => h('tr', { 'data-segment': name },
          h('td', {}, name, analyses(t, name) ? h('div', {}, analyses(t, name)) : null),
          h('td', {}, s.version_active ? badge('active', '') : badge('not yet', 'plain')),
          h('td', { class: 'num' }, s.agents_known),
          h('td', { class: 'num' }, s.agents_live),
          h('td', { class: 'num' }, s.agents_applied),
          h('td', { class: 'num' }, s.agents_healthy)))));
    }

    function historyList(t) {
      const human = (e) => e.actor !== 'phasegate';
      const bad = new Set(['aborted', 'health_degraded']);
      const mark = (e) => (bad.has(e.type) ? 'bad' : e.type === 'paused' ? 'warn' : human(e) ? 'human' : 'auto');
      return h('ol', { class: 'timeline', id: 'history' }, (t.history || []).map((e) => h('li', {
        class: mark(e),
        'data-type': e.type,
      },
      h('span', { class: 'when' }, when(e.at_ms)),
      h('strong', {}, words(e.type)),
      e.phase_id ? ` · ${e.phase_id}` : '',
      ` · ${e.actor}`,
      e.comment ? h('span', { class: 'comment' }, ` — ${e.comment}`) : null)));
    }

    function diffBlock() {
      const d = view.diff;
      if (!d) return null;
      if (!d.lines) {
        const missing = [!d.from_known ? `v${d.from_version}` : null, !d.to_known ? `v${d.to_version}` : null].filter(Boolean).join(' and ');
        return h('p', { class: 'muted', id: 'diff' }, `This console has not seen ${missing} of the entity, so it cannot show the change. (The command API answers only an entity's latest version; the console remembers the versions it reads.)`);
      }
      return h('pre', { class: 'diff', id: 'diff', 'aria-label': `changes from v${d.from_version} to v${d.to_version}` },
        d.lines.map((l) => h('span', { class: l.op }, l.text)));
    }

    function renderBody() {
      const t = view.trigger;
      const phases = (t.pipeline_snapshot && t.pipeline_snapshot.phases) || [];
      render(body,
        h('h2', {}, 'Pipeline'),
        h('ol', { class: 'phases', id: 'phases' }, phases.map((p, i) => phaseCard(t, p, i))),
        h('h2', {}, 'Segments'),
        h('div', { class: 'panel' }, segmentTable(t)),
        h('h2', {}, `Change v${t.from_version} → v${t.to_version}`),
        diffBlock(),
        h('h2', {}, 'History'),
        historyList(t));
    }

    function show(t) {
      const before = view.trigger;
      view.trigger = t;
      if (before && JSON.stringify(before) === JSON.stringify(t)) return;
      renderHead();
      renderActions();
      renderBody();
    }

    async function load(clear) {
      try {
        const r = await api(`/api/triggers/${encodeURIComponent(id)}`);
        if (state.view !== view) return;
        view.diff = r.diff;
        view.trigger = null;
        show(r.trigger);
        if (clear) say('ok', 'Reloaded.');
      } catch (e) {
        render(main, h('p', { class: 'crumb' }, h('a', { href: '#/' }, '← Rollouts')),
          h('h1', {}, 'Rollout'), h('p', { class: 'message bad', role: 'alert' }, `Cannot load trigger ${id}: ${e.message}`));
      }
    }

    view.mount = () => {
      render(main, head, actions, message, body);
      render(body, h('p', { class: 'muted' }, 'Loading…'));
      load(false);
    };
    view.onRollouts = () => {
      const t = view.trigger;
      if (!t || !state.rollouts) return;
      const live = state.rollouts.active.find((x) => x.id === t.id);
      if (live) show(live);
      // It finished: read it once more, as it ended. (Past the most the
      // poller details, absence says nothing: the page stays as it is.)
      else if (t.status === 'in_progress' && !state.rollouts.omitted) load(false);
    };
    return view;
  }

  // ------------------------------------------------------------ list views

  /** A searchable list: `columns` are [heading, cell(item)]. */
  function listView(title, path, columns, noun) {
    const view = {};
    const box = h('div', { class: 'panel' });
    const count = h('span', { class: 'muted', role: 'status' });
    let timer = null;
    let asked = 0;
    const input = h('input', {
      type: 'search', id: 'search', 'aria-label': `Search ${noun}`, placeholder: `Search ${noun} by name, description…`,
      oninput: () => {
        clearTimeout(timer);
        timer = setTimeout(load, 200);
      },
    });

    async function load() {
      const mine = ++asked;
      let r;
      try {
        r = await api(`${path}?q=${encodeURIComponent(input.value)}`);
      } catch (e) {
        render(box, h('p', { class: 'empty' }, `Cannot list ${noun}: ${e.message}`));
        return;
      }
      if (mine !== asked || state.view !== view) return;
      count.textContent = r.total > r.items.length ? `${r.items.length} of ${r.total} shown` : `${r.total} ${r.total === 1 ? noun.replace(/s$/, '') : noun}`;
      if (!r.items.length) {
        render(box, h('p', { class: 'empty' }, input.value ? `No ${noun} match “${input.value}”.` : `No ${noun} yet.`));
        return;
      }
      render(box, h('table', {},
        h('thead', {}, h('tr', {}, columns.map(([c]) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, r.items.map((item) => h('tr', { 'data-name': item.name }, columns.map(([, cell]) => h('td', {}, cell(item))))))));
    }

    view.mount = () => {
      render(main, h('h1', {}, title), h('div', { class: 'toolbar' }, input, count), box);
      load();
    };
    return view;
  }

  function entityColumns(kind) {
    const cols = [
      ['Name', (s) => h('strong', {}, s.name)],
      ['Version', (s) => h('span', { class: 'num' }, `v${s.version}`)],
      ['Enabled', (s) => (s.enabled ? badge('on', 'ok') : badge('off', 'bad'))],
      ['Pipeline', (s) => s.pipeline || h('span', { class: 'muted' }, 'none: changes apply at once')],
      ['Rules', (s) => (s.rules || []).map((r) => h('div', { class: 'mono' }, `${r.id}: ${r.pass_percentage}%${r.conditions && r.conditions.length ? ` if ${r.conditions.map((c) => `${c.field} ${c.op} ${c.values.join('|')}`).join(' and ')}` : ''}`))],
    ];
    if (kind === 'config') cols.push(['Default value', (s) => h('code', {}, JSON.stringify(s.default_value))]);
    cols.push(['Description', (s) => s.description]);
    return cols;
  }

  function pipelineColumns() {
    return [
      ['Name', (p) => h('strong', {}, p.name)],
      ['Phases', (p) => h('ol', { class: 'steps', 'aria-label': 'phases' }, p.phases.map((ph) => h('li', { title: `${ph.id}: ${ph.segments.join(', ')}` }, ph.id)))],
      ['Segments, bake and approval', (p) => p.phases.map((ph) => h('div', { class: 'mono' },
        `${ph.id}: ${ph.segments.join(', ')}${ph.pass_percentage !== 100 ? ` ${ph.pass_percentage}%` : ''}${ph.wait_ms ? `, bake ${span(ph.wait_ms)}` : ''}${ph.approval && ph.approval.required ? `, approval ${ph.approval.min_approvals} of ${ph.approval.approvers.length ? ph.approval.approvers.join('|') : 'anyone'}` : ''}`))],
      ['Description', (p) => p.description],
    ];
  }

  // ------------------------------------------------------------- agents view

  function agentsView() {
    const view = {};
    const box = h('div', { id: 'segments' });
    const input = h('input', { type: 'search', id: 'search', 'aria-label': 'Search agents', placeholder: 'Search by segment, agent or tier…', oninput: () => renderAgents() });

    function renderAgents() {
      const all = (state.agents && state.agents.agents) || [];
      const q = input.value.trim().toLowerCase();
      const shown = all.filter((a) => !q || [a.segment, a.agent_id, a.tier || ''].some((f) => f.toLowerCase().includes(q)));
      if (!state.agents) {
        render(box, h('p', { class: 'muted' }, 'Waiting for the first poll of the coordinator…'));
        return;
      }
      if (!shown.length) {
        render(box, h('p', { class: 'muted' }, q ? `No agent matches “${input.value}”.` : 'No agent is known to the coordinator.'));
        return;
      }
      const bySegment = new Map();
      for (const a of shown) {
        if (!bySegment.has(a.segment)) bySegment.set(a.segment, []);
        bySegment.get(a.segment).push(a);
      }
      const cards = [...bySegment.entries()].map(([segment, agents]) => {
        const live = agents.filter((a) => a.live).length;
        const stale = agents.filter((a) => a.stale).length;
        const blocked = agents.filter((a) => a.blocked && a.blocked.length).length;
        const unhealthy = agents.filter((a) => a.live && !a.healthy).length;
        return h('section', { class: 'card', 'data-segment': segment, 'aria-label': `segment ${segment}` },
          h('h2', {}, segment,
            badge(`${live} live`, live === agents.length ? 'ok' : ''),
            agents.length - live ? badge(`${agents.length - live} unreachable`, 'bad') : null,
            unhealthy ? badge(`${unhealthy} unhealthy`, 'bad') : null,
            stale ? badge(`${stale} stale`, 'warn') : null,
            blocked ? badge(`${blocked} blocked`, 'warn') : null),
          h('table', {},
            h('thead', {}, h('tr', {}, ['Agent', 'Tier', 'State', 'Applied rev.', 'Last seen', 'Blocked entities'].map((c) => h('th', { scope: 'col' }, c)))),
            h('tbody', {}, agents.map((a) => h('tr', { 'data-agent': a.agent_id },
              h('td', { class: 'mono nowrap' }, a.agent_id),
              h('td', {}, a.tier || '—'),
              h('td', {}, a.live ? badge('live', 'ok') : badge('unreachable', 'bad'), ' ',
                // An unreachable agent counts as unhealthy; say so only of a live one.
                a.live && !a.healthy ? badge('unhealthy', 'bad') : null, ' ', a.stale ? badge('stale', 'warn') : null),
              h('td', { class: 'num' }, a.applied_revision),
              h('td', { class: 'num' }, when(a.last_seen_ms)),
              h('td', {}, (a.blocked || []).map((b) => h('div', { class: 'mono' }, `${b.key} (rev ${b.revision}): ${b.error}`))))))));
      });
      render(box, h('div', { class: 'cards' }, cards));
    }

    view.mount = () => {
      render(main, h('h1', {}, 'Agents by segment'), h('div', { class: 'toolbar' }, input), box);
      if (!state.agents) {
        api('/api/agents').then((r) => {
          if (!state.agents) state.agents = r;
          if (state.view === view) renderAgents();
        }).catch(() => {});
      }
      renderAgents();
    };
    view.onAgents = renderAgents;
    return view;
  }

  // ---------------------------------------------------------------- router

  function route() {
    const hash = location.hash || '#/';
    if (!hash.startsWith('#/')) return; // an in-page anchor, not a view
    const [, name, arg] = hash.slice(1).split('/');
    let view;
    let nav = name || 'rollouts';
    switch (name) {
      case '':
      case undefined:
        view = rolloutsView();
        nav = 'rollouts';
        break;
      case 'trigger':
        view = triggerView(decodeURIComponent(arg || ''));
        nav = 'rollouts';
        break;
      case 'gates':
        view = listView('Gates', '/api/gates', entityColumns('gate'), 'gates');
        break;
      case 'configs':
        view = listView('Configs', '/api/configs', entityColumns('config'), 'configs');
        break;
      case 'pipelines':
        view = listView('Pipelines', '/api/pipelines', pipelineColumns(), 'pipelines');
        break;
      case 'agents':
        view = agentsView();
        break;
      default:
        view = { mount: () => render(main, h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '#/' }, 'Back to the rollouts'))) };
    }
    for (const a of document.querySelectorAll('[data-nav]')) {
      if (a.dataset.nav === nav) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    state.view = view;
    view.mount();
    document.title = `${nav === 'rollouts' && name === 'trigger' ? 'Rollout' : nav[0].toUpperCase() + nav.slice(1)} · phasegate`;
  }

  document.getElementById('skip').addEventListener('click', (e) => {
    e.preventDefault();
    main.focus();
  });
  window.addEventListener('hashchange', () => {
    route();
    main.focus({ preventScroll: true });
  });

  api('/api/session').then((s) => {
    state.session = s;
    document.getElementById('who').textContent = s.credentials ? `acting with ${s.credentials}` : `acting as ${s.actor}`;
  }).catch(() => {});
  connect();
  route();
})();
