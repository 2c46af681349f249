// The state follows the key, in real Chromium with the real node: a page
// writes and closes; another browser with the same private key sees the
// data and edits it; the node restarts and still has it; a third page with
// another key reads it but may not write it.

import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startNode, launchBrowser, openPage, startClient, waitFor, assertNoPageErrors } from './lib.mjs'

let node, browser
const dataDir = mkdtempSync(join(tmpdir(), 'infermesh-state-'))
before(async () => {
  node = await startNode({ dataDir })
  browser = await launchBrowser()
})
after(async () => {
  await browser?.close()
  await node?.stop()
  rmSync(dataDir, { recursive: true, force: true })
})

const seed = {
  name: 'John',
  age: 25,
  active: true,
  config: { theme: 'dark', fontSize: 14 },
  tags: ['ai', 'p2p'],
  user: { name: 'Ann', address: { city: 'Paris' } }
}

test('state follows the key: owner offline, another device, node restart, read-only for others', async () => {
  // Page A writes its state, typed.
  const a = await openPage(browser, node)
  const idA = await startClient(a.page, node.ws, { name: 'alice' })
  const key = await a.page.evaluate(async (seed) => {
    for (const [k, v] of Object.entries(seed)) await window.client.set(k, v)
    return window.client.export_private_key()
  }, seed)
  assert.deepEqual((await a.page.evaluate(() => window.client.state())).data, seed)
  // The node keeps a replica; then A goes away.
  await waitFor('the node to replicate A', async () =>
    JSON.stringify((await node.stateOf(idA)).data) === JSON.stringify((await a.page.evaluate(() => window.client.state())).data))
  assertNoPageErrors(assert, a)
  await a.context.close()

  // Page B: another browser, the same key, over WebRTC-direct.
  const b = await openPage(browser, node)
  const idB = await startClient(b.page, node.webrtc, { name: 'laptop', options: { private_key: key } })
  assert.equal(idB, idA)
  await b.page.evaluate(() => {
    window.changes = []
    window.client.on_state_change((change) => window.changes.push(change))
  })
  await waitFor('B to get A\'s state from the node', () =>
    b.page.evaluate(async () => (await window.client.get('user'))?.address?.city === 'Paris'))
  const atB = await b.page.evaluate(() => window.client.state())
  assert.deepEqual(atB.data, seed, 'every value, with its type')
  assert.ok(atB.replicas.includes(node.peerId), 'B knows the node holds a replica')
  assert.ok((await b.page.evaluate(() => window.changes.length)) > 0, 'on_state_change fired')
  await b.page.evaluate(async () => {
    await window.client.set('age', 26)
    await window.client.delete('active')
  })
  await waitFor('the node to get B\'s edits', async () => (await node.stateOf(idA)).data.age === 26)
  assertNoPageErrors(assert, b)
  await b.context.close()

  // The node restarts from its data directory: the state is still there.
  await node.stop({ keep: true })
  node = await startNode({ dataDir })
  const expected = { ...seed, age: 26 }
  delete expected.active
  assert.deepEqual((await node.stateOf(idA)).data, expected)

  // Page C, another key: reads A's namespace, may not write it.
  const c = await openPage(browser, node)
  const idC = await startClient(c.page, node.ws, { name: 'carol' })
  assert.notEqual(idC, idA)
  await waitFor('C to read A\'s namespace', () =>
    c.page.evaluate(async (ns) => (await window.client.get('age', { namespace: ns })) === 26, idA))
  const refused = await c.page.evaluate(async (ns) => {
    try {
      await window.client.set('age', 1, { namespace: ns })
      return null
    } catch (e) {
      return { isError: e instanceof Error, message: e.message }
    }
  }, idA)
  assert.equal(refused?.isError, true)
  assert.match(refused.message, /unauthorized: .* may not write/)
  assert.equal(await c.page.evaluate((ns) => window.client.get('age', { namespace: ns }), idA), 26)
  assert.equal((await node.stateOf(idA)).data.age, 26, 'the refused write went nowhere')
  // Bad state calls are clear errors too.
  const bad = await c.page.evaluate(async () => {
    const out = []
    for (const call of [
      () => window.client.set('k'.repeat(300), 1),
      () => window.client.set('k', undefined),
      () => window.client.get('k', { namespace: 'bob' }),
      () => window.client.delete('never-set')
    ]) {
      try { await call(); out.push(null) } catch (e) { out.push(e.message) }
    }
    return out
  })
  assert.match(bad[0], /key_too_long/)
  assert.match(bad[1], /use delete\(\)/)
  assert.match(bad[2], /'bob' is not a node ID/)
  assert.match(bad[3], /does not exist/)
  assertNoPageErrors(assert, c)
  await c.context.close()
})
