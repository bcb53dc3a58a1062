# mirrorgate: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
NODE_MODULES_STAMP := node_modules/.package-lock.json
CONFIG ?= config/example.yaml
PORT ?= 8443
METRICS_PORT ?= 9090
CERTS_DIR ?= certs
# make run is for a local try: loopback only.
HOST ?= 127.0.0.1

.PHONY: all install build typecheck lint test test-deps run bench certs deploy image clean

all: build

# npm ci only when the lockfile changed since the last install.
$(NODE_MODULES_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $(NODE_MODULES_STAMP)

install: $(NODE_MODULES_STAMP)

build: install
	npm run build

typecheck: install
	npm run typecheck

lint: install
	npm run lint

# System packages that integration tests drive for real (a distribution registry,
# htpasswd). Installed only when missing and only when we may (root).
test-deps:
	@bash scripts/test-deps.sh

# The suite on this machine's node, then again on Node.js 24 LTS (the image's runtime and
# what package.json's engines claim), pinned in scripts/node24.sh. Skipped when this
# machine's node is that version already.
test: install test-deps build typecheck lint
	npm test
	@node24=$$(bash scripts/node24.sh) || exit 1; \
	if [ "$$(node --version)" = "$$($$node24 --version)" ]; then echo "make test: node is $$(node --version) already: no second run"; \
	else echo "make test: the suite again on Node.js $$($$node24 --version)"; \
	  PATH="$$(dirname "$$node24"):$$PATH" "$$node24" node_modules/.bin/tap; fi

# Ctrl-C stops it at once: no endpoints to wait for locally (--shutdown-delay 0s).
run: build
	node dist/cli.js serve --config $(CONFIG) --no-kube --host $(HOST) --port $(PORT) --metrics-port $(METRICS_PORT) --certs-dir $(CERTS_DIR) --shutdown-delay 0s

bench: build
	npm run bench

certs: build
	node dist/cli.js certs --out-dir $(CERTS_DIR)

# The image for linux/amd64 and linux/arm64 with docker buildx. IMAGE names it; PUSH=1
# pushes it (a multi-platform build cannot be loaded into the local docker).
IMAGE ?= ghcr.io/mirrorgate/mirrorgate:$(shell node -p "require('./package.json').version")
PLATFORMS ?= linux/amd64,linux/arm64
image:
	@if ! command -v docker >/dev/null 2>&1 || ! docker buildx version >/dev/null 2>&1; then \
	  echo "make image: needs docker with buildx (https://docs.docker.com/build/install-buildx/); not found here." >&2; \
	  echo "  The CI workflow .github/workflows/image.yml builds and publishes the image." >&2; exit 1; fi
	docker buildx build --platform $(PLATFORMS) --tag $(IMAGE) --provenance=true --sbom=true \
	  $(if $(PUSH),--push,) .

deploy:
	kubectl apply -k manifests/base

clean:
	rm -rf dist .tap coverage
