#!/usr/bin/env bash
# Train the run folders named on the command line one after the other (one "lane"), each on one
# torch thread; a finished run (agent.toml has [result]) is skipped, an interrupted one resumes from
# its checkpoint/. Usage: runs/queue.sh runs/llm-multitask runs/llm-nf4 ...  (two lanes on 2 cores)
set -u
cd "$(dirname "$0")/.."
for d in "$@"; do
    if grep -q '^\[result\]' "$d/agent.toml"; then echo "$d: trained, skipped"; continue; fi
    echo "$d: training ($(date -u +%H:%M))"
    OMP_NUM_THREADS=1 .venv/bin/linksim train "$d" > "$d/train.out" 2>&1 \
        && echo "$d: done ($(date -u +%H:%M))" || echo "$d: FAILED (see $d/train.out)"
done
