/** The workload of a pod from its own metadata (no API call), table-driven. */
import t from 'tap';
import { workloadOf, type Workload } from '../../src/core/workload.js';

const rs = (name: string, extra: Record<string, unknown> = {}) => ({ apiVersion: 'apps/v1', kind: 'ReplicaSet', name, uid: 'u1', controller: true, ...extra });

const cases: [string, unknown, Workload | undefined][] = [
  [
    'a Deployment pod: ReplicaSet <deployment>-<pod-template-hash> read as the Deployment',
    { metadata: { generateName: 'web-5d7f8c9b4-', labels: { app: 'web', 'pod-template-hash': '5d7f8c9b4' }, ownerReferences: [rs('web-5d7f8c9b4')] } },
    { kind: 'Deployment', name: 'web', via: 'pod-template-hash' },
  ],
  [
    'a Deployment whose name has dashes',
    { metadata: { labels: { 'pod-template-hash': '7c5ddbdf54' }, ownerReferences: [rs('my-api-v2-7c5ddbdf54')] } },
    { kind: 'Deployment', name: 'my-api-v2', via: 'pod-template-hash' },
  ],
  ['a ReplicaSet made by hand (no pod-template-hash label) stays a ReplicaSet', { metadata: { ownerReferences: [rs('frontend')] } }, { kind: 'ReplicaSet', name: 'frontend', via: 'owner' }],
  [
    'a hash label the ReplicaSet name does not end in: not guessed',
    { metadata: { labels: { 'pod-template-hash': 'abc' }, ownerReferences: [rs('frontend-xyz')] } },
    { kind: 'ReplicaSet', name: 'frontend-xyz', via: 'owner' },
  ],
  [
    'a ReplicaSet named only the hash: not cut to nothing',
    { metadata: { labels: { 'pod-template-hash': 'abc' }, ownerReferences: [rs('-abc')] } },
    { kind: 'ReplicaSet', name: '-abc', via: 'owner' },
  ],
  [
    'a ReplicaSet of another API group is not the apps Deployment controller',
    { metadata: { labels: { 'pod-template-hash': 'h1' }, ownerReferences: [rs('x-h1', { apiVersion: 'example.com/v1' })] } },
    { kind: 'ReplicaSet', name: 'x-h1', via: 'owner' },
  ],
  ['a StatefulSet pod', { metadata: { name: 'db-0', ownerReferences: [{ apiVersion: 'apps/v1', kind: 'StatefulSet', name: 'db', controller: true }] } }, { kind: 'StatefulSet', name: 'db', via: 'owner' }],
  ['a DaemonSet pod', { metadata: { ownerReferences: [{ apiVersion: 'apps/v1', kind: 'DaemonSet', name: 'node-agent', controller: true }] } }, { kind: 'DaemonSet', name: 'node-agent', via: 'owner' }],
  ['a Job pod', { metadata: { ownerReferences: [{ apiVersion: 'batch/v1', kind: 'Job', name: 'migrate-29400000', controller: true }] } }, { kind: 'Job', name: 'migrate-29400000', via: 'owner' }],
  [
    'the controlling owner wins over others listed first',
    { metadata: { ownerReferences: [{ kind: 'ConfigMap', name: 'x' }, { apiVersion: 'apps/v1', kind: 'StatefulSet', name: 'db', controller: true }] } },
    { kind: 'StatefulSet', name: 'db', via: 'owner' },
  ],
  ['no controller: the first owner', { metadata: { ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name: 'n1' }] } }, { kind: 'Node', name: 'n1', via: 'owner' }],
  ['a bare pod: itself', { metadata: { name: 'debug' } }, { kind: 'Pod', name: 'debug', via: 'pod' }],
  ['a bare pod not yet named', { metadata: { generateName: 'job-' } }, { kind: 'Pod', name: 'job-*', via: 'pod' }],
  ['no metadata', { spec: {} }, undefined],
  ['not an object', 'pod', undefined],
  ['an owner without a name', { metadata: { ownerReferences: [{ kind: 'ReplicaSet' }] } }, undefined],
  ['an owner name with a slash (not a Kubernetes name)', { metadata: { ownerReferences: [{ kind: 'Job', name: 'a/b' }] } }, undefined],
  ['an owner name longer than any Kubernetes name', { metadata: { ownerReferences: [{ kind: 'Job', name: 'x'.repeat(254) }] } }, undefined],
  ['ownerReferences not a list', { metadata: { name: 'p', ownerReferences: 'x' } }, { kind: 'Pod', name: 'p', via: 'pod' }],
];

for (const [name, pod, want] of cases) {
  t.test(name, async (t) => {
    t.same(workloadOf(pod), want);
  });
}
