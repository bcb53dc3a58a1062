#!/usr/bin/env bash
# Builds the real kube-apiserver and etcd from their Go modules into a cache folder
# outside the repository, reused when present. Prints the folder holding kube-apiserver,
# then the one holding etcd. Exit 2: Go is not installed.
#
# kube-apiserver: k8s.io/kubernetes cannot be `go install`ed (its go.mod replaces the
# k8s.io/* staging modules with ./staging paths), so a small wrapper module requires it
# and replaces each staging module it lists with its published v0.Y.Z release.
#
# Cost on a fresh 2-core machine (empty module and build caches) is dominated by
# compiling kube-apiserver; to keep it down: only the two commands are built (no tests,
# no other binaries), without cgo (upstream releases it static too; saves compiling the
# C parts), -trimpath, no symbol table or DWARF (-s -w: less link work), and etcd is
# downloaded and built at the same time as kube-apiserver so the download of one overlaps
# the compilation of the other.
set -euo pipefail
KUBE_VERSION=${MIRRORGATE_KUBE_VERSION:-v1.34.4}
ETCD_VERSION=${MIRRORGATE_ETCD_VERSION:-v3.6.17}
cache=${MIRRORGATE_TEST_CACHE:-$HOME/.cache/mirrorgate-test}
out="$cache/kube-apiserver-$KUBE_VERSION"
etcd_out="$cache/etcd-$ETCD_VERSION"
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0
if [ -x "$out/kube-apiserver" ] && [ -x "$etcd_out/etcd" ]; then
  echo "$out"
  echo "$etcd_out"
  exit 0
fi
command -v go >/dev/null 2>&1 || { echo "build-kube: go is not installed" >&2; exit 2; }
mkdir -p "$cache"
# One build at a time per cache folder (parallel clones on one machine share it).
exec 9>"$cache/build.lock"
flock 9

works=()
cleanup() { for w in "${works[@]}"; do rm -rf "$w"; done; }
trap cleanup EXIT

build_apiserver() {
  local work=$1 start gomod staging
  start=$(date +%s)
  echo "build-kube: building kube-apiserver $KUBE_VERSION into $out (first time only; takes a while)" >&2
  cd "$work"
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  staging=${KUBE_VERSION/#v1./v0.}
  {
    echo "module mirrorgate.test/kube-apiserver"
    echo
    echo "go $(sed -nE 's/^go ([0-9.]+).*/\1/p' "$gomod")"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    # every `k8s.io/x => ./staging/src/k8s.io/x` in kubernetes' go.mod
    sed -nE 's#^[[:space:]]*(k8s\.io/[^[:space:]]+) => \./staging/.*#\t\1 => \1 '"$staging"'#p' "$gomod"
    echo ")"
  } > go.mod
  go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION" -o "$work/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
  mkdir -p "$out"
  mv "$work/kube-apiserver" "$out/kube-apiserver"
  echo "build-kube: kube-apiserver $KUBE_VERSION built in $(( $(date +%s) - start ))s" >&2
}

# etcd: Kubernetes 1.34 supports etcd 3.5.11+/3.6; Debian's etcd-server is 3.4.23, older
# than the health endpoints kube-apiserver 1.31+ relies on, so etcd is built the same way.
build_etcd() {
  local work=$1 start
  start=$(date +%s)
  echo "build-kube: building etcd $ETCD_VERSION into $etcd_out" >&2
  cd "$work"
  printf 'module mirrorgate.test/etcd\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > go.mod
  go build -trimpath -ldflags "-s -w" -o "$work/etcd" go.etcd.io/etcd/server/v3
  mkdir -p "$etcd_out"
  mv "$work/etcd" "$etcd_out/etcd"
  echo "build-kube: etcd $ETCD_VERSION built in $(( $(date +%s) - start ))s" >&2
}

pids=()
if [ ! -x "$out/kube-apiserver" ]; then
  w=$(mktemp -d "$cache/build.XXXXXX"); works+=("$w")
  build_apiserver "$w" & pids+=($!)
fi
if [ ! -x "$etcd_out/etcd" ]; then
  w=$(mktemp -d "$cache/build.XXXXXX"); works+=("$w")
  build_etcd "$w" & pids+=($!)
fi
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
[ "$status" = 0 ] || { echo "build-kube: build failed (output above)" >&2; exit 1; }
echo "$out"
echo "$etcd_out"
