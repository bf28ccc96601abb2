#!/usr/bin/env node
// Test driver: a headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core) that
// the Python browser tests steer one command at a time, so that they can write rows to Postgres
// between steps.
//
// stdin, one JSON object per line; stdout, one JSON answer per command, in order:
//   {"cmd":"goto","url":U}                               -> {"ok":true}
//   {"cmd":"waitText","selector":S,"text":T,"timeout":MS}  -> {"ok":true,"ms":ELAPSED}
//        (S's textContent contains T; ok:false with "error" on timeout)
//   {"cmd":"waitAttr","selector":S,"name":A,"value":V,"timeout":MS} -> {"ok":true,"ms":ELAPSED}
//   {"cmd":"text","selector":S}                          -> {"ok":true,"value":TEXT}
//   {"cmd":"count","selector":S}                         -> {"ok":true,"value":N}
//   {"cmd":"fill"|"select","selector":S,"value":V}       -> {"ok":true}
//   {"cmd":"click","selector":S}                         -> {"ok":true}
//   {"cmd":"press","selector":S,"key":K}                 -> {"ok":true}
//   {"cmd":"screenshot","path":P}                        -> {"ok":true}
//   {"cmd":"errors"}                                     -> {"ok":true,"value":[page errors]}
//   {"cmd":"quit"}                                       -> exits 0
// A failed command answers {"ok":false,"error":MESSAGE}; the driver keeps going.
//
// Options: --executable PATH (default /usr/bin/chromium or $CHROMIUM).

import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'
import { chromium } from 'playwright-core'

const { values: opts } = parseArgs({
  options: { executable: { type: 'string', default: process.env.CHROMIUM || '/usr/bin/chromium' } },
})

function answer(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

const browser = await chromium.launch({
  executablePath: opts.executable,
  headless: true,
  // This machine's network is closed: keep Chromium from reaching out (or failing to).
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
})
const page = await browser.newPage({ viewport: { width: 1200, height: 800 } })
const pageErrors = []
page.on('pageerror', (err) => pageErrors.push(String(err && err.stack ? err.stack : err)))
page.on('console', (msg) => {
  if (msg.type() === 'error') pageErrors.push(`console: ${msg.text()}`)
})

async function timed(fn) {
  const started = performance.now()
  await fn()
  return { ok: true, ms: performance.now() - started }
}

const commands = {
  goto: async (c) => { await page.goto(c.url); return { ok: true } },
  waitText: (c) => timed(() => page.waitForFunction(
    ([selector, text]) => {
      const el = document.querySelector(selector)
      return el !== null && el.textContent.includes(text)
    },
    [c.selector, c.text],
    { timeout: c.timeout ?? 5000, polling: 'raf' },
  )),
  waitAttr: (c) => timed(() => page.waitForFunction(
    ([selector, name, value]) => {
      const el = document.querySelector(selector)
      return el !== null && el.getAttribute(name) === value
    },
    [c.selector, c.name, c.value],
    { timeout: c.timeout ?? 5000, polling: 'raf' },
  )),
  text: async (c) => ({ ok: true, value: await page.locator(c.selector).first().textContent() }),
  count: async (c) => ({ ok: true, value: await page.locator(c.selector).count() }),
  fill: async (c) => { await page.locator(c.selector).first().fill(c.value); return { ok: true } },
  select: async (c) => {
    await page.locator(c.selector).first().selectOption(c.value)
    return { ok: true }
  },
  click: async (c) => { await page.locator(c.selector).first().click(); return { ok: true } },
  press: async (c) => {
    await page.locator(c.selector).first().press(c.key)
    return { ok: true }
  },
  screenshot: async (c) => { await page.screenshot({ path: c.path, fullPage: true }); return { ok: true } },
  errors: async () => ({ ok: true, value: pageErrors }),
}

const lines = createInterface({ input: process.stdin })
for await (const line of lines) {
  if (!line.trim()) continue
  let command
  try {
    command = JSON.parse(line)
  } catch (err) {
    answer({ ok: false, error: `not JSON: ${err.message}` })
    continue
  }
  if (command.cmd === 'quit') break
  const run = commands[command.cmd]
  if (!run) {
    answer({ ok: false, error: `unknown command ${command.cmd}` })
    continue
  }
  try {
    answer(await run(command))
  } catch (err) {
    answer({ ok: false, error: String(err && err.message ? err.message : err) })
  }
}
await browser.close()
process.exit(0)
