#!/usr/bin/env bash
# Makes the kernel's syscall tracepoints visible, so loadgen counts every read/recv and
# write/send system call of the harness and the plugin server exactly (loadgen/src/syscount.rs,
# docs/ci-gates.md). Idempotent. Needs root (mounting tracefs); without it, or where the kernel
# has no syscall tracepoints, it says so and loadgen falls back to /proc/<pid>/io, whose
# counts miss recv/send (the syscall counters are then not compared with a baseline that
# counted exactly).
set -uo pipefail
dir=/sys/kernel/tracing
if [ -r "$dir/events/syscalls/sys_enter_write/id" ] \
    || [ -r /sys/kernel/debug/tracing/events/syscalls/sys_enter_write/id ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "syscall counting: tracefs is not mounted and this is not root; run as root: mount -t tracefs nodev $dir" >&2
    exit 0
fi
if mount -t tracefs nodev "$dir" 2>/dev/null && [ -r "$dir/events/syscalls/sys_enter_write/id" ]; then
    echo "syscall counting: mounted tracefs at $dir" >&2
else
    echo "syscall counting: cannot mount tracefs at $dir (or the kernel has no syscall tracepoints); counters fall back to /proc/<pid>/io" >&2
fi
exit 0
