// The JavaScript API as a web app uses it: the seed snippet verbatim, the
// identity kept across reloads and imported from a private key, and bad
// calls rejected with clear errors while the page keeps working.

import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { generateKeyPairFromSeed } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import {
  startNode, launchBrowser, openPage, startClient, publishFromPage, received, waitFor,
  assertNoPageErrors, ROOT, WWW
} from './lib.mjs'

let node, browser
before(async () => {
  node = await startNode()
  browser = await launchBrowser()
})
after(async () => {
  await browser?.close()
  await node?.stop()
})

/** The seed snippet: the first ```js block of the README's section on web apps. */
function seedSnippet () {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
  const section = readme.slice(readme.indexOf('## Use it from a web app'))
  return section.slice(section.indexOf('```js\n') + 6, section.indexOf('```', section.indexOf('```js\n') + 6))
}

test('the seed snippet runs verbatim and its message reaches another page\'s handler', async () => {
  const snippet = seedSnippet()
  assert.ok(snippet.includes("new WasmP2PClient('node-123')"), 'found the snippet in the README')
  const page = readFileSync(join(WWW, 'tests', 'seed.html'), 'utf8')
  assert.ok(page.includes(snippet), 'seed.html carries the snippet verbatim')

  // Page B is agent-2: it listens on the topic the snippet sends to.
  const b = await openPage(browser, node)
  const idB = await startClient(b.page, node.ws, { name: 'agent-2' })
  await b.page.evaluate(() => window.client.subscribe('agent-2'))
  await node.waitSubscribed('agent-2', [idB])

  for (const kind of ['ws', 'webrtc']) {
    const context = await browser.newContext()
    const seed = await context.newPage()
    const errors = []
    seed.on('pageerror', (e) => errors.push(e.message))
    await seed.goto(`${node.api}/tests/seed.html?addr=${encodeURIComponent(node[kind])}`)
    const done = await waitFor('the snippet to finish', () => seed.evaluate(() => window.seed ?? window.seedError))
    assert.equal(typeof done, 'object', `the snippet failed: ${done}`)

    const m = await waitFor('agent-2 to receive the snippet\'s message', async () =>
      (await received(b.page)).find((m) => m.message.id === done.msgId))
    assert.equal(m.message.msg_type, 'Thought')
    assert.equal(m.message.from, 'agent-1')
    assert.equal(m.message.to, 'agent-2')
    assert.equal(m.message.priority, 5)
    assert.equal(m.message.ttl, 60)
    assert.equal(m.message.topic, 'agent-2')
    assert.equal(m.message.sender, done.peerId)
    assert.deepEqual(m.payload, [1, 2, 3, 4])

    assert.deepEqual(errors, [], `no errors on the seed page (${kind})`)
    await context.close()
  }
  assertNoPageErrors(assert, b)
  await b.context.close()
})

test('a reload keeps the node ID; a private key import gives the expected node ID', async () => {
  const a = await openPage(browser, node)
  const first = await startClient(a.page, node.ws, { name: 'keeper' })
  const key = await a.page.evaluate(() => window.client.export_private_key())
  assert.match(key, /^[0-9a-f]{64}$/)

  // Same browser profile (IndexedDB), page reloaded: same identity.
  await a.page.reload()
  await a.page.waitForFunction(() => window.harnessReady === true)
  const again = await startClient(a.page, node.ws, { name: 'keeper' })
  assert.equal(again, first)
  // Another client name in the same profile is another identity.
  const other = await a.page.evaluate(async () => {
    const c = new window.infermesh.WasmP2PClient('someone-else')
    const id = await c.initialize({})
    await c.close()
    return id
  })
  assert.notEqual(other, first)

  // The key is the Ed25519 seed: js-libp2p derives the same node ID from it.
  const expected = peerIdFromPrivateKey(await generateKeyPairFromSeed('Ed25519', Buffer.from(key, 'hex')))
  assert.equal(first, expected.toString())

  // A fresh browser (empty IndexedDB) importing the key is the same node.
  const b = await openPage(browser, node)
  const imported = await startClient(b.page, node.webrtc, { name: 'laptop', options: { private_key: key } })
  assert.equal(imported, first)
  assert.equal(await b.page.evaluate(() => window.client.peer_id()), first)
  assert.equal(await b.page.evaluate(() => window.client.export_private_key()), key)

  // A key js-libp2p made is accepted too.
  const seed = Uint8Array.from({ length: 32 }, (_, i) => (i * 7 + 3) & 0xff)
  const jsPeer = peerIdFromPrivateKey(await generateKeyPairFromSeed('Ed25519', seed))
  const c = await openPage(browser, node)
  const fromJs = await startClient(c.page, null, {
    name: 'js', options: { private_key: Buffer.from(seed).toString('hex') }
  })
  assert.equal(fromJs, jsPeer.toString())

  assertNoPageErrors(assert, a, b, c)
  for (const p of [a, b, c]) await p.context.close()
})

test('bad calls reject with clear errors and the page keeps working', async () => {
  const p = await openPage(browser, node)
  const outcomes = await p.page.evaluate(async () => {
    const { WasmP2PClient, create_neural_message } = window.infermesh
    const rejection = async (what, fn) => {
      try {
        await fn()
        return { what, ok: true }
      } catch (e) {
        return { what, isError: e instanceof Error, message: e.message }
      }
    }
    const early = new WasmP2PClient('early')
    return [
      await rejection('not initialized', () => early.publish('t', new Uint8Array([1]))),
      await rejection('not initialized (sync)', () => early.peer_id()),
      await rejection('bad bootstrap', () => new WasmP2PClient('x').initialize({ bootstrap_peers: ['nonsense'] })),
      await rejection('bad option', () => new WasmP2PClient('y').initialize({ bootstrap_pears: [] })),
      await rejection('bad private key', () => new WasmP2PClient('z').initialize({ private_key: 'abc' })),
      await rejection('unknown msg type', () => create_neural_message('Not A Type!', 'a', 'b', 5, 60)),
      await rejection('bad priority', () => create_neural_message('Thought', 'a', 'b', 11, 60))
    ]
  })
  const expect = {
    'not initialized': /not initialized/,
    'not initialized (sync)': /not initialized/,
    'bad bootstrap': /invalid multiaddr 'nonsense'/,
    'bad option': /invalid initialize\(\) options: .*bootstrap_pears/,
    'bad private key': /invalid private_key/,
    'unknown msg type': /invalid message type "Not A Type!"/,
    'bad priority': /priority must be 0-10/
  }
  for (const o of outcomes) {
    assert.equal(o.isError, true, `${o.what}: rejects with an Error (${JSON.stringify(o)})`)
    assert.match(o.message, expect[o.what], o.what)
  }

  // Once running: bad arguments to every call that takes one.
  const id = await startClient(p.page, node.ws, { name: 'careful' })
  const running = await p.page.evaluate(async () => {
    const { create_neural_message } = window.infermesh
    const client = window.client
    const rejection = async (what, fn) => {
      try {
        await fn()
        return { what, ok: true }
      } catch (e) {
        return { what, isError: e instanceof Error, message: e.message }
      }
    }
    const msg = create_neural_message('Thought', 'me', 'somewhere', 5, 60)
    return [
      await rejection('connect bad multiaddr', () => client.connect('/ip4/127.0.0.1/tcp/notaport')),
      await rejection('payload not bytes', () => client.send_message(msg, 'hello')),
      await rejection('publish array', () => client.publish('t', [1, 2, 3])),
      await rejection('oversize', () => client.publish('t', new Uint8Array(2 * 1024 * 1024))),
      await rejection('not a node id', () => client.send_direct('bob', new Uint8Array([1]))),
      await rejection('unknown peer', () => client.send_direct('12D3KooWGRUVh7UgHZDbXPXdTT5GhJYEAtgAfcMUUr1bZAVQn9Sm', new Uint8Array([1]))),
      await rejection('message not an object', () => client.send_message('Thought', new Uint8Array([1]))),
      await rejection('handler not a function', () => client.set_message_handler(42)),
      await rejection('initialize twice', () => client.initialize({}))
    ]
  })
  const expectRunning = {
    'connect bad multiaddr': /invalid multiaddr '\/ip4\/127\.0\.0\.1\/tcp\/notaport'/,
    'payload not bytes': /payload must be a Uint8Array, got string/,
    'publish array': /payload must be a Uint8Array, got object/,
    oversize: /invalid message: oversize: message is \d+ bytes encoded, limit 1048576/,
    'not a node id': /'bob' is not a node ID/,
    'unknown peer': /12D3KooWGRUVh7UgHZDbXPXdTT5GhJYEAtgAfcMUUr1bZAVQn9Sm/,
    'message not an object': /message must be an object/,
    'handler not a function': /must be a function/,
    'initialize twice': /already initialized/
  }
  for (const o of running) {
    assert.equal(o.isError, true, `${o.what}: rejects with an Error (${JSON.stringify(o)})`)
    assert.match(o.message, expectRunning[o.what], o.what)
  }

  // The page still works: it is connected and a message gets through.
  const status = await p.page.evaluate(() => window.client.status())
  assert.equal(status.state, 'connected')
  const q = await openPage(browser, node)
  const idQ = await startClient(q.page, node.ws, { name: 'listener' })
  await q.page.evaluate(() => window.client.subscribe('after-errors'))
  await node.waitSubscribed('after-errors', [idQ])
  await publishFromPage(p.page, 'after-errors', 'still here')
  const m = await waitFor('the message after the errors', async () =>
    (await received(q.page)).find((m) => m.message.topic === 'after-errors'))
  assert.equal(m.message.sender, id)
  assertNoPageErrors(assert, p, q)
  await p.context.close()
  await q.context.close()
})
