#!/bin/sh
# Create user `dev` with the host user's UID/GID and passwordless sudo (apt inside the container).
# An existing user or group with those ids is renamed/reused rather than duplicated.
set -eu
uid=$1 gid=$2 name=dev
if [ "$uid" = 0 ]; then echo "host user is root: the container runs as root"; exit 0; fi
group=$(getent group "$gid" | cut -d: -f1 || true)
if [ -z "$group" ]; then groupadd -g "$gid" "$name"; group=$name; fi
existing=$(getent passwd "$uid" | cut -d: -f1 || true)
if [ -n "$existing" ] && [ "$existing" != "$name" ]; then
  usermod -l "$name" -d "/home/$name" -m -g "$gid" -s /bin/bash "$existing"
elif [ -z "$existing" ]; then
  useradd -m -u "$uid" -g "$gid" -s /bin/bash "$name"
fi
echo "$name ALL=(ALL) NOPASSWD:ALL" >/etc/sudoers.d/workbench
chmod 0440 /etc/sudoers.d/workbench
echo "user $name uid=$uid gid=$gid (group $group)"
