#!/usr/bin/env bash
# Print (creating once) the development secrets of a local stack: a sealing keyring and a JWT
# secret, kept in the stack's state directory, never in the repository.
set -euo pipefail
state="$1"; py="$2"
env_file="$state/dev.env"
if [ ! -f "$env_file" ]; then
  mkdir -p "$state"
  umask 077
  {
    echo "AVIS_SEALING_KEYS=$("$py" -m avis.shared.sealing)"
    echo "AVIS_JWT_SECRET=$("$py" -c 'import secrets; print(secrets.token_urlsafe(48))')"
  } > "$env_file"
fi
cat "$env_file"
