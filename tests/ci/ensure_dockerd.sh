#!/usr/bin/env bash
# Make a Docker daemon reachable for the docker test tier and print the DOCKER_HOST to use.
# Reuses any reachable daemon (only one daemon per host works: a second one breaks the first's
# networking), otherwise starts dockerd with its state under the cache folder given as $1.
set -euo pipefail
cache=${1:?usage: ensure_dockerd.sh CACHE_DIR}

reachable() { DOCKER_HOST=$1 timeout 5 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

# Candidates: DOCKER_HOST, the system socket, ours, and the --host of any dockerd already running.
running=$(pgrep -a dockerd 2>/dev/null | grep -oE -- '--host[= ]unix://[^ ]+' | sed -E 's/--host[= ]//' || true)
for host in "${DOCKER_HOST:-}" unix:///var/run/docker.sock "unix://$cache/dockerd/docker.sock" $running; do
  if [ -n "$host" ] && reachable "$host"; then echo "$host"; exit 0; fi
done

d=$cache/dockerd
mkdir -p "$d"
# A daemon killed earlier can leave its pid file and the default netns mounted.
if [ -f "$d/pid" ] && ! kill -0 "$(cat "$d/pid")" 2>/dev/null; then rm -f "$d/pid"; fi
if mountpoint -q "$d/exec/netns/default" 2>/dev/null; then umount "$d/exec/netns/default" || true; fi
# Networks (Compose makes one per project) come from a pool of 256 /24s of our own: the default pools are 31
# networks wide, and the bridges of a daemon killed with another data root keep theirs taken ("could not find
# an available, non-overlapping IPv4 address pool").
nohup dockerd --host "unix://$d/docker.sock" --data-root "$d/data" --exec-root "$d/exec" \
  --pidfile "$d/pid" --default-address-pool base=10.213.0.0/16,size=24 >"$d/dockerd.log" 2>&1 &
for _ in $(seq 1 100); do
  if reachable "unix://$d/docker.sock"; then echo "unix://$d/docker.sock"; exit 0; fi
  sleep 0.2
done
echo "dockerd did not come up; its log:" >&2
tail -n 30 "$d/dockerd.log" >&2
exit 1
