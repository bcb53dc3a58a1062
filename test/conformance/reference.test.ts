/**
 * distribution/reference's own test vectors (test/conformance/distribution-reference.json,
 * converted from reference_test.go, normalize_test.go and regexp_test.go at a pinned
 * commit; the WithName, Field and WithTag vectors by scripts/conformance/reference) run
 * against parseReference. Each vector's `check` names the upstream function it
 * was written for; `outcome()` says how that maps onto mirrorgate, which always parses as
 * the runtimes do (`ParseNormalizedNamed`). Vectors listed in `differences` must differ
 * (so the README's compatibility table stays true); every other vector must agree.
 */
import { readFileSync } from 'node:fs';
import t from 'tap';
import { formatReference, isValidRegistryHost, parseReference, type ImageReference } from '../../src/core/reference.js';

interface Case {
  id: string;
  file: string;
  test: string;
  line: number;
  check: string;
  input: string;
  expect: Record<string, unknown>;
}
interface Fixture {
  upstream: { repository: string; commit: string };
  cases: Case[];
  differences: Record<string, string>;
}

const fixture = JSON.parse(readFileSync(new URL('./distribution-reference.json', import.meta.url), 'utf8')) as Fixture;

/**
 * Where `ParseNormalizedNamed` puts a name that the non-normalising functions (`Parse`,
 * the regular expressions) split into `domain` and `path`: the first component is a host
 * only if it has `.` or `:`, is `localhost` or has uppercase; exactly `index.docker.io` is
 * `docker.io`; a single component on `docker.io` gets `library/`.
 */
function normalised(domain: string, path: string): { registry: string; repository: string } {
  const isHost = domain !== '' && (domain.includes('.') || domain.includes(':') || domain === 'localhost' || domain !== domain.toLowerCase());
  const registry = isHost ? (domain === 'index.docker.io' ? 'docker.io' : domain) : 'docker.io';
  let repository = isHost || domain === '' ? path : `${domain}/${path}`;
  if (registry === 'docker.io' && !repository.includes('/')) repository = `library/${repository}`;
  return { registry, repository };
}

/** A full name split as the unanchored grammar does: a leading component that is a host. */
function splitName(name: string): { domain: string; path: string } {
  const slash = name.indexOf('/');
  if (slash !== -1 && isValidRegistryHost(name.slice(0, slash))) return { domain: name.slice(0, slash), path: name.slice(slash + 1) };
  return { domain: '', path: name };
}

function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}

function sameName(ref: ImageReference, want: { registry: string; repository: string }): string | undefined {
  if (ref.registry !== want.registry || ref.repository !== want.repository) {
    return `name ${ref.registry}/${ref.repository}, upstream means ${want.registry}/${want.repository}`;
  }
  return undefined;
}

/** undefined when mirrorgate gives upstream's answer, else what differs. */
function outcome(c: Case): string | undefined {
  const e = c.expect;
  const r = parseReference(c.input);
  const refused = r.ok ? undefined : r.reason;
  switch (c.check) {
    case 'Parse': {
      if (e.error !== undefined) return r.ok ? `accepted; upstream: ${str(e.error)}` : undefined;
      if (!r.ok) return `refused (${r.reason}); upstream accepts`;
      const name = str(e.name);
      const domain = str(e.domain);
      const path = domain === '' ? name : name.slice(domain.length + 1);
      if ((r.ref.tag ?? '') !== str(e.tag)) return `tag ${r.ref.tag}, upstream ${str(e.tag)}`;
      if ((r.ref.digest ?? '') !== str(e.digest)) return `digest ${r.ref.digest}, upstream ${str(e.digest)}`;
      return sameName(r.ref, normalised(domain, path));
    }
    case 'ParseNamed': {
      // ParseNamed accepts only names already in their normalised form.
      const canonical = r.ok && formatReference(r.ref) === c.input;
      if (e.error !== undefined) return canonical ? `canonical; upstream: ${str(e.error)}` : undefined;
      if (!r.ok) return `refused (${r.reason})`;
      if (!canonical) return `not canonical: ${formatReference(r.ref)}`;
      return sameName(r.ref, { registry: str(e.domain), repository: str(e.path) });
    }
    case 'ParseNormalizedNamed': {
      if (e.valid === false) return r.ok ? 'accepted; upstream refuses' : undefined;
      if (!r.ok) return `refused (${r.reason}); upstream accepts`;
      if (e.string !== undefined && formatReference(r.ref) !== e.string) return `formats as ${formatReference(r.ref)}, upstream ${str(e.string)}`;
      if (e.domain !== undefined && r.ref.registry !== e.domain) return `host ${r.ref.registry}, upstream ${str(e.domain)}`;
      if (e.path !== undefined && r.ref.repository !== e.path) return `repository ${r.ref.repository}, upstream ${str(e.path)}`;
      return undefined;
    }
    case 'ParseAnyReference': {
      if (!r.ok) return `refused (${r.reason}); upstream reads ${str(e.string)}`;
      return formatReference(r.ref) === e.string ? undefined : `formats as ${formatReference(r.ref)}, upstream ${str(e.string)}`;
    }
    case 'ParseDockerRef': {
      // What is pulled: by digest when there is one, else the tag, `latest` when none.
      if (!r.ok) return `refused (${r.reason})`;
      const ref = r.ref;
      const pulled = `${ref.registry}/${ref.repository}${ref.digest !== undefined ? `@${ref.digest}` : `:${ref.tag ?? 'latest'}`}`;
      return pulled === e.string ? undefined : `pulls ${pulled}, upstream ${str(e.string)}`;
    }
    case 'DomainRegexp':
      return isValidRegistryHost(c.input) === e.match ? undefined : `host valid: ${String(!e.match)}, upstream ${String(e.match)}`;
    case 'anchoredNameRegexp': {
      const bareName = r.ok && r.ref.tag === undefined && r.ref.digest === undefined;
      if (e.match !== true) return bareName ? 'a valid name here; upstream does not match' : undefined;
      if (!bareName) return `not a bare name here (${refused ?? 'has a tag or digest'})`;
      const split = e.domain === undefined ? splitName(c.input) : { domain: str(e.domain), path: str(e.path) };
      return sameName(r.ref, normalised(split.domain, split.path));
    }
    case 'referenceRegexp': {
      if (e.match !== true) return r.ok ? 'accepted; upstream does not match' : undefined;
      if (!r.ok) return `refused (${r.reason}); upstream matches`;
      if ((r.ref.tag ?? '') !== str(e.tag)) return `tag ${r.ref.tag}, upstream ${str(e.tag)}`;
      if ((r.ref.digest ?? '') !== str(e.digest)) return `digest ${r.ref.digest}, upstream ${str(e.digest)}`;
      const { domain, path } = splitName(e.name === undefined ? c.input.split(/[:@]/)[0] ?? '' : str(e.name));
      return sameName(r.ref, normalised(domain, path));
    }
    case 'WithName': {
      // WithName takes a repository name alone: upstream's error means "not a bare name".
      const bareName = r.ok && r.ref.tag === undefined && r.ref.digest === undefined;
      if (e.error !== undefined) return bareName ? `a valid name here; upstream: ${str(e.error)}` : undefined;
      if (!bareName) return `not a bare name here (${refused ?? 'has a tag or digest'})`;
      return sameName(r.ref, normalised(str(e.domain), str(e.path)));
    }
    case 'Field': {
      // Field.UnmarshalText is Parse: the reference as a whole, split by the grammar.
      if (e.error !== undefined) return r.ok ? `accepted; upstream: ${str(e.error)}` : undefined;
      if (!r.ok) return `refused (${r.reason}); upstream accepts`;
      if ((r.ref.tag ?? '') !== str(e.tag)) return `tag ${r.ref.tag}, upstream ${str(e.tag)}`;
      if ((r.ref.digest ?? '') !== str(e.digest)) return `digest ${r.ref.digest}, upstream ${str(e.digest)}`;
      const { domain, path } = splitName(str(e.name));
      return sameName(r.ref, normalised(domain, path));
    }
    case 'WithTag': {
      // A name and a tag put together: the combined string reads back as that name and tag.
      if (!r.ok) return `refused (${r.reason}); upstream builds it`;
      if (r.ref.tag !== str(e.tag) || r.ref.digest !== undefined) return `tag ${r.ref.tag}, digest ${r.ref.digest}; upstream tag ${str(e.tag)}`;
      const { domain, path } = splitName(str(e.name));
      return sameName(r.ref, normalised(domain, path));
    }
    case 'anchoredIdentifierRegexp': {
      // An image ID is never a name: refused as one exactly when upstream matches it.
      const asId = !r.ok && r.reason.includes('image ID');
      return asId === e.match ? undefined : `refused as an image ID: ${String(asId)}, upstream matches: ${String(e.match)}`;
    }
    default:
      return `unknown check ${c.check}`;
  }
}

t.test(`${fixture.upstream.repository} at ${fixture.upstream.commit.slice(0, 12)}`, async (t) => {
  t.ok(fixture.cases.length >= 333, 'the whole converted table is here');
  let same = 0;
  let different = 0;
  for (const c of fixture.cases) {
    const got = outcome(c);
    const documented = fixture.differences[c.id];
    const where = `${c.file} ${c.test} (line ${c.line}) ${JSON.stringify(c.input)}`;
    if (documented === undefined) {
      t.equal(got, undefined, where);
      if (got === undefined) same++;
    } else {
      t.not(got, undefined, `${where}: documented as different (${documented}), so it must differ`);
      if (got !== undefined) different++;
    }
  }
  for (const id of Object.keys(fixture.differences)) t.ok(fixture.cases.some((c) => c.id === id), `difference ${id} names a case`);
  t.comment(`${fixture.cases.length} vectors: ${same} same as upstream, ${different} documented differences`);
});
