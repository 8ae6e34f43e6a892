#!/usr/bin/env bash
# Submit the sweep array and the merge job that waits for all of it (afterok: a failed shard
# stops the merge; re-run that shard with `sbatch --array=<id> sweep-array.sbatch`, then
# `sbatch merge.sbatch`).  Variables (SPEC, SHARDS, OUT, LATPROF, SWEEP_ARGS) pass through.
set -euo pipefail
# Run it from the folder the paths are relative to (the repository root): Slurm jobs start there.
here=$(dirname "$0")
mkdir -p logs
array=$(sbatch --parsable --export=ALL "$here/sweep-array.sbatch")
sbatch --export=ALL --dependency="afterok:${array%%;*}" "$here/merge.sbatch"
