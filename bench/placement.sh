# Where the benchmark scripts run their processes (sourced by compare.sh and tiers.sh).
#
# PLACEMENT=shared (default): the kernel places every process, as on a machine where
#   the app, strata and Redis share the CPUs.
# PLACEMENT=split: the load generator (redis-benchmark) gets the last CPU to itself and
#   the system under test (redis-server and the proxy in front of it) the others, as a
#   client machine and a server machine would.
#
# Why the choice matters here: on 2 vCPUs, a proxied run has three busy single-threaded
# processes. The kernel pairs two of them on one vCPU and moves the pairing every few
# seconds. With strata and Redis paired, strata reaches about 1.2M rps at GET P=16;
# with Redis and redis-benchmark paired, about 0.85M. A shared run's result is the mix
# of the two. A split run measures one placement, so its rounds agree more closely.
# The numbers are in bench/README.md.
#
# Sets SUT and LOADGEN: command prefixes (arrays, empty when shared).

PLACEMENT=${PLACEMENT:-shared}
SUT=()
LOADGEN=()
case $PLACEMENT in
    shared) ;;
    split)
        command -v taskset >/dev/null || { echo "PLACEMENT=split needs taskset (util-linux)" >&2; exit 64; }
        # The CPUs this script may use (a container's cpuset need not start at 0).
        read -r -a placement_cpus < <(python3 -c 'import os; print(*sorted(os.sched_getaffinity(0)))')
        if ((${#placement_cpus[@]} < 2)); then
            echo "PLACEMENT=split needs at least 2 CPUs; this process may use ${#placement_cpus[@]}" >&2
            exit 64
        fi
        placement_sut=("${placement_cpus[@]:0:${#placement_cpus[@]}-1}")
        SUT=(taskset -c "$(IFS=,; echo "${placement_sut[*]}")")
        LOADGEN=(taskset -c "${placement_cpus[-1]}")
        ;;
    *)
        echo "PLACEMENT must be 'shared' or 'split', not '$PLACEMENT'" >&2
        exit 64
        ;;
esac
