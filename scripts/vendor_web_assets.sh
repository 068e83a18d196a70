#!/usr/bin/env bash
# Re-fetches the browser assets served by /docs, /redoc and the playground from the npm registry
# (`npm pack`, no node_modules, no build) into app/static/vendor/, and rewrites VENDORED.md with
# their versions and checksums. Bump a version here, run it, and commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."

SWAGGER_UI=swagger-ui-dist@5.35.0
REDOC=redoc@2.5.4  # 2.x: the classic-script bundle FastAPI's get_redoc_html loads (3.x is an ES module)
UPLOT=uplot@1.6.32

dest=app/static/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fetch() {  # fetch PACKAGE@VERSION DEST_DIR FILE... (paths inside the package)
  local pkg=$1 dir=$2; shift 2
  (cd "$work" && npm pack --silent "$pkg" >/dev/null)
  local tgz; tgz=$(ls "$work"/*.tgz)
  mkdir -p "$work/x" "$dest/$dir"
  tar xzf "$tgz" -C "$work/x"
  for f in "$@" LICENSE; do cp "$work/x/package/$f" "$dest/$dir/"; done
  rm -rf "$work/x" "$tgz"
}

rm -rf "$dest"
fetch "$SWAGGER_UI" swagger-ui swagger-ui-bundle.js swagger-ui.css favicon-32x32.png
fetch "$REDOC" redoc bundles/redoc.standalone.js
fetch "$UPLOT" uplot dist/uPlot.iife.min.js dist/uPlot.min.css

{
  echo "# Vendored browser assets"
  echo
  echo "Fetched from the npm registry by \`scripts/vendor_web_assets.sh\` (\`npm pack\`), unmodified,"
  echo "so /docs, /redoc and the playground work without internet. Checked by tests/test_web_assets.py."
  echo
  echo "| folder | package | license |"
  echo "|---|---|---|"
  echo "| swagger-ui/ | $SWAGGER_UI | Apache-2.0 |"
  echo "| redoc/ | $REDOC | MIT |"
  echo "| uplot/ | $UPLOT | MIT |"
  echo
  echo "## sha256"
  echo
  echo '```'
  (cd "$dest" && find . -type f ! -name VENDORED.md | sort | xargs sha256sum)
  echo '```'
} > "$dest/VENDORED.md"
echo "vendored into $dest"
