import t from 'tap';
import { findDockerfileImages } from '../../src/scan/dockerfile.js';

interface Expect {
  image: string;
  line: number;
  context?: string;
  /** The text the edit span covers; null when not rewritable. */
  span?: string | null;
  templated?: boolean;
  note?: RegExp;
}

const cases: { name: string; text: string; expect: Expect[] }[] = [
  {
    name: 'plain FROM, tag and digest',
    text: 'FROM nginx:1.25\nFROM docker.io/library/alpine@sha256:' + 'a'.repeat(64) + '\n',
    expect: [
      { image: 'nginx:1.25', line: 1, context: 'FROM', span: 'nginx:1.25' },
      { image: 'docker.io/library/alpine@sha256:' + 'a'.repeat(64), line: 2, span: 'docker.io/library/alpine@sha256:' + 'a'.repeat(64) },
    ],
  },
  {
    name: '--platform flag and AS name; stage names are not images',
    text: 'FROM --platform=$BUILDPLATFORM golang:1.22 AS build\nRUN go build\nFROM build AS test\nfrom BUILD\nFROM gcr.io/distroless/static\nCOPY --from=build /out /out\n',
    expect: [
      { image: 'golang:1.22', line: 1, context: 'FROM (stage build)', span: 'golang:1.22' },
      { image: 'gcr.io/distroless/static', line: 5, context: 'FROM', span: 'gcr.io/distroless/static' },
    ],
  },
  {
    name: 'a stage cannot refer to itself: FROM build AS build is an image',
    text: 'FROM build AS build\n',
    expect: [{ image: 'build', line: 1, span: 'build' }],
  },
  {
    name: 'scratch is not an image',
    text: 'FROM scratch\nCOPY app /\nFROM SCRATCH AS x\n',
    expect: [],
  },
  {
    name: 'ARG default substituted, rewritten at the ARG',
    text: 'ARG BASE=node:20\nFROM ${BASE} AS deps\nFROM $BASE\n',
    expect: [
      { image: 'node:20', line: 2, span: 'node:20', note: /from ARG BASE \(line 1\)/ },
      { image: 'node:20', line: 3, span: 'node:20' },
    ],
  },
  {
    name: 'quoted ARG default: the quotes stay',
    text: 'ARG BASE="python:3.12"\nFROM ${BASE}\n',
    expect: [{ image: 'python:3.12', line: 2, span: 'python:3.12' }],
  },
  {
    name: 'ARG in part of the image: reported, not rewritable',
    text: 'ARG TAG=20\nFROM node:${TAG}-slim\n',
    expect: [{ image: 'node:20-slim', line: 2, span: null, note: /build arguments \(TAG\)/ }],
  },
  {
    name: 'ARG without default: templated',
    text: 'ARG BASE\nFROM $BASE\nFROM alpine:${TAG}\n',
    expect: [
      { image: '$BASE', line: 2, span: null, templated: true, note: /BASE without a default/ },
      { image: 'alpine:${TAG}', line: 3, span: null, templated: true },
    ],
  },
  {
    name: '${VAR:-default} fallback',
    text: 'ARG TAG\nFROM alpine:${TAG:-3.19}\n',
    expect: [{ image: 'alpine:3.19', line: 2, span: null }],
  },
  {
    name: 'ARGs after FROM are not seen by FROM',
    text: 'FROM alpine\nARG LATER=busybox\nFROM $LATER\n',
    expect: [
      { image: 'alpine', line: 1, span: 'alpine' },
      { image: '$LATER', line: 3, templated: true },
    ],
  },
  {
    name: 'ARG whose default uses another ARG: not rewritable at the ARG',
    text: 'ARG REG=docker.io\nARG BASE=${REG}/library/node:20\nFROM ${BASE}\n',
    expect: [{ image: 'docker.io/library/node:20', line: 3, span: null, note: /not a plain reference/ }],
  },
  {
    name: 'an ARG resolving to a stage name is a stage',
    text: 'ARG FROM_STAGE=build\nFROM golang AS build\nFROM ${FROM_STAGE}\n',
    expect: [{ image: 'golang', line: 2, span: 'golang' }],
  },
  {
    name: 'line continuation inside FROM, comment lines dropped',
    text: 'FROM \\\n  # the base\n  --platform=linux/arm64 \\\n  alpine:3.19 \\\n  AS base\nCOPY --from=base / /\n',
    expect: [{ image: 'alpine:3.19', line: 4, context: 'FROM (stage base)', span: 'alpine:3.19' }],
  },
  {
    name: 'the escape directive switches continuations to backtick',
    text: '# escape=`\nFROM `\n  mcr.microsoft.com/windows/servercore:ltsc2022\nRUN dir c:\\\nFROM alpine\n',
    expect: [
      { image: 'mcr.microsoft.com/windows/servercore:ltsc2022', line: 3, span: 'mcr.microsoft.com/windows/servercore:ltsc2022' },
      { image: 'alpine', line: 5, span: 'alpine' },
    ],
  },
  {
    name: 'comments and heredoc bodies are not instructions',
    text: '# FROM commented:out\nFROM alpine\nRUN <<EOF\nFROM not-an-image:1\nEOF\nCOPY <<-END /x\n\tFROM neither:2\n\tEND\nFROM busybox\n',
    expect: [
      { image: 'alpine', line: 2, span: 'alpine' },
      { image: 'busybox', line: 9, span: 'busybox' },
    ],
  },
  {
    name: 'COPY --from an image, a stage name or a stage index',
    text: 'FROM golang AS build\nFROM alpine\nCOPY --from=build /a /a\nCOPY --from=0 /b /b\nCOPY --chown=1:1 --from=quay.io/prometheus/busybox:latest /bin/sh /sh\n',
    expect: [
      { image: 'golang', line: 1, span: 'golang' },
      { image: 'alpine', line: 2, span: 'alpine' },
      { image: 'quay.io/prometheus/busybox:latest', line: 5, context: 'COPY --from', span: 'quay.io/prometheus/busybox:latest' },
    ],
  },
  {
    name: 'RUN --mount from= an image',
    text: 'FROM alpine AS a\nRUN --mount=type=bind,from=a,target=/a --mount=type=bind,from=busybox:1.36,target=/b true\n',
    expect: [
      { image: 'alpine', line: 1, span: 'alpine' },
      { image: 'busybox:1.36', line: 2, context: 'RUN --mount from', span: 'busybox:1.36' },
    ],
  },
  {
    name: 'CRLF line endings',
    text: 'FROM node:20 AS a\r\nFROM a\r\nFROM nginx\r\n',
    expect: [
      { image: 'node:20', line: 1, span: 'node:20' },
      { image: 'nginx', line: 3, span: 'nginx' },
    ],
  },
];

for (const c of cases) {
  t.test(c.name, async (t) => {
    const found = findDockerfileImages(c.text);
    t.equal(found.length, c.expect.length, `${found.length} images: ${found.map((f) => f.image).join(', ')}`);
    c.expect.forEach((e, i) => {
      const f = found[i];
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

t.test('column points at the token', async (t) => {
  const [f] = findDockerfileImages('FROM --platform=linux/amd64 nginx\n');
  t.equal(f?.column, 29);
});
