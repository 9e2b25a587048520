#!/bin/bash
# A Slurm array job that fills one shared CRDS cache (on a network file system)
# from several nodes at once: task K of N syncs the K-th shard of the plan.
# Shards are split by a hash of each file name, so together they are the whole
# plan; a file every task needs (server_config) is small, so each may fetch it,
# and every rename puts the same verified bytes in place. Submit with:
#   sbatch slurm-fill-shared-cache.sh
# and, to confirm the result, after the array: crds-s3-sync --last 3 --check
#
#SBATCH --job-name=crds-fill
#SBATCH --array=1-8
#SBATCH --cpus-per-task=2
#SBATCH --mem=2G
#SBATCH --time=12:00:00
set -euo pipefail

export CRDS_PATH=${CRDS_PATH:-/shared/crds_cache}
export CRDS_OBSERVATORY=${CRDS_OBSERVATORY:-hst}  # HST's buckets need AWS credentials

crds-s3-sync --last 3 --shard "${SLURM_ARRAY_TASK_ID}/${SLURM_ARRAY_TASK_COUNT}" --log-format json
