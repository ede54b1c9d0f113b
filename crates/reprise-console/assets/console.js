// The reprise web console: a client of /api/v1, nothing more.
//
// - The account's API key lives in this tab's session storage; every call
//   sends it, and a 401 signs the tab out. Nothing is fetched or drawn
//   before `whoami` has accepted the key.
// - The page is drawn from data with `h()` (text nodes only, never HTML
//   strings), so a resource's name cannot inject markup.
// - The current view is polled every second and redrawn only when its data
//   changed, while no menu is open; focus is put back on the same control.
// - Every word on screen comes from i18n.js through `t()`.

import { WORDS } from './i18n.js';

const POLL_MS = 1000;
const LANGS = ['en', 'fr', 'es'];

let lang = pickLanguage();
let apiKey = sessionStorage.getItem('reprise.key');
let me = null;
let lastSignature = '';
let openMenu = null;
let refreshing = false;
let statusTimer = null;
// Bumped at sign-out: work started by the previous account stops talking.
let session = 0;

// ---------------------------------------------------------------- words

function pickLanguage() {
  const saved = localStorage.getItem('reprise.lang');
  if (LANGS.includes(saved)) return saved;
  const browser = (navigator.language || 'en').slice(0, 2);
  return LANGS.includes(browser) ? browser : 'en';
}

function t(key, vars = {}) {
  const text = WORDS[lang][key] ?? WORDS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ''));
}

// A word that agrees with a count: `key.one` or `key.other`, chosen by the
// language's plural rules.
function tn(key, count, vars = {}) {
  return t(`${key}.${new Intl.PluralRules(lang).select(count) === 'one' ? 'one' : 'other'}`, { count, ...vars });
}

function stateLabel(kind, state) {
  return WORDS[lang][`state.${kind}.${state}`] ?? WORDS.en[`state.${kind}.${state}`] ?? state;
}

function fmtTime(iso) {
  if (!iso) return '—';
  return new Intl.DateTimeFormat(lang, { dateStyle: 'medium', timeStyle: 'medium' }).format(new Date(iso));
}

function fmtBytes(n) {
  if (n === null || n === undefined) return '—';
  const units = t('units').split(' ');
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const number = new Intl.NumberFormat(lang, { maximumFractionDigits: unit === 0 ? 0 : 1 }).format(value);
  return `${number} ${units[unit]}`;
}

// ---------------------------------------------------------------- DOM

// An event handler whose failure (thrown, or a rejected promise: most
// actions call the API first) is shown to the user, not lost.
function reported(handler) {
  const report = (e) => say(e.message, 'error');
  return (event) => {
    try {
      handler(event)?.catch?.(report);
    } catch (e) {
      report(e);
    }
  };
}

// h('button', {class: 'x', onclick: f}, 'text', child, [more]) → element.
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on')) el.addEventListener(name.slice(2), reported(value));
    else if (name === 'text') el.textContent = value;
    else if (value === true) el.setAttribute(name, '');
    else el.setAttribute(name, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function badge(kind, state) {
  return h('span', { class: `state state-${state}`, 'data-state': state }, stateLabel(kind, state));
}

function timeCell(iso) {
  return iso ? h('time', { datetime: iso }, fmtTime(iso)) : '—';
}

function say(message, kind = 'info') {
  const box = document.getElementById('status');
  box.replaceChildren(h('p', { class: `note note-${kind}`, role: kind === 'error' ? 'alert' : null }, message));
  clearTimeout(statusTimer);
  statusTimer = setTimeout(() => box.replaceChildren(), kind === 'error' ? 15000 : 6000);
}

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${apiKey}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(`/api/v1${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, 'unreachable', t('unreachable'));
  }
  const json = response.status === 204 ? null : await response.json().catch(() => null);
  if (response.status === 401 && me) signOut(t('signedOutKey'));
  if (!response.ok) {
    const error = json?.error ?? {};
    throw new ApiError(response.status, error.code ?? 'http_error', error.message ?? `HTTP ${response.status}`);
  }
  return json;
}

// Follow a job in the background and say how it ended.
async function followJob(job) {
  const label = jobLabel(job);
  const mine = session;
  say(t('jobStarted', { job: label }));
  for (;;) {
    let now;
    try {
      now = await api('GET', `/jobs/${job.id}?wait_ms=25000`);
    } catch {
      return;
    }
    if (mine !== session) return;
    if (now.state === 'Succeeded') return say(t('jobSucceeded', { job: label }), 'ok');
    if (now.state === 'Failed' || now.state === 'Cancelled') {
      return say(t('jobFailed', { job: label, message: now.error?.message ?? now.state }), 'error');
    }
  }
}

function jobLabel(job) {
  return `${WORDS[lang][`job.${job.kind}`] ?? WORDS.en[`job.${job.kind}`] ?? job.kind} — ${job.target_name}`;
}

async function startJob(method, path, body) {
  const started = await api(method, path, body);
  followJob(started.job);
  refreshSoon();
  return started.job;
}

// Send a file from this computer as an upload: announced, then sent in
// pieces, each retried from where the daemon says the upload stands.
// Tenants never name files on the daemon's host; this is how they bring
// images, kernels and initrds.
const UPLOAD_PIECE = 8 << 20;

async function uploadFile(file, progress) {
  let upload = await api('POST', '/uploads', { name: file.name, size_bytes: file.size });
  let failures = 0;
  progress(0, file.size);
  while (upload.received_bytes < file.size) {
    const at = upload.received_bytes;
    const piece = file.slice(at, Math.min(at + UPLOAD_PIECE, file.size));
    try {
      const response = await fetch(`/api/v1/uploads/${upload.id}/data?offset=${at}`, {
        method: 'PUT',
        headers: { Authorization: `Bearer ${apiKey}`, 'Content-Type': 'application/octet-stream' },
        body: piece,
      });
      const json = await response.json().catch(() => null);
      if (!response.ok) {
        const error = json?.error ?? {};
        throw new ApiError(response.status, error.code ?? 'http_error', error.message ?? `HTTP ${response.status}`);
      }
      upload = json;
    } catch (e) {
      if (e.status === 400 || e.status === 401 || e.status === 403 || ++failures > 5) throw e;
      await new Promise((resolve) => setTimeout(resolve, 300 * failures));
      upload = await api('GET', `/uploads/${upload.id}`);
    }
    progress(upload.received_bytes, file.size);
  }
  return upload;
}

// Upload the given files (null skipped), run `use(ids)`, then delete the
// uploads: what the daemon made from them keeps its own copy.
async function withUploads(files, progress, use) {
  const total = files.reduce((sum, f) => sum + (f?.size ?? 0), 0);
  let before = 0;
  const uploads = [];
  try {
    for (const f of files) {
      if (!f) {
        uploads.push(null);
        continue;
      }
      uploads.push(await uploadFile(f, (done) => progress(before + done, total)));
      before += f.size;
    }
    return await use(uploads.map((u) => u?.id));
  } finally {
    for (const u of uploads) if (u) api('DELETE', `/uploads/${u.id}`).catch(() => {});
  }
}

// ---------------------------------------------------------------- menus

// An Action menu button: a button that opens a list of menu items, used
// with the mouse or the keyboard (arrows, Home/End, Escape).
function actionMenu(rowName, items, focusKey) {
  const usable = items.filter(Boolean);
  const button = h('button', {
    type: 'button',
    class: 'action',
    'aria-haspopup': 'menu',
    'aria-expanded': 'false',
    'aria-label': t('actionFor', { name: rowName }),
    'data-focus': focusKey,
  }, t('action'), h('span', { 'aria-hidden': 'true' }, ' ▾'));
  const menu = h('ul', { role: 'menu', class: 'menu', hidden: true, 'aria-label': t('actionFor', { name: rowName }) },
    usable.map((item) => h('li', { role: 'none' },
      h('button', {
        type: 'button',
        role: 'menuitem',
        tabindex: '-1',
        class: item.danger ? 'danger' : null,
        disabled: item.disabled || null,
        onclick: () => { closeMenu(false); return item.run(); },
      }, item.label))));
  const wrap = h('div', { class: 'menu-wrap' }, button, menu);
  const entries = () => [...menu.querySelectorAll('[role=menuitem]:not([disabled])')];
  const open = (focusLast) => {
    closeMenu(false);
    menu.hidden = false;
    button.setAttribute('aria-expanded', 'true');
    openMenu = { wrap, button, menu };
    const list = entries();
    (focusLast ? list[list.length - 1] : list[0])?.focus();
  };
  button.addEventListener('click', () => (openMenu?.wrap === wrap ? closeMenu(true) : open(false)));
  button.addEventListener('keydown', (event) => {
    if (event.key === 'ArrowDown') { event.preventDefault(); open(false); }
    if (event.key === 'ArrowUp') { event.preventDefault(); open(true); }
  });
  menu.addEventListener('keydown', (event) => {
    const list = entries();
    const at = list.indexOf(document.activeElement);
    const move = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: list.length - 1 }[event.key];
    if (move !== undefined) {
      event.preventDefault();
      list[(move + list.length) % list.length]?.focus();
    } else if (event.key === 'Escape') {
      event.preventDefault();
      closeMenu(true);
    } else if (event.key === 'Tab') {
      closeMenu(false);
    }
  });
  return wrap;
}

function closeMenu(focusButton) {
  if (!openMenu) return;
  const { button, menu } = openMenu;
  menu.hidden = true;
  button.setAttribute('aria-expanded', 'false');
  openMenu = null;
  if (focusButton) button.focus();
}

document.addEventListener('click', (event) => {
  if (openMenu && !openMenu.wrap.contains(event.target)) closeMenu(false);
});

// ---------------------------------------------------------------- dialogs

// A modal form. `fields`: {name, label, type (text, number, checkbox,
// select, textarea, file), options [{value, label}], value, required,
// help}. `submit(values, progress)` acts (a file field's value is the
// chosen File, or null; `progress(done, total)` moves the form's upload
// bar); the dialog closes when it resolves and shows the error, staying
// open, when it throws.
let dialogCount = 0;

function formDialog({ title, intro, fields = [], submitLabel, danger = false, submit }) {
  // Ids unique per dialog: a revert opens its confirmation from a form.
  const prefix = `d${++dialogCount}`;
  const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const controls = fields.map((field) => {
    const id = `${prefix}-${field.name}`;
    const help = field.help ? h('p', { class: 'help', id: `${id}-help` }, field.help) : null;
    const common = {
      id,
      name: field.name,
      required: field.required || null,
      'aria-describedby': help ? `${id}-help` : null,
    };
    if (field.type === 'checkbox') {
      return h('div', { class: 'field field-check' },
        h('input', { ...common, type: 'checkbox', checked: field.value || null }),
        h('label', { for: id }, field.label), help);
    }
    let input;
    if (field.type === 'select') {
      input = h('select', common, field.options.map((o) => h('option', { value: o.value, selected: o.value === field.value || null }, o.label)));
    } else if (field.type === 'textarea') {
      input = h('textarea', { ...common, rows: '3' }, field.value ?? '');
    } else if (field.type === 'file') {
      input = h('input', { ...common, type: 'file' });
    } else {
      input = h('input', { ...common, type: field.type || 'text', value: field.value ?? null, placeholder: field.placeholder ?? null, autocomplete: 'off' });
    }
    return h('div', { class: 'field' }, h('label', { for: id }, field.label), input, help);
  });
  const dialog = h('dialog', { 'aria-labelledby': `${prefix}-title`, class: danger ? 'danger' : null });
  const bar = h('progress', { id: `${prefix}-upload`, max: '1', value: '0' });
  const barText = h('span', { 'aria-live': 'polite' });
  const uploading = h('div', { class: 'upload', hidden: true },
    h('label', { for: `${prefix}-upload` }, t('uploading')), bar, barText);
  const showProgress = (done, total) => {
    uploading.hidden = false;
    bar.value = total ? done / total : 1;
    barText.textContent = ` ${fmtBytes(done)} / ${fmtBytes(total)}`;
  };
  const form = h('form', { method: 'dialog' },
    h('h2', { id: `${prefix}-title` }, title),
    intro ? h('p', { class: 'intro' }, intro) : null,
    controls,
    uploading,
    error,
    h('div', { class: 'buttons' },
      h('button', { type: 'button', class: 'secondary', onclick: () => dialog.close() }, t('cancel')),
      h('button', { type: 'submit', class: danger ? 'danger primary' : 'primary' }, submitLabel ?? t('submit'))));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const values = {};
    for (const field of fields) {
      const control = form.elements[field.name];
      values[field.name] = field.type === 'checkbox' ? control.checked
        : field.type === 'file' ? control.files[0] ?? null
          : control.value.trim();
    }
    const button = form.querySelector('[type=submit]');
    button.disabled = true;
    error.hidden = true;
    try {
      await submit(values, showProgress);
      dialog.close();
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
      button.disabled = false;
    }
  });
  dialog.append(form);
  dialog.addEventListener('close', () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}

function confirmDialog({ title, message, confirmLabel, run }) {
  formDialog({ title, intro: message, submitLabel: confirmLabel, danger: true, submit: run });
}

async function zoneField() {
  const zones = await api('GET', '/zones');
  return {
    name: 'zone', label: t('zone'), type: 'select',
    options: zones.map((z) => ({ value: z.name, label: z.name })), value: zones[0]?.name,
  };
}

// ---------------------------------------------------------------- actions

function takeSnapshot(volume) {
  formDialog({
    title: t('takeSnapshot'),
    intro: t('takeSnapshotIntro', { volume: volume.name }),
    fields: [{ name: 'name', label: t('snapshotName'), help: t('snapshotNameHelp') }],
    submit: async (v) => {
      await startJob('POST', '/snapshots', { volume: volume.id, name: v.name || undefined });
    },
  });
}

async function addSnapshot() {
  const volumes = (await api('GET', '/volumes')).filter((v) => v.state === 'Ready');
  if (volumes.length === 0) return say(t('noVolumeToSnapshot'), 'error');
  formDialog({
    title: t('addSnapshot'),
    fields: [
      { name: 'volume', label: t('volume'), type: 'select', options: volumes.map((v) => ({ value: v.id, label: v.name })) },
      { name: 'name', label: t('snapshotName'), help: t('snapshotNameHelp') },
    ],
    submit: async (v) => {
      await startJob('POST', '/snapshots', { volume: v.volume, name: v.name || undefined });
    },
  });
}

function createPoint(instance) {
  formDialog({
    title: t('createPoint'),
    intro: t('createPointIntro', { instance: instance.name }),
    fields: [
      { name: 'name', label: t('pointName'), help: t('pointNameHelp') },
      { name: 'description', label: t('description'), type: 'textarea' },
      { name: 'memory', label: t('includeMemory'), type: 'checkbox', value: false, help: t('includeMemoryHelp') },
    ],
    submitLabel: t('finish'),
    submit: async (v) => {
      await startJob('POST', `/instances/${instance.id}/points`, {
        name: v.name || undefined,
        description: v.description || undefined,
        memory: v.memory,
      });
    },
  });
}

async function createVolume() {
  formDialog({
    title: t('createVolume'),
    fields: [
      { name: 'name', label: t('name'), required: true },
      { name: 'size', label: t('size'), required: true, value: '1G', help: t('sizeHelp') },
      await zoneField(),
    ],
    submit: async (v) => {
      await api('POST', '/volumes', v);
      say(t('volumeCreated', { name: v.name }), 'ok');
      refreshSoon();
    },
  });
}

async function volumeFromSnapshot(snapshot) {
  formDialog({
    title: t('createVolume'),
    intro: t('volumeFromSnapshotIntro', { snapshot: snapshot.name }),
    fields: [{ name: 'name', label: t('name'), required: true }, await zoneField()],
    submit: async (v) => {
      await startJob('POST', `/snapshots/${snapshot.id}/volumes`, v);
    },
  });
}

function createTemplate(snapshot) {
  formDialog({
    title: t('createTemplate'),
    intro: t('createTemplateIntro', { snapshot: snapshot.name }),
    fields: [{ name: 'name', label: t('name'), required: true }],
    submit: async (v) => {
      await api('POST', '/templates', { name: v.name, snapshot: snapshot.id });
      say(t('templateCreated', { name: v.name }), 'ok');
      refreshSoon();
    },
  });
}

function revertVolumeTo(volumeName, snapshot) {
  confirmDialog({
    title: t('revertVolume'),
    message: t('revertVolumeWarning', { volume: volumeName, snapshot: snapshot.name, when: fmtTime(snapshot.created_at) }),
    confirmLabel: t('revert'),
    run: () => startJob('POST', `/volumes/${snapshot.volume_id}/revert`, { snapshot: snapshot.id }),
  });
}

async function revertVolume(volume) {
  const snapshots = (await api('GET', '/snapshots')).filter((s) => s.volume_id === volume.id && s.state === 'BackedUp');
  if (snapshots.length === 0) return say(t('noSnapshotOfVolume', { volume: volume.name }), 'error');
  formDialog({
    title: t('revertVolume'),
    intro: t('revertVolumeChoose', { volume: volume.name }),
    fields: [{
      name: 'snapshot', label: t('snapshot'), type: 'select',
      options: snapshots.map((s) => ({ value: s.id, label: `${s.name} — ${fmtTime(s.created_at)}` })),
    }],
    submitLabel: t('next'),
    submit: async (v) => revertVolumeTo(volume.name, snapshots.find((s) => s.id === v.snapshot)),
  });
}

function deleteThing({ title, message, path, job }) {
  confirmDialog({
    title,
    message,
    confirmLabel: t('delete'),
    run: async () => {
      if (job) await startJob('DELETE', path);
      else {
        await api('DELETE', path);
        refreshSoon();
      }
    },
  });
}

async function cloneInstance(instance) {
  formDialog({
    title: t('cloneInstance'),
    intro: t('cloneIntro', { instance: instance.name }),
    fields: [{ name: 'name', label: t('name'), required: true }, await zoneField()],
    submit: (v) => startJob('POST', `/instances/${instance.id}/clone`, v),
  });
}

async function instanceFromTemplate(template) {
  formDialog({
    title: t('createInstance'),
    intro: t('instanceFromTemplateIntro', { template: template.name }),
    fields: [
      { name: 'name', label: t('name'), required: true },
      await zoneField(),
      { name: 'cpus', label: t('cpus'), type: 'number', value: '1' },
      { name: 'memory', label: t('memory'), value: '512M', help: t('sizeHelp') },
      { name: 'kernel', label: t('kernel'), type: 'file', help: t('bootHelp') },
      { name: 'initrd', label: t('initrd'), type: 'file' },
      // Not `append`: a form control's name shadows the form's own methods.
      { name: 'cmdline', label: t('append') },
    ],
    submit: (v, progress) => withUploads([v.kernel, v.initrd], progress, ([kernel, initrd]) =>
      startJob('POST', '/instances', {
        name: v.name,
        zone: v.zone,
        cpus: Number(v.cpus) || undefined,
        memory: v.memory || undefined,
        template: template.id,
        kernel_upload: kernel,
        initrd_upload: initrd,
        append: v.cmdline || undefined,
      })),
  });
}

function importTemplate() {
  formDialog({
    title: t('importTemplate'),
    fields: [
      { name: 'name', label: t('name'), required: true },
      { name: 'file', label: t('imageFile'), type: 'file', required: true, help: t('imageFileHelp') },
    ],
    submit: (v, progress) => withUploads([v.file], progress, ([upload]) =>
      startJob('POST', '/templates/import', { name: v.name, upload })),
  });
}

function instanceActions(vm) {
  const stopped = vm.state === 'Stopped' || vm.state === 'Error';
  return [
    stopped && { label: t('start'), run: () => startJob('POST', `/instances/${vm.id}/start`) },
    vm.state === 'Running' && { label: t('stop'), run: () => startJob('POST', `/instances/${vm.id}/stop`) },
    { label: t('createPoint'), run: () => createPoint(vm) },
    { label: t('viewPoints'), run: () => go(`#/points/${vm.id}`) },
    { label: t('cloneInstance'), run: () => cloneInstance(vm) },
    stopped && {
      label: t('delete'), danger: true,
      run: () => deleteThing({
        title: t('deleteInstance'),
        message: t('deleteInstanceWarning', { name: vm.name }),
        path: `/instances/${vm.id}`,
      }),
    },
  ];
}

// ---------------------------------------------------------------- policies

// A new policy on one of `targets` ({kind: 'volume'|'instance', id, name}).
function addPolicy(targets) {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  formDialog({
    title: t('addPolicy'),
    intro: t('addPolicyIntro'),
    fields: [
      {
        name: 'target', label: t('policyTarget'), type: 'select',
        options: targets.map((x) => ({ value: `${x.kind}:${x.id}`, label: t(`policyOf.${x.kind}`, { name: x.name }) })),
      },
      { name: 'schedule', label: t('schedule'), required: true, value: 'daily 02:30', help: t('scheduleHelp') },
      { name: 'timezone', label: t('timezone'), required: true, value: zone },
      { name: 'last', label: t('keepRule.last'), type: 'number', value: '7' },
      { name: 'daily', label: t('keepRule.daily'), type: 'number', value: '' },
      { name: 'weekly', label: t('keepRule.weekly'), type: 'number', value: '' },
    ],
    submit: async (v) => {
      const [kind, id] = v.target.split(':');
      const keep = {};
      for (const rule of ['last', 'daily', 'weekly']) if (v[rule]) keep[rule] = Number(v[rule]);
      const made = await api('POST', '/policies', { [kind]: id, schedule: v.schedule, timezone: v.timezone, keep });
      say(t('policyCreated', { name: made.name }), 'ok');
      refreshSoon();
    },
  });
}

function keepText(keep) {
  const rules = ['last', 'hourly', 'daily', 'weekly', 'monthly', 'yearly'].filter((r) => keep[r] > 0);
  return rules.map((r) => `${t(`keepRule.${r}`)} ${keep[r]}`).join(', ') || t('keepEverything');
}

function policyTable(policies) {
  return table({
    label: t('policies'),
    empty: t('noPolicies'),
    rows: policies,
    columns: [
      { label: t('name'), cell: (p) => p.name },
      { label: t('policyTarget'), cell: (p) => (p.volume ? t('policyOf.volume', { name: p.volume }) : t('policyOf.instance', { name: p.instance })) },
      { label: t('schedule'), cell: (p) => [p.schedule, ' ', h('small', {}, p.timezone), p.enabled ? null : [' ', h('small', {}, t('disabled'))]] },
      { label: t('keep'), cell: (p) => keepText(p.keep) },
      { label: t('nextRun'), class: 'nowrap', cell: (p) => (p.enabled ? timeCell(p.next_run_at) : '—') },
      { label: t('lastResult'), cell: (p) => (p.last_result ? h('span', { class: p.last_result.startsWith('failed') ? 'error-text' : null }, p.last_result) : '—') },
      {
        label: t('actions'),
        cell: (p) => actionMenu(p.name, [
          {
            label: t(p.enabled ? 'disable' : 'enable'),
            run: async () => {
              await api('POST', `/policies/${p.id}`, { enabled: !p.enabled });
              refreshSoon();
            },
          },
          {
            label: t('delete'), danger: true,
            run: () => deleteThing({ title: t('deletePolicy'), message: t('deletePolicyWarning', { name: p.name }), path: `/policies/${p.id}` }),
          },
        ], `p:${p.id}`),
      },
    ],
  });
}

// ---------------------------------------------------------------- views

function go(hash) {
  if (location.hash === hash) render(true);
  else location.hash = hash;
}

function route() {
  const [, view = 'instances', id] = location.hash.split('/');
  return { view, id };
}

function table({ label, columns: maybe, rows, empty, rowKey }) {
  if (rows.length === 0) return h('p', { class: 'empty' }, empty);
  const columns = maybe.filter(Boolean);
  return h('div', { class: 'table-wrap' }, h('table', {},
    h('caption', { class: 'visually-hidden' }, label),
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c.label)))),
    h('tbody', {}, rows.map((row) => h('tr', { 'data-name': row.name, 'data-id': rowKey ? rowKey(row) : row.id },
      columns.map((c) => h('td', { 'data-label': c.label, class: c.class }, c.cell(row))))))));
}

function heading(title, ...tools) {
  return h('div', { class: 'heading' }, h('h1', {}, title), h('div', { class: 'tools' }, tools));
}

const created = { class: 'nowrap', cell: (r) => timeCell(r.created_at) };

// Where a resource lives: shown to the admin only (a tenant's answers
// carry no host).
const hostColumn = () => (me?.admin ? { label: t('host'), cell: (r) => r.host || '—' } : null);

const VIEWS = {
  instances: {
    tab: 'instances',
    load: async () => ({ instances: await api('GET', '/instances') }),
    draw: ({ instances }) => [
      heading(t('instances')),
      table({
        label: t('instances'),
        empty: t('noInstances'),
        rows: instances,
        columns: [
          { label: t('name'), cell: (vm) => h('a', { href: `#/instance/${vm.id}` }, vm.name) },
          { label: t('state'), cell: (vm) => badge('instance', vm.state) },
          { label: t('zone'), cell: (vm) => vm.zone },
          hostColumn(),
          { label: t('cpus'), cell: (vm) => vm.cpus },
          { label: t('memory'), cell: (vm) => fmtBytes(vm.memory_bytes) },
          { label: t('volumes'), cell: (vm) => vm.volumes.map((v) => v.name).join(', ') || '—' },
          { label: t('created'), ...created },
          { label: t('actions'), cell: (vm) => actionMenu(vm.name, instanceActions(vm), `i:${vm.id}`) },
        ],
      }),
    ],
  },

  instance: {
    tab: 'instances',
    load: async (id) => {
      const volumes = await api('GET', `/volumes?instance=${encodeURIComponent(id)}`);
      const policies = await api('GET', `/policies?instance=${encodeURIComponent(id)}`);
      for (const v of volumes) policies.push(...await api('GET', `/policies?volume=${v.id}`));
      return { vm: await api('GET', `/instances/${id}`), volumes, policies };
    },
    draw: ({ vm, volumes, policies }) => [
      h('p', { class: 'crumbs' }, h('a', { href: '#/instances' }, t('instances')), ' / ', vm.name),
      heading(vm.name,
        h('button', { type: 'button', onclick: () => createPoint(vm) }, t('createPoint')),
        h('button', { type: 'button', class: 'secondary', onclick: () => go(`#/points/${vm.id}`) }, t('viewPoints')),
        actionMenu(vm.name, instanceActions(vm), `iv:${vm.id}`)),
      h('dl', { class: 'facts' },
        fact(t('state'), badge('instance', vm.state)),
        fact(t('zone'), vm.zone),
        vm.host ? fact(t('host'), vm.host) : null,
        fact(t('cpus'), vm.cpus),
        fact(t('memory'), fmtBytes(vm.memory_bytes)),
        fact(t('guestAgent'), vm.guest_agent ? t(`agent.${vm.guest_agent.status}`) : '—'),
        fact(t('snapshotOption'), t(vm.snapshots_enabled ? 'enabled' : 'disabledByOperator')),
        vm.plan ? fact(t('plan'), vm.plan) : null,
        fact(t('created'), timeCell(vm.created_at)),
        vm.last_error ? fact(t('error'), vm.last_error) : null),
      h('h2', {}, t('volumes')),
      volumeTable(volumes, 'iv'),
      h('div', { class: 'heading' }, h('h2', {}, t('policies')),
        h('div', { class: 'tools' }, h('button', {
          type: 'button',
          onclick: () => addPolicy([{ kind: 'instance', id: vm.id, name: vm.name }, ...volumes.map((v) => ({ kind: 'volume', id: v.id, name: v.name }))]),
        }, t('addPolicy')))),
      policyTable(policies),
    ],
  },

  policies: {
    tab: 'policies',
    load: async () => ({
      policies: await api('GET', '/policies'),
      volumes: await api('GET', '/volumes'),
      instances: await api('GET', '/instances'),
    }),
    draw: ({ policies, volumes, instances }) => [
      heading(t('policies'), h('button', {
        type: 'button',
        onclick: () => addPolicy([
          ...volumes.map((v) => ({ kind: 'volume', id: v.id, name: v.name })),
          ...instances.map((i) => ({ kind: 'instance', id: i.id, name: i.name })),
        ]),
      }, t('addPolicy'))),
      h('p', { class: 'lead' }, t('policiesLead')),
      policyTable(policies),
    ],
  },

  volumes: {
    tab: 'volumes',
    load: async () => ({ volumes: await api('GET', '/volumes') }),
    draw: ({ volumes }) => [
      heading(t('volumes'), h('button', { type: 'button', onclick: createVolume }, t('createVolume'))),
      volumeTable(volumes, 'v'),
    ],
  },

  snapshots: {
    tab: 'snapshots',
    load: async () => {
      const query = Object.entries(snapshotFilter).filter(([, v]) => v)
        .map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&');
      return {
        snapshots: await api('GET', `/snapshots${query ? `?${query}` : ''}`),
        volumes: await api('GET', '/volumes'),
        instances: await api('GET', '/instances'),
        zones: await api('GET', '/zones'),
        policies: await api('GET', '/policies'),
      };
    },
    draw: ({ snapshots, volumes, instances, zones, policies }) => [
      heading(t('snapshots'), h('button', { type: 'button', onclick: addSnapshot }, t('addSnapshot'))),
      h('p', { class: 'lead' }, t('snapshotsLead')),
      snapshotFilters({ volumes, instances, zones, policies }),
      table({
        label: t('snapshots'),
        empty: t('noSnapshots'),
        rows: snapshots,
        columns: [
          { label: t('name'), cell: (s) => s.name },
          { label: t('volume'), cell: (s) => s.volume },
          { label: t('state'), cell: snapshotState },
          { label: t('size'), cell: (s) => fmtBytes(s.size_bytes) },
          { label: t('stored'), cell: (s) => fmtBytes(s.stored_bytes) },
          { label: t('zone'), cell: (s) => s.zone },
          { label: t('created'), ...created },
          {
            label: t('takenBy'),
            cell: (s) => (s.policy_id ? policies.find((p) => p.id === s.policy_id)?.name ?? '—' : t('byHand')),
          },
          { label: t('expires'), class: 'nowrap', cell: (s) => timeCell(s.expires_at) },
          { label: t('actions'), cell: (s) => actionMenu(s.name, snapshotActions(s), `s:${s.id}`) },
        ],
      }),
    ],
  },

  points: {
    tab: 'points',
    load: async (id) => {
      const instances = await api('GET', '/instances');
      const vm = instances.find((i) => i.id === id) ?? instances[0];
      if (!vm) return { instances, vm, points: [], policies: [] };
      const policies = await api('GET', `/policies?instance=${vm.id}`);
      // A policy that is gone (or another instance's) lists nothing.
      if (!policies.some((p) => p.id === pointPolicy)) pointPolicy = '';
      const query = pointPolicy ? `?policy=${pointPolicy}` : '';
      return { instances, vm, points: await api('GET', `/instances/${vm.id}/points${query}`), policies };
    },
    draw: drawPoints,
  },

  templates: {
    tab: 'templates',
    load: async () => ({ templates: await api('GET', '/templates') }),
    draw: ({ templates }) => [
      heading(t('templates'), h('button', { type: 'button', onclick: importTemplate }, t('importTemplate'))),
      table({
        label: t('templates'),
        empty: t('noTemplates'),
        rows: templates,
        columns: [
          { label: t('name'), cell: (tp) => tp.name },
          { label: t('size'), cell: (tp) => fmtBytes(tp.size_bytes) },
          { label: t('source'), cell: (tp) => tp.source_snapshot || '—' },
          { label: t('created'), ...created },
          {
            label: t('actions'),
            cell: (tp) => actionMenu(tp.name, [
              { label: t('createInstance'), run: () => instanceFromTemplate(tp) },
              {
                label: t('delete'), danger: true,
                run: () => deleteThing({
                  title: t('deleteTemplate'),
                  message: t('deleteTemplateWarning', { name: tp.name }),
                  path: `/templates/${tp.id}`,
                  job: true,
                }),
              },
            ], `t:${tp.id}`),
          },
        ],
      }),
    ],
  },

  account: {
    tab: 'account',
    load: async () => ({
      details: await api('GET', `/accounts/${me.id}`),
      keys: await api('GET', `/accounts/${me.id}/keys`),
    }),
    draw: drawAccount,
  },

  hosts: {
    tab: 'hosts',
    load: async () => ({ hosts: await api('GET', '/hosts') }),
    draw: ({ hosts }) => [
      heading(t('hosts')),
      h('p', { class: 'lead' }, t('hostsLead')),
      table({
        label: t('hosts'),
        empty: t('noHosts'),
        rows: hosts,
        rowKey: (host) => host.name,
        columns: [
          { label: t('name'), cell: (host) => (host.this_daemon ? [host.name, ' ', h('small', {}, t('thisDaemon'))] : host.name) },
          { label: t('state'), cell: (host) => [badge('host', host.state), host.leader ? [' ', h('small', {}, t('leader'))] : null] },
          { label: t('zonesServed'), cell: (host) => host.zones.join(', ') || t('allZones') },
          { label: t('instances'), cell: (host) => host.instances },
          { label: t('volumes'), cell: (host) => `${host.volumes} (${fmtBytes(host.volume_bytes)})` },
          { label: t('lastHeartbeat'), class: 'nowrap', cell: (host) => timeCell(host.last_heartbeat) },
          { label: t('address'), cell: (host) => host.address },
        ],
      }),
    ],
  },

  jobs: {
    tab: 'jobs',
    load: async () => ({ jobs: await api('GET', '/jobs?limit=100') }),
    draw: ({ jobs }) => [
      heading(t('jobs')),
      table({
        label: t('jobs'),
        empty: t('noJobs'),
        rows: jobs.map((j) => ({ ...j, name: j.target_name })),
        columns: [
          { label: t('job'), cell: (j) => jobLabel(j) },
          { label: t('state'), cell: (j) => badge('job', j.state) },
          { label: t('progress'), cell: (j) => progress(j.progress_done, j.progress_total, j.state === 'Running') },
          { label: t('message'), cell: (j) => (j.error ? h('span', { class: 'error-text' }, j.error.message) : j.log.at(-1)?.message ?? '') },
          { label: t('created'), ...created },
          { label: t('finished'), class: 'nowrap', cell: (j) => timeCell(j.finished_at) },
        ],
      }),
    ],
  },
};

function fact(label, value) {
  return [h('dt', {}, label), h('dd', {}, value)];
}

function progress(done, total, active) {
  if (!total) return '—';
  const percent = Math.round((100 * done) / total);
  return h('span', { class: 'progress' },
    h('progress', { max: String(total), value: String(done), 'aria-label': t('progressOf', { percent }) }),
    active || percent < 100 ? ` ${percent} %` : null);
}

// The Snapshots tab's filters: of one volume, instance, zone or policy.
const snapshotFilter = { volume: '', instance: '', zone: '', policy: '' };

function snapshotFilters(choices) {
  const select = (name, items) => {
    const id = `filter-${name}`;
    return h('span', { class: 'filter' },
      h('label', { for: id }, t(name === 'policy' ? 'policyFilter' : name)), ' ',
      h('select', {
        id,
        'data-focus': id,
        onchange: (e) => {
          snapshotFilter[name] = e.target.value;
          render(true);
        },
      },
      h('option', { value: '' }, t('all')),
      items.map((x) => h('option', { value: x.name, selected: snapshotFilter[name] === x.name || null }, x.name))));
  };
  return h('div', { class: 'filters' },
    select('volume', choices.volumes),
    select('instance', choices.instances),
    select('zone', choices.zones),
    select('policy', choices.policies));
}

function snapshotState(s) {
  return h('div', { class: 'state-cell' },
    badge('snapshot', s.state),
    s.protected ? h('span', { class: 'state state-protected', 'data-protected': 'yes' }, t('protectedMark')) : null,
    s.state === 'BackingUp' ? progress(s.progress_done, s.progress_total, true) : null,
    s.error ? h('p', { class: 'error-text' }, s.error) : null);
}

function snapshotActions(s) {
  const ready = s.state === 'BackedUp';
  const busy = s.state === 'BackingUp' || s.state === 'Destroying';
  return [
    { label: t('createVolume'), disabled: !ready, run: () => volumeFromSnapshot(s) },
    { label: t('createTemplate'), disabled: !ready, run: () => createTemplate(s) },
    { label: t('revertVolume'), disabled: !ready, run: () => revertVolumeTo(s.volume, s) },
    { label: t('verify'), disabled: !ready, run: () => startJob('POST', `/snapshots/${s.id}/verify`) },
    {
      label: t(s.protected ? 'unprotect' : 'protect'), disabled: busy,
      run: async () => {
        await api('POST', `/snapshots/${s.id}/protection`, { protected: !s.protected });
        refreshSoon();
      },
    },
    {
      label: t('delete'), danger: true, disabled: busy || s.protected,
      run: () => deleteThing({
        title: t('deleteSnapshot'),
        message: t('deleteSnapshotWarning', { name: s.name, volume: s.volume }),
        path: `/snapshots/${s.id}`,
        job: true,
      }),
    },
  ];
}

function volumeTable(volumes, focusPrefix) {
  return table({
    label: t('volumes'),
    empty: t('noVolumes'),
    rows: volumes,
    columns: [
      { label: t('name'), cell: (v) => v.name },
      { label: t('state'), cell: (v) => badge('volume', v.state) },
      { label: t('kind'), cell: (v) => t(`kind.${v.kind}`) },
      { label: t('size'), cell: (v) => fmtBytes(v.size_bytes) },
      { label: t('zone'), cell: (v) => v.zone },
      hostColumn(),
      { label: t('attachedTo'), cell: (v) => v.instance ?? '—' },
      { label: t('created'), ...created },
      {
        label: t('actions'),
        cell: (v) => actionMenu(v.name, [
          { label: t('takeSnapshot'), disabled: v.state !== 'Ready', run: () => takeSnapshot(v) },
          { label: t('revertVolume'), disabled: v.state !== 'Ready', run: () => revertVolume(v) },
          !v.instance && {
            label: t('delete'), danger: true,
            run: () => deleteThing({
              title: t('deleteVolume'),
              message: t('deleteVolumeWarning', { name: v.name }),
              path: `/volumes/${v.id}`,
            }),
          },
        ], `${focusPrefix}:${v.id}`),
      },
    ],
  });
}

// The recovery point tree: each point under its parent, the instance's
// current position ("You are here") under the point it was last at.
// The points of one policy only ('' : all of them, as a tree).
let pointPolicy = '';

function drawPoints({ instances, vm, points, policies }) {
  if (!vm) return [heading(t('points')), h('p', { class: 'empty' }, t('noInstances'))];
  const chooser = h('label', { class: 'inline' }, t('instance'), ' ',
    h('select', { id: 'point-instance', onchange: (e) => go(`#/points/${e.target.value}`) },
      instances.map((i) => h('option', { value: i.id, selected: i.id === vm.id || null }, i.name))));
  const byPolicy = policies.length ? h('label', { class: 'inline' }, t('policyFilter'), ' ',
    h('select', {
      id: 'point-policy',
      onchange: (e) => {
        pointPolicy = e.target.value;
        render(true);
      },
    },
    h('option', { value: '' }, t('all')),
    policies.map((p) => h('option', { value: p.id, selected: p.id === pointPolicy || null }, p.name)))) : null;
  const policyOf = (p) => policies.find((x) => x.id === p.policy_id)?.name;
  const children = new Map();
  for (const p of points) {
    // One policy's points stand in a list: their parents may be others'.
    const parent = pointPolicy ? 'root' : p.parent_id ?? 'root';
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(p);
  }
  const here = h('li', { class: 'here', 'data-here': 'true' },
    h('span', { class: 'here-mark' }, '▶ ', t('youAreHere'), ` (${stateLabel('instance', vm.state)})`));
  const branch = (parentKey) => {
    const list = (children.get(parentKey) ?? []).map((p) => pointNode(vm, p, branch(p.id), policyOf(p)));
    if (!pointPolicy && (vm.current_point_id ?? 'root') === parentKey) list.push(here);
    return list.length ? h('ul', {}, list) : null;
  };
  // "Holds" is what deleting a point frees (reprise-qcow2's exclusive
  // bytes); a memory point's saved state counts in it only while no other
  // layer shares those clusters, so the two figures are shown apart.
  const total = points.reduce((sum, p) => sum + (p.size_bytes ?? 0), 0);
  return [
    heading(t('pointsOf', { instance: vm.name }),
      h('button', { type: 'button', onclick: () => createPoint(vm) }, t('createPoint')),
      h('button', {
        // All of them, so not while one policy's are shown.
        type: 'button', class: 'danger', disabled: points.length === 0 || pointPolicy !== '' || null,
        onclick: () => deleteThing({
          title: t('deleteAllPoints'),
          message: tn('deleteAllPointsWarning', points.length, { instance: vm.name }),
          path: `/instances/${vm.id}/points`,
          job: true,
        }),
      }, t('deleteAll'))),
    h('div', { class: 'toolbar' }, chooser, byPolicy,
      points.length ? h('span', { class: 'muted' }, tn('pointsTotal', points.length, { size: fmtBytes(total) })) : null),
    points.length === 0 ? h('p', { class: 'empty' }, t(pointPolicy ? 'noPolicyPoints' : 'noPoints')) : null,
    h('nav', { class: 'tree', 'aria-label': t('pointTree') }, branch('root')),
  ];
}

function pointNode(vm, p, subtree, policy) {
  const busy = p.state === 'Creating' || p.state === 'Reverting' || p.state === 'Deleting';
  const space = p.memory
    ? t('pointSpaceMemory', { held: fmtBytes(p.size_bytes), memory: fmtBytes(p.vm_state_bytes) })
    : t('pointSpace', { held: fmtBytes(p.size_bytes) });
  return h('li', { 'data-point': p.name, 'data-current': p.id === vm.current_point_id ? 'true' : null },
    h('div', { class: 'point' },
      h('div', { class: 'point-head' },
        h('strong', {}, p.name), ' ',
        h('span', { class: 'kind' }, p.memory ? t('withMemory') : t('diskOnly')), ' ',
        badge('point', p.state)),
      p.description ? h('p', { class: 'desc' }, p.description) : null,
      h('p', { class: 'muted' }, timeCell(p.created_at), ' · ', space,
        policy ? [' · ', t('takenByPolicy', { policy })] : null,
        p.expires_at ? [' · ', t('expiresOn'), ' ', timeCell(p.expires_at)] : null),
      p.error ? h('p', { class: 'error-text' }, p.error) : null,
      h('div', { class: 'point-buttons' },
        h('button', {
          type: 'button', class: 'secondary', disabled: busy || null, 'data-focus': `pr:${p.id}`,
          onclick: () => confirmDialog({
            title: t('revertToPoint'),
            message: t(p.memory ? 'revertPointWarningMemory' : 'revertPointWarning', { name: p.name, instance: vm.name }),
            confirmLabel: t('revert'),
            run: () => startJob('POST', `/instances/${vm.id}/points/${p.id}/revert`),
          }),
        }, t('revert'), h('span', { class: 'visually-hidden' }, ` ${p.name}`)),
        h('button', {
          type: 'button', class: 'secondary danger', disabled: busy || null, 'data-focus': `pd:${p.id}`,
          onclick: () => deleteThing({
            title: t('deletePoint'),
            message: t('deletePointWarning', { name: p.name }),
            path: `/instances/${vm.id}/points/${p.id}`,
            job: true,
          }),
        }, t('delete'), h('span', { class: 'visually-hidden' }, ` ${p.name}`)))),
    subtree);
}

const LIMITS = [
  ['max_recovery_points', 'most_recovery_points'],
  ['max_snapshots_per_volume', 'most_snapshots_per_volume'],
  ['max_snapshots', 'snapshots'],
  ['max_instances', 'instances'],
  ['max_volumes', 'volumes'],
  ['max_volume_bytes', 'volume_bytes', true],
  ['max_snapshot_bytes', 'snapshot_bytes', true],
  ['max_concurrent_jobs', 'concurrent_jobs'],
];

function drawAccount({ details, keys }) {
  const plan = details.plan;
  const show = (n, bytes) => (bytes ? fmtBytes(n) : new Intl.NumberFormat(lang).format(n));
  return [
    heading(t('account')),
    h('dl', { class: 'facts' },
      h('dt', {}, t('name')), h('dd', {}, details.account.name),
      h('dt', {}, t('plan')), h('dd', {}, details.account.plan ?? t('noPlan')),
      h('dt', {}, t('created')), h('dd', {}, timeCell(details.account.created_at))),
    h('h2', {}, t('usage')),
    h('p', { class: 'help' }, t('planHelp')),
    table({
      label: t('usage'),
      rows: LIMITS.map(([limit, used, bytes]) => ({ id: limit, name: limit, limit, used: details.usage[used], max: plan?.[limit], bytes })),
      columns: [
        { label: t('limit'), cell: (r) => t(`limit.${r.limit}`) },
        { label: t('used'), cell: (r) => show(r.used, r.bytes) },
        { label: t('allowed'), cell: (r) => (r.max === undefined || r.max === null ? t('unlimited') : show(r.max, r.bytes)) },
        { label: t('progress'), cell: (r) => (r.max ? progress(Math.min(r.used, r.max), r.max, false) : '—') },
      ],
    }),
    h('div', { class: 'heading' }, h('h2', {}, t('keys')),
      h('div', { class: 'tools' }, h('button', { type: 'button', onclick: createKey }, t('createKey')))),
    table({
      label: t('keys'),
      empty: t('noKeys'),
      rows: keys,
      columns: [
        { label: t('name'), cell: (k) => k.name },
        { label: t('keyPrefix'), cell: (k) => h('code', {}, `${k.prefix}…`) },
        { label: t('keyKind'), cell: (k) => (k.cloudstack_api_key ? t('cloudstackPair') : t('bearerKey')) },
        { label: t('created'), ...created },
        { label: t('lastUsed'), class: 'nowrap', cell: (k) => (k.last_used_at ? timeCell(k.last_used_at) : t('never')) },
        {
          label: t('actions'),
          cell: (k) => h('button', {
            type: 'button', class: 'secondary danger', 'data-focus': `k:${k.id}`,
            onclick: () => deleteThing({
              title: t('revokeKey'),
              message: t('revokeKeyWarning', { name: k.name }),
              path: `/accounts/${me.id}/keys/${k.id}`,
            }),
          }, t('revoke'), h('span', { class: 'visually-hidden' }, ` ${k.name}`)),
        },
      ],
    }),
  ];
}

function createKey() {
  formDialog({
    title: t('createKey'),
    fields: [
      { name: 'name', label: t('keyName'), required: true },
      { name: 'cloudstack', label: t('cloudstackPair'), type: 'checkbox', value: false, help: t('cloudstackPairHelp') },
    ],
    submit: async (v) => {
      const made = await api('POST', `/accounts/${me.id}/keys`, { name: v.name, cloudstack: v.cloudstack });
      refreshSoon();
      // Shown once, in a dialog of its own, until closed.
      const shown = [{ name: 'secret', label: t('apiKey'), value: made.api_key }];
      if (made.secret_key) shown.push({ name: 'secretKey', label: t('secretKey'), value: made.secret_key });
      formDialog({
        title: t('keyCreated'),
        intro: made.secret_key ? t('pairCreatedIntro') : t('keyCreatedIntro'),
        fields: shown,
        submitLabel: t('close'),
        submit: async () => {},
      });
    },
  });
}

// ---------------------------------------------------------------- frame

function drawTabs(current) {
  const nav = document.getElementById('tabs');
  nav.setAttribute('aria-label', t('resources'));
  const tabs = ['instances', 'volumes', 'snapshots', 'points', 'policies', 'templates', 'jobs', me?.admin ? 'hosts' : null, 'account'];
  nav.replaceChildren(h('ul', {}, tabs.filter(Boolean).map((name) =>
    h('li', {}, h('a', { href: `#/${name}`, 'aria-current': name === current ? 'page' : null }, t(name))))));
}

function drawStatic() {
  document.documentElement.lang = lang;
  document.getElementById('lang').value = lang;
  for (const el of document.querySelectorAll('[data-t]')) el.textContent = t(el.dataset.t);
  const who = document.getElementById('who');
  who.hidden = !me;
  document.getElementById('signout').hidden = !me;
  document.getElementById('tabs').hidden = !me;
  if (me) who.textContent = t('signedInAs', { name: me.name });
}

async function render(force) {
  drawStatic();
  const main = document.getElementById('main');
  if (!me) {
    // A late refresh must not wipe a key being typed: redraw only when asked.
    if (force || !main.querySelector('form.signin')) drawSignIn(main);
    return;
  }
  const { view, id } = route();
  const spec = VIEWS[view] ?? VIEWS.instances;
  drawTabs(spec.tab);
  if (refreshing && !force) return;
  refreshing = true;
  const mine = session;
  try {
    const data = await spec.load(id);
    // Signed out (or in as someone else) while loading: draw nothing of it.
    if (mine !== session) return;
    // A menu opened while this loaded: drawing now would close it under the
    // user's pointer. The next refresh after it closes draws the change.
    if (openMenu) return;
    const signature = lang + location.hash + JSON.stringify(data);
    if (force || signature !== lastSignature) {
      lastSignature = signature;
      const focused = document.activeElement?.dataset?.focus;
      main.replaceChildren(...[spec.draw(data)].flat(Infinity).filter(Boolean));
      if (focused) main.querySelector(`[data-focus="${CSS.escape(focused)}"]`)?.focus();
      if (force) document.title = `${t(spec.tab)} — reprise`;
    }
  } catch (e) {
    if (mine === session) main.replaceChildren(h('p', { class: 'note note-error', role: 'alert' }, e.message));
    lastSignature = '';
  } finally {
    refreshing = false;
  }
}

function refreshSoon() {
  setTimeout(() => render(false), 150);
}

function drawSignIn(main) {
  const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const form = h('form', { class: 'signin', 'aria-labelledby': 'signin-title' },
    h('h1', { id: 'signin-title' }, t('signIn')),
    h('p', {}, t('signInIntro')),
    h('div', { class: 'field' },
      h('label', { for: 'api-key' }, t('apiKey')),
      h('input', { id: 'api-key', name: 'key', type: 'password', required: true, autocomplete: 'off', 'aria-describedby': 'api-key-help' }),
      h('p', { class: 'help', id: 'api-key-help' }, t('apiKeyHelp'))),
    error,
    h('button', { type: 'submit', class: 'primary' }, t('signIn')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.hidden = true;
    apiKey = form.elements.key.value.trim();
    try {
      me = await api('GET', '/whoami');
      sessionStorage.setItem('reprise.key', apiKey);
      lastSignature = '';
      if (!location.hash) location.hash = '#/instances';
      await render(true);
      document.getElementById('main').focus();
    } catch (e) {
      apiKey = null;
      error.textContent = e.message;
      error.hidden = false;
    }
  });
  main.replaceChildren(form);
  document.getElementById('tabs').replaceChildren();
  document.title = `${t('signIn')} — reprise`;
}

function signOut(message) {
  session += 1;
  document.getElementById('status').replaceChildren();
  me = null;
  apiKey = null;
  sessionStorage.removeItem('reprise.key');
  lastSignature = '';
  // The next account's names are not this one's.
  for (const k of Object.keys(snapshotFilter)) snapshotFilter[k] = '';
  for (const d of document.querySelectorAll('dialog')) d.close();
  render(true);
  if (message) say(message, 'error');
}

async function boot() {
  document.getElementById('lang').addEventListener('change', (event) => {
    lang = event.target.value;
    localStorage.setItem('reprise.lang', lang);
    document.getElementById('status').replaceChildren();
    render(true);
  });
  document.getElementById('signout').addEventListener('click', () => signOut());
  window.addEventListener('hashchange', () => render(true).then(() => document.getElementById('main').focus()));
  if (apiKey) {
    try {
      me = await api('GET', '/whoami');
    } catch (e) {
      // Forget only a refused key; a daemon that is down keeps it for later.
      if (e.status === 401) sessionStorage.removeItem('reprise.key');
      else say(e.message, 'error');
    }
  }
  await render(true);
  setInterval(() => {
    if (me && !openMenu && !document.hidden) render(false);
  }, POLL_MS);
}

boot();
