// Pooled compute in a page: Web Workers that each run InferMesh's compute
// module (a wasm file of its own, in the package's `compute/` folder, loaded
// only here), so the model never runs on the page's main thread. The Rust
// side (wasm/src/compute.rs) hands tasks to `run` and the core schedules
// them; this file only starts workers and passes messages.

/** The worker script shipped in the package, next to the compute module. */
export function defaultWorkerUrl () {
  // This file is wasm-bindgen's copy in <package>/snippets/<crate>/js/.
  return new URL('../../../compute/worker.js', import.meta.url).href
}

/** Where the node that served this page offers the model files. */
export function defaultModelBase () {
  return new URL('/models/', self.location.href).href
}

/** Workers to start by default: half the cores, 1 to 4. */
export function defaultThreads () {
  const cores = self.navigator?.hardwareConcurrency || 2
  return Math.max(1, Math.min(4, Math.floor(cores / 2)))
}

/** The memory this device reports, in MiB (0 when it does not say). */
export function deviceMemoryMb () {
  const gb = self.navigator?.deviceMemory
  return typeof gb === 'number' ? Math.round(gb * 1024) : 0
}

export class ComputeWorkers {
  constructor (threads, workerUrl, modelBase) {
    this.threads = threads
    // Relative URLs are the page's: the workers resolve them against their own.
    this.workerUrl = new URL(workerUrl, self.location.href).href
    this.modelBase = new URL(modelBase, self.location.href).href
    this.workers = []
    this.idle = []
    this.waiting = []
    this.pending = new Map()
    this.nextId = 1
    this.stopped = false
  }

  /** Starts the workers; resolves with `{ load_ms, cached }` once every one has the model. */
  async start () {
    const started = performance.now()
    const ready = []
    for (let i = 0; i < this.threads; i++) {
      const worker = new Worker(this.workerUrl, { type: 'module', name: `infermesh-compute-${i}` })
      this.workers.push(worker)
      ready.push(new Promise((resolve, reject) => {
        worker.onmessage = (event) => {
          const msg = event.data
          if (msg.type === 'ready') {
            worker.onmessage = (e) => this.#answer(worker, e.data)
            worker.onerror = (e) => this.#failed(worker, e.message || 'the compute worker failed')
            resolve(msg)
          } else if (msg.type === 'error') {
            reject(new Error(msg.error))
          }
        }
        worker.onerror = (e) => reject(new Error(e.message || `cannot start the compute worker ${this.workerUrl}`))
      }))
      worker.postMessage({ type: 'start', modelBase: this.modelBase })
    }
    let loaded
    try {
      loaded = await Promise.all(ready)
    } catch (e) {
      this.stop()
      throw e
    }
    this.idle = [...this.workers]
    return { load_ms: performance.now() - started, cached: loaded.every((l) => l.cached) }
  }

  /** Embeds `inputs` on the next free worker: `{ vectors: Float32Array, tokens }`. */
  run (inputs) {
    if (this.stopped) return Promise.reject(new Error('compute has stopped'))
    if (this.workers.length === 0) return Promise.reject(new Error('no compute worker is running'))
    return new Promise((resolve, reject) => {
      this.waiting.push({ inputs, resolve, reject })
      this.#next()
    })
  }

  #next () {
    while (this.idle.length > 0 && this.waiting.length > 0) {
      const worker = this.idle.pop()
      const task = this.waiting.shift()
      const id = this.nextId++
      this.pending.set(id, { worker, ...task })
      worker.postMessage({ type: 'run', id, inputs: task.inputs })
    }
  }

  #answer (worker, msg) {
    const task = this.pending.get(msg.id)
    if (!task) return
    this.pending.delete(msg.id)
    this.idle.push(worker)
    if (msg.type === 'done') task.resolve({ vectors: msg.vectors, tokens: msg.tokens })
    else task.reject(new Error(msg.error))
    this.#next()
  }

  #failed (worker, error) {
    // A worker that failed takes no more tasks.
    this.workers = this.workers.filter((w) => w !== worker)
    this.idle = this.idle.filter((w) => w !== worker)
    worker.terminate()
    for (const [id, task] of this.pending) {
      if (task.worker === worker) {
        this.pending.delete(id)
        task.reject(new Error(error))
      }
    }
    if (this.workers.length === 0) {
      // None left: what waits would wait forever.
      for (const task of this.waiting) task.reject(new Error(`every compute worker failed: ${error}`))
      this.waiting = []
    }
  }

  /** Terminates the workers; tasks not answered fail. */
  stop () {
    this.stopped = true
    for (const worker of this.workers) worker.terminate()
    for (const task of this.pending.values()) task.reject(new Error('compute has stopped'))
    for (const task of this.waiting) task.reject(new Error('compute has stopped'))
    this.pending.clear()
    this.waiting = []
    this.workers = []
    this.idle = []
  }
}
