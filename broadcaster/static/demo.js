// The pgcast demo page. It talks to pgcast only through the official @supabase/realtime-js
// client (vendored as ./realtime-js.mjs, built by .ci/build-demo-client), exactly as an app would;
// the /demo/* endpoints exist only under `pgcast demo` to hand out the development token and to
// let the page list and change rows of public.messages.
import { RealtimeClient } from './realtime-js.mjs'

const $ = (id) => document.getElementById(id)
const MAX_EVENTS = 100

const config = await (await fetch('/demo/config.json')).json()
const { schema, table, token } = config
const scheme = location.protocol === 'https:' ? 'wss' : 'ws'
const client = new RealtimeClient(`${scheme}://${location.host}/realtime/v1`, {
  params: { apikey: token },
})

// --- connection indicator ----------------------------------------------------------------------

let everConnected = false
function showConnection() {
  const state = client.connectionState()
  const el = $('status')
  let shown
  if (state === 'open') {
    everConnected = true
    shown = 'connected'
  } else if (everConnected) {
    shown = 'reconnecting'
  } else {
    shown = 'connecting'
  }
  if (el.dataset.state !== shown) {
    el.dataset.state = shown
    el.textContent = shown === 'connected' ? 'connected' : `${shown}…`
  }
}
setInterval(showConnection, 250)

// --- the room --------------------------------------------------------------------------------

const rows = new Map() // id -> row, of the room shown
let roomChannel = null
let room = null
let roomGeneration = 0

function api(path, params) {
  const query = new URLSearchParams({ ...params, apikey: token })
  return fetch(`${path}?${query}`).then(async (response) => {
    const body = await response.json()
    if (!response.ok) throw new Error(body.error || response.statusText)
    return body
  })
}

function renderRoom() {
  const list = $('messages')
  const ids = [...rows.keys()].sort((a, b) => a - b)
  const items = ids.map((id) => messageItem(rows.get(id)))
  list.replaceChildren(...items)
  $('empty').hidden = ids.length > 0
  list.scrollTop = list.scrollHeight
}

function messageItem(row) {
  const li = document.createElement('li')
  li.dataset.id = String(row.id)
  const who = document.createElement('span')
  who.className = 'author'
  who.textContent = row.author
  const body = document.createElement('span')
  body.className = 'body'
  body.textContent = row.body
  const edit = button('edit', 'Edit this message', () => startEdit(li, row))
  const remove = button('delete', 'Delete this message', () =>
    api('/demo/write', { op: 'delete', id: row.id }).catch(showSendError),
  )
  li.append(who, body, edit, remove)
  return li
}

function button(text, title, onClick) {
  const b = document.createElement('button')
  b.type = 'button'
  b.className = `small ${text}`
  b.textContent = text
  b.title = title
  b.addEventListener('click', onClick)
  return b
}

function startEdit(li, row) {
  const input = document.createElement('input')
  input.className = 'edit-body'
  input.value = row.body
  input.maxLength = 500
  li.querySelector('.body').replaceWith(input)
  input.focus()
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') renderRoom()
    if (event.key !== 'Enter') return
    api('/demo/write', { op: 'update', id: row.id, body: input.value })
      .then(renderRoom)
      .catch(showSendError)
  })
}

function applyRoomChange(payload) {
  if (payload.eventType === 'DELETE') {
    rows.delete(payload.old.id)
  } else {
    rows.set(payload.new.id, payload.new)
  }
  renderRoom()
}

async function joinRoom(next) {
  const generation = ++roomGeneration
  room = next
  rows.clear()
  renderRoom()
  setRoomState('joining', 'joining…')
  if (roomChannel) {
    const old = roomChannel
    roomChannel = null
    await client.removeChannel(old)
  }
  if (generation !== roomGeneration) return
  const channel = client.channel(`room-${next}-${generation}`)
  channel.on(
    'postgres_changes',
    { event: '*', schema, table, filter: `room_id=eq.${next}` },
    (payload) => {
      if (generation === roomGeneration) applyRoomChange(payload)
    },
  )
  channel.on('system', {}, (payload) => {
    if (generation === roomGeneration && payload.status === 'error') {
      setRoomState('error', `refused: ${payload.message}`)
    }
  })
  roomChannel = channel
  channel.subscribe((status, err) => {
    if (generation !== roomGeneration) return
    if (status === 'SUBSCRIBED') {
      setRoomState('live', `live: room_id=eq.${next}`)
      // Changes committed from here on arrive on the channel; the list fills in what came
      // before. A row in both is the same row (keyed by id).
      api('/demo/messages', { room_id: next }).then(({ messages }) => {
        if (generation !== roomGeneration) return
        for (const row of messages) if (!rows.has(row.id)) rows.set(row.id, row)
        renderRoom()
      })
    } else if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') {
      setRoomState('error', `${status}${err ? `: ${err.message}` : ''}; retrying`)
    } else if (status === 'CLOSED') {
      setRoomState('joining', 'closed')
    }
  })
}

function setRoomState(state, text) {
  const el = $('room-state')
  el.dataset.state = state
  el.textContent = text
}

function showSendError(err) {
  $('send-error').textContent = err ? String(err.message || err) : ''
}

// --- any filter ------------------------------------------------------------------------------

let filterChannel = null
let filterGeneration = 0

async function subscribeFilter(event, filter) {
  const generation = ++filterGeneration
  if (filterChannel) {
    const old = filterChannel
    filterChannel = null
    await client.removeChannel(old)
  }
  if (generation !== filterGeneration) return
  $('events').replaceChildren()
  const binding = { event, schema, table }
  if (filter) binding.filter = filter
  const label = `${event} ${filter || '(every row)'}`
  setFilterState('joining', `joining: ${label}`)
  const channel = client.channel(`filter-${generation}`)
  channel.on('postgres_changes', binding, (payload) => {
    if (generation === filterGeneration) addEvent(payload)
  })
  // A filter pgcast cannot use still joins (as on Supabase); a `system` error then says why.
  channel.on('system', {}, (payload) => {
    if (generation !== filterGeneration || payload.status !== 'error') return
    setFilterState('error', `refused: ${payload.message}`)
    filterChannel = null
    client.removeChannel(channel)
  })
  filterChannel = channel
  channel.subscribe((status, err) => {
    if (generation !== filterGeneration) return
    if (status === 'SUBSCRIBED') {
      setFilterState('live', `live: ${label}`)
    } else if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') {
      // A refused filter is final: stop the client's retries and say why.
      setFilterState('error', `refused: ${err ? err.message : status}`)
      filterChannel = null
      client.removeChannel(channel)
    }
  })
}

function addEvent(payload) {
  const li = document.createElement('li')
  li.dataset.event = payload.eventType
  const kind = document.createElement('span')
  kind.className = `kind ${payload.eventType.toLowerCase()}`
  kind.textContent = payload.eventType
  const row = payload.eventType === 'DELETE' ? payload.old : payload.new
  const data = document.createElement('code')
  data.textContent = JSON.stringify(row)
  li.append(kind, data)
  const list = $('events')
  list.prepend(li)
  while (list.children.length > MAX_EVENTS) list.lastChild.remove()
}

function setFilterState(state, text) {
  const el = $('filter-state')
  el.dataset.state = state
  el.textContent = text
}

// --- wiring ----------------------------------------------------------------------------------

const roomSelect = $('room')
for (const id of config.rooms) {
  const option = document.createElement('option')
  option.value = String(id)
  option.textContent = `#${id}`
  roomSelect.append(option)
}
roomSelect.addEventListener('change', () => joinRoom(Number(roomSelect.value)))

const author = $('author')
author.value = localStorage.getItem('pgcast-demo-author') || `guest-${Math.floor(Math.random() * 9000 + 1000)}`
author.addEventListener('change', () => localStorage.setItem('pgcast-demo-author', author.value))

$('send').addEventListener('submit', (event) => {
  event.preventDefault()
  const body = $('body')
  showSendError(null)
  api('/demo/write', { op: 'insert', room_id: room, author: author.value, body: body.value })
    .then(() => {
      body.value = ''
    })
    .catch(showSendError)
})

$('filter-form').addEventListener('submit', (event) => {
  event.preventDefault()
  subscribeFilter($('filter-event').value, $('filter').value.trim())
})

client.connect()
showConnection()
joinRoom(Number(roomSelect.value))
subscribeFilter('*', '')
