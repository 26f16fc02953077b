// URL privacy: scrubbing secret parameters out of every URL the SDK sends, and
// the blocklist of pages on which nothing is recorded.

/** Parameter names whose values never leave the page; matched case-insensitively. */
export const DEFAULT_SCRUB_PARAMS = [
  'token', 'access_token', 'refresh_token', 'id_token', 'auth', 'password', 'pass', 'pwd',
  'secret', 'email', 'key', 'api_key', 'apikey', 'code', 'session', 'sid', 'ssn', 'card', 'cc',
];

export const REDACTED = '[redacted]';

const decode = (s: string): string => {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return s;
  }
};

/**
 * Returns a function that replaces the value of every `name=value` pair whose
 * name is in `DEFAULT_SCRUB_PARAMS` or `extra` by `[redacted]`, in the query and
 * in the fragment (`#access_token=...`, `#/route?token=...`). Names are kept,
 * everything else is left byte for byte as it was.
 */
export function scrubber(extra: string[] = []): (url: string) => string {
  const names = new Set(DEFAULT_SCRUB_PARAMS.concat(extra).map((n) => n.toLowerCase()));
  // A pair starts the string or follows a separator; its value runs to the next one.
  // `/` may separate pairs but not end a value, so `next=/a/b` stays one value.
  const pair = /(^|[?&;#/])([^?&;#/=]+)=([^?&;#]*)/g;
  const pairs = (part: string) =>
    part.replace(pair, (all, sep: string, name: string) =>
      names.has(decode(name).trim().toLowerCase()) ? sep + name + '=' + REDACTED : all,
    );
  return (url) => {
    if (!url) return url;
    const q = url.search(/[?#]/);
    return q < 0 ? url : url.slice(0, q) + pairs(url.slice(q));
  };
}

const escape = (s: string) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&');

/** A predicate telling whether a full URL is on the blocklist (`*` globs or RegExps). */
export function blocklist(list: Array<string | RegExp> = []): (url: string) => boolean {
  const res = list.map((p) =>
    typeof p === 'string' ? new RegExp('^' + p.split('*').map(escape).join('.*') + '$') : p,
  );
  return (url) =>
    res.some((re) => {
      re.lastIndex = 0;
      return re.test(url);
    });
}
