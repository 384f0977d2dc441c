#!/bin/sh
# An extension whose enable returns at once with a "transitioning" status and reports success
# three seconds later from a process it leaves behind, as long-running real ones do.
set -eu
. "$(dirname "$0")/common.sh"
record
if [ "$op" = enable ]; then
    write_status transitioning "late: working"
    ( sleep 3; write_status success "late enabled seq $seq" ) >/dev/null 2>&1 &
fi
exit 0
