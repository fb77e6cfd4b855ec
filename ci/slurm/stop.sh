#!/usr/bin/env bash
# Stop the CI SLURM cluster that ci/slurm/start.sh DIR started, put back the slurm.conf it
# replaced (or remove the one it wrote), and remove DIR. Stops only the daemons whose pid files
# are under DIR (munged only if start.sh started it); safe to call twice, or after a start that
# failed half-way.
set -uo pipefail

dir=${1:?usage: $0 DIR}
[[ -d $dir ]] || exit 0

conf=/etc/slurm/slurm.conf
marker="# gemred CI cluster, written by ci/slurm/start.sh $dir"
ours=false
[[ -f $conf ]] && grep -qxF "$marker" "$conf" && ours=true
if $ours && [[ -f $dir/run/slurmctld.pid ]]; then
    scancel --quiet --user "$(id -un)" 2>/dev/null || true
fi
for name in slurmd slurmctld munged; do
    pidfile=$dir/run/$name.pid
    [[ -f $pidfile ]] || continue
    pid=$(cat "$pidfile")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 20); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
done
rm -f /run/munge/gemred-ci.pid
if [[ -f $dir/slurm.conf.orig ]]; then
    mv "$dir/slurm.conf.orig" "$conf"
elif $ours; then
    rm -f "$conf"
fi
rm -rf "$dir"
