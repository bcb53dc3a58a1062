# syntax=docker/dockerfile:1
# Multi-stage: build with the full toolchain, ship only production dependencies and
# the compiled JavaScript on a distroless Node runtime (no shell, no npm, no compiler).

FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

FROM node:24-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

FROM gcr.io/distroless/nodejs24-debian12:nonroot AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app/package.json ./package.json
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY config/example.yaml ./config/example.yaml
# distroless' nonroot user, by number so runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 8443 9090
ENTRYPOINT ["/nodejs/bin/node", "/app/dist/cli.js"]
CMD ["serve", "--config", "/etc/mirrorgate/config/config.yaml", "--tls-cert", "/etc/mirrorgate/tls/tls.crt", "--tls-key", "/etc/mirrorgate/tls/tls.key"]
