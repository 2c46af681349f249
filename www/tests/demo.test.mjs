// The demo page as a person uses it: two browser tabs (one over WebSocket,
// one over WebRTC-direct) open the page the node serves, chat on a topic
// and exchange a direct message. Screenshots go to test-results/.

import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { startNode, launchBrowser, openPage, waitFor, assertNoPageErrors, resultsDir } from './lib.mjs'

let node, browser
before(async () => {
  node = await startNode()
  browser = await launchBrowser()
})
after(async () => {
  await browser?.close()
  await node?.stop()
})

async function openDemo (transport) {
  const tab = await openPage(browser, node, `/?transport=${transport}`)
  await tab.page.setViewportSize({ width: 1280, height: 900 })
  await tab.page.waitForSelector('#state[data-state="connected"]', { timeout: 20_000 })
  tab.id = await tab.page.textContent('#peer-id')
  return tab
}

test('the demo page: chat on a topic and a direct message between two tabs', async () => {
  const a = await openDemo('ws')
  const b = await openDemo('webrtc')
  assert.match(a.id, /^12D3KooW/)
  assert.notEqual(a.id, b.id, 'each tab is its own node')
  assert.match(await a.page.textContent('#state'), /connected · WebSocket/)
  assert.match(await b.page.textContent('#state'), /connected · WebRTC-direct/)

  // Both tabs joined #lobby on start; the node relays between them once it
  // knows both are there.
  await node.waitSubscribed('lobby', [a.id, b.id])
  await a.page.fill('#chat-input', 'hello from tab A')
  await waitFor('the chat line to be sent', async () => {
    await a.page.click('#chat-form button[type=submit]')
    return (await a.page.textContent('#chat')).includes('hello from tab A')
  })
  await b.page.waitForFunction(() => document.querySelector('#chat').textContent.includes('hello from tab A'),
    null, { timeout: 10_000 })

  // The peer lists show the node; B sends A a direct message through the
  // node's relay circuit (A is not directly reachable from B).
  await a.page.waitForFunction(() => document.querySelectorAll('#peers li code').length >= 1, null, { timeout: 10_000 })
  await waitFor('A to hold a relay reservation', async () =>
    (await a.page.textContent('#relay-addr')).includes(`/p2p-circuit/p2p/${a.id}`))
  await b.page.fill('#direct-to', a.id)
  await b.page.fill('#direct-input', 'psst, A')
  await b.page.click('#direct-form button[type=submit]')
  await b.page.waitForFunction(() => document.querySelector('#dms').textContent.includes('delivered'),
    null, { timeout: 15_000 })
  await a.page.waitForFunction(() => document.querySelector('#dms').textContent.includes('psst, A'),
    null, { timeout: 10_000 })
  // Both ends say the message was end-to-end encrypted.
  for (const tab of [a, b]) {
    assert.match(await tab.page.textContent('#dms'), /end-to-end encrypted/)
  }

  // Metrics moved.
  await a.page.waitForFunction(() => Number(document.querySelector('[data-m="messages_in"]').textContent) >= 1)

  const dir = resultsDir()
  await a.page.screenshot({ path: join(dir, 'demo-tab-a.png'), fullPage: true })
  await b.page.screenshot({ path: join(dir, 'demo-tab-b.png'), fullPage: true })
  assert.equal(await a.page.locator('#log li.error').count(), 0, 'no errors in tab A\'s log')
  assert.equal(await b.page.locator('#log li.error').count(), 0, 'no errors in tab B\'s log')
  assertNoPageErrors(assert, a, b)
  await a.context.close()
  await b.context.close()
})

test('the demo page: a network of two tabs, one contributing, searches the chat by meaning', async () => {
  const a = await openDemo('ws')
  const b = await openDemo('ws')
  a.page.on('dialog', (dialog) => dialog.accept('friends'))
  await a.page.click('#net-create')
  await a.page.waitForFunction(() => document.querySelector('#net-name').textContent.startsWith('friends · owner'))
  await a.page.click('#net-invite')
  const token = await waitFor('an invite token', () => a.page.inputValue('#net-invite-token'))
  assert.match(token, /^imnet1\./)
  await b.page.fill('#net-token', token)
  await b.page.click('#net-join-form button[type=submit]')
  await b.page.waitForFunction(() => document.querySelector('#net-name').textContent.startsWith('friends · member'),
    null, { timeout: 15_000 })

  // B contributes its tab; A sees it among the workers.
  await b.page.check('#contribute')
  await b.page.waitForFunction(() => document.querySelector('#contribute-state').textContent.includes('model loaded'),
    null, { timeout: 60_000 })
  await a.page.waitForFunction(() => document.querySelector('#workers').textContent.includes('browser'),
    null, { timeout: 15_000 })

  const lines = ['the build failed again on the CI server', 'let us get pizza for dinner tonight',
    'my cat sleeps in the sun all afternoon', 'the meeting moved to Thursday morning']
  await node.waitSubscribed('lobby', [a.id, b.id])
  for (const line of lines) {
    await a.page.fill('#chat-input', line)
    await a.page.click('#chat-form button[type=submit]')
    await a.page.waitForFunction((line) => document.querySelector('#chat').textContent.includes(line), line)
  }
  // A asks; B's tab computes (A offers no compute of its own).
  await a.page.fill('#search-query', 'what food shall we eat this evening?')
  await a.page.click('#search-form button[type=submit]')
  await a.page.waitForFunction(() => document.querySelectorAll('#search-results li').length === 4, null, { timeout: 60_000 })
  const top = await a.page.textContent('#search-results li:first-child .text')
  assert.equal(top, 'let us get pizza for dinner tonight')
  // A measured B's tab: it ran the chunks.
  await a.page.waitForFunction(() => /[1-9][0-9]* chunk/.test(document.querySelector('#workers').textContent))
  await a.page.screenshot({ path: join(resultsDir(), 'demo-compute.png'), fullPage: true })
  assert.equal(await a.page.locator('#log li.error').count(), 0, 'no errors in tab A\'s log')
  assert.equal(await b.page.locator('#log li.error').count(), 0, 'no errors in tab B\'s log')
  assertNoPageErrors(assert, a, b)
  await a.context.close()
  await b.context.close()
})
