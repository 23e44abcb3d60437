"""Training memory of an agent, measured in a fresh process (Table I).

The child builds the agent's model from its ``agent.toml`` (weights do not change memory), hands the
memory freed by quantisation back (``malloc_trim``), resets the peak (``/proc/self/clear_refs``: VmHWM
:= VmRSS) and trains ``steps`` detection steps at ``batch`` on i.i.d. Rayleigh channels. It reports
the peak resident size during those steps (the interpreter, torch and what the allocator keeps are
in it) and the backbone's storage (fp32 for a full-precision backbone, NF4 codes + absmax for a 4-bit
one; :func:`linksim.llm.backbone_bytes`). ``ru_maxrss`` is not used: a child's starts at the
high-water mark of its parent's address space.
"""
from __future__ import annotations

import json
import subprocess
import sys

from ..errors import LinksimError

CHILD = r"""
import ctypes, json, sys
import torch
from linksim import load_scenario
from linksim.agents import Dims, build_model
from linksim.agents.spec import read_agent
from linksim.chains.detection import detection_batch
from linksim.llm import backbone_bytes

def vm():
    return {l.split(":")[0]: int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(("VmRSS", "VmHWM"))}

folder, steps, b = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
spec = read_agent(folder)
sc = load_scenario(spec.scenario_path())
dims = Dims(**spec.result["dims"]) if "dims" in spec.result else Dims.from_scenario(sc, "detection")
torch.manual_seed(0)
model = build_model(spec.arch, dims, spec.model).train()
llm = getattr(model, "llm", None)
quant = spec.model.get("backbone", {}).get("quantization", "none")
backbone = 0 if llm is None else backbone_bytes(llm.model)["fp32" if quant == "none" else "nf4"]
g = torch.Generator().manual_seed(0)
m, k = dims.num_bs_antennas, dims.num_users
h = torch.complex(torch.randn(b, m, k, generator=g), torch.randn(b, m, k, generator=g)) / 2 ** 0.5
batch = detection_batch(h, torch.full((b,), 0.1), dims.symbols_per_sample, dims.bits_per_symbol, g)
batch = batch | {"task": "detection"}
opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
ctypes.CDLL("libc.so.6").malloc_trim(0)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
for _ in range(steps):
    opt.zero_grad()
    model.training_loss(batch).backward()
    opt.step()
print(json.dumps({"backbone_mib": backbone / 2**20, "train_peak_mib": vm()["VmHWM"] / 1024}))
"""


def training_memory(folder: str, steps: int = 3, batch: int = 32) -> dict:
    """``{"backbone_mib", "train_peak_mib"}`` of training agent ``folder`` (detection, ``batch``
    samples, ``steps`` steps), measured in a fresh Python process."""
    r = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(steps), str(batch)],
                       capture_output=True, text=True)
    if r.returncode:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise LinksimError(f"agent:{folder}: the training-memory probe failed ({last})")
    return json.loads(r.stdout.strip().splitlines()[-1])
