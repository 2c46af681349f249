// Pooled compute with a real page: two native nodes and a Chromium tab in
// one private network share an embeddings job (each takes chunks), with
// results equal to a single-node run; the tab's model runs in Web Workers
// from the package's separate compute module, its files checked by SHA-256
// and kept in the Cache Storage (a reload reads them from there); a
// tampered model file is refused.

import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { writeFileSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { startNode, launchBrowser, openPage, startClient, waitFor, assertNoPageErrors, cli } from './lib.mjs'

const COMPUTE = ['--compute', '--compute-threads', '1']

let a, b, browser, token
before(async () => {
  a = await startNode({ extra: COMPUTE })
  b = await startNode({ extra: [...COMPUTE, '--bootstrap', a.ws] })
  browser = await launchBrowser()
  assert.match(await cli(a, 'network', 'create', 'lab'), /created network lab/)
  token = (await cli(a, 'network', 'invite', '--uses', '3')).trim()
  assert.match(token, /^imnet1\./)
  assert.match(await cli(b, 'network', 'join', token), /joined network lab/)
})
after(async () => {
  await browser?.close()
  await b?.stop()
  await a?.stop()
})

/** `"… chunks by worker: A: 4, B: 5; …"` → `{ A: 4, B: 5 }`. */
function spread (summary) {
  const list = summary.split('chunks by worker: ')[1].split(';')[0]
  return Object.fromEntries(list.split(', ').map((w) => { const [id, n] = w.split(': '); return [id, Number(n)] }))
}

function lines (n) {
  const words = ['the', 'quick', 'brown', 'fox', 'mesh', 'peer', 'compute', 'browser', 'tab', 'worker', 'job',
    'vector', 'private', 'network', 'embedding', 'über', 'café', '网络', '🚀', 'sentence']
  let state = 7
  const next = () => { state = (state * 1103515245 + 12345) % 2147483648; return state >> 8 }
  return Array.from({ length: n }, (_, i) =>
    `${i}: ${Array.from({ length: 3 + next() % 18 }, () => words[next() % words.length]).join(' ')}`)
}

function readOut (file) {
  return readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l))
}

function cosine (x, y) {
  let dot = 0; let nx = 0; let ny = 0
  for (let i = 0; i < x.length; i++) { dot += x[i] * y[i]; nx += x[i] * x[i]; ny += y[i] * y[i] }
  return dot / Math.sqrt(nx * ny)
}

async function workerCount (node, network) {
  return (await cli(node, 'workers', ...(network ? ['--network', network] : []))).split('\n')
    .filter((l) => l.startsWith('12D3KooW')).length
}

test('two native nodes and a tab share a 500-line job; results equal a single-node run', async () => {
  const p = await openPage(browser, a)
  const pageId = await startClient(p.page, a.ws, { name: 'compute' })
  const joined = await p.page.evaluate((token) => window.client.network_join(token), token)
  assert.equal(joined.name, 'lab')
  const offered = await p.page.evaluate(() => window.client.offer_compute({ threads: 1 }))
  assert.equal(offered.kind, 'browser')
  assert.equal(offered.threads, 1)
  assert.deepEqual(offered.models, ['all-MiniLM-L6-v2'])
  assert.equal(offered.cached, false, 'first visit: fetched from the node')
  await waitFor('three workers seen by A, B and the tab', async () =>
    (await workerCount(a)) === 3 && (await workerCount(b)) === 3 &&
    (await p.page.evaluate(() => window.client.workers())).length === 3, 20_000)

  // The page's main thread keeps ticking while its worker computes.
  await p.page.evaluate(() => {
    window.gaps = []
    let last = performance.now()
    window.ticker = setInterval(() => { const now = performance.now(); window.gaps.push(now - last); last = now }, 20)
  })
  const texts = lines(500)
  const input = join(a.dataDir, 'texts.txt')
  writeFileSync(input, texts.join('\n'))
  const pooled = join(a.dataDir, 'pooled.jsonl')
  const said = await cli(a, 'embed', '--file', input, '--out', pooled)
  const worst = await p.page.evaluate(() => { clearInterval(window.ticker); return Math.max(...window.gaps) })
  const workers = spread(said)
  console.log(`# pooled: ${said.trim()}; page main thread's longest gap ${worst.toFixed(0)} ms`)
  for (const [who, id] of [['A', a.peerId], ['B', b.peerId], ['the tab', pageId]]) {
    assert.ok(workers[id] > 0, `${who} took no chunk: ${said}`)
  }
  assert.ok(worst < 1000, `the page's main thread stalled for ${worst.toFixed(0)} ms`)

  // The same file on A alone (a network of its own): equal, input by input.
  await cli(a, 'network', 'create', 'solo')
  const solo = join(a.dataDir, 'solo.jsonl')
  const alone = await cli(a, 'embed', '--file', input, '--out', solo, '--network', 'solo')
  assert.deepEqual(Object.keys(spread(alone)), [a.peerId])
  console.log(`# single node: ${alone.trim()}`)
  const got = readOut(pooled)
  const want = readOut(solo)
  assert.equal(got.length, 500)
  let lowest = 1
  for (let i = 0; i < 500; i++) {
    assert.equal(got[i].index, i)
    assert.equal(got[i].text, texts[i])
    lowest = Math.min(lowest, cosine(got[i].embedding, want[i].embedding))
  }
  assert.ok(lowest >= 0.9999, `lowest cosine to the single-node run: ${lowest}`)

  // The tab asks too: embed() with progress events, the same vectors.
  const asked = await p.page.evaluate(async (texts) => {
    const progress = []
    window.client.on_progress((p) => progress.push(p))
    const vectors = await window.client.embed(texts, { network: 'lab' })
    return { progress, vectors: vectors.map((v) => [v.constructor.name, Array.from(v)]) }
  }, texts.slice(0, 120))
  assert.equal(asked.vectors.length, 120)
  for (let i = 0; i < 120; i++) {
    assert.equal(asked.vectors[i][0], 'Float32Array')
    assert.equal(asked.vectors[i][1].length, 384)
    assert.ok(cosine(asked.vectors[i][1], want[i].embedding) >= 0.9999, `text ${i}`)
  }
  assert.ok(asked.progress.length >= 1, 'progress events')
  const last = asked.progress.at(-1)
  assert.equal(last.done, 120)
  assert.equal(last.total, 120)
  for (let i = 1; i < asked.progress.length; i++) assert.ok(asked.progress[i].done >= asked.progress[i - 1].done)
  const jobs = await p.page.evaluate(() => window.client.jobs())
  assert.equal(jobs.at(-1).state, 'done')

  // The tab paid A and B for their chunks: receipts it countersigned.
  const credits = await p.page.evaluate(() => window.client.credits({ network: 'lab' }))
  const mine = credits.balances[0]
  assert.equal(credits.me, pageId)
  assert.equal(mine.person, pageId)
  assert.ok(mine.spent > 0, `the tab spent credits: ${JSON.stringify(credits)}`)
  assert.equal(mine.available, credits.grant + mine.earned - mine.spent)
  assert.ok(credits.receipts.some((r) => r.requester === pageId && r.credits > 0), JSON.stringify(credits.receipts))

  // Bad input from the page: clear errors.
  const refused = await p.page.evaluate(async () => {
    const errors = []
    for (const [texts, options] of [[[], {}], [['x'.repeat(1 << 20)], {}], [['hi'], { model: 'gpt-embed-9' }],
      [['hi'], { network: 'elsewhere' }], ['not a list', {}], [['hi'], { netwrok: 'lab' }]]) {
      try { await window.client.embed(texts, options); errors.push(null) } catch (e) { errors.push(e.message) }
    }
    return errors
  })
  const expected = ['no inputs', 'input 0 is 1048576 bytes', "unknown model 'gpt-embed-9'", "no network 'elsewhere'",
    'array of strings', 'unknown option `netwrok`']
  expected.forEach((want, i) => assert.ok(refused[i]?.includes(want), `${want}: ${refused[i]}`))

  // Stopping: the tab leaves the workers within seconds.
  await p.page.evaluate(() => window.client.stop_compute())
  await waitFor('the tab gone from A\'s workers', async () => (await workerCount(a, 'lab')) === 2, 15_000)
  assertNoPageErrors(assert, p)
  await p.page.evaluate(() => window.client.close())
  await p.context.close()
})

test('a reload reads the model from the Cache Storage; a tampered model file is refused', async () => {
  const context = await browser.newContext()
  const first = await openPage(browser, a, '/tests/harness.html', context)
  await startClient(first.page, a.ws, { name: 'cache' })
  await first.page.evaluate((token) => window.client.network_join(token), token)
  const cold = await first.page.evaluate(() => window.client.offer_compute({ threads: 1 }))
  assert.equal(cold.cached, false)
  await first.page.reload()
  await first.page.waitForFunction(() => window.harnessReady === true)
  await startClient(first.page, a.ws, { name: 'cache' })
  const warm = await first.page.evaluate(() => window.client.offer_compute({ threads: 1 }))
  assert.equal(warm.cached, true, 'read from the Cache Storage')
  console.log(`# model load in a tab: ${cold.load_ms.toFixed(0)} ms from the node, ${warm.load_ms.toFixed(0)} ms from the Cache Storage`)
  const networks = await first.page.evaluate(() => window.client.networks())
  assert.deepEqual(networks.map((n) => n.name), ['lab'], 'still a member after the reload')
  await first.page.evaluate(() => window.client.close())
  await context.close()

  // A fresh browser profile whose tokenizer.json is altered in transit.
  const other = await browser.newContext()
  await other.route('**/models/all-MiniLM-L6-v2/tokenizer.json', async (route) => {
    const response = await route.fetch()
    const body = Buffer.from(await response.body())
    body[100] ^= 1
    await route.fulfill({ response, body })
  })
  const bad = await openPage(browser, a, '/tests/harness.html', other)
  await startClient(bad.page, a.ws, { name: 'tampered' })
  const error = await bad.page.evaluate(() => window.client.offer_compute({ threads: 1 }).then(() => null, (e) => e.message))
  assert.match(error ?? '', /tokenizer\.json has SHA-256 [0-9a-f]{64}, expected [0-9a-f]{64}: refused/)
  const cached = await bad.page.evaluate(async () => {
    const cache = await caches.open('infermesh-models-v1')
    return (await cache.keys()).map((r) => r.url).filter((u) => u.includes('tokenizer.json'))
  })
  assert.deepEqual(cached, [], 'nothing tampered is kept')
  await bad.page.evaluate(() => window.client.close())
  await other.close()
})
