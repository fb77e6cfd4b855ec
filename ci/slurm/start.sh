#!/usr/bin/env bash
# Bring up a single-node SLURM cluster (munge, slurmctld, slurmd) from Debian's packages for CI.
#
# Usage: ci/slurm/start.sh DIR
#   Everything the cluster writes (state, logs, pid files) goes under DIR; stop it with
#   ci/slurm/stop.sh DIR. The configuration goes to /etc/slurm/slurm.conf, where every SLURM
#   command finds it, including the srun that Snakemake's job steps call inside a job (they drop
#   SLURM_* variables such as SLURM_CONF); an existing file is kept in DIR and put back by stop.sh.
# Needs root. Installs the packages only if missing; reuses a munged that is already running.
# There is no accounting database: the Snakemake SLURM executor is told to follow jobs with
# squeue (profiles/slurm), which works because MinJobAge keeps finished jobs visible for 10 min.
set -euo pipefail

dir=${1:?usage: $0 DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
host=$(hostname -s)
ctld_port=${GEMRED_SLURMCTLD_PORT:-6817}
slurmd_port=${GEMRED_SLURMD_PORT:-6818}

if [[ $(id -u) -ne 0 ]]; then
    echo "error: $0 must run as root (it starts munged, slurmctld and slurmd)" >&2
    exit 1
fi

missing=()
for exe in munged slurmctld slurmd sbatch; do
    command -v "$exe" >/dev/null || missing+=("$exe")
done
if ((${#missing[@]})); then
    echo "installing munge, slurmctld, slurmd, slurm-client (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends munge slurmctld slurmd slurm-client >/dev/null
fi

mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/run"

# munge: the package's key, a socket in the usual place; start only if none answers.
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    install -d -o munge -g munge -m 0755 /run/munge
    [[ -s /etc/munge/munge.key ]] || { mungekey --create --keyfile /etc/munge/munge.key && chown munge:munge /etc/munge/munge.key; }
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/gemred-ci.pid
    cp /run/munge/gemred-ci.pid "$dir/run/munged.pid"
fi

# The node claims 8 CPUs (config_overrides) so that the profile's full-size thread requests
# are schedulable on a 2-core CI machine; the jobs of the small demo are light.
conf=/etc/slurm/slurm.conf
marker="# gemred CI cluster, written by ci/slurm/start.sh $dir"
mkdir -p /etc/slurm
if [[ -e $conf ]] && ! grep -qxF "$marker" "$conf"; then
    mv "$conf" "$dir/slurm.conf.orig"
fi
cat >"$conf" <<CONF
$marker
ClusterName=gemredci
SlurmctldHost=$host
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=600
KillWait=5
NodeName=$host NodeAddr=127.0.0.1 CPUs=8 RealMemory=16000 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF

slurmctld -f "$conf"
slurmd -f "$conf"

for _ in $(seq 60); do
    if sinfo -h -o '%t' 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
        echo "SLURM cluster up ($conf, state and logs in $dir)"
        sinfo
        exit 0
    fi
    sleep 1
done
echo "error: the SLURM node did not become idle within 60 s; logs in $dir/log" >&2
sinfo >&2 || true
tail -n 20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
exit 1
