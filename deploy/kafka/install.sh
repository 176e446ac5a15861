#!/usr/bin/env bash
# Copy Apache Kafka's runtime jars from Maven Central into the cache, once.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
CACHE="${AVIS_CACHE:-$HOME/.cache/avis}"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")"
LIBS="$CACHE/kafka/$version/libs"
if [ -f "$LIBS/.complete" ]; then echo "$LIBS"; exit 0; fi
command -v mvn >/dev/null || { echo "mvn is required to fetch Kafka's jars" >&2; exit 1; }
rm -rf "$LIBS.tmp"
mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$LIBS.tmp" >&2
rm -rf "$LIBS"; mv "$LIBS.tmp" "$LIBS"; touch "$LIBS/.complete"
echo "$LIBS"
