// @sightflow/sdk: the browser SDK of sightflow.
//
// It records the page with rrweb (DOM snapshots and mutations, pointer, scroll and
// input activity, console output), adds the events rrweb does not have (SPA page
// views, page exits, errors, web vitals, custom events, identify), and sends them
// in batches to the server's `POST /api/v1/track`: gzipped, retried with backoff,
// kept in IndexedDB while offline, and beaconed when the page goes away.
//
//   import { sightflow } from '@sightflow/sdk';
//   sightflow.init({ projectKey: 'pk_live', host: 'https://sightflow.example.com' });
//   sightflow.capture('signup', { plan: 'pro' });

import { createSightflow } from './client.js';
import type { Sightflow } from './types.js';

/** The page's SDK instance. */
export const sightflow: Sightflow = createSightflow();

export { createSightflow };
export { DEFAULT_SCRUB_PARAMS } from './url.js';
export type { Options, Sightflow, Stats, StorageLike } from './types.js';
