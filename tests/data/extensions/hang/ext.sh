#!/bin/sh
# An extension whose enable hangs past its timeout, after leaving a double-forked daemon that
# is nobody's child: the whole cgroup must be killed.
. "$(dirname "$0")/common.sh"
record
if [ "$op" = enable ]; then
    ( setsid sh -c 'echo $$ > "$0/daemon.pid"; exec sleep 600' "$log_dir" & ) </dev/null >/dev/null 2>&1
    echo "hanging"
    sleep 600
fi
exit 0
