#!/usr/bin/env node
// Writes the JSON Grafana imports (deploy/grafana/<name>.json) from the typed dashboards (<name>.ts).
// Usage: node deploy/grafana/build.cjs [OUTPUT_DIR]  (`make dashboards`; the tests compare a fresh build with the
// committed JSON). tsc first emits the sources as CommonJS under .tools/, where `require('@grafana/schema')` (the
// enums the dashboards use) resolves to the installed package.
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const here = __dirname;
const root = path.resolve(here, '..', '..');
const output = path.resolve(process.argv[2] || here);
const emitted = fs.mkdtempSync(path.join(root, '.tools', 'grafana-build-'));
try {
  execFileSync(path.join(root, '.tools', 'node_modules', '.bin', 'tsc'), ['-p', here, '--strict', '--noEmit', 'false', '--outDir', emitted], { stdio: 'inherit' });
  const names = fs.readdirSync(here).filter((f) => f.endsWith('.ts') && f !== 'lib.ts').map((f) => f.slice(0, -3)).sort();
  for (const name of names) {
    const dashboards = Object.values(require(path.join(emitted, `${name}.js`))).filter((v) => v && typeof v === 'object' && 'schemaVersion' in v);
    if (dashboards.length !== 1) throw new Error(`${name}.ts must export exactly one dashboard, found ${dashboards.length}`);
    fs.writeFileSync(path.join(output, `${name}.json`), JSON.stringify(dashboards[0], null, 2) + '\n');
    console.log(`wrote ${path.relative(process.cwd(), path.join(output, `${name}.json`))}`);
  }
} finally {
  fs.rmSync(emitted, { recursive: true, force: true });
}
