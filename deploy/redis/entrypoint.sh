#!/bin/sh
# `redis-server <options>`: Debian's server without a config file, listening on every
# interface of the container, its data in /data (the volume).
set -eu
if [ "${1:-}" = redis-server ]; then
  shift
  exec redis-server --bind 0.0.0.0 --protected-mode no --dir /data "$@"
fi
exec "$@"
