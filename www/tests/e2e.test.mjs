// End-to-end encryption in real Chromium with the real node: page ↔ node
// at the page's KEM level, the transport-only fallback, and a message to a
// closed page that waits, sealed, at the node until the key comes back.
// (Page ↔ page through the relay is in messaging.test.mjs.)

import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startNode, launchBrowser, openPage, startClient, received, waitFor, assertNoPageErrors, decode } from './lib.mjs'

let node, browser
before(async () => {
  node = await startNode({ mode: 'init' })
  browser = await launchBrowser()
})
after(async () => {
  await browser?.close()
  await node?.stop()
})

/** Sends a text message from a page's client to `to`; returns the outcome. */
function sendText (page, to, text) {
  return page.evaluate(async ({ to, text }) => {
    const msg = window.infermesh.create_neural_message('Thought', 'page', to, 5, 60)
    msg.content = text
    return window.client.send_message(msg, new TextEncoder().encode(text))
  }, { to, text })
}

for (const level of [3, 5]) {
  test(`a page and the node exchange end-to-end encrypted messages (page at level ${level})`, async () => {
    const p = await openPage(browser, node)
    const id = await startClient(p.page, node.ws, { name: `level-${level}`, options: { mlkem_security_level: level } })

    const since = Date.now()
    const out = await sendText(p.page, node.peerId, `hello node at ${level}`)
    assert.equal(out.delivered, true)
    assert.equal(out.encrypted, true)
    await node.waitLine('the node to print it, opened',
      (l) => l === `[direct, e2e L${level}] page via ${id}: hello node at ${level}`, since)

    // The node seals at its own level (3), or up to the page's published
    // level-5 key if its replica of the page's namespace has it first;
    // never below its own level.
    node.type(`send ${id} hello page`)
    const m = await waitFor('the page to receive the node\'s message', async () =>
      (await received(p.page)).find((m) => m.message.content === 'hello page'))
    assert.equal(m.message.encrypted, true)
    assert.ok([3, level].includes(m.message.kem_level), `sealed at level ${m.message.kem_level}`)
    assert.equal(m.message.sender, node.peerId)

    const status = await p.page.evaluate(() => window.client.status())
    assert.equal(status.quantum_resistant, true)
    assert.equal(status.mlkem_security_level, level)
    assert.deepEqual(status.sessions, [{ peer_id: node.peerId, kem_level: level }])
    assert.equal(status.metrics.e2e_sessions, 1)
    const peers = await p.page.evaluate(() => window.client.peers())
    assert.equal(peers.find((x) => x.peer_id === node.peerId).quantum_secure, true)
    assertNoPageErrors(assert, p)
    await p.context.close()
  })
}

test('with quantum_resistant: false a page sends with transport encryption only, and says so', async () => {
  const p = await openPage(browser, node)
  const id = await startClient(p.page, node.ws, { name: 'plain', options: { quantum_resistant: false } })
  const since = Date.now()
  const out = await sendText(p.page, node.peerId, 'in the clear')
  assert.equal(out.delivered, true)
  assert.equal(out.encrypted, false)
  await node.waitLine('the node to print it, not end-to-end encrypted',
    (l) => l === `[direct] page via ${id}: in the clear`, since)
  const status = await p.page.evaluate(() => window.client.status())
  assert.equal(status.quantum_resistant, false)
  assert.deepEqual(status.sessions, [])
  const err = await p.page.evaluate(async () => {
    try {
      await new window.infermesh.WasmP2PClient('bad-level').initialize({ mlkem_security_level: 2 })
      return null
    } catch (e) { return e.message }
  })
  assert.match(err, /level must be 1, 3 or 5/)
  assertNoPageErrors(assert, p)
  await p.context.close()
})

test('a message to a closed page waits sealed at the node and reaches the key\'s next device', async () => {
  const a = await openPage(browser, node)
  let b = await openPage(browser, node)
  const idA = await startClient(a.page, node.webrtc, { name: 'alice' })
  const idB = await startClient(b.page, node.ws, { name: 'bob' })
  const keyB = await b.page.evaluate(() => window.client.export_private_key())
  for (const p of [a, b]) {
    await waitFor('a relay reservation', async () =>
      (await p.page.evaluate(() => window.client.status())).relay_addrs.length > 0)
  }
  const first = await sendText(a.page, idB, 'hello bob')
  assert.equal(first.delivered, true)
  assert.equal(first.encrypted, true)
  await waitFor('bob to get it', async () => (await received(b.page)).some((m) => m.message.content === 'hello bob'))

  await b.context.close()
  await waitFor('the node to see bob leave', async () => {
    const peers = await (await fetch(`${node.api}/api/peers`)).json()
    return !peers.some((p) => p.peer_id === idB)
  })
  const held = await sendText(a.page, idB, 'while you were away')
  assert.equal(held.delivered, false)
  assert.equal(held.held_by, node.peerId)
  assert.equal(held.encrypted, true)
  const status = await node.status()
  assert.equal(status.metrics.mailbox_held, 1)

  // Bob's key, on another device (a fresh browser context).
  b = await openPage(browser, node)
  const again = await startClient(b.page, node.ws, { name: 'bob-phone', options: { private_key: keyB } })
  assert.equal(again, idB)
  const m = await waitFor('the held message to arrive', async () =>
    (await received(b.page)).find((m) => m.message.content === 'while you were away'), 30_000)
  assert.equal(m.message.held_by, node.peerId)
  assert.equal(m.message.encrypted, true)
  assert.equal(m.message.sender, idA)
  assert.equal(decode(m.payload), 'while you were away')
  await waitFor('the node to let go of it', async () => (await node.status()).metrics.mailbox_held === 0)
  assertNoPageErrors(assert, a, b)
  await a.context.close()
  await b.context.close()
})

test('a private value is ciphertext on the node and clear on another device with the key', async () => {
  const a = await openPage(browser, node)
  const idA = await startClient(a.page, node.ws, { name: 'private-owner' })
  const key = await a.page.evaluate(async () => {
    await window.client.set('wallet', { pin: 4321, words: 'correct horse' }, { private: true })
    await window.client.set('name', 'Ada')
    return window.client.export_private_key()
  })
  assert.deepEqual(await a.page.evaluate(() => window.client.get('wallet')), { pin: 4321, words: 'correct horse' })
  const held = await waitFor('the node to replicate both values', async () => {
    const view = await node.stateOf(idA)
    return Object.keys(view.data ?? {}).length === 2 ? view : null
  })
  assert.equal(held.data.name, 'Ada')
  const stored = JSON.stringify(held.data.wallet)
  assert.ok(stored.includes('$sealed') && !stored.includes('4321') && !stored.includes('correct horse'), stored)
  const err = await a.page.evaluate(async (ns) => {
    try { await window.client.set('x', 1, { private: 'yes' }); return null } catch (e) { return e.message }
  }, idA)
  assert.match(err, /private must be true or false/)
  await a.context.close()

  // The owner's key on another device reads it; someone else's page does not.
  const b = await openPage(browser, node)
  await startClient(b.page, node.ws, { name: 'private-phone', options: { private_key: key } })
  const clear = await waitFor('the phone to read the private value', async () =>
    b.page.evaluate(() => window.client.get('wallet')))
  assert.deepEqual(clear, { pin: 4321, words: 'correct horse' })
  const c = await openPage(browser, node)
  await startClient(c.page, node.ws, { name: 'private-stranger' })
  const seen = await waitFor('the stranger to replicate the namespace', async () =>
    c.page.evaluate((ns) => window.client.get('wallet', { namespace: ns }), idA))
  assert.ok(JSON.stringify(seen).includes('$sealed') && !JSON.stringify(seen).includes('4321'))
  assertNoPageErrors(assert, b, c)
  await b.context.close()
  await c.context.close()
})
