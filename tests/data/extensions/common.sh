# Shared by the shell test extensions (sourced): the folders of HandlerEnvironment.json, a
# line per command in <logFolder>/ops.log, and the status file of an enable. Each package
# folder holds a link here; the emulator zips the file itself (handler_packages.py follows it).
here="$(cd "$(dirname "$0")" && pwd)"
op="${1:-unknown}"
seq="${ConfigSequenceNumber:-0}"
# multi-config: files are named <extension>.<seq>.settings|status
ext="${ConfigExtensionName:-}"
name="$seq"
[ -n "$ext" ] && name="$ext.$seq"
folder() {
    sed -n "s/.*\"$1\" *: *\"\([^\"]*\)\".*/\1/p" "$here/HandlerEnvironment.json" | head -n 1
}
log_dir="$(folder logFolder)"
status_dir="$(folder statusFolder)"
config_dir="$(folder configFolder)"
record() {
    echo "$op seq=$seq ext=${ext:-none} pid=$$ uid=$(id -u) cwd=$(pwd) $*" >> "$log_dir/ops.log"
}
save_env() {
    env | sort > "$log_dir/env.$op"
}
write_status() {   # write_status <status> <message>
    now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf '[{"version":"1.0","timestampUTC":"%s","status":{"name":"test","operation":"Enable","status":"%s","code":0,"formattedMessage":{"lang":"en-US","message":"%s"}}}]\n' \
        "$now" "$1" "$2" > "$status_dir/$name.status.tmp"
    mv "$status_dir/$name.status.tmp" "$status_dir/$name.status"
}
