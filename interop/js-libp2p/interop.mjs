// Interop with a peer nobody here wrote: a js-libp2p node (TCP, Noise,
// Yamux, identify, ping, gossipsub) dials the real `infermesh` binary on
// loopback, pings it, and exchanges gossip with it on one topic in both
// directions. InferMesh envelopes are CBOR maps, so the JS side builds and
// reads them with `cborg`. Exits non-zero on any failure.
//
//   node --import ./interop/js-libp2p/polyfill.mjs interop/js-libp2p/interop.mjs <path-to-infermesh>

import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { gossipsub } from '@libp2p/gossipsub'
import { multiaddr } from '@multiformats/multiaddr'
import * as cbor from 'cborg'

const BIN = process.argv[2]
const TOPIC = 'interop'
const DEADLINE_MS = 30_000

if (!BIN) {
  console.error('usage: interop.mjs <path-to-infermesh>')
  process.exit(2)
}

const overall = setTimeout(() => fail('interop test took longer than 90 s'), 90_000)
overall.unref()

const dataDir = mkdtempSync(join(tmpdir(), 'infermesh-interop-'))
const lines = []
const rust = spawn(BIN, [
  'init', '--data-dir', dataDir, '--listen-ip', '127.0.0.1',
  '--tcp-port', '0', '--quic-port', '0', '--ws-port', '0', '--webrtc-port', '0',
  '--api-port', '0', '--no-mdns'
], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'warn' } })
let stdoutBuffer = ''
rust.stdout.on('data', (chunk) => {
  stdoutBuffer += chunk.toString()
  let i
  while ((i = stdoutBuffer.indexOf('\n')) >= 0) {
    lines.push(stdoutBuffer.slice(0, i))
    stdoutBuffer = stdoutBuffer.slice(i + 1)
  }
})
const stderr = []
rust.stderr.on('data', (chunk) => stderr.push(chunk.toString()))

let node
function fail (message) {
  console.error(`FAIL: ${message}`)
  console.error('--- infermesh stdout ---\n' + lines.join('\n'))
  console.error('--- infermesh stderr ---\n' + stderr.join('').slice(-4000))
  rust.kill('SIGKILL')
  rmSync(dataDir, { recursive: true, force: true })
  process.exit(1)
}

function ok (message) {
  console.log(`ok - ${message}`)
}

async function waitFor (what, check, deadline = DEADLINE_MS) {
  const start = Date.now()
  for (;;) {
    const value = await check()
    if (value) return value
    if (Date.now() - start > deadline) fail(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}

function type (line) {
  rust.stdin.write(line + '\n')
}

/** Types a command and waits for a new output line containing one of `answers`. */
async function ask (command, answers) {
  const before = lines.length
  type(command)
  return waitFor(`answer to '${command}'`, () =>
    lines.slice(before).find((l) => answers.some((a) => l.includes(a))))
}

function envelope (from, text) {
  return {
    id: randomBytes(16).toString('hex'),
    msg_type: 'Thought',
    from,
    to: TOPIC,
    priority: 5,
    ttl: 60,
    timestamp: Date.now(),
    payload: new Uint8Array([1, 2, 3]),
    content: text
  }
}

try {
  const addrs = await waitFor('addrs.json', () => {
    try {
      const json = JSON.parse(readFileSync(join(dataDir, 'addrs.json'), 'utf8'))
      const tcpAddr = json.addrs.find((a) => a.includes('/tcp/') && !a.includes('/ws'))
      return tcpAddr && json.api ? { id: json.peer_id, tcp: tcpAddr, api: json.api } : null
    } catch { return null }
  })

  node = await createLibp2p({
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: {
      identify: identify(),
      ping: ping(),
      pubsub: gossipsub({ emitSelf: false })
    }
  })
  const jsId = node.peerId.toString()

  await node.dial(multiaddr(addrs.tcp))
  ok(`js-libp2p ${jsId} dialled ${addrs.tcp}`)
  await waitFor('the node to report the js peer', () => lines.includes(`connected ${jsId}`))
  ok('the node reports the js peer as connected')

  const rtt = await node.services.ping.ping(multiaddr(addrs.tcp))
  if (!(typeof rtt === 'number' && rtt >= 0)) fail(`ping returned ${rtt}`)
  ok(`ping: ${rtt} ms`)

  const received = []
  node.services.pubsub.addEventListener('message', (event) => {
    if (event.detail.topic === TOPIC) received.push(event.detail)
  })
  node.services.pubsub.subscribe(TOPIC)
  const answer = await ask(`subscribe ${TOPIC}`, ['subscribed'])
  if (answer !== `subscribed to ${TOPIC}`) fail(`subscribe answered '${answer}'`)
  await waitFor('js to see the node subscribed', () =>
    node.services.pubsub.getSubscribers(TOPIC).some((p) => p.toString() === addrs.id))
  ok('subscriptions exchanged')

  // js → rust: a CBOR envelope, signed by gossipsub, shows up at the prompt.
  await node.services.pubsub.publish(TOPIC, cbor.encode(envelope(jsId, 'hello from js-libp2p')))
  await waitFor('the node to print the js message', () =>
    lines.includes(`[${TOPIC}] ${jsId}: hello from js-libp2p`))
  ok('js → infermesh gossip delivered')

  // rust → js: publish at the prompt (retry until the js subscription is known).
  await waitFor('the node to publish', async () => {
    const reply = await ask(`publish ${TOPIC} hello from infermesh`, ['published to', 'error:'])
    return reply.startsWith('published to')
  })
  const message = await waitFor('js to receive the node message', () => received[0])
  const decoded = cbor.decode(message.data)
  if (message.from?.toString() !== addrs.id) fail(`gossip signed by ${message.from}, expected ${addrs.id}`)
  if (decoded.content !== 'hello from infermesh') fail(`content ${decoded.content}`)
  if (decoded.from !== addrs.id || decoded.to !== TOPIC || decoded.msg_type !== 'Thought') {
    fail(`unexpected envelope ${JSON.stringify(decoded)}`)
  }
  ok(`infermesh → js gossip delivered (envelope ${decoded.id})`)

  // Garbage from the foreign peer is counted, not delivered.
  await node.services.pubsub.publish(TOPIC, new TextEncoder().encode('not an envelope'))
  await waitFor('the node to count the malformed message', async () => {
    const text = await (await fetch(`${addrs.api}/metrics`)).text()
    return text.includes('infermesh_messages_dropped_total{reason="malformed"} 1')
  })
  ok('a malformed message from js is rejected and counted')

  await node.stop()
  type('exit')
  const code = await new Promise((resolve) => rust.on('exit', resolve))
  if (code !== 0) fail(`infermesh exited with ${code}`)
  ok('infermesh exited cleanly')
  rmSync(dataDir, { recursive: true, force: true })
  clearTimeout(overall)
  process.exit(0)
} catch (e) {
  fail(e.stack ?? String(e))
}
