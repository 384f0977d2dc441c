#!/bin/sh
# An extension whose enable starts a daemon that keeps the enable's stdout and stderr and
# writes to them after the enable has exited (as many monitoring agents do), then succeeds.
. "$(dirname "$0")/common.sh"
record
if [ "$op" = enable ]; then
    (
        i=0
        while [ $i -lt 15 ]; do
            echo "daemon tick $i" || exit 1
            echo "daemon tick $i" >&2 || exit 1
            i=$((i + 1))
            sleep 0.2
        done
        echo "alive after 15 writes" > "$log_dir/daemon-done"
    ) &
    write_status success "daemon started"
fi
exit 0
