/**
 * Parsing of registry authentication challenges (RFC 7235 `WWW-Authenticate`), as the
 * distribution token protocol uses them:
 * https://distribution.github.io/distribution/spec/auth/token/
 */
import { registrySettingsKey } from '../core/reference.js';

/** One authentication challenge: the scheme (lowercased) and its parameters (keys lowercased). */
export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+/;
// A token68 is only taken as such when it ends the challenge; `realm=...` is a parameter.
const TOKEN68 = /^[A-Za-z0-9\-._~+/]+=*(?=\s*(?:,|$))/;

/**
 * Parse every challenge of a `WWW-Authenticate` value. Node joins repeated headers with
 * `, `, and one header may itself carry several challenges, so a new challenge starts
 * wherever a token is followed by a space instead of `=`.
 */
export function parseChallenges(header: string): Challenge[] {
  const out: Challenge[] = [];
  let s = header;
  let current: Challenge | undefined;
  const skip = (): void => {
    s = s.replace(/^[\s,]+/, '');
  };
  skip();
  while (s.length > 0) {
    const tok = TOKEN.exec(s);
    if (!tok) return out; // garbage: keep what parsed cleanly
    const name = tok[0];
    const rest = s.slice(name.length);
    const eq = /^\s*=\s*/.exec(rest);
    if (eq && !current) return out; // parameters before any scheme: not a challenge
    if (current && eq) {
      // auth-param: name = token / quoted-string
      s = rest.slice(eq[0].length);
      let value: string;
      if (s.startsWith('"')) {
        let i = 1;
        value = '';
        for (; i < s.length; i++) {
          const ch = s[i];
          if (ch === '\\' && i + 1 < s.length) {
            value += s[++i];
          } else if (ch === '"') {
            break;
          } else {
            value += ch;
          }
        }
        if (i >= s.length) {
          out.pop(); // unterminated quote: this challenge is unusable
          return out;
        }
        s = s.slice(i + 1);
      } else {
        const v = TOKEN.exec(s);
        value = v ? v[0] : '';
        s = s.slice(value.length);
      }
      current.params[name.toLowerCase()] = value;
    } else {
      // A scheme, possibly followed by a token68 (e.g. `Negotiate abc==`), which we ignore.
      current = { scheme: name.toLowerCase(), params: {} };
      out.push(current);
      s = rest.replace(/^\s+/, '');
      const t68 = TOKEN68.exec(s);
      if (t68) s = s.slice(t68[0].length);
    }
    skip();
  }
  return out;
}

/**
 * Parse a `WWW-Authenticate` header value into its scheme and quoted parameters, e.g.
 * `Bearer realm="https://auth.example.com/token",service="registry",scope="repository:a/b:pull"`.
 * Commas and escaped quotes inside quoted strings are kept. Returns the first challenge
 * whose scheme mirrorgate can answer (Bearer or Basic), else the first challenge, else
 * `undefined` when the value holds none. Scheme and parameter names are lowercased.
 */
export function parseWwwAuthenticate(h: string): Challenge | undefined {
  const all = parseChallenges(h);
  return all.find((c) => c.scheme === 'bearer' || c.scheme === 'basic') ?? all[0];
}

/** Basic credentials for a registry; also sent to a Bearer token realm to obtain tokens. */
export interface RegistryAuth {
  username: string;
  password: string;
  /**
   * The password is an OAuth2 refresh token (docker's `identitytoken`, an ACR refresh
   * token): a Bearer realm is asked with `POST grant_type=refresh_token` instead of Basic
   * credentials (https://distribution.github.io/distribution/spec/auth/oauth/).
   */
  refreshToken?: boolean;
}

/**
 * Normalise a registry name as written in configs (`https://Host:5000/v1/`) to the key of
 * registry settings ({@link registrySettingsKey}): `host[:port]`, lowercased, with Docker
 * Hub's aliases folded into `docker.io`.
 */
export function canonicalRegistryHost(name: string): string {
  let h = name.trim();
  h = h.replace(/^[a-zA-Z][a-zA-Z0-9+.-]*:\/\//, '');
  const slash = h.indexOf('/');
  if (slash >= 0) h = h.slice(0, slash);
  return registrySettingsKey(h);
}
