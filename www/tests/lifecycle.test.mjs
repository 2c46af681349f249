// A client's life in a page: acknowledged writes survive the page closing
// without close(), a client the page drops stops its node, and close()
// while initialize() is under way stops the node it was starting.

import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startNode, launchBrowser, openPage, startClient, waitFor, assertNoPageErrors } from './lib.mjs'

let node, browser
before(async () => {
  node = await startNode()
  browser = await launchBrowser()
})
after(async () => {
  await browser?.close()
  await node?.stop()
})

test('writes acknowledged before the page closed without close() are all there when it reopens', async () => {
  const first = await openPage(browser, node)
  const id = await startClient(first.page, node.ws, { name: 'notebook' })
  // 400 writes in flight at once; the page closes as soon as 150 are
  // acknowledged, with the rest still being written.
  await first.page.evaluate(() => {
    window.acked = []
    for (let i = 0; i < 400; i++) {
      window.client.set(`k${i}`, { i, text: `value ${i}` }).then(() => window.acked.push(i), () => {})
    }
  })
  const acked = await waitFor('150 acknowledged writes', () =>
    first.page.evaluate(() => window.acked.length >= 150 && [...window.acked]))
  await first.page.close()

  // The same browser profile, a new page, no peer to catch up from.
  const again = await openPage(browser, node, undefined, first.context)
  assert.equal(await startClient(again.page, null, { name: 'notebook' }), id)
  const data = await again.page.evaluate(async () => (await window.client.state()).data)
  const lost = acked.filter((i) => data[`k${i}`]?.i !== i)
  assert.deepEqual(lost, [], `of ${acked.length} acknowledged writes, these were lost`)
  assertNoPageErrors(assert, again)
  await first.context.close()
})

test('a client the page drops stops its node: 50 clients made and freed leave nothing running', async () => {
  const p = await openPage(browser, node)
  const stats = () => p.page.evaluate(() => window.infermesh.runtime_stats())
  const before = await stats()
  const made = await p.page.evaluate(async () => {
    const { WasmP2PClient } = window.infermesh
    const clients = []
    for (let batch = 0; batch < 5; batch++) {
      const started = Array.from({ length: 10 }, (_, i) => {
        const client = new WasmP2PClient(`dropped-${batch * 10 + i}`)
        clients.push(client)
        return client.initialize({})
      })
      await Promise.all(started)
    }
    const running = window.infermesh.runtime_stats()
    for (const client of clients) client.free()
    return running
  })
  assert.equal(made.clients - before.clients, 50)
  assert.equal(made.event_loops - before.event_loops, 50)
  assert.equal(made.event_pumps - before.event_pumps, 50)
  await waitFor('every dropped client\'s node to stop', async () => {
    const now = await stats()
    return now.clients === before.clients && now.event_loops === before.event_loops &&
      now.event_pumps === before.event_pumps
  })
  assertNoPageErrors(assert, p)
  await p.context.close()
})

test('close() while initialize() is under way stops the node it was starting', async () => {
  const p = await openPage(browser, node)
  const outcome = await p.page.evaluate(async (addr) => {
    const { WasmP2PClient, runtime_stats: stats } = window.infermesh
    const client = new WasmP2PClient('impatient')
    const starting = client.initialize({ bootstrap_peers: [addr] })
    await client.close()
    const started = await starting.then(() => 'started', (e) => e.message)
    const after = await client.subscribe('x').then(() => 'subscribed', (e) => e.message)
    const again = await client.initialize({}).then(() => 'started', (e) => e.message)
    return { started, after, again, loops: stats().event_loops }
  }, node.ws)
  assert.match(outcome.started, /closed while it started/)
  assert.match(outcome.after, /the client is closed/)
  assert.match(outcome.again, /the client is closed/)
  await waitFor('its node to stop', async () =>
    (await p.page.evaluate(() => window.infermesh.runtime_stats())).event_loops === 0)
  assertNoPageErrors(assert, p)
  await p.context.close()
})
