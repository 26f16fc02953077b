// Prints the gzipped size of every built chunk (the console's budget report) and
// writes it to dist/sizes.json. The entry must stay small: the replay player and the
// SQL editor are split into the chunks of the pages that use them.
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

const dir = 'dist/assets';
const rows = readdirSync(dir)
  .filter((f) => f.endsWith('.js') || f.endsWith('.css'))
  .map((f) => {
    const body = readFileSync(`${dir}/${f}`);
    return { file: f, bytes: body.length, gzip: gzipSync(body, { level: 9 }).length };
  })
  .sort((a, b) => b.gzip - a.gzip);
writeFileSync('dist/sizes.json', JSON.stringify(rows, null, 2));
const index = readFileSync('dist/index.html', 'utf8');
const entry = rows.filter((r) => index.includes(r.file)).reduce((n, r) => n + r.gzip, 0);
for (const r of rows) console.log(`${String(r.gzip).padStart(8)} B gz  ${String(r.bytes).padStart(8)} B  ${r.file}`);
console.log(`${String(entry).padStart(8)} B gz  entry (what every page loads)`);
const BUDGET = 60 * 1024;
if (entry > BUDGET) {
  console.error(`the console's entry is ${entry} B gzipped, over its budget of ${BUDGET} B`);
  process.exit(1);
}
