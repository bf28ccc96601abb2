#!/usr/bin/env node
// Test driver: the official @supabase/realtime-js (or supabase-js) client, unmodified, as a CLI.
//
// The Python end-to-end tests spawn this script and read one JSON object per line from stdout:
//
//   {"kind":"socket","event":"open"|"close"|"error", "code":..., "reason":..., "message":...}
//   {"kind":"status","channel":NAME,"status":"SUBSCRIBED"|"CHANNEL_ERROR"|"TIMED_OUT"|"CLOSED","error":MSG|null}
//   {"kind":"change","channel":NAME,"binding":I,"payload":<exactly what the callback got>}
//   {"kind":"system","channel":NAME,"payload":<exactly what the system callback got>}
//   {"kind":"heartbeat","status":"sent"|"ok"|"error"|"timeout","latency":MS}
//   {"kind":"frame","dir":"in"|"out","data":TEXT | {"binary":HEX}}       (only with --trace)
//   {"kind":"reply","command":CMD,"channel":NAME,"result":...}           (answer to a stdin command)
//   {"kind":"fatal","message":...}                                        (then exit code 2)
//
// Options:
//   --url URL            realtime endpoint, e.g. ws://127.0.0.1:4000/realtime/v1 (the client appends
//                        /websocket); with --lib supabase-js: the project URL, e.g. http://127.0.0.1:4000
//   --token JWT          the apikey (the connect token)
//   --access-token JWT   call client.setAuth(JWT) before subscribing (sent as the join access_token)
//   --vsn 2.0.0|1.0.0    protocol version (default 2.0.0, the client's own default)
//   --lib realtime-js|supabase-js   (default realtime-js)
//   --channels JSON      [{"name":"room","bindings":[{"event":"*","schema":"public","table":"messages",
//                        "filter":"room_id=eq.5"}]}, ...]  (each channel subscribes in order)
//   --system             also register on('system') listeners (default on)
//   --heartbeat-ms N     heartbeat interval (default: the client's default, 25000)
//   --trace              print every raw WebSocket frame
//
// Commands on stdin, one per line:
//   unsubscribe NAME     channel.unsubscribe(); replies with the client's result ('ok' etc.)
//   ping ID              replies {"kind":"reply","command":"ping","result":ID} (stdin round trip)
//   quit                 disconnect and exit 0
//
// Node 20 has no global WebSocket and realtime-js >= 2.100 declares engines node >= 22, so the
// `ws` package is passed as the transport (the supported `transport` option).

import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function fatal(message) {
  emit({ kind: 'fatal', message: String(message) })
  process.exit(2)
}

process.on('uncaughtException', (err) => fatal(err && err.stack ? err.stack : err))
process.on('unhandledRejection', (err) => fatal(err && err.stack ? err.stack : err))

let WebSocketImpl, RealtimeClient, createClient
try {
  WebSocketImpl = (await import('ws')).WebSocket
  ;({ RealtimeClient } = await import('@supabase/realtime-js'))
} catch (err) {
  fatal(`cannot load npm packages (run \`npm ci --prefix tests/e2e\`): ${err.message}`)
}

const { values: opts } = parseArgs({
  options: {
    url: { type: 'string' },
    token: { type: 'string' },
    'access-token': { type: 'string' },
    vsn: { type: 'string', default: '2.0.0' },
    lib: { type: 'string', default: 'realtime-js' },
    channels: { type: 'string', default: '[]' },
    'no-system': { type: 'boolean', default: false },
    'heartbeat-ms': { type: 'string' },
    trace: { type: 'boolean', default: false },
  },
})
if (!opts.url || !opts.token) fatal('--url and --token are required')

function describeData(data) {
  if (typeof data === 'string') return data
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(data)
  return { binary: buf.toString('hex') }
}

// The transport: `ws`'s WebSocket, observed (events and, with --trace, frames) but not changed.
class ObservedWebSocket extends WebSocketImpl {
  constructor(address, protocols) {
    super(address, protocols)
    this.addEventListener('open', () => emit({ kind: 'socket', event: 'open', url: redact(address) }))
    this.addEventListener('close', (ev) =>
      emit({ kind: 'socket', event: 'close', code: ev.code, reason: ev.reason, wasClean: ev.wasClean })
    )
    this.addEventListener('error', (ev) =>
      emit({ kind: 'socket', event: 'error', message: ev.message ?? String(ev.error ?? ev) })
    )
    if (opts.trace) {
      this.addEventListener('message', (ev) => emit({ kind: 'frame', dir: 'in', data: describeData(ev.data) }))
    }
  }
  send(data, ...rest) {
    if (opts.trace) emit({ kind: 'frame', dir: 'out', data: describeData(data) })
    return super.send(data, ...rest)
  }
}

function redact(address) {
  return String(address).replace(/apikey=[^&]*/, 'apikey=REDACTED')
}

const realtimeOptions = {
  transport: ObservedWebSocket,
  vsn: opts.vsn,
  heartbeatCallback: (status, latency) => emit({ kind: 'heartbeat', status, latency: latency ?? null }),
}
if (opts['heartbeat-ms']) realtimeOptions.heartbeatIntervalMs = Number(opts['heartbeat-ms'])

let realtime
if (opts.lib === 'realtime-js') {
  realtime = new RealtimeClient(opts.url, { ...realtimeOptions, params: { apikey: opts.token } })
} else if (opts.lib === 'supabase-js') {
  try {
    ;({ createClient } = await import('@supabase/supabase-js'))
  } catch (err) {
    fatal(`cannot load @supabase/supabase-js (run \`npm ci --prefix tests/e2e\`): ${err.message}`)
  }
  const supabase = createClient(opts.url, opts.token, {
    realtime: realtimeOptions,
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  })
  realtime = supabase.realtime
} else {
  fatal(`unknown --lib ${opts.lib}`)
}

if (opts['access-token']) {
  await realtime.setAuth(opts['access-token'])
}

const channels = new Map()
for (const spec of JSON.parse(opts.channels)) {
  const channel = realtime.channel(spec.name, spec.params ?? {})
  ;(spec.bindings ?? []).forEach((binding, index) => {
    channel.on('postgres_changes', binding, (payload) =>
      emit({ kind: 'change', channel: spec.name, binding: index, payload })
    )
  })
  if (!opts['no-system']) {
    channel.on('system', {}, (payload) => emit({ kind: 'system', channel: spec.name, payload }))
  }
  channel.subscribe((status, err) =>
    emit({ kind: 'status', channel: spec.name, status, error: err ? String(err.message ?? err) : null })
  )
  channels.set(spec.name, channel)
}

const rl = createInterface({ input: process.stdin })
rl.on('line', async (line) => {
  const [command, arg] = line.trim().split(/\s+/, 2)
  if (!command) return
  if (command === 'quit') {
    rl.close()
    return
  }
  if (command === 'ping') {
    emit({ kind: 'reply', command, result: arg ?? null })
  } else if (command === 'unsubscribe') {
    const channel = channels.get(arg)
    if (!channel) {
      emit({ kind: 'reply', command, channel: arg, result: 'no such channel' })
      return
    }
    const result = await channel.unsubscribe()
    emit({ kind: 'reply', command, channel: arg, result })
  } else {
    emit({ kind: 'reply', command, result: `unknown command ${command}` })
  }
})
rl.on('close', async () => {
  // stdin closed or `quit`: leave cleanly, then exit (timers of the client would keep node alive).
  try {
    await Promise.race([realtime.disconnect(), new Promise((r) => setTimeout(r, 2000))])
  } finally {
    emit({ kind: 'exit' })
    process.exit(0)
  }
})
