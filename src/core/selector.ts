/**
 * Kubernetes label selectors (`matchLabels` and `matchExpressions` with `In`, `NotIn`,
 * `Exists`, `DoesNotExist`), as a webhook's namespaceSelector or a Deployment's selector
 * read them: every term must hold; an empty selector matches everything. Pure.
 * See https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#resources-that-support-set-based-requirements
 */
import type { Problem } from './rules.js';
import { isRecord } from './json.js';

export type SelectorOperator = 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';

export interface Requirement {
  readonly key: string;
  readonly operator: SelectorOperator;
  readonly values: readonly string[];
}

export interface LabelSelector {
  readonly requirements: readonly Requirement[];
  /** A stable text form, to tell whether two selectors are the same. */
  readonly canonical: string;
}

const OPERATORS: readonly SelectorOperator[] = ['In', 'NotIn', 'Exists', 'DoesNotExist'];
/** A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63 characters. */
const KEY = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
/** A label value: empty, or at most 63 characters of alphanumerics, `-`, `_`, `.` between alphanumerics. */
const VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;
/** Terms per selector at most: each is checked on every admission. */
const MAX_TERMS = 32;


/** Parse a selector from the config; problems are reported at `path`. Never throws. */
export function parseSelector(raw: unknown, path: string): { ok: true; selector: LabelSelector } | { ok: false; problems: Problem[] } {
  const problems: Problem[] = [];
  const requirements: Requirement[] = [];
  if (!isRecord(raw)) return { ok: false, problems: [{ path, message: 'must be a mapping with matchLabels and/or matchExpressions' }] };
  for (const k of Object.keys(raw)) {
    if (k !== 'matchLabels' && k !== 'matchExpressions') problems.push({ path: `${path}.${k}`, message: 'unknown key (allowed: matchLabels, matchExpressions)' });
  }
  const labels = raw.matchLabels;
  if (labels !== undefined && labels !== null) {
    if (!isRecord(labels)) problems.push({ path: `${path}.matchLabels`, message: 'must be a mapping of label keys to values' });
    else {
      for (const [key, value] of Object.entries(labels)) {
        const at = `${path}.matchLabels[${JSON.stringify(key)}]`;
        if (!KEY.test(key) || key.length > 317) problems.push({ path: at, message: `"${key}" is not a label key` });
        else if (typeof value !== 'string' || !VALUE.test(value)) problems.push({ path: at, message: `must be a label value (got ${JSON.stringify(value)})` });
        else requirements.push({ key, operator: 'In', values: [value] });
      }
    }
  }
  const exprs = raw.matchExpressions;
  if (exprs !== undefined && exprs !== null) {
    if (!Array.isArray(exprs)) problems.push({ path: `${path}.matchExpressions`, message: 'must be a list of {key, operator, values}' });
    else {
      exprs.forEach((e: unknown, i) => {
        const at = `${path}.matchExpressions[${i}]`;
        if (!isRecord(e)) {
          problems.push({ path: at, message: 'must be a mapping with key, operator and values' });
          return;
        }
        for (const k of Object.keys(e)) if (!['key', 'operator', 'values'].includes(k)) problems.push({ path: `${at}.${k}`, message: 'unknown key (allowed: key, operator, values)' });
        const key = e.key;
        const op = e.operator;
        if (typeof key !== 'string' || !KEY.test(key)) {
          problems.push({ path: `${at}.key`, message: `must be a label key (got ${JSON.stringify(key)})` });
          return;
        }
        if (typeof op !== 'string' || !(OPERATORS as readonly string[]).includes(op)) {
          problems.push({ path: `${at}.operator`, message: `must be one of ${OPERATORS.join(', ')} (got ${JSON.stringify(op)})` });
          return;
        }
        const operator = op as SelectorOperator;
        const rawValues = e.values;
        const values: string[] = [];
        if (Array.isArray(rawValues)) {
          rawValues.forEach((v: unknown, j) => {
            if (typeof v === 'string' && VALUE.test(v)) values.push(v);
            else problems.push({ path: `${at}.values[${j}]`, message: `must be a label value (got ${JSON.stringify(v)})` });
          });
        } else if (rawValues !== undefined && rawValues !== null) problems.push({ path: `${at}.values`, message: 'must be a list of label values' });
        if ((operator === 'In' || operator === 'NotIn') && (!Array.isArray(rawValues) || rawValues.length === 0)) {
          problems.push({ path: `${at}.values`, message: `${operator} needs at least one value` });
          return;
        }
        if ((operator === 'Exists' || operator === 'DoesNotExist') && Array.isArray(rawValues) && rawValues.length > 0) {
          problems.push({ path: `${at}.values`, message: `${operator} takes no values` });
          return;
        }
        requirements.push({ key, operator, values });
      });
    }
  }
  if (requirements.length > MAX_TERMS) problems.push({ path, message: `has ${requirements.length} terms; at most ${MAX_TERMS}` });
  if (problems.length > 0) return { ok: false, problems };
  const canonical = requirements
    .map((r) => `${r.key} ${r.operator} ${[...r.values].sort().join(',')}`)
    .sort()
    .join('; ');
  return { ok: true, selector: { requirements, canonical } };
}

/** Do these labels satisfy every term? An empty selector matches any labels. */
export function selectorMatches(selector: LabelSelector, labels: Readonly<Record<string, string>>): boolean {
  for (const r of selector.requirements) {
    const has = Object.prototype.hasOwnProperty.call(labels, r.key);
    const value = has ? labels[r.key] : undefined;
    switch (r.operator) {
      case 'In':
        if (value === undefined || !r.values.includes(value)) return false;
        break;
      case 'NotIn':
        // As in Kubernetes: a missing label satisfies NotIn.
        if (value !== undefined && r.values.includes(value)) return false;
        break;
      case 'Exists':
        if (!has) return false;
        break;
      case 'DoesNotExist':
        if (has) return false;
        break;
    }
  }
  return true;
}
