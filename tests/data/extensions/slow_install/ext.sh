#!/bin/sh
# An extension whose install takes a few seconds (the worker is killed meanwhile in a test).
. "$(dirname "$0")/common.sh"
record start
if [ "$op" = install ]; then
    sleep 4
fi
record end
[ "$op" = enable ] && write_status success "slow enabled"
exit 0
