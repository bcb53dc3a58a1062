#!/usr/bin/env bash
# Builds the real kube-apiserver (and, when Debian's etcd is too old for it, etcd) from
# their Go modules into a cache folder outside the repository, reused when present.
# Prints the folder holding kube-apiserver, then the one holding etcd.
#
# kube-apiserver: k8s.io/kubernetes cannot be `go install`ed (its go.mod replaces the
# k8s.io/* staging modules with ./staging paths), so a small wrapper module requires it
# and replaces each staging module it lists with its published v0.Y.Z release.
set -euo pipefail
KUBE_VERSION=${MIRRORGATE_KUBE_VERSION:-v1.34.4}
ETCD_VERSION=${MIRRORGATE_ETCD_VERSION:-v3.6.17}
cache=${MIRRORGATE_TEST_CACHE:-$HOME/.cache/mirrorgate-test}
out="$cache/kube-apiserver-$KUBE_VERSION"
etcd_out="$cache/etcd-$ETCD_VERSION"
export GOFLAGS=-mod=mod
command -v go >/dev/null 2>&1 || { echo "build-kube: go is not installed" >&2; exit 2; }
mkdir -p "$cache"
# One build at a time per cache folder (parallel clones on one machine share it).
exec 9>"$cache/build.lock"
flock 9

if [ ! -x "$out/kube-apiserver" ]; then
  mkdir -p "$cache"
  work=$(mktemp -d "$cache/build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
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
  cd /
  rm -rf "$work"
  trap - EXIT
fi

# etcd: Kubernetes 1.34 supports etcd 3.5.11+/3.6; Debian's etcd-server is 3.4.23, older
# than the health endpoints kube-apiserver 1.31+ relies on, so etcd is built the same way.
if [ ! -x "$etcd_out/etcd" ]; then
  mkdir -p "$cache"
  work=$(mktemp -d "$cache/build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  start=$(date +%s)
  echo "build-kube: building etcd $ETCD_VERSION into $etcd_out" >&2
  cd "$work"
  printf 'module mirrorgate.test/etcd\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > go.mod
  go build -trimpath -ldflags "-s -w" -o "$work/etcd" go.etcd.io/etcd/server/v3
  mkdir -p "$etcd_out"
  mv "$work/etcd" "$etcd_out/etcd"
  echo "build-kube: etcd $ETCD_VERSION built in $(( $(date +%s) - start ))s" >&2
  cd /
  rm -rf "$work"
  trap - EXIT
fi
echo "$out"
echo "$etcd_out"
