#!/usr/bin/env node
// Builds a JavaScript operator into a weir component:
//   node build.mjs app.js -o app.wasm [--componentize-js <path to the package>]
// The app imports what it uses from '@weir/guest'; this bundles the SDK with it (one
// module) and runs componentize-js against wit/operator.wit, without the `wasi:http`,
// fetch and other WASI features componentize-js adds by default (weir does not provide them).
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const option = (name) => { const i = args.indexOf(name); return i >= 0 ? args.splice(i, 2)[1] : undefined; };
const output = option('-o');
const tool = option('--componentize-js') || join(process.env.HOME || '', '.cache/weir-tools/js/node_modules/@bytecodealliance/componentize-js');
const witOption = option('--wit');
// Only for tests of the host's error message: keep componentize-js's default features.
const defaults = args.includes('--componentize-defaults') ? args.splice(args.indexOf('--componentize-defaults'), 1) : false;
if (args.length !== 1 || !output) {
  console.error('usage: node build.mjs app.js -o app.wasm');
  process.exit(2);
}
const app = await readFile(resolve(args[0]), 'utf8');
// The world follows from the export: an operator's `handler`, or a window function.
const worlds = { handler: 'co-operator', aggregate: 'aggregate-function', reduce: 'reduce-function', processWindow: 'process-window-function' };
const found = Object.keys(worlds).filter((name) => new RegExp(`^export\\s+const\\s+${name}\\s*=`, 'm').test(app));
if (found.length !== 1) {
  console.error(`${args[0]}: export exactly one of handler, aggregate, reduce, processWindow`);
  process.exit(2);
}
const world = worlds[found[0]];
const sdk = await readFile(join(here, world === 'co-operator' ? 'index.js' : 'window.js'), 'utf8');
// The SDK's names are in scope in the bundle: drop the app's imports of them.
const body = app.replace(/^import\s*\{[^}]*\}\s*from\s*['"]@weir\/guest['"];?\s*$/gm, '');
const { componentize } = await import(join(tool, 'src', 'componentize.js'));
// Operators are built for contract 0.3 (wit/v0.3); window functions are in the 0.2 package (wit/).
const operator = world === 'co-operator';
const wit = witOption || join(here, '..', '..', operator ? 'wit/v0.3' : 'wit');
const { component } = await componentize(`${sdk}\n// ---- ${args[0]} ----\n${body}`, {
  witPath: resolve(wit),
  worldName: `weir:operator/${world}@${operator ? '0.3.0' : '0.2.0'}`,
  ...(defaults ? {} : { disableFeatures: ['http', 'fetch-event', 'stdio', 'random', 'clocks'] }),
});
await writeFile(resolve(output), component);
