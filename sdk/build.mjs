// Builds the two bundles and the type declarations, prints their sizes, and fails
// when the script-tag build is over its gzip budget.
//
//   node build.mjs          build dist/ (sightflow.mjs, sdk.js, *.d.ts) and report sizes
//   node build.mjs --size   report the sizes of what is in dist/ (building first if absent)

import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { gzipSync } from 'node:zlib';
import * as esbuild from 'esbuild';

/** Gzipped bytes allowed for dist/sdk.js, rrweb's recorder included. */
const BUDGET = 30 * 1024;
const ESM = 'dist/sightflow.mjs';
const IIFE = 'dist/sdk.js';

const common = {
  bundle: true,
  minify: true,
  treeShaking: true,
  legalComments: 'none',
  sourcemap: false,
  charset: 'utf8',
  logLevel: 'warning',
};

/**
 * sdk.js leaves out rrweb's canvas recorder (recording of 2D/WebGL drawing calls and
 * its inline image worker): about 3.4 KB gzipped that only `recordCanvas: true`
 * uses, and without which the script-tag build does not fit its budget together
 * with the console plugin. A stand-in `CanvasManager` with the same methods takes
 * its place. Canvases are still captured as images in full snapshots when
 * `recordCanvas` is on; their later changes are recorded by the npm build only.
 * The cut is checked: the build fails if rrweb's file no longer looks as expected.
 */
const FIRST = 'var chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";';
const AFTER = 'class StylesheetManager {';
const STANDIN = `class CanvasManager {
  constructor(o) { if (o.recordCanvas) console.warn("[sightflow] sdk.js does not record canvas changes; the npm build does"); }
  reset() {} freeze() {} unfreeze() {} lock() {} unlock() {}
}
`;
const noCanvas = {
  name: 'rrweb-without-canvas',
  setup(b) {
    b.onLoad({ filter: /[\\/]@rrweb[\\/]record[\\/]dist[\\/]record\.js$/ }, ({ path }) => {
      const src = readFileSync(path, 'utf8');
      const start = src.indexOf(FIRST);
      const end = src.indexOf(AFTER);
      const cut = src.slice(start, end);
      const rest = src.slice(0, start) + src.slice(end);
      const names = [...cut.matchAll(/^(?:async )?(?:function|class|const|let|var) (\w+)/gm)].map((m) => m[1]);
      const leaks = names.filter((n) => n != 'CanvasManager' && new RegExp('(?<![\\w$.\'"`])' + n + '(?![\\w$])').test(rest));
      const uses = rest.match(/\bCanvasManager\b/g) || [];
      if (start < 0 || end < start || !names.includes('CanvasManager') || leaks.length || uses.length != 1) {
        throw new Error(`rrweb's record.js is not the expected 2.1.6 layout (leaks: ${leaks}); update build.mjs`);
      }
      return { contents: src.slice(0, start) + STANDIN + src.slice(end), loader: 'js' };
    });
  },
};

async function build() {
  rmSync('dist', { recursive: true, force: true });
  await esbuild.build({ ...common, entryPoints: ['src/index.ts'], format: 'esm', target: 'es2020', outfile: ESM });
  await esbuild.build({ ...common, entryPoints: ['src/iife.ts'], format: 'iife', target: 'es2020', outfile: IIFE, plugins: [noCanvas] });
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  try {
    execFileSync(process.execPath, [tsc, '-p', 'tsconfig.json', '--emitDeclarationOnly'], { stdio: 'inherit' });
  } catch {
    console.error('tsc failed');
    process.exit(1);
  }
}

function report() {
  let over = false;
  for (const f of [ESM, IIFE]) {
    const raw = readFileSync(f);
    const gz = gzipSync(raw, { level: 9 }).length;
    console.log(`${f.padEnd(20)} ${String(raw.length).padStart(7)} B raw ${String(gz).padStart(7)} B gzip`);
    if (f == IIFE && gz > BUDGET) {
      console.error(`${IIFE} is ${gz} B gzipped, over the budget of ${BUDGET} B`);
      over = true;
    }
  }
  if (over) process.exit(1);
}

if (!process.argv.includes('--size') || !existsSync(ESM) || !existsSync(IIFE)) await build();
report();
