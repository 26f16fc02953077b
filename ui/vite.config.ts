import { defineConfig } from 'vitest/config';
import preact from '@preact/preset-vite';

// The console is served by `sightflow serve` at `/`; `npm run dev` proxies the API to a
// local server so the pages can be worked on with hot reload.
export default defineConfig({
  plugins: [preact()],
  base: '/',
  build: {
    outDir: 'dist',
    assetsDir: 'assets',
    target: 'es2022',
    sourcemap: false,
    chunkSizeWarningLimit: 800,
    rollupOptions: {
      output: {
        // Named chunks for the heavy parts, loaded only by the pages that use them.
        manualChunks(id: string) {
          if (/node_modules\/(@rrweb|rrweb|rrdom|rrweb-snapshot)\//.test(id)) return 'player';
          if (/node_modules\/uplot\//.test(id)) return 'charts';
          if (/node_modules\/(@codemirror|@lezer|codemirror|crelt|style-mod|w3c-keyname)\//.test(id)) return 'editor';
          return undefined;
        },
      },
    },
  },
  server: {
    proxy: { '/api': process.env.SIGHTFLOW_URL ?? 'http://127.0.0.1:8080' },
  },
  test: {
    include: ['test/**/*.test.ts'],
    environment: 'node',
  },
});
