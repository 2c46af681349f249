// Browser benchmark: the npm package in Debian's Chromium against the real
// `infermesh` binary on loopback. Prints figures; asserts nothing.
//
//   wasm size (raw, gzip)
//   page load → connected (WebSocket, WebRTC-direct)
//   page → node → page gossip latency p50/p99 (WebSocket, WebRTC-direct)
//   page → page direct message round trip through the node's relay circuit
//   state: signed writes per second in a page (sign, merge, IndexedDB), and
//   entries per second a page ingests when it catches up on a namespace the
//   node replicates (fetch, decode, batch-verify, merge)
//
// Usage: INFERMESH_BIN=target/release/infermesh node scripts/bench/browser.mjs

import { readFileSync } from 'node:fs'
import { gzipSync } from 'node:zlib'
import { join } from 'node:path'
import { startNode, launchBrowser, openPage, startClient, waitFor, ROOT } from '../../www/tests/lib.mjs'

const LOADS = Number(process.env.BENCH_LOADS ?? 9)
const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 300)
const ROUND_TRIPS = Number(process.env.BENCH_ROUND_TRIPS ?? 100)
const WARMUP = Number(process.env.BENCH_WARMUP ?? 200)
const ENTRIES = Number(process.env.BENCH_ENTRIES ?? 10_000)

const quantile = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]
}
const ms = (x) => `${x.toFixed(2)} ms`
const row = (name, value, target = '') => console.log(`${name.padEnd(46)} ${value.padStart(22)}   ${target}`)

const wasm = readFileSync(join(ROOT, 'wasm', 'pkg', 'infermesh_bg.wasm'))
const js = readFileSync(join(ROOT, 'wasm', 'pkg', 'infermesh.js'))
const gzip = gzipSync(wasm, { level: 9 }).length

const node = await startNode()
const browser = await launchBrowser()
const results = {}

try {
  // ---- page → node → page gossip latency --------------------------------
  for (const kind of ['ws', 'webrtc']) {
    const a = await openPage(browser, node)
    const b = await openPage(browser, node)
    const idA = await startClient(a.page, node[kind], { name: 'sender' })
    const idB = await startClient(b.page, node[kind], { name: 'receiver' })
    const topic = `bench-${kind}`
    await b.page.evaluate((topic) => {
      window.latencies = []
      window.client.set_message_handler((message, payload) => {
        if (message.topic !== topic) return
        const sent = new DataView(payload.buffer, payload.byteOffset).getFloat64(0)
        window.latencies.push(performance.timeOrigin + performance.now() - sent)
      })
      return window.client.subscribe(topic)
    }, topic)
    await a.page.evaluate((t) => window.client.subscribe(t), topic)
    await node.waitSubscribed(topic, [idA, idB])
    // One message every 5 ms; the clock is shared (same machine, same
    // browser), so the receiver computes the one-way time.
    await a.page.evaluate(async ({ topic, count, WARMUP }) => {
      const stamp = () => {
        const bytes = new Uint8Array(64)
        new DataView(bytes.buffer).setFloat64(0, performance.timeOrigin + performance.now())
        return bytes
      }
      // Warm-up at the same rate: the browser compiles the module's hot
      // functions with its optimising tier only after they ran for a while.
      for (let i = 0; i < WARMUP; i++) {
        window.client.publish(topic, stamp())
        await new Promise((resolve) => setTimeout(resolve, 5))
      }
      await new Promise((resolve) => setTimeout(resolve, 300))
      for (let i = 0; i < count; i++) {
        window.client.publish(topic, stamp())
        await new Promise((resolve) => setTimeout(resolve, 5))
      }
    }, { topic, count: MESSAGES, WARMUP })
    await waitFor('the receiver to get every message', async () =>
      (await b.page.evaluate(() => window.latencies.length)) >= MESSAGES + WARMUP, 30_000)
    const lat = (await b.page.evaluate(() => window.latencies)).slice(WARMUP)
    results[`gossip_${kind}`] = { p50: quantile(lat, 0.5), p99: quantile(lat, 0.99), n: lat.length }
    await a.context.close()
    await b.context.close()
  }

  // ---- relayed direct message round trip --------------------------------
  {
    const a = await openPage(browser, node)
    const b = await openPage(browser, node)
    await startClient(a.page, node.ws, { name: 'caller' })
    const idB = await startClient(b.page, node.ws, { name: 'callee' })
    await waitFor('a relay reservation', async () =>
      (await b.page.evaluate(() => window.client.status())).relay_addrs.length > 0)
    const rtts = await a.page.evaluate(async ({ to, count }) => {
      const out = []
      const data = new Uint8Array(64)
      for (let i = 0; i < 5; i++) await window.client.send_direct(to, data)
      for (let i = 0; i < count; i++) {
        const t0 = performance.now()
        await window.client.send_direct(to, data)
        out.push(performance.now() - t0)
      }
      return out
    }, { to: idB, count: ROUND_TRIPS })
    results.relayed = { p50: quantile(rtts, 0.5), p99: quantile(rtts, 0.99), n: rtts.length }
    await a.context.close()
    await b.context.close()
  }
  // ---- state: writes in a page, catch-up ingest in another --------------
  {
    const w = await openPage(browser, node)
    const idW = await startClient(w.page, node.ws, { name: 'writer' })
    const writes = await w.page.evaluate(async (n) => {
      const t0 = performance.now()
      // 500 writes in flight at a time, as an app saving many keys would.
      for (let i = 0; i < n; i += 500) {
        const batch = []
        for (let j = i; j < Math.min(n, i + 500); j++) batch.push(window.client.set(`k${j}`, { n: j, text: 'x'.repeat(40) }))
        await Promise.all(batch)
      }
      return performance.now() - t0
    }, ENTRIES)
    await waitFor('the node to replicate the writer', async () =>
      Object.keys((await node.stateOf(idW)).data).length >= ENTRIES, 120_000)
    await w.context.close()
    const r = await openPage(browser, node)
    await startClient(r.page, node.ws, { name: 'reader' })
    const ingest = await r.page.evaluate(async ({ ns, n }) => {
      let changes = 0
      let done
      const finished = new Promise((resolve) => { done = resolve })
      window.client.on_state_change((change) => {
        if (change.namespace === ns && ++changes === n) done(performance.now())
      })
      const t0 = performance.now()
      await window.client.get('k0', { namespace: ns })
      const timeout = new Promise((resolve, reject) =>
        setTimeout(() => reject(new Error(`only ${changes} of ${n} entries after 120 s`)), 120_000))
      return (await Promise.race([finished, timeout])) - t0
    }, { ns: idW, n: ENTRIES })
    results.state = { writes: ENTRIES / (writes / 1000), ingest: ENTRIES / (ingest / 1000) }
    await r.context.close()
  }

  // ---- page load → connected ------------------------------------------
  // Last: WebRTC-direct pages that closed linger on the node until its
  // liveness check drops them (up to ~7 s); meanwhile its other connections
  // can slow down, which would skew the latency figures above.
  for (const kind of ['ws', 'webrtc']) {
    const total = []
    const wasmInit = []
    for (let i = 0; i < LOADS; i++) {
      const context = await browser.newContext()
      const page = await context.newPage()
      await page.goto(`${node.api}/tests/harness.html`)
      await page.waitForFunction(() => window.harnessReady === true)
      // Everything from the navigation's start: HTML, module, wasm fetch and
      // compile, identity (IndexedDB), dial, security handshake, join.
      const t = await page.evaluate(async (addr) => {
        const ready = performance.now()
        const client = new window.infermesh.WasmP2PClient('bench')
        await client.initialize({ bootstrap_peers: [addr] })
        const connected = performance.now()
        const init = performance.getEntriesByType('resource').find((e) => e.name.endsWith('.wasm'))
        return { connected, ready, wasm: init ? init.responseEnd : null }
      }, node[kind])
      total.push(t.connected)
      wasmInit.push(t.ready)
      await context.close()
    }
    results[`load_${kind}`] = { p50: quantile(total, 0.5), ready: quantile(wasmInit, 0.5) }
  }

} finally {
  await browser.close()
  await node.stop()
}

console.log(`\nInferMesh in Chromium (${LOADS} loads, ${MESSAGES} messages, ${ROUND_TRIPS} round trips per figure)\n`)
row('wasm module, raw', `${(wasm.length / 1024).toFixed(0)} KiB`)
row('wasm module, gzip -9', `${(gzip / 1000).toFixed(0)} KB`, 'target ≤ 800 KB')
row('JS glue, raw', `${(js.length / 1024).toFixed(0)} KiB`)
for (const [kind, name] of [['ws', 'WebSocket'], ['webrtc', 'WebRTC-direct']]) {
  const r = results[`load_${kind}`]
  row(`page load → connected, ${name} (p50)`, ms(r.p50), 'target ≤ 300 ms')
  row(`  of which page + wasm ready (p50)`, ms(r.ready))
}
for (const [kind, name] of [['ws', 'WebSocket'], ['webrtc', 'WebRTC-direct']]) {
  const r = results[`gossip_${kind}`]
  row(`page → node → page, ${name} (p50 / p99)`, `${ms(r.p50)} / ${ms(r.p99)}`, kind === 'ws' ? 'target p50 ≤ 2 ms' : '')
}
row('direct, page → relay → page round trip (p50 / p99)', `${ms(results.relayed.p50)} / ${ms(results.relayed.p99)}`)
row(`state writes in a page (${ENTRIES}, saved in IndexedDB)`, `${results.state.writes.toFixed(0)} /s`)
row(`state entries ingested by a page catching up`, `${results.state.ingest.toFixed(0)} /s`, 'target ≥ 10,000/s')
