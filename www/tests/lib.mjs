// Helpers for the browser tests: the real `infermesh` binary on loopback,
// Debian's Chromium driven by playwright-core, and pages that load the npm
// package the way a web app does.

import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, mkdirSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'

const here = dirname(fileURLToPath(import.meta.url))
export const WWW = join(here, '..')
export const ROOT = join(WWW, '..')
export const RESULTS = join(ROOT, 'test-results')
const TARGET = process.env.CARGO_TARGET_DIR ?? join(ROOT, 'target')
export const BIN = process.env.INFERMESH_BIN ?? join(TARGET, 'debug', 'infermesh')

/** Polls `check` every 25 ms until it returns a truthy value; throws after `ms`. */
export async function waitFor (what, check, ms = 20_000) {
  const start = Date.now()
  let last
  for (;;) {
    try {
      const value = await check()
      if (value) return value
    } catch (e) {
      last = e
    }
    if (Date.now() - start > ms) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${last.message}` : ''}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}

/**
 * Starts `infermesh <mode>` on 127.0.0.1 with free ports, serving www/.
 * `mode` is `node` (headless) or `init` (with a prompt on stdin).
 */
export async function startNode ({ mode = 'node', dataDir, extra = [] } = {}) {
  dataDir ??= mkdtempSync(join(tmpdir(), 'infermesh-browser-'))
  const args = [mode, '--data-dir', dataDir, '--listen-ip', '127.0.0.1', '--tcp-port', '0', '--quic-port', '0',
    '--ws-port', '0', '--webrtc-port', '0', '--api-port', '0', '--no-mdns', '--www', WWW, ...extra]
  // A restarted node writes fresh addresses; do not read the old ones.
  rmSync(join(dataDir, 'addrs.json'), { force: true })
  const proc = spawn(BIN, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.NODE_RUST_LOG ?? 'warn' } })
  const lines = []
  const stderr = []
  let buffer = ''
  proc.stdout.on('data', (chunk) => {
    buffer += chunk
    let i
    while ((i = buffer.indexOf('\n')) >= 0) {
      lines.push({ at: Date.now(), text: buffer.slice(0, i) })
      buffer = buffer.slice(i + 1)
    }
  })
  proc.stderr.on('data', (chunk) => stderr.push(String(chunk)))
  const exited = new Promise((resolve) => proc.on('exit', resolve))
  const file = join(dataDir, 'addrs.json')
  const addrs = await waitFor('the node to write addrs.json', () => {
    try {
      const json = JSON.parse(readFileSync(file, 'utf8'))
      return json.api && json.addrs.length >= 4 ? json : null
    } catch { return null }
  }, 30_000)
  const browserAddrs = (await (await fetch(`${addrs.api}/api/addrs`)).json()).browser_addrs
  const node = {
    dataDir,
    api: addrs.api,
    peerId: addrs.peer_id,
    ws: browserAddrs.find((a) => a.includes('/ws/')),
    webrtc: browserAddrs.find((a) => a.includes('/webrtc-direct/')),
    lines,
    /** Types a line at the node's prompt (`init` mode). */
    type (line) { proc.stdin.write(line + '\n') },
    /** Waits for an output line matching `pred`, after `since` (ms epoch). */
    waitLine (what, pred, since = 0, ms = 20_000) {
      return waitFor(what, () => lines.find((l) => l.at >= since && pred(l.text)), ms)
    },
    async status () { return (await fetch(`${addrs.api}/api/status`)).json() },
    /** Node IDs the node knows to be subscribed to `topic`. */
    async topicPeers (topic) {
      return (await fetch(`${addrs.api}/api/topics/${encodeURIComponent(topic)}/peers`)).json()
    },
    /** Waits until the node knows every one of `ids` is subscribed to `topic`. */
    waitSubscribed (topic, ids) {
      return waitFor(`the node to see ${ids.length} subscriber(s) of ${topic}`, async () => {
        const known = await this.topicPeers(topic)
        return ids.every((id) => known.includes(id))
      })
    },
    /** A namespace as the node holds it (`{ namespace, data, replicas }`). */
    async stateOf (namespace) {
      return (await fetch(`${addrs.api}/api/state/${namespace}`)).json()
    },
    /** Kills the node at once (SIGKILL), as a crash would. */
    async kill () {
      if (proc.exitCode === null) proc.kill('SIGKILL')
      await exited
    },
    /** Stops the node; `keep` leaves its data directory for a restart. */
    async stop ({ keep = false } = {}) {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM')
      await exited
      if (!keep) rmSync(dataDir, { recursive: true, force: true })
      // The node's output, kept as a test artifact for when a test fails.
      const name = (process.argv[1] ?? 'node').split('/').pop().replace(/\.m?js$/, '')
      writeFileSync(join(resultsDir(), `${name}.node-${node.peerId.slice(-6)}.log`), this.transcript())
    },
    transcript () { return lines.map((l) => l.text).join('\n') + '\n' + stderr.join('') }
  }
  return node
}

/**
 * `infermesh --data-dir <node's> <args…>`: a subcommand that asks the
 * running node; resolves with its stdout, rejects with both outputs.
 */
export function cli (node, ...args) {
  return new Promise((resolve, reject) => {
    const proc = spawn(BIN, ['--data-dir', node.dataDir, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    proc.stdout.on('data', (c) => { out += c })
    proc.stderr.on('data', (c) => { err += c })
    proc.on('exit', (code) => code === 0
      ? resolve(out)
      : reject(new Error(`infermesh ${args.join(' ')} failed (${code}):\n${out}\n${err}`)))
  })
}

/** Debian's Chromium, headless, with the flags this machine needs. */
export function launchBrowser () {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync']
  })
}

/**
 * Opens `path` of the node's web server in a fresh browser context (its own
 * IndexedDB, like another browser) and records console errors and
 * uncaught exceptions.
 */
export async function openPage (browser, node, path = '/tests/harness.html', context) {
  context ??= await browser.newContext()
  const page = await context.newPage()
  const errors = []
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`))
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`) })
  await page.goto(`${node.api}${path}`)
  if (path.startsWith('/tests/harness')) {
    await page.waitForFunction(() => window.harnessReady === true, null, { timeout: 20_000 })
  }
  return { page, context, errors }
}

/**
 * Starts a client on a harness page connected to `addr`; messages it
 * receives collect in `window.received`, state changes (watched from
 * before it starts) in `window.changes`.
 */
export async function startClient (page, addr, { name = 'test', options = {} } = {}) {
  return page.evaluate(async ({ addr, name, options }) => {
    const { WasmP2PClient } = window.infermesh
    window.received = []
    window.changes = []
    const client = new WasmP2PClient(name)
    client.on_state_change((change) => window.changes.push(change))
    const id = await client.initialize({ bootstrap_peers: addr ? [addr] : [], ...options })
    client.set_message_handler((message, payload) => {
      window.received.push({ message, payload: Array.from(payload), at: Date.now() })
    })
    window.client = client
    return id
  }, { addr, name, options })
}

/** Publishes on a page, retrying while the topic has no known subscribers. */
export async function publishFromPage (page, topic, text) {
  return waitFor(`${topic} to have subscribers`, () => page.evaluate(async ({ topic, text }) => {
    try {
      return await window.client.publish(topic, new TextEncoder().encode(text))
    } catch (e) {
      if (String(e.message).includes('no peers are subscribed')) return null
      throw e
    }
  }, { topic, text }))
}

/** Received messages on a page. */
export function received (page) {
  return page.evaluate(() => window.received)
}

/** Asserts no page reported an error (a panic, a freed closure, …). */
export function assertNoPageErrors (assert, ...pages) {
  const errors = pages.flatMap((p) => p.errors).filter((e) => !e.includes('favicon'))
  assert.deepEqual(errors, [], 'no errors on the pages')
}

export function resultsDir () {
  mkdirSync(RESULTS, { recursive: true })
  return RESULTS
}

export const decode = (bytes) => new TextDecoder().decode(new Uint8Array(bytes))
