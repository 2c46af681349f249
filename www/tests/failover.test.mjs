// A relay dies while pages use it: they carry on through another. Two
// native nodes relay for two pages; the first is killed (SIGKILL) while
// the pages talk through it, and their direct messages go through the
// second from then on.

import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startNode, launchBrowser, openPage, startClient, received, waitFor, assertNoPageErrors, decode } from './lib.mjs'

let first, second, browser
before(async () => {
  first = await startNode()
  second = await startNode({ extra: ['--bootstrap', `${first.ws}`] })
  browser = await launchBrowser()
})
after(async () => {
  await browser?.close()
  await first?.stop()
  await second?.stop()
})

async function relayAddrs (p) {
  return (await p.page.evaluate(() => window.client.status())).relay_addrs
}

test('pages fail over to another relay when theirs dies', async (t) => {
  const a = await openPage(browser, second)
  const b = await openPage(browser, second)
  const idA = await startClient(a.page, first.ws, { name: 'a', options: { bootstrap_peers: [first.ws, second.ws] } })
  const idB = await startClient(b.page, first.ws, { name: 'b', options: { bootstrap_peers: [first.ws, second.ws] } })
  for (const p of [a, b]) {
    await waitFor('reservations on both relays', async () => {
      const addrs = await relayAddrs(p)
      return [first, second].every((r) => addrs.some((x) => x.includes(`/p2p/${r.peerId}/p2p-circuit`)))
    }, 30_000)
  }
  const send = (text) => a.page.evaluate(({ to, text }) =>
    window.client.send_direct(to, new TextEncoder().encode(text)), { to: idB, text })
  const before = await send('before')
  assert.equal(before.delivered, true)

  await first.kill()
  const killedAt = Date.now()
  t.diagnostic(`killed relay ${first.peerId}`)
  // Sends made while the pages find out are refused with a clear error or
  // delivered; once they have failed over, every message goes through.
  const after = await waitFor('a direct message to get through the other relay', async () => {
    try {
      const outcome = await send(`after ${Date.now()}`)
      return outcome.delivered ? outcome : null
    } catch (e) {
      return null
    }
  }, 45_000)
  t.diagnostic(`failed over in ${Date.now() - killedAt} ms`)
  const m = await waitFor('b to receive it', async () =>
    (await received(b.page)).find((m) => m.message.id === after.id))
  assert.ok(decode(m.payload).startsWith('after'))
  for (let i = 0; i < 5; i++) {
    const outcome = await send(`steady ${i}`)
    assert.equal(outcome.delivered, true, `message ${i} after the failover`)
  }
  await waitFor('the dead relay to leave the pages\' addresses', async () => {
    const addrs = await relayAddrs(b)
    return addrs.length > 0 && addrs.every((x) => !x.includes(first.peerId))
  }, 30_000)
  // The pages keep redialling their dead bootstrap relay: the browser logs
  // each refused WebSocket. Nothing else may be reported.
  const deadPort = new URL(`http://${first.ws.split('/')[2]}:${first.ws.split('/')[4]}`).port
  for (const p of [a, b]) {
    p.errors = p.errors.filter((e) => !(e.includes('ERR_CONNECTION_REFUSED') && e.includes(`:${deadPort}/`)))
  }
  assertNoPageErrors(assert, a, b)
  await a.context.close()
  await b.context.close()
})
