// Retry policy: which answers are worth another try, and how long to wait.

export const BASE_MS = 1000;
export const CAP_MS = 30000;
/** Tries per batch, the first included. */
export const MAX_ATTEMPTS = 6;

/** 429 and 5xx are worth retrying; every other non-2xx answer is final. */
export const retryable = (status: number): boolean => status === 429 || status >= 500;

/** Full jitter: uniform in [0, min(cap, base * 2^retry)), `retry` counting from 0. */
export function backoff(retry: number, random: () => number, base = BASE_MS, cap = CAP_MS): number {
  return Math.floor(random() * Math.min(cap, base * 2 ** retry));
}

/**
 * The wait a `Retry-After` header asks for, in ms: delta seconds or an HTTP date.
 * Undefined when absent or unreadable; at most ten minutes.
 */
export function retryAfter(header: string | null | undefined, now: number): number | undefined {
  if (!header) return undefined;
  const t = header.trim();
  const ms = /^\d+(\.\d+)?$/.test(t) ? parseFloat(t) * 1000 : Date.parse(t) - now;
  return ms >= 0 ? Math.min(ms, 600000) : ms < 0 ? 0 : undefined;
}
