#!/bin/sh
# An extension whose enable floods stdout (about 8 MB), writes a line on stderr and exits 7:
# its error status shows the head and the tail of what it printed.
. "$(dirname "$0")/common.sh"
record
if [ "$op" = enable ]; then
    echo "FIRST-LINE-OF-STDOUT"
    yes "flood flood flood flood flood flood flood flood flood flood flood flood" | head -c 8000000
    echo
    echo "LAST-LINE-OF-STDOUT"
    echo "stderr line" >&2
    exit 7
fi
exit 0
