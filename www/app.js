// The InferMesh demo: a page that is a node of the mesh. It bootstraps from
// the native node that served it (GET /api/addrs), then offers topic chat,
// direct messages, the live peer list, the client's metrics, and pooled
// compute: join a private network, contribute this tab, and search the chat
// by meaning with embeddings computed across the network.

import init, { WasmP2PClient, version } from 'infermesh'

const $ = (id) => document.getElementById(id)
const encoder = new TextEncoder()
const decoder = new TextDecoder()
const short = (id) => (id && id.length > 16 ? `${id.slice(0, 8)}…${id.slice(-6)}` : id)
const time = (ms) => new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' })
const TRANSPORTS = { websocket: 'WebSocket', 'webrtc-direct': 'WebRTC-direct', relay: 'relay circuit', tcp: 'TCP', quic: 'QUIC' }

let client = null
let myId = null
const topics = new Set()

function log (text, kind = 'info') {
  const li = document.createElement('li')
  li.className = kind
  li.innerHTML = `<time>${time(Date.now())}</time> `
  li.append(text)
  $('log').prepend(li)
  while ($('log').children.length > 200) $('log').lastChild.remove()
}

function setState (state, detail) {
  const pill = $('state')
  pill.dataset.state = state
  pill.className = `pill ${state}`
  pill.textContent = detail ?? state
}

function addMessage (list, { who, text, meta, mine }) {
  const li = document.createElement('li')
  if (mine) li.className = 'mine'
  const head = document.createElement('div')
  head.className = 'meta'
  head.textContent = `${who} · ${meta}`
  const body = document.createElement('div')
  body.className = 'text'
  body.textContent = text
  li.append(head, body)
  list.append(li)
  list.scrollTop = list.scrollHeight
}

function messageText (message, payload) {
  if (message.content) return message.content
  try {
    return decoder.decode(payload)
  } catch {
    return `${payload.length} bytes`
  }
}

function onMessage (message, payload) {
  const text = messageText(message, payload)
  const who = message.sender === myId ? 'you' : short(message.sender)
  if (message.topic) {
    addMessage($('chat'), { who, text, meta: `#${message.topic} · ${time(message.timestamp)}` })
    log(`#${message.topic} ← ${short(message.sender)}`)
  } else {
    const how = message.encrypted ? ` · end-to-end encrypted (ML-KEM + X25519, level ${message.kem_level})` : ''
    const held = message.held_by ? ` · held by ${short(message.held_by)} while you were away` : ''
    addMessage($('dms'), { who, text, meta: `direct${how}${held} · ${time(message.timestamp)}` })
    log(`direct message from ${short(message.sender)}`)
    $('direct-to').value ||= message.sender
  }
}

function bootstrapAddr (addrs, transport) {
  const want = transport === 'webrtc' ? '/webrtc-direct/' : '/ws/'
  return addrs.find((a) => a.includes(want)) ?? addrs[0]
}

/** Each tab is its own node; a reload keeps its identity (IndexedDB). */
function clientName () {
  let tab = sessionStorage.getItem('infermesh-tab')
  if (!tab) {
    tab = crypto.randomUUID().slice(0, 8)
    sessionStorage.setItem('infermesh-tab', tab)
  }
  return `demo-${tab}`
}

async function start () {
  const params = new URLSearchParams(location.search)
  const transport = params.get('transport') ?? localStorage.getItem('infermesh-transport') ?? 'ws'
  $('transport').value = transport
  setState('connecting', 'connecting…')
  await init()
  $('version').textContent = version()

  const { browser_addrs: addrs } = await (await fetch('/api/addrs')).json()
  const addr = params.get('addr') ?? bootstrapAddr(addrs, transport)
  log(`bootstrapping from ${addr}`)

  client = new WasmP2PClient(clientName())
  client.set_message_handler(onMessage)
  try {
    myId = await client.initialize({ bootstrap_peers: [addr], max_peers: 50, quantum_resistant: true })
  } catch (e) {
    setState('offline', 'offline')
    log(e.message, 'error')
    return
  }
  $('peer-id').textContent = myId
  log(`started as ${myId}`, 'ok')
  await joinTopic($('topic').value)
  refresh()
  setInterval(refresh, 1000)
  window.infermeshDemo = { client, peerId: myId }
}

async function refresh () {
  if (!client) return
  let status, peers
  try {
    [status, peers] = await Promise.all([client.status(), client.peers()])
  } catch (e) {
    setState('offline', 'offline')
    return
  }
  setState(status.state, status.state === 'connected' ? `connected · ${TRANSPORTS[status.transport] ?? status.transport}` : 'connecting…')
  $('relay-addr').textContent = status.relay_addrs[0] ?? 'waiting for a relay reservation…'
  for (const dd of document.querySelectorAll('[data-m]')) {
    const v = status.metrics[dd.dataset.m]
    dd.textContent = dd.dataset.m.startsWith('bytes') ? formatBytes(v) : v
  }
  renderPeers(peers)
  refreshCompute()
}

function formatBytes (n) {
  if (n < 1024) return `${n} B`
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`
  return `${(n / 1024 / 1024).toFixed(1)} MiB`
}

function renderPeers (peers) {
  $('peer-count').textContent = peers.length
  const list = $('peers')
  list.replaceChildren()
  if (peers.length === 0) {
    list.innerHTML = '<li class="muted empty">No peers yet.</li>'
  }
  for (const p of peers) {
    const li = document.createElement('li')
    const role = p.agent?.includes('(browser)') ? 'page' : p.agent?.startsWith('infermesh/') ? 'node' : 'peer'
    li.innerHTML = `<span class="dot"></span><code title="${p.peer_id}">${short(p.peer_id)}</code>
      <span class="tag">${TRANSPORTS[p.transport] ?? p.transport}</span>
      ${p.quantum_secure ? `<span class="tag" title="end-to-end session: ML-KEM + X25519">e2e L${p.kem_level}</span>` : ''}
      <span class="muted small">${role}${p.rtt_ms != null ? ` · ${p.rtt_ms.toFixed(1)} ms` : ''}</span>`
    const dm = document.createElement('button')
    dm.className = 'ghost small'
    dm.textContent = 'Message'
    dm.onclick = () => { $('direct-to').value = p.peer_id; $('direct-input').focus() }
    li.append(dm)
    list.append(li)
  }
  $('peer-ids').replaceChildren(...peers.map((p) => Object.assign(document.createElement('option'), { value: p.peer_id })))
}

async function joinTopic (topic) {
  topic = topic.trim()
  if (!topic || topics.has(topic)) return
  try {
    await client.subscribe(topic)
  } catch (e) {
    log(e.message, 'error')
    return
  }
  topics.add(topic)
  const chip = document.createElement('button')
  chip.className = 'chip'
  chip.textContent = `#${topic}`
  chip.title = 'Send to this topic'
  chip.onclick = () => { $('topic').value = topic }
  $('topics').append(chip)
  log(`joined #${topic}`, 'ok')
}

$('topic-form').onsubmit = (e) => {
  e.preventDefault()
  joinTopic($('topic').value)
}

$('chat-form').onsubmit = async (e) => {
  e.preventDefault()
  const topic = $('topic').value.trim()
  const text = $('chat-input').value
  if (!client || !text) return
  await joinTopic(topic)
  $('chat-input').value = ''
  try {
    await client.publish(topic, encoder.encode(text))
    addMessage($('chat'), { who: 'you', text, meta: `#${topic} · ${time(Date.now())}`, mine: true })
  } catch (err) {
    log(`#${topic}: ${err.message}`, 'error')
    $('chat-input').value = text
  }
}

$('direct-form').onsubmit = async (e) => {
  e.preventDefault()
  const to = $('direct-to').value.trim()
  const text = $('direct-input').value
  if (!client || !to || !text) return
  $('direct-input').value = ''
  try {
    const sent = await client.send_direct(to, encoder.encode(text))
    const how = sent.encrypted ? ' · end-to-end encrypted' : ''
    const meta = sent.held_by
      ? `offline: held by ${short(sent.held_by)}${how}`
      : `delivered · ${sent.rtt_ms.toFixed(1)} ms${how}`
    addMessage($('dms'), { who: `you → ${short(to)}`, text, meta, mine: true })
  } catch (err) {
    log(`direct to ${short(to)}: ${err.message}`, 'error')
    $('direct-input').value = text
  }
}

// ---- compute -------------------------------------------------------------

let network = null

function showNetwork (net) {
  network = net
  $('net-name').textContent = net ? `${net.name} · ${net.role}${net.status === 'active' ? '' : ` · ${net.status}`}` : 'no network'
  $('net-invite').disabled = !net || net.role !== 'owner'
  $('contribute').disabled = !net
  $('search-button').disabled = !net
}

async function refreshCompute () {
  if (!client) return
  try {
    const nets = await client.networks()
    const net = nets.find((n) => n.id === network?.id) ?? nets[0] ?? null
    showNetwork(net)
    if (!net) return
    renderWorkers(await client.workers({ network: net.id }))
    renderCredits(await client.credits({ network: net.id }))
  } catch (e) {
    log(`compute: ${e.message}`, 'error')
  }
}

function renderCredits (c) {
  const mine = c.balances.find((b) => b.person === c.me)
  $('credit-balance').textContent = mine ? `${mine.available}` : '–'
  $('credit-terms').textContent = `${c.grant} to start · ${c.price_per_token} a token · ${Math.round(c.check_rate * 100)}% of chunks checked` +
    (mine ? ` · you earned ${mine.earned}, spent ${mine.spent}` : '')
  const list = $('credits')
  list.replaceChildren()
  if (c.receipts.length === 0) list.innerHTML = '<li class="muted empty">No receipts yet.</li>'
  for (const r of c.receipts.slice(0, 8)) {
    const li = document.createElement('li')
    li.className = 'small'
    li.textContent = `${short(r.requester)} → ${short(r.worker)} · job ${r.job} chunk ${r.chunk} · ${r.tokens} tokens · ${r.credits} credits${r.void ? ' · void (lost a check)' : ''}`
    list.append(li)
  }
}

function renderWorkers (workers) {
  $('worker-count').textContent = workers.length
  const list = $('workers')
  list.replaceChildren()
  if (workers.length === 0) list.innerHTML = '<li class="muted empty">No workers yet: contribute this tab, or run <code>infermesh node --compute</code>.</li>'
  for (const w of workers) {
    const li = document.createElement('li')
    const speed = w.ms_per_input != null ? ` · ${w.ms_per_input.toFixed(0)} ms/text` : ''
    li.innerHTML = `<span class="dot"></span><code title="${w.device}">${short(w.device)}</code>
      <span class="tag">${w.kind}${w.local ? ' · this tab' : ''}</span>
      <span class="muted small">${w.threads} thread(s) · queue ${w.queue}${speed} · ${w.chunks} chunk(s)</span>`
    if (!w.local) {
      li.querySelector('.small').append(w.excluded ? ` · no work: ${w.excluded}` : ` · trust ${(w.trust ?? 0).toFixed(2)}`)
    }
    list.append(li)
  }
}

async function compute (label, work) {
  try {
    return await work()
  } catch (e) {
    log(`${label}: ${e.message}`, 'error')
    return null
  }
}

$('net-create').onclick = async () => {
  const name = prompt('Name of the new network', 'my-devices')
  if (!name) return
  const net = await compute('create', () => client.network_create(name))
  if (net) { log(`created network ${net.name} (${net.id})`, 'ok'); showNetwork(net); refreshCompute() }
}

$('net-invite').onclick = async () => {
  const token = await compute('invite', () => client.network_invite({ network: network?.id, uses: 5 }))
  if (!token) return
  $('net-invite-token').hidden = false
  $('net-invite-token').value = token
  $('net-invite-token').select()
  log('invite token ready: share it with who should join (5 uses, valid for a day)', 'ok')
}

$('net-join-form').onsubmit = async (e) => {
  e.preventDefault()
  const net = await compute('join', () => client.network_join($('net-token').value))
  if (net) { $('net-token').value = ''; log(`joined network ${net.name}, owned by ${short(net.owner)}`, 'ok'); showNetwork(net); refreshCompute() }
}

$('contribute').onchange = async () => {
  const box = $('contribute')
  box.disabled = true
  if (box.checked) {
    $('contribute-state').textContent = 'loading the model…'
    const offer = await compute('contribute', () => client.offer_compute({}))
    if (offer) {
      const from = offer.cached ? 'from this browser\'s cache' : 'from the node'
      $('contribute-state').textContent = `${offer.threads} worker(s), model loaded ${from} in ${(offer.load_ms / 1000).toFixed(1)} s`
      log('this tab now computes for the network', 'ok')
    } else {
      box.checked = false
      $('contribute-state').textContent = ''
    }
  } else {
    await compute('stop', () => client.stop_compute())
    $('contribute-state').textContent = ''
  }
  box.disabled = !network
  refreshCompute()
}

$('search-form').onsubmit = async (e) => {
  e.preventDefault()
  const query = $('search-query').value.trim()
  const lines = [...document.querySelectorAll('#chat li .text')].map((el) => el.textContent)
  if (!query || !client) return
  if (lines.length === 0) { log('search: the chat is empty; say something first', 'error'); return }
  const bar = $('search-progress')
  bar.hidden = false
  bar.value = 0
  client.on_progress((p) => { bar.value = p.done / p.total })
  const started = performance.now()
  const vectors = await compute('search', () => client.embed([query, ...lines], { network: network?.id }))
  bar.hidden = true
  if (!vectors) return
  const [q, ...rest] = vectors
  // Unit vectors: the dot product is the cosine similarity.
  const ranked = rest.map((v, i) => ({ text: lines[i], score: v.reduce((sum, x, k) => sum + x * q[k], 0) }))
    .sort((x, y) => y.score - x.score).slice(0, 5)
  $('search-results').replaceChildren()
  for (const r of ranked) {
    addMessage($('search-results'), { who: r.score.toFixed(3), text: r.text, meta: 'similarity' })
  }
  log(`searched ${lines.length} chat line(s) in ${((performance.now() - started) / 1000).toFixed(2)} s`, 'ok')
}

$('copy-id').onclick = () => navigator.clipboard?.writeText(myId ?? '')

$('transport').onchange = () => {
  localStorage.setItem('infermesh-transport', $('transport').value)
  const url = new URL(location.href)
  url.searchParams.set('transport', $('transport').value)
  url.searchParams.delete('addr')
  location.href = url
}

start().catch((e) => {
  setState('offline', 'offline')
  log(e.message ?? String(e), 'error')
})
