#!/bin/sh
# An extension that floods stdout (about 8 MB) and stderr, then succeeds.
. "$(dirname "$0")/common.sh"
record
if [ "$op" = enable ]; then
    echo "FIRST-LINE-OF-STDOUT"
    yes "flood flood flood flood flood flood flood flood flood flood flood flood" | head -c 8000000
    echo
    echo "LAST-LINE-OF-STDOUT"
    echo "stderr line" >&2
    write_status success "flooded"
fi
exit 0
