#!/bin/sh
# A tiny VM extension for the guestagent emulator: every command appends a line to its log
# folder; enable also writes the status file the agent reports. No dependency beyond POSIX sh.
set -eu
op="${1:-unknown}"
here="$(cd "$(dirname "$0")" && pwd)"
seq="${ConfigSequenceNumber:-0}"
# multi-config: one status file per extension, named <extension>.<seq>.status
ext="${ConfigExtensionName:-}"
status_name="$seq.status"
[ -n "$ext" ] && status_name="$ext.$seq.status"

# HandlerEnvironment.json is one line of JSON written by the agent; pull a folder out of it.
folder() {
    sed -n "s/.*\"$1\" *: *\"\\([^\"]*\\)\".*/\\1/p" "$here/HandlerEnvironment.json" 2>/dev/null | head -n 1
}
log_dir="$(folder logFolder)"; status_dir="$(folder statusFolder)"
log_dir="${log_dir:-$here}"; status_dir="${status_dir:-$here/status}"
mkdir -p "$log_dir" "$status_dir"
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) hello $op seq=$seq ext=${ext:-none}" >> "$log_dir/hello.log"

if [ "$op" = "enable" ]; then
    cat /proc/self/cgroup > "$log_dir/hello.cgroup" 2>/dev/null || true   # where the agent ran it
    # the CPU quota it runs under (the manifest's resourceLimits), on cgroup v2
    cat "/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)/cpu.max" > "$log_dir/hello.cpu_max" 2>/dev/null || true
    now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    tmp="$status_dir/$status_name.tmp"
    printf '[{"version":"1.0","timestampUTC":"%s","status":{"name":"HelloWorld","operation":"Enable","status":"success","code":0,"formattedMessage":{"lang":"en-US","message":"Hello from the emulator extension (seq %s)"}}}]\n' "$now" "$seq" > "$tmp"
    mv "$tmp" "$status_dir/$status_name"
fi
exit 0
