#!/usr/bin/env bash
# System packages the suite needs beyond Python: poppler-utils (pdftoppm, pdftotext), with which
# the tests turn the reports service's PDFs into pages and text, and chromium, which the browser
# tests (tests/browser) drive through Playwright (Playwright's own browser download is not used).
# Installed from Debian's packages only when missing, so a clean machine (CI included) gets them
# and a prepared one pays nothing.
set -euo pipefail
log() { printf '[system] %s\n' "$*" >&2; }

missing=()
command -v pdftoppm >/dev/null 2>&1 && command -v pdftotext >/dev/null 2>&1 || missing+=(poppler-utils)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { log "need root to install ${missing[*]}: apt-get install -y ${missing[*]}"; exit 1; }
  sudo=(sudo)
fi
command -v apt-get >/dev/null 2>&1 || { log "install ${missing[*]} with your system's package manager"; exit 1; }
log "installing ${missing[*]} from the distribution's packages"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
"${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
log "installed ${missing[*]}"
