#!/bin/sh
# Trust the *.crt files in docker/ca-certificates/ (if any) system-wide: apt, pip (PIP_CERT),
# requests, curl and git all read the bundle update-ca-certificates writes.
set -eu
src=/opt/workbench/docker/ca-certificates
found=$(find "$src" -maxdepth 1 -name '*.crt' 2>/dev/null | wc -l)
if [ "$found" -eq 0 ]; then echo "no extra CA certificates"; exit 0; fi
mkdir -p /usr/local/share/ca-certificates/workbench
cp "$src"/*.crt /usr/local/share/ca-certificates/workbench/
if command -v update-ca-certificates >/dev/null 2>&1; then
  update-ca-certificates >/dev/null
else
  # No ca-certificates package yet: append to the bundle directly so apt can fetch it.
  mkdir -p /etc/ssl/certs && cat "$src"/*.crt >>/etc/ssl/certs/ca-certificates.crt
fi
echo "trusted $found extra CA certificate(s)"
