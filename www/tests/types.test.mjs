// The package's .d.ts as a TypeScript app sees it: types-check.ts uses the
// compute API and must type-check; a misuse must not.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ROOT, WWW } from './lib.mjs'

const TSC = join(ROOT, 'node_modules', '.bin', 'tsc')
const FLAGS = ['--noEmit', '--strict', '--target', 'es2022', '--lib', 'esnext,dom', '--module', 'es2022',
  '--moduleResolution', 'bundler']

function tsc (file) {
  const run = spawnSync(TSC, [...FLAGS, file], { encoding: 'utf8' })
  return { ok: run.status === 0, out: run.stdout + run.stderr }
}

test('the compute API type-checks as documented, and a misuse does not', () => {
  const good = tsc(join(WWW, 'tests', 'types-check.ts'))
  assert.ok(good.ok, good.out)
  // The same file with numbers for texts: refused by the types.
  const source = readFileSync(join(WWW, 'tests', 'types-check.ts'), 'utf8')
    .replace("client.embed(['hello', 'world'])", 'client.embed([1, 2])')
    .replaceAll('../../wasm/pkg/', `${join(ROOT, 'wasm', 'pkg')}/`)
  const file = join(mkdtempSync(join(tmpdir(), 'infermesh-types-')), 'misuse.ts')
  writeFileSync(file, source)
  const bad = tsc(file)
  assert.equal(bad.ok, false)
  assert.match(bad.out, /Type 'number' is not assignable to type 'string'/)
})
