import t from 'tap';
import { findManifestImages } from '../../src/scan/manifests.js';

interface Expect {
  image: string;
  line: number;
  context?: string;
  /** The source text the edit covers (quotes included); null when not rewritable. */
  span?: string | null;
  templated?: boolean;
  note?: RegExp;
}

const pod = (containers: string): string => `apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n${containers}`;

const cases: { name: string; text: string; expect: Expect[]; problems?: number }[] = [
  {
    name: 'Pod: plain, single- and double-quoted values keep their quotes in the span',
    text: pod(`  - name: a\n    image: nginx:1.25 # comment\n  - name: b\n    image: 'redis:7'\n  - name: c\n    image: "busybox"\n`),
    expect: [
      { image: 'nginx:1.25', line: 8, context: 'Pod/p containers[0] (a)', span: 'nginx:1.25' },
      { image: 'redis:7', line: 10, span: "'redis:7'" },
      { image: 'busybox', line: 12, span: '"busybox"' },
    ],
  },
  {
    name: 'init, regular and ephemeral containers',
    text: pod(`  - {name: app, image: app:1}\n  initContainers:\n  - {name: init, image: init:1}\n  ephemeralContainers:\n  - {name: dbg, image: dbg:1}\n`),
    expect: [
      { image: 'init:1', line: 9, context: 'Pod/p initContainers[0] (init)' },
      { image: 'app:1', line: 7, context: 'Pod/p containers[0] (app)' },
      { image: 'dbg:1', line: 11, context: 'Pod/p ephemeralContainers[0] (dbg)' },
    ],
  },
  {
    name: 'workload kinds with spec.template, across documents',
    text: ['Deployment', 'StatefulSet', 'DaemonSet', 'ReplicaSet', 'Job', 'ReplicationController', 'Rollout']
      .map((kind) => `kind: ${kind}\nmetadata: {name: w}\nspec:\n  template:\n    spec:\n      containers: [{name: c, image: "${kind.toLowerCase()}:1"}]\n`)
      .join('---\n'),
    expect: ['Deployment', 'StatefulSet', 'DaemonSet', 'ReplicaSet', 'Job', 'ReplicationController', 'Rollout'].map((kind, i) => ({
      image: `${kind.toLowerCase()}:1`,
      line: 6 + i * 7,
      context: `${kind}/w containers[0] (c)`,
    })),
  },
  {
    name: 'CronJob jobTemplate and PodTemplate',
    text: 'kind: CronJob\nmetadata: {name: cj}\nspec:\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          containers:\n            - image: gcr.io/x/y:1\n---\nkind: PodTemplate\nmetadata: {name: pt}\ntemplate:\n  spec:\n    containers: [{image: z}]\n',
    expect: [
      { image: 'gcr.io/x/y:1', line: 9, context: 'CronJob/cj containers[0]' },
      { image: 'z', line: 15, context: 'PodTemplate/pt containers[0]' },
    ],
  },
  {
    name: 'List items, nested',
    text: 'apiVersion: v1\nkind: List\nitems:\n- kind: Pod\n  metadata: {name: a}\n  spec: {containers: [{image: a:1}]}\n- kind: DeploymentList\n  items:\n  - kind: Deployment\n    metadata: {name: b}\n    spec: {template: {spec: {containers: [{image: b:1}]}}}\n',
    expect: [
      { image: 'a:1', line: 6, context: 'List items[0] Pod/a containers[0]' },
      { image: 'b:1', line: 11, context: 'List items[1] DeploymentList items[0] Deployment/b containers[0]' },
    ],
  },
  {
    name: 'objects without a pod template, and non-workload documents, are ignored',
    text: 'kind: Service\nspec: {selector: {app: x}}\n---\nkind: ConfigMap\ndata: {image: nginx}\n---\n# only a comment\n---\n',
    expect: [],
  },
  {
    name: 'an alias is rewritten at its anchor',
    text: pod(`  - name: a\n    image: &img nginx:1\n  - name: b\n    image: *img\n`),
    expect: [
      { image: 'nginx:1', line: 8, span: 'nginx:1' },
      { image: 'nginx:1', line: 10, span: 'nginx:1', note: /from anchor &img \(line 8\)/ },
    ],
  },
  {
    name: 'merge keys are followed; own keys win',
    text: pod(`  - &base\n    name: a\n    image: base:1\n  - <<: *base\n    name: b\n  - <<: *base\n    name: c\n    image: own:2\n`),
    expect: [
      { image: 'base:1', line: 9, span: 'base:1' },
      { image: 'base:1', line: 9, span: 'base:1', note: /merged/ },
      { image: 'own:2', line: 14, span: 'own:2' },
    ],
  },
  {
    name: 'templated values are skipped',
    text: pod(`  - image: "{{ .Values.image }}"\n  - image: \${IMAGE}\n  - image: repo/app:$TAG\n`),
    expect: [
      { image: '{{ .Values.image }}', line: 7, span: null, templated: true },
      { image: '${IMAGE}', line: 8, span: null, templated: true },
      { image: 'repo/app:$TAG', line: 9, span: null, templated: true },
    ],
  },
  {
    name: 'block scalars are reported but not rewritable; empty images skipped',
    text: pod(`  - image: >-\n      nginx:1\n  - image:\n  - name: none\n`),
    expect: [{ image: 'nginx:1', line: 7, span: null, note: /block scalar/ }],
  },
  {
    name: 'a document with a syntax error is a problem; the others are scanned',
    text: `kind: Pod\nspec: {containers: [{image: ok:1}]}\n---\nkind: Pod\nspec: {containers: [{image: bad:1}\n---\n${pod('  - image: after:1\n')}`,
    expect: [
      { image: 'ok:1', line: 2 },
      { image: 'after:1', line: 13 },
    ],
    problems: 1,
  },
];

for (const c of cases) {
  t.test(c.name, async (t) => {
    const { images, problems } = findManifestImages(c.text);
    t.equal(problems.length, c.problems ?? 0, `problems: ${problems.map((p) => p.message).join('; ')}`);
    t.equal(images.length, c.expect.length, `${images.length} images: ${images.map((f) => f.image).join(', ')}`);
    c.expect.forEach((e, i) => {
      const f = images[i];
      if (!f) return;
      t.equal(f.image, e.image, 'image');
      t.equal(f.line, e.line, `line of ${e.image}`);
      if (e.context !== undefined) t.equal(f.context, e.context, 'context');
      if (e.span !== undefined) t.equal(f.edit ? c.text.slice(f.edit.start, f.edit.end) : null, e.span, 'edit span');
      t.equal(f.templated, e.templated ?? false, 'templated');
      if (e.note) t.match(f.note, e.note, 'note');
    });
  });
}

t.test('a Helm template file is reported as a template, not as broken YAML', async (t) => {
  const { images, problems } = findManifestImages('{{- if .Values.on }}\nkind: Pod\nspec:\n  containers:\n  - image: {{ .Values.image }}\n{{- end }}\n');
  t.same(images, []);
  t.equal(problems.length, 1);
  t.equal(problems[0]?.templated, true);
});

t.test('edit quote style follows the scalar', async (t) => {
  const { images } = findManifestImages(pod(`  - image: a\n  - image: 'b'\n  - image: "c"\n`));
  t.same(images.map((i) => i.edit?.quote), ['', "'", '"']);
});
