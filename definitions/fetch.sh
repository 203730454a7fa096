#!/usr/bin/env bash
# Downloads the pinned official FHIR R4 package (CC0) from the npm registry into
# definitions/package/ (not committed). Only the generator needs it; builds do not.
set -euo pipefail
cd "$(dirname "$0")"
rm -rf package && mkdir -p .tmp
(cd .tmp && npm pack --silent hl7.fhir.r4.examples@4.0.1 >/dev/null)
tar xzf .tmp/hl7.fhir.r4.examples-4.0.1.tgz
rm -rf .tmp
echo "definitions/package: $(ls package | wc -l) files"
