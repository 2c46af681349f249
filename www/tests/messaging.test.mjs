// Pages talking through the real node: gossip over WebSocket and
// WebRTC-direct (page ↔ page and node → page), and direct messages page →
// page through a relay circuit, end-to-end encrypted.

import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import {
  startNode, launchBrowser, openPage, startClient, publishFromPage, received, waitFor,
  assertNoPageErrors, decode
} from './lib.mjs'

let node, browser
before(async () => {
  // `init` gives the node a prompt, so it can publish too.
  node = await startNode({ mode: 'init' })
  browser = await launchBrowser()
})
after(async () => {
  await browser?.close()
  await node?.stop()
})

for (const [first, second] of [['ws', 'ws'], ['webrtc', 'webrtc'], ['ws', 'webrtc']]) {
  test(`gossip flows both ways between pages on ${first} and ${second}, and from the node`, async () => {
    const topic = `chat-${first}-${second}`
    const a = await openPage(browser, node)
    const b = await openPage(browser, node)
    const idA = await startClient(a.page, node[first], { name: 'a' })
    const idB = await startClient(b.page, node[second], { name: 'b' })
    const statusA = await a.page.evaluate(() => window.client.status())
    assert.equal(statusA.state, 'connected')
    assert.equal(statusA.transport, first === 'ws' ? 'websocket' : 'webrtc-direct')

    for (const p of [a, b]) await p.page.evaluate((t) => window.client.subscribe(t), topic)
    // The node relays between the pages once it knows both are subscribed.
    await node.waitSubscribed(topic, [idA, idB])
    await publishFromPage(a.page, topic, 'hello from a')
    const atB = await waitFor('b to receive a\'s message', async () =>
      (await received(b.page)).find((m) => m.message.topic === topic))
    assert.equal(decode(atB.payload), 'hello from a')
    assert.equal(atB.message.sender, idA)
    assert.equal(atB.message.from, idA)

    await publishFromPage(b.page, topic, 'hello from b')
    const atA = await waitFor('a to receive b\'s message', async () =>
      (await received(a.page)).find((m) => m.message.topic === topic))
    assert.equal(decode(atA.payload), 'hello from b')
    assert.equal(atA.message.sender, idB)

    node.type(`subscribe ${topic}`)
    await waitFor('the node to publish', async () => {
      const since = Date.now()
      node.type(`publish ${topic} hello from the node`)
      const answer = await node.waitLine('publish answer', (l) => l.startsWith('published to') || l.startsWith('error:'), since)
      return answer.text.startsWith('published to')
    })
    for (const p of [a, b]) {
      const m = await waitFor('the node\'s message', async () =>
        (await received(p.page)).find((m) => m.message.sender === node.peerId))
      assert.equal(m.message.content, 'hello from the node')
    }
    assertNoPageErrors(assert, a, b)
    await a.context.close()
    await b.context.close()
  })
}

test('a message the node publishes reaches a WebRTC-direct page within 1 s of subscribing', async (t) => {
  const topic = 'fast-lane'
  node.type(`subscribe ${topic}`)
  const p = await openPage(browser, node)
  await startClient(p.page, node.webrtc, { name: 'fast' })
  const subscribedAt = await p.page.evaluate(async (t) => {
    await window.client.subscribe(t)
    return Date.now()
  }, topic)
  // The node publishes as soon as it knows of the subscription.
  await waitFor('the node to publish', async () => {
    const since = Date.now()
    node.type(`publish ${topic} quick`)
    const answer = await node.waitLine('publish answer', (l) => l.startsWith('published to') || l.startsWith('error:'), since)
    return answer.text.startsWith('published to')
  }, 5_000)
  const m = await waitFor('the page to receive it', async () =>
    (await received(p.page)).find((m) => m.message.topic === topic), 5_000)
  const latency = m.at - subscribedAt
  t.diagnostic(`received ${latency} ms after subscribing`)
  assert.ok(latency < 1000, `received ${latency} ms after subscribing`)
  assertNoPageErrors(assert, p)
  await p.context.close()
})

for (const kind of ['ws', 'webrtc']) {
  test(`a direct message goes page to page through the relay circuit (${kind}), acknowledged`, async () => {
    const a = await openPage(browser, node)
    const b = await openPage(browser, node)
    const idA = await startClient(a.page, node[kind], { name: 'a' })
    const idB = await startClient(b.page, node[kind], { name: 'b' })
    for (const p of [a, b]) {
      await waitFor('a relay reservation', async () =>
        (await p.page.evaluate(() => window.client.status())).relay_addrs.length > 0)
    }
    const relayAddr = (await b.page.evaluate(() => window.client.status())).relay_addrs[0]
    assert.match(relayAddr, new RegExp(`/p2p-circuit/p2p/${idB}$`))

    const outcome = await a.page.evaluate((to) =>
      window.client.send_direct(to, new TextEncoder().encode('psst, b')), idB)
    assert.equal(outcome.delivered, true)
    assert.equal(outcome.encrypted, true)
    assert.ok(outcome.rtt_ms > 0)
    const m = await waitFor('b to receive the direct message', async () =>
      (await received(b.page)).find((m) => m.message.id === outcome.id))
    assert.equal(m.message.topic, null)
    assert.equal(m.message.sender, idA)
    assert.equal(decode(m.payload), 'psst, b')
    // End-to-end: the relay carried ciphertext it cannot open.
    assert.equal(m.message.encrypted, true)
    assert.equal(m.message.kem_level, 3)
    const sessions = (await a.page.evaluate(() => window.client.status())).sessions
    assert.ok(sessions.some((s) => s.peer_id === idB && s.kem_level === 3), JSON.stringify(sessions))

    // send_message with a node ID as `to` is direct too, and it goes both ways.
    const back = await b.page.evaluate(async (to) => {
      const { create_neural_message } = window.infermesh
      const msg = create_neural_message('Response', 'agent-b', to, 7, 30)
      return window.client.send_message(msg, new Uint8Array([9, 9]))
    }, idA)
    assert.equal(back.delivered, true)
    const reply = await waitFor('a to receive the reply', async () =>
      (await received(a.page)).find((m) => m.message.id === back.id))
    assert.equal(reply.message.msg_type, 'Response')
    assert.equal(reply.message.from, 'agent-b')
    assert.deepEqual(reply.payload, [9, 9])

    // Both ends see the connection as relayed (the dialer and the listener).
    const peers = await a.page.evaluate(() => window.client.peers())
    assert.equal(peers.find((p) => p.peer_id === idB)?.transport, 'relay')
    const peersOfB = await b.page.evaluate(() => window.client.peers())
    assert.equal(peersOfB.find((p) => p.peer_id === idA)?.transport, 'relay')
    assertNoPageErrors(assert, a, b)
    await a.context.close()
    await b.context.close()
  })
}

test('the node drops a WebRTC-direct page that closed within 10 s', async (t) => {
  const p = await openPage(browser, node)
  const id = await startClient(p.page, node.webrtc, { name: 'leaving' })
  await node.waitLine('the node to see the page', (l) => l === `connected ${id}`)
  const closedAt = Date.now()
  await p.context.close()
  const gone = await node.waitLine('the node to drop the page', (l) => l === `disconnected ${id}`, closedAt, 12_000)
  t.diagnostic(`dropped after ${gone.at - closedAt} ms`)
  assert.ok(gone.at - closedAt < 10_000, `dropped after ${gone.at - closedAt} ms`)
})
