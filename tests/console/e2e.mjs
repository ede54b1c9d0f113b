// The reprise console, end to end, in Debian's headless Chromium driven by
// playwright-core. Run by crates/reprise/tests/console.rs, which starts a
// daemon with account alice (volume data1 attached to a running guest,
// "web") and an empty account bob, and passes:
//   CONSOLE_URL, ALICE_KEY, BOB_KEY, ADMIN_KEY, SHOTS (screenshot directory), CHROMIUM,
//   GUEST_KERNEL, GUEST_INITRD, GUEST_APPEND (files of this machine the
//   browser uploads) and TEMPLATE_IMAGE (a raw disk image to import).
// alice's plan is "standard" (2 recovery points per instance).
// Every step asserts what a person would see; a failure saves
// SHOTS/failure.png and exits non-zero.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const AXE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

const { CONSOLE_URL, ALICE_KEY, BOB_KEY, ADMIN_KEY, SHOTS, CHROMIUM } = process.env;
const LONG = 180_000;

const browser = await chromium.launch({
  executablePath: CHROMIUM || '/usr/bin/chromium',
  // Without the background-networking flags Chromium keeps dialling
  // Google's hosts, which this closed network refuses.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US' });
const page = await context.newPage();
page.setDefaultTimeout(20_000);
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(String(e)));

let stepNo = 0;
async function step(name, body) {
  stepNo += 1;
  const started = Date.now();
  try {
    await body();
  } catch (e) {
    await page.screenshot({ path: `${SHOTS}/failure.png`, fullPage: true }).catch(() => {});
    console.error(`step ${stepNo} "${name}" failed: ${e.stack || e}`);
    if (pageErrors.length) console.error(`script errors in the page:\n${pageErrors.join('\n')}`);
    await browser.close();
    process.exit(1);
  }
  console.log(`ok ${stepNo} ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
}

const shot = (name) => page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });

// axe-core's WCAG 2.1 A/AA rules on the page as it stands (evaluated over
// the DevTools protocol: the page's own CSP stays on).
const axeViolations = [];
async function checkAccessibility(screen) {
  if (!(await page.evaluate(() => 'axe' in window))) await page.evaluate(AXE);
  const found = await page.evaluate(async () => {
    const result = await window.axe.run(document, { runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] });
    return {
      passed: result.passes.length,
      violations: result.violations.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`),
    };
  });
  assert.ok(found.passed > 10, `axe-core ran on ${screen}`);
  console.log(`   axe-core on ${screen}: ${found.passed} rules passed, ${found.violations.length} violated`);
  for (const v of found.violations) axeViolations.push(`${screen}: ${v}`);
}
const tab = (label) => page.getByRole('navigation', { name: /Resources|Ressources|Recursos/ }).getByRole('link', { name: label, exact: true });
// Click a tab and wait until its view is drawn (its h1 starts with the
// tab's name): until then the previous view's rows are still on screen.
async function openTab(label) {
  await tab(label).click();
  await page.getByRole('heading', { level: 1, name: new RegExp(`^${label}`) }).waitFor();
}
const row = (name) => page.locator(`tr[data-name="${name}"]`);
const dialog = () => page.getByRole('dialog');
const menuFor = async (name, item) => {
  await page.getByRole('button', { name: new RegExp(`^(Action menu for|Menu Action de|Menú Acción de) ${name}$`) }).first().click();
  await page.getByRole('menuitem', { name: item, exact: true }).click();
};
const stateIn = (locator) => locator.locator('[data-state]').first();
async function waitState(locator, state, timeout = LONG) {
  await locator.locator(`[data-state="${state}"]`).first().waitFor({ timeout });
}

await step('the console asks for a key and shows nothing without one', async () => {
  await page.goto(CONSOLE_URL);
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  assert.equal(await page.locator('#tabs').isVisible(), false);
  assert.equal(await page.locator('table').count(), 0);
  await shot('sign-in');
  await checkAccessibility('sign-in');
});

await step('a wrong key is refused with the reason', async () => {
  await page.getByLabel('API key').fill('not-a-key');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').filter({ hasText: 'matches no account' }).waitFor();
  assert.equal(await page.locator('#tabs').isVisible(), false);
});

await step('alice signs in and sees her running instance', async () => {
  await page.getByLabel('API key').fill(ALICE_KEY);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText('Account: alice').waitFor();
  await waitState(row('web'), 'Running');
  assert.match(await row('web').innerText(), /data1/);
  await shot('instances');
  await checkAccessibility('instances');
});

let firstSnapshot;
await step('Take snapshot from the Volumes tab: BackingUp with progress, then BackedUp', async () => {
  await openTab('Volumes');
  await waitState(row('data1'), 'Ready');
  await menuFor('data1', 'Take snapshot');
  const name = dialog().getByLabel('Snapshot name');
  assert.equal(await name.inputValue(), '', 'the name is optional and starts blank');
  await dialog().getByRole('button', { name: 'Submit' }).click();
  await dialog().waitFor({ state: 'detached' });
  await page.getByRole('status').getByText('Started: Take snapshot — data1').waitFor();
  await openTab('Snapshots');
  const snap = page.locator('tbody tr').first();
  await waitState(snap, 'BackingUp');
  await snap.locator('progress').waitFor();
  await shot('snapshots-backing-up');
  firstSnapshot = await snap.getAttribute('data-name');
  assert.ok(firstSnapshot && firstSnapshot.length > 0, 'a name was generated');
  // The volume backs up once at a time: a second snapshot now is refused, and the form says why.
  await page.getByRole('button', { name: 'Add snapshot' }).click();
  await dialog().getByLabel('Snapshot name').fill('too-soon');
  await dialog().getByRole('button', { name: 'Submit' }).click();
  await dialog().getByRole('alert').filter({ hasText: /backup|snapshot/i }).waitFor();
  await dialog().getByRole('button', { name: 'Cancel' }).click();
  await waitState(row(firstSnapshot), 'BackedUp');
  assert.equal(await row(firstSnapshot).locator('progress').count(), 0);
});

await step('Add snapshot on the Snapshots tab, with a name', async () => {
  await page.getByRole('button', { name: 'Add snapshot' }).click();
  await dialog().getByLabel('Volume').selectOption({ label: 'data1' });
  await dialog().getByLabel('Snapshot name').fill('nightly');
  await dialog().getByRole('button', { name: 'Submit' }).click();
  await waitState(row('nightly'), 'BackedUp');
  await menuFor('nightly', 'Verify');
  await page.getByRole('status').getByText('Done: Verify snapshot — nightly').waitFor({ timeout: LONG });
  await shot('snapshots');
  await checkAccessibility('snapshots');
});

await step('Create template and Create volume from a snapshot; delete both after confirmations', async () => {
  await menuFor('nightly', 'Create template');
  assert.match(await dialog().innerText(), /No data is copied/);
  await dialog().getByLabel('Name').fill('golden');
  await dialog().getByRole('button', { name: 'Submit' }).click();
  await dialog().waitFor({ state: 'detached' });
  await menuFor('nightly', 'Create volume');
  await dialog().getByLabel('Name').fill('restored');
  assert.equal(await dialog().getByLabel('Zone').inputValue(), 'zone1');
  await dialog().getByRole('button', { name: 'Submit' }).click();
  await openTab('Volumes');
  await waitState(row('restored'), 'Ready');
  assert.match(await row('restored').innerText(), /64 MiB/);
  await openTab('Templates');
  assert.match(await row('golden').innerText(), /nightly/);
  await shot('templates');
  await checkAccessibility('templates');
  // Deploy an instance from it (the test guest boots its own kernel).
  await menuFor('golden', 'Create instance');
  await dialog().getByLabel('Name', { exact: true }).fill('web2');
  await dialog().getByLabel('Memory', { exact: true }).fill('256M');
  // The kernel and initrd come from this machine: the browser uploads them.
  await dialog().getByLabel('Kernel (optional)').setInputFiles(process.env.GUEST_KERNEL);
  await dialog().getByLabel('Initrd (optional)').setInputFiles(process.env.GUEST_INITRD);
  await dialog().getByLabel('Kernel command line (optional)').fill(process.env.GUEST_APPEND);
  await dialog().getByRole('button', { name: 'Submit' }).click();
  await openTab('Instances');
  await waitState(row('web2'), 'Running', LONG);
  await menuFor('web2', 'Stop');
  await waitState(row('web2'), 'Stopped', LONG);
  await menuFor('web2', 'Delete');
  assert.match(await dialog().innerText(), /web2 and its root volume will be deleted/);
  await dialog().getByRole('button', { name: 'Delete' }).click();
  await row('web2').waitFor({ state: 'detached' });
  await openTab('Templates');
  await menuFor('golden', 'Delete');
  assert.match(await dialog().innerText(), /golden will be deleted/);
  await dialog().getByRole('button', { name: 'Delete' }).click();
  await page.getByText('No templates.').waitFor({ timeout: LONG });
  await openTab('Volumes');
  await menuFor('restored', 'Delete');
  assert.match(await dialog().innerText(), /restored and all the data on it/);
  await dialog().getByRole('button', { name: 'Delete' }).click();
  await row('restored').waitFor({ state: 'detached' });
});

await step('Import template: a disk image from this computer, uploaded with a progress bar', async () => {
  await openTab('Templates');
  // Each piece of the upload waits a little, so the bar is seen moving.
  await page.route('**/api/v1/uploads/*/data*', async (route) => {
    await new Promise((resolve) => setTimeout(resolve, 400));
    await route.continue();
  });
  await page.getByRole('button', { name: 'Import template' }).click();
  await dialog().getByLabel('Name').fill('uploaded');
  await dialog().getByLabel('Image file').setInputFiles(process.env.TEMPLATE_IMAGE);
  await dialog().getByRole('button', { name: 'Submit' }).click();
  const bar = dialog().getByLabel('Uploading');
  await bar.waitFor();
  // Caught between two pieces: the bar has moved and is not full.
  await page.waitForFunction(() => document.querySelector('dialog progress')?.value > 0);
  const seen = await bar.evaluate((el) => el.value);
  await shot('template-uploading');
  assert.ok(seen > 0 && seen < 1, `the bar shows the upload under way (${seen})`);
  await dialog().waitFor({ state: 'detached', timeout: LONG });
  await page.unroute('**/api/v1/uploads/*/data*');
  await row('uploaded').waitFor({ timeout: LONG });
  assert.match(await row('uploaded').innerText(), /upload:disk\.raw/);
  assert.match(await row('uploaded').innerText(), /20 MiB/);
  await menuFor('uploaded', 'Delete');
  await dialog().getByRole('button', { name: 'Delete' }).click();
  await row('uploaded').waitFor({ state: 'detached', timeout: LONG });
});

await step('Account: the plan and usage against each limit; a key made (shown once) and revoked', async () => {
  await openTab('Account');
  const facts = await page.locator('.facts').innerText();
  assert.match(facts, /Plan\s+standard/);
  assert.match(await row('max_recovery_points').innerText(), /Recovery points per instance\s+0\s+2/);
  assert.match(await row('max_volumes').innerText(), /Volumes\s+1\s+10/);
  assert.match(await row('max_concurrent_jobs').innerText(), /Unlimited/);
  await shot('account');
  await checkAccessibility('account');
  await page.getByRole('button', { name: 'Create key' }).click();
  await dialog().getByLabel('Key name').fill('ci');
  await dialog().getByRole('button', { name: 'Submit' }).click();
  await dialog().getByRole('heading', { name: 'New API key' }).waitFor();
  const secret = await dialog().getByLabel('API key').inputValue();
  assert.match(secret, /^rpk_[0-9a-f]{64}$/);
  await dialog().getByRole('button', { name: 'Close' }).click();
  await row('ci').waitFor();
  assert.ok(!(await page.locator('main').innerText()).includes(secret), 'the key is never shown again');
  assert.match(await row('ci').innerText(), new RegExp(secret.slice(0, 8)));
  await row('ci').getByRole('button', { name: /Revoke/ }).click();
  assert.match(await dialog().innerText(), /ci will stop working at once/);
  await dialog().getByRole('button', { name: 'Delete' }).click();
  await row('ci').waitFor({ state: 'detached' });
  // A CloudStack key pair: its secret key shown once, beside its apiKey.
  await page.getByRole('button', { name: 'Create key' }).click();
  await dialog().getByLabel('Key name').fill('scripts');
  await dialog().getByLabel('CloudStack key pair').check();
  await dialog().getByRole('button', { name: 'Submit' }).click();
  await dialog().getByRole('heading', { name: 'New API key' }).waitFor();
  const apiKey = await dialog().getByLabel('API key').inputValue();
  const secretKey = await dialog().getByLabel('Secret key').inputValue();
  assert.match(apiKey, /^[A-Za-z0-9_-]{86}$/);
  assert.match(secretKey, /^[A-Za-z0-9_-]{86}$/);
  await dialog().getByRole('button', { name: 'Close' }).click();
  await row('scripts').waitFor();
  assert.match(await row('scripts').innerText(), /CloudStack key pair/);
  assert.ok(!(await page.locator('main').innerText()).includes(secretKey), 'the secret key is never shown again');
  await row('scripts').getByRole('button', { name: /Revoke/ }).click();
  await dialog().getByRole('button', { name: 'Delete' }).click();
  await row('scripts').waitFor({ state: 'detached' });
});

await step('Take snapshot from the volumes section of the instance page', async () => {
  await openTab('Instances');
  await page.getByRole('link', { name: 'web', exact: true }).click();
  await page.getByRole('heading', { name: 'web', level: 1 }).waitFor();
  await page.getByRole('heading', { name: 'Volumes' }).waitFor();
  assert.match(await page.locator('.facts').innerText(), /Recovery points and snapshots\s+Enabled/);
  assert.match(await page.locator('.facts').innerText(), /Guest agent\s+Answers/);
  await shot('instance');
  await checkAccessibility('instance');
  await menuFor('data1', 'Take snapshot');
  await dialog().getByLabel('Snapshot name').fill('from-instance-page');
  await dialog().getByRole('button', { name: 'Submit' }).click();
  await openTab('Snapshots');
  await waitState(row('from-instance-page'), 'BackedUp');
});

await step('Create recovery point with memory, from the Action menu', async () => {
  await openTab('Instances');
  await menuFor('web', 'Create recovery point');
  const memory = dialog().getByLabel('Include memory');
  assert.equal(await memory.isChecked(), false, 'memory is off by default');
  assert.match(await dialog().innerText(), /without a reboot/);
  await dialog().getByLabel('Recovery point name').fill('before-upgrade');
  await dialog().getByLabel('Description').fill('kernel 6.1 → 6.6');
  await memory.check();
  await shot('create-point-dialog');
  await checkAccessibility('create-point-dialog');
  await dialog().getByRole('button', { name: 'Finish' }).click();
  await dialog().waitFor({ state: 'detached' });
  await menuFor('web', 'View recovery points');
  const point = page.locator('li[data-point="before-upgrade"]');
  await waitState(point, 'Ready');
  assert.match(await point.innerText(), /memory/);
  assert.match(await point.innerText(), /kernel 6\.1 → 6\.6/);
});

await step('the tree: a second point under the first, "You are here" under it', async () => {
  await page.getByRole('button', { name: 'Create recovery point' }).click();
  await dialog().getByLabel('Recovery point name').fill('after-change');
  await dialog().getByRole('button', { name: 'Finish' }).click();
  const child = page.locator('li[data-point="before-upgrade"] > ul > li[data-point="after-change"]');
  await waitState(child, 'Ready');
  await child.locator(':scope > ul > li.here').waitFor();
  assert.match(await child.innerText(), /disk only/);
  assert.match(await page.locator('.tree').innerText(), /holds/);
  await shot('recovery-points');
  await checkAccessibility('recovery-points');
});

await step('Revert to the memory point, after a confirmation saying what is lost', async () => {
  await page.getByRole('button', { name: 'Revert before-upgrade' }).click();
  assert.match(await dialog().innerText(), /lost/);
  await dialog().getByRole('button', { name: 'Revert' }).click();
  await page.locator('li[data-point="before-upgrade"][data-current="true"] > ul > li.here').waitFor({ timeout: LONG });
  await waitState(page.locator('li[data-point="before-upgrade"]'), 'Ready');
  await page.getByRole('status').getByText('Done: Revert to recovery point').waitFor({ timeout: LONG });
});

await step('Delete a point with confirmation; Cancel changes nothing', async () => {
  await page.getByRole('button', { name: 'Delete after-change' }).click();
  await dialog().getByRole('button', { name: 'Cancel' }).click();
  await page.waitForTimeout(1500);
  assert.equal(await page.locator('li[data-point="after-change"]').count(), 1);
  await page.getByRole('button', { name: 'Delete after-change' }).click();
  assert.match(await dialog().innerText(), /no longer go back/);
  await dialog().getByRole('button', { name: 'Delete' }).click();
  await page.locator('li[data-point="after-change"]').waitFor({ state: 'detached', timeout: LONG });
});

await step('A protected snapshot cannot be deleted until it is unprotected', async () => {
  await openTab('Snapshots');
  await menuFor(firstSnapshot, 'Protect');
  await row(firstSnapshot).locator('[data-protected="yes"]').waitFor({ timeout: LONG });
  await page.getByRole('button', { name: `Action menu for ${firstSnapshot}` }).click();
  assert.equal(await page.getByRole('menuitem', { name: 'Delete' }).isDisabled(), true);
  await page.getByRole('menuitem', { name: 'Unprotect' }).click();
  await row(firstSnapshot).locator('[data-protected="yes"]').waitFor({ state: 'detached', timeout: LONG });
});

await step('Delete a snapshot with the keyboard, after a confirmation: gone', async () => {
  await openTab('Snapshots');
  const button = page.getByRole('button', { name: `Action menu for ${firstSnapshot}` });
  await button.focus();
  await page.keyboard.press('Enter');
  await page.getByRole('menuitem', { name: 'Create volume' }).waitFor();
  await page.keyboard.press('End');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Delete');
  await page.keyboard.press('Enter');
  assert.match(await dialog().innerText(), new RegExp(`${firstSnapshot}.*deleted for good`));
  await dialog().getByRole('button', { name: 'Delete' }).click();
  await row(firstSnapshot).waitFor({ state: 'detached', timeout: LONG });
  await page.getByRole('status').getByText('Done: Delete snapshot').waitFor({ timeout: LONG });
});

await step('en français: the guides\' words, and a snapshot taken in French', async () => {
  await page.getByLabel('Language').selectOption('fr');
  await openTab('Copies instantanées');
  await waitState(row('nightly'), 'BackedUp');
  assert.equal(await stateIn(row('nightly')).innerText(), 'Sauvegardé');
  await openTab('Volumes');
  assert.equal(await stateIn(row('data1')).innerText(), 'Prêt');
  await menuFor('data1', 'Prendre une copie instantanée');
  await dialog().getByLabel('Nom de la copie instantanée').fill('depuis-la-console');
  await dialog().getByRole('button', { name: 'Valider' }).click();
  await openTab('Copies instantanées');
  await waitState(row('depuis-la-console'), 'BackingUp');
  assert.equal(await stateIn(row('depuis-la-console')).innerText(), 'Sauvegarde en cours');
  await waitState(row('depuis-la-console'), 'BackedUp');
  assert.equal(await stateIn(row('depuis-la-console')).innerText(), 'Sauvegardé');
  assert.equal(await page.evaluate(() => document.documentElement.lang), 'fr');
  await shot('snapshots-fr');
  await checkAccessibility('snapshots-fr');
  await openTab('Points de reprise');
  await page.getByRole('heading', { name: 'Points de reprise de web' }).waitFor();
  await page.getByText('Vous êtes ici').waitFor();
  await shot('recovery-points-fr');
});

await step('en español: Copias instantáneas, Completado', async () => {
  await page.getByLabel('Langue').selectOption('es');
  await openTab('Copias instantáneas');
  assert.equal(await stateIn(row('nightly')).innerText(), 'Completado');
  await page.getByRole('button', { name: 'Crear copia instantánea' }).waitFor();
  await shot('snapshots-es');
  await page.getByLabel('Idioma').selectOption('en');
  await tab('Snapshots').waitFor();
});

await step('Jobs: every job with its state and time', async () => {
  await openTab('Jobs');
  await page.locator('tbody tr').first().waitFor();
  const text = await page.locator('table').innerText();
  for (const kind of ['Take snapshot', 'Create recovery point', 'Revert to recovery point', 'Delete snapshot']) {
    assert.ok(text.includes(kind), `the Jobs tab lists ${kind}`);
  }
  assert.ok(await page.locator('[data-state="Succeeded"]').count() >= 8);
  await shot('jobs');
  await checkAccessibility('jobs');
});

await step('Policies: add one on a volume, see its next run, disable it, delete it', async () => {
  await openTab('Policies');
  await page.getByText('No policies.').waitFor();
  await page.getByRole('button', { name: 'Add policy' }).click();
  await dialog().getByLabel('Of').selectOption({ label: 'snapshots of volume data1' });
  await dialog().getByLabel('Schedule').fill('daily 02:30');
  await dialog().getByLabel('Time zone').fill('Europe/Paris');
  await dialog().getByRole('button', { name: 'Submit' }).click();
  await row('data1-daily').waitFor();
  const text = await row('data1-daily').innerText();
  assert.match(text, /daily 02:30/);
  assert.match(text, /Europe\/Paris/);
  assert.match(text, /last 7/);
  assert.ok(await row('data1-daily').locator('time').count() >= 1, 'the next run is shown');
  await shot('policies');
  await checkAccessibility('policies');
  // A bad schedule is refused with the reason, the form stays open.
  await page.getByRole('button', { name: 'Add policy' }).click();
  await dialog().getByLabel('Schedule').fill('daily 25:00');
  await dialog().getByRole('button', { name: 'Submit' }).click();
  await dialog().getByRole('alert').filter({ hasText: "hour '25'" }).waitFor();
  await dialog().getByRole('button', { name: 'Cancel' }).click();
  await menuFor('data1-daily', 'Disable');
  await row('data1-daily').getByText('(disabled)').waitFor();
  // The instance's page lists it too, under Policies.
  await openTab('Instances');
  await row('web').getByRole('link', { name: 'web' }).click();
  await page.getByRole('heading', { level: 2, name: 'Policies' }).waitFor();
  await row('data1-daily').waitFor();
  // The Snapshots tab lists a policy's snapshots: this one took none yet.
  await openTab('Snapshots');
  await page.getByLabel('Policy').selectOption('data1-daily');
  await page.getByText('No snapshots.').waitFor();
  await page.getByLabel('Policy').selectOption('');
  await row('nightly').waitFor();
  assert.match(await row('nightly').innerText(), /by hand/);
  // A recovery-point policy on the instance: its points, none yet, are a
  // list of their own on the Recovery points tab.
  await openTab('Policies');
  await page.getByRole('button', { name: 'Add policy' }).click();
  await dialog().getByLabel('Of').selectOption({ label: 'recovery points of web' });
  await dialog().getByLabel('Schedule').fill('weekly sun 03:00');
  await dialog().getByRole('button', { name: 'Submit' }).click();
  await row('web-weekly').waitFor();
  await openTab('Recovery points');
  await page.locator('li.here').waitFor();
  await page.getByLabel('Policy').selectOption({ label: 'web-weekly' });
  await page.getByText('This policy has taken no recovery points yet.').waitFor();
  await page.getByLabel('Policy').selectOption('');
  await page.locator('li.here').waitFor();
  await openTab('Policies');
  await menuFor('web-weekly', 'Delete');
  await dialog().getByRole('button', { name: 'Delete' }).click();
  await row('web-weekly').waitFor({ state: 'detached' });
  await menuFor('data1-daily', 'Delete');
  await dialog().getByRole('button', { name: 'Delete' }).click();
  await page.getByText('No policies.').waitFor();
});

await step('at phone width every tab fits without scrolling sideways', async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  const screens = [
    ['Volumes', 'phone-volumes', 'tbody tr'],
    ['Snapshots', 'phone-snapshots', 'tbody tr'],
    ['Instances', 'phone-instances', 'tbody tr'],
    ['Recovery points', 'phone-recovery-points', 'li.here'],
    ['Jobs', 'phone-jobs', 'tbody tr'],
  ];
  for (const [name, file, content] of screens) {
    await openTab(name);
    await page.locator(content).first().waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `${name} is ${overflow}px wider than the phone`);
    await shot(file);
    await checkAccessibility(file);
  }
  await page.setViewportSize({ width: 1280, height: 800 });
});

await step('faults (injected in the browser): a silent daemon is said and the view comes back; a refused key signs out', async () => {
  await openTab('Snapshots');
  await row('nightly').waitFor();
  await page.route('**/api/v1/**', (route) => route.abort('connectionrefused'));
  await page.getByRole('alert').filter({ hasText: 'The reprise daemon does not answer.' }).waitFor();
  assert.equal(await row('nightly').count(), 0, 'no stale table is shown as current');
  await page.unroute('**/api/v1/**');
  await row('nightly').waitFor();
  // The store fails while a snapshot is asked for: the form says so and stays open.
  const unavailable = JSON.stringify({ error: { kind: 'unavailable', code: 'object_store_unavailable', message: 'the region store does not answer' } });
  await page.route('**/api/v1/snapshots', (route) => (route.request().method() === 'POST'
    ? route.fulfill({ status: 503, contentType: 'application/json', body: unavailable })
    : route.continue()));
  await page.getByRole('button', { name: 'Add snapshot' }).click();
  await dialog().getByRole('button', { name: 'Submit' }).click();
  await dialog().getByRole('alert').filter({ hasText: 'the region store does not answer' }).waitFor();
  await dialog().getByRole('button', { name: 'Cancel' }).click();
  await page.unroute('**/api/v1/snapshots');
  // The key stops working mid-session: signed out, told why, nothing left on screen.
  const refused = JSON.stringify({ error: { kind: 'unauthorized', code: 'api_key_invalid', message: 'the API key matches no account' } });
  await page.route('**/api/v1/**', (route) => route.fulfill({ status: 401, contentType: 'application/json', body: refused }));
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await page.getByRole('alert').filter({ hasText: 'Your API key was refused' }).waitFor();
  assert.equal(await page.locator('table').count(), 0);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('reprise.key')), null);
  await page.unroute('**/api/v1/**');
  await page.getByLabel('API key').fill(ALICE_KEY);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText('Account: alice').waitFor();
});

await step('Delete all recovery points, after a confirmation', async () => {
  await openTab('Recovery points');
  await page.locator('li[data-point="before-upgrade"]').waitFor();
  await page.getByRole('button', { name: 'Delete all' }).click();
  assert.match(await dialog().innerText(), /The only recovery point of web will be deleted/);
  await dialog().getByRole('button', { name: 'Delete' }).click();
  await page.getByText('This instance has no recovery points.').waitFor({ timeout: LONG });
});

await step('Revert a volume to a snapshot: refused while its instance runs, with the reason; stop, revert, start', async () => {
  await openTab('Volumes');
  await menuFor('data1', 'Revert volume');
  await dialog().getByRole('button', { name: 'Next' }).click();
  await dialog().getByRole('button', { name: 'Revert' }).click();
  await dialog().getByRole('alert').filter({ hasText: /which is Running: stop it first/ }).waitFor();
  await dialog().getByRole('button', { name: 'Cancel' }).click();
  await openTab('Instances');
  await menuFor('web', 'Stop');
  await waitState(row('web'), 'Stopped', LONG);
  await openTab('Volumes');
  await menuFor('data1', 'Revert volume');
  const option = await dialog().locator('option', { hasText: 'nightly' }).getAttribute('value');
  await dialog().getByLabel('Snapshot').selectOption(option);
  await dialog().getByRole('button', { name: 'Next' }).click();
  assert.match(await dialog().innerText(), /data1 will be put back to snapshot nightly.*lost/s);
  await dialog().getByRole('button', { name: 'Revert' }).click();
  await page.getByRole('status').getByText('Done: Revert volume — data1').waitFor({ timeout: LONG });
  await waitState(row('data1'), 'Ready');
  await openTab('Instances');
  await menuFor('web', 'Start');
  await waitState(row('web'), 'Running', LONG);
});

await step('Clone an instance: the clone runs on copies of its volumes, the source runs on', async () => {
  await openTab('Instances');
  await menuFor('web', 'Clone');
  await dialog().getByLabel('Name', { exact: true }).fill('web-clone');
  await dialog().getByRole('button', { name: 'Submit' }).click();
  await waitState(row('web-clone'), 'Running', LONG);
  assert.match(await row('web-clone').innerText(), /web-clone-data1/);
  assert.equal(await stateIn(row('web')).getAttribute('data-state'), 'Running');
  await menuFor('web-clone', 'Stop');
  await waitState(row('web-clone'), 'Stopped', LONG);
  await menuFor('web-clone', 'Delete');
  await dialog().getByRole('button', { name: 'Delete' }).click();
  await row('web-clone').waitFor({ state: 'detached' });
  await openTab('Volumes');
  await menuFor('web-clone-data1', 'Delete');
  await dialog().getByRole('button', { name: 'Delete' }).click();
  await row('web-clone-data1').waitFor({ state: 'detached' });
});

await step('bob signs in and sees none of alice\'s resources', async () => {
  // Sign out right after an action, while its refresh and a poll are due:
  // neither may draw alice's view again nor wipe the key being typed.
  await openTab('Snapshots');
  await menuFor('nightly', 'Verify');
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  assert.equal(await page.locator('#tabs').isVisible(), false);
  await page.getByLabel('API key').fill(BOB_KEY);
  await page.waitForTimeout(1500);
  assert.equal(await page.getByLabel('API key').inputValue(), BOB_KEY);
  assert.equal(await page.locator('table').count(), 0);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText('Account: bob').waitFor();
  for (const [name, empty] of [['Instances', 'No instances.'], ['Volumes', 'No volumes.'], ['Snapshots', 'No snapshots.'], ['Recovery points', 'No instances.'], ['Templates', 'No templates.']]) {
    await openTab(name);
    await page.getByText(empty).waitFor();
  }
  await openTab('Jobs');
  await page.getByText('No jobs.').waitFor();
  assert.equal(await tab('Hosts').count(), 0, 'a tenant has no Hosts tab');
  const body = await page.locator('body').innerText();
  for (const word of ['web', 'data1', 'nightly', 'before-upgrade']) {
    assert.ok(!body.includes(word), `bob sees ${word}`);
  }
  await shot('other-account');
  await checkAccessibility('other-account');
});

await step('the admin sees the region\'s hosts, and where each instance lives', async () => {
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByLabel('API key').fill(ADMIN_KEY);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText('Account: admin').waitFor();
  await openTab('Hosts');
  await waitState(row('local'), 'Up');
  assert.match(await row('local').innerText(), /this daemon/);
  assert.match(await row('local').innerText(), /leader/);
  await shot('hosts');
  await checkAccessibility('hosts');
  await page.getByLabel('Language').selectOption('fr');
  await openTab('Hôtes');
  assert.equal(await stateIn(row('local')).innerText(), 'En service');
  await page.getByLabel('Langue').selectOption('en');
  await tab('Hosts').waitFor();
});

await step('every word exists in every language; the page raised no script errors', async () => {
  const missing = await page.evaluate(async () => {
    const { WORDS } = await import('/console/i18n.js');
    const script = await (await fetch('/console/console.js')).text();
    const used = [
      ...[...script.matchAll(/\bt\('([\w.]+)'/g)].map((m) => m[1]),
      ...[...script.matchAll(/\btn\('([\w.]+)'/g)].flatMap((m) => [`${m[1]}.one`, `${m[1]}.other`]),
    ];
    const problems = used.filter((k) => !(k in WORDS.en)).map((k) => `en lacks ${k}`);
    for (const lang of ['fr', 'es']) {
      for (const k of Object.keys(WORDS.en)) if (!(k in WORDS[lang])) problems.push(`${lang} lacks ${k}`);
    }
    return problems;
  });
  assert.deepEqual(missing, []);
  assert.deepEqual(pageErrors, []);
  assert.deepEqual(axeViolations, [], 'accessibility (axe-core, WCAG 2.1 AA)');
});

await browser.close();
console.log('console e2e: all steps passed');
