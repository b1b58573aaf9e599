#!/usr/bin/env bash
# The import rule of src/ (README, Layout): base imports nothing else of pg_billing; domain
# imports base; pg imports base; api imports anything. base and domain never touch pgrx.
# Prints every import that breaks the rule and fails if there is one.
set -euo pipefail
cd "$(dirname "$0")/.."

allowed() {
  case "$1" in
    base) echo "base" ;;
    domain) echo "base|domain" ;;
    pg) echo "base|pg" ;;
  esac
}

broken=0
for layer in base domain pg; do
  pattern="crate::($(allowed "$layer"))\b"
  # Every crate:: path named in the layer's files, except the allowed ones.
  while IFS= read -r hit; do
    echo "layers: $hit (src/$layer may import crate::{$(allowed "$layer" | tr '|' ',')} only)"
    broken=1
  done < <(grep -rnoE 'crate::[a-z_]+' "src/$layer" | grep -vE ":$pattern$" || true)
done
for layer in base domain; do
  while IFS= read -r hit; do
    echo "layers: $hit (src/$layer is plain Rust: no pgrx)"
    broken=1
  done < <(grep -rnwE 'pgrx|pg_sys' "src/$layer" || true)
done
[ "$broken" -eq 0 ] && echo "layers: base, domain, pg and api import as the rule says"
exit "$broken"
