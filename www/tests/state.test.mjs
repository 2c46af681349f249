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
  await waitFor('B to get A\'s state from the node', () =>
    b.page.evaluate(async () => (await window.client.get('user'))?.address?.city === 'Paris'))
  const atB = await b.page.evaluate(() => window.client.state())
  assert.deepEqual(atB.data, seed, 'every value, with its type')
  assert.ok(atB.replicas.includes(node.peerId), 'B knows the node holds a replica')
  await waitFor('on_state_change to fire', () =>
    b.page.evaluate(() => window.changes.some((c) => c.key === 'user' && c.value?.address?.city === 'Paris')))
  const metricsB = await b.page.evaluate(() => window.client.metrics())
  assert.ok(metricsB.state_entries_ingested >= Object.keys(seed).length, JSON.stringify(metricsB))
  assert.ok(metricsB.state_entries >= Object.keys(seed).length && metricsB.state_namespaces >= 1)
  assert.ok(metricsB.state_last_sync_lag_ms > 0, 'A wrote before B started: its entries arrived late')
  assert.equal(metricsB.state_entries_rejected, 0)
  await b.page.evaluate(async () => {
    await window.client.set('age', 26)
    await window.client.delete('active')
  })
  // Both edits: they may travel in separate gossip messages, and a write
  // is acknowledged once durable in the page, not once replicated.
  await waitFor('the node to get B\'s edits', async () => {
    const data = (await node.stateOf(idA)).data
    return data.age === 26 && !('active' in data)
  })
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

// The same page reloaded, with no peer to catch up from: what it wrote comes
// back from IndexedDB. A damaged record is skipped, never trusted.
test('a page keeps its state in IndexedDB across reloads; damaged records are skipped', async () => {
  const p = await openPage(browser, node)
  const id = await startClient(p.page, node.ws, { name: 'diary' })
  const written = await p.page.evaluate(async (seed) => {
    for (const [k, v] of Object.entries(seed)) await window.client.set(k, v)
    await window.client.set('note', 'to be damaged')
    await window.client.delete('active')
    // A burst, acknowledged together.
    await Promise.all(Array.from({ length: 200 }, (_, i) => window.client.set(`burst-${i}`, i)))
    return (await window.client.state()).data
  }, seed)
  assert.equal(Object.keys(written).length, Object.keys(seed).length - 1 + 1 + 200)

  const restart = async () => {
    await p.page.reload()
    await p.page.waitForFunction(() => window.harnessReady === true, null, { timeout: 20_000 })
    // No bootstrap peer: nothing can come from the network.
    assert.equal(await startClient(p.page, null, { name: 'diary' }), id)
    return p.page.evaluate(async () => ({ data: (await window.client.state()).data, peers: (await window.client.peers()).length }))
  }
  const reloaded = await restart()
  assert.equal(reloaded.peers, 0)
  assert.deepEqual(reloaded.data, written, 'every acknowledged write, typed, and the delete')

  // Damage the stored state: flip a byte of one record, add two records
  // that are not entries at all.
  await p.page.evaluate(async () => {
    await window.client.close()
    const db = await new Promise((resolve, reject) => {
      const open = indexedDB.open('infermesh-state:diary')
      open.onsuccess = () => resolve(open.result)
      open.onerror = () => reject(open.error)
    })
    const store = () => db.transaction('entries', 'readwrite').objectStore('entries')
    const key = (await new Promise((resolve) => {
      const req = store().getAllKeys()
      req.onsuccess = () => resolve(req.result)
    })).find((k) => k[1] === 'note')
    const bytes = await new Promise((resolve) => {
      const req = store().get(key)
      req.onsuccess = () => resolve(new Uint8Array(req.result))
    })
    bytes[bytes.length - 10] ^= 0x01
    const tx = db.transaction('entries', 'readwrite')
    tx.objectStore('entries').put(bytes, key)
    tx.objectStore('entries').put(new Uint8Array([0xff, 0x00, 0x13]), ['x', 'garbage'])
    tx.objectStore('entries').put('not bytes', ['x', 'text'])
    await new Promise((resolve, reject) => { tx.oncomplete = resolve; tx.onerror = () => reject(tx.error) })
    db.close()
  })
  const damaged = await restart()
  const expected = { ...written }
  delete expected.note
  assert.deepEqual(damaged.data, expected, 'the damaged entry is dropped, the rest intact')
  assertNoPageErrors(assert, p)
  await p.context.close()
})
