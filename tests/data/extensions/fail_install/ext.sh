#!/bin/sh
# An extension whose install fails (exit 3, with a message on stderr).
. "$(dirname "$0")/common.sh"
record
if [ "$op" = install ]; then
    echo "cannot install: missing dependency frobnicate" >&2
    exit 3
fi
[ "$op" = enable ] && write_status success "enabled"
exit 0
