// A Web Worker of InferMesh's pooled compute (shipped as compute/worker.js):
// loads the compute module and the model files (from the Cache Storage
// when a previous visit kept them, else from the node that serves the
// page), checks each file's SHA-256 before keeping it, and embeds the
// texts it is given.
import init, { Embedder, modelFiles, modelName } from './infermesh_compute_web.js'

const CACHE = 'infermesh-models-v1'
let embedder = null

function hex (buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, '0')).join('')
}

async function openCache () {
  try { return await caches.open(CACHE) } catch { return null }
}

/** One model file: `{ bytes, cached }`, its SHA-256 checked. */
async function file (base, { name, sha256 }, fresh) {
  const url = new URL(`${modelName()}/${name}`, base).href
  // Keyed by content: another model version never reads this one.
  const key = `${url}?sha256=${sha256}`
  const cache = await openCache()
  if (cache && !fresh) {
    const hit = await cache.match(key)
    if (hit) return { bytes: new Uint8Array(await hit.arrayBuffer()), cached: true }
  }
  const response = await fetch(url, { cache: 'no-store' })
  if (!response.ok) throw new Error(`cannot fetch ${url}: HTTP ${response.status}`)
  const bytes = new Uint8Array(await response.arrayBuffer())
  const got = hex(await crypto.subtle.digest('SHA-256', bytes))
  if (got !== sha256) throw new Error(`${url} has SHA-256 ${got}, expected ${sha256}: refused`)
  if (cache) await cache.put(key, new Response(bytes))
  return { bytes, cached: false }
}

async function load (base, fresh) {
  const [weights, tokenizer, config] = await Promise.all(modelFiles().map((f) => file(base, f, fresh)))
  // The compute module checks the hashes again before it uses the bytes.
  embedder = new Embedder(weights.bytes, tokenizer.bytes, config.bytes)
  return weights.cached && tokenizer.cached && config.cached
}

self.onmessage = async (event) => {
  const msg = event.data
  if (msg.type === 'start') {
    try {
      await init()
      let cached
      try {
        cached = await load(msg.modelBase, false)
      } catch (e) {
        // A damaged cache: fetch everything again, once.
        cached = await load(msg.modelBase, true)
      }
      self.postMessage({ type: 'ready', cached })
    } catch (e) {
      self.postMessage({ type: 'error', error: String(e?.message ?? e) })
    }
  } else if (msg.type === 'run') {
    try {
      const out = embedder.embed(msg.inputs)
      const vectors = out.vectors
      const tokens = out.tokens
      out.free()
      self.postMessage({ type: 'done', id: msg.id, vectors, tokens }, [vectors.buffer])
    } catch (e) {
      self.postMessage({ type: 'failed', id: msg.id, error: String(e?.message ?? e) })
    }
  }
}
