// Type-checked against the package's .d.ts (see types.test.mjs): the
// compute API as a TypeScript app would use it.
import init, { WasmP2PClient, type NetworkInfo, type Progress, type WorkerInfo } from '../../wasm/pkg/infermesh.js'

export async function pooled (token: string): Promise<number> {
  await init()
  const client = new WasmP2PClient('typed')
  await client.initialize({ bootstrap_peers: [] })
  const net: NetworkInfo = await client.network_join(token)
  const invite: string = await client.network_invite({ network: net.id, uses: 2, expires_in_s: 3600 })
  client.on_progress((p: Progress) => console.log(p.done, p.total, invite))
  const offered = await client.offer_compute({ threads: 1 })
  const vectors: Float32Array[] = await client.embed(['hello', 'world'])
  const again = await client.embed(['hi'], { network: net.id })
  const workers: WorkerInfo[] = await client.workers()
  await client.stop_compute()
  const left: boolean = await client.network_leave()
  return vectors[0][0] + again.length + workers.length + offered.load_ms + Number(left)
}
