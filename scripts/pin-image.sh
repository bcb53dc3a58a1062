#!/usr/bin/env bash
# Pins mirrorgate's image by digest in the chart and in the kustomize base, for a release:
#   scripts/pin-image.sh REPOSITORY DIGEST VERSION
#   scripts/pin-image.sh ghcr.io/acme/mirrorgate sha256:<64 hex> 1.2.0
# Sets charts/mirrorgate (image.repository, image.digest, version, appVersion) and
# manifests/base/kustomization.yaml (images: newName, digest); every edit is checked.
# Run from the repository root (the CI workflow does, on a tag).
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 REPOSITORY DIGEST VERSION" >&2; exit 2; }
repo=$1 digest=$2 version=${3#v}
[[ $repo =~ ^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)+$ ]] || { echo "pin-image: not an image repository: $repo" >&2; exit 2; }
[[ $digest =~ ^sha256:[a-f0-9]{64}$ ]] || { echo "pin-image: not a sha256 digest: $digest" >&2; exit 2; }
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$ ]] || { echo "pin-image: not a semantic version: $version" >&2; exit 2; }

# sed -i on one line each, then the line must read as intended.
edit() { # file, sed expression, the line that must now be there
  sed -i -E "$2" "$1"
  grep -qxF -- "$3" "$1" || { echo "pin-image: $1: expected the line '$3' after the edit" >&2; exit 1; }
}
values=charts/mirrorgate/values.yaml
edit "$values" "s|^  repository: .*|  repository: $repo|" "  repository: $repo"
edit "$values" "s|^  digest: .*|  digest: \"$digest\"|" "  digest: \"$digest\""
edit charts/mirrorgate/Chart.yaml "s|^version: .*|version: $version|" "version: $version"
edit charts/mirrorgate/Chart.yaml "s|^appVersion: .*|appVersion: \"$version\"|" "appVersion: \"$version\""
kustomization=manifests/base/kustomization.yaml
edit "$kustomization" "s|^    newName: .*|    newName: $repo|" "    newName: $repo"
edit "$kustomization" "s|^    (newTag\|digest): .*|    digest: $digest|" "    digest: $digest"
echo "pinned $repo@$digest ($version) in $values, charts/mirrorgate/Chart.yaml and $kustomization"
