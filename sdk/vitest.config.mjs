import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    environment: 'happy-dom',
    environmentOptions: { happyDOM: { url: 'https://shop.test/' } },
    include: ['test/**/*.test.ts'],
    restoreMocks: true,
  },
});
