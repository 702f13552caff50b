import subprocess
import sys

import pytest

# Allocates and frees a 64 MiB tensor (filled, so every page is touched) 30 times and prints the minor page faults of
# each; run in a fresh interpreter because the setting is process-wide.
SCRIPT = """
import resource, sys, torch
from diti_hf import reuse_freed_memory
applied = reuse_freed_memory() if sys.argv[1] == "reuse" else None
faults = []
for _ in range(30):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 * 2**20)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, *faults)
"""


def _faults(mode: str) -> tuple[str, list[int]]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], check=True, capture_output=True, text=True).stdout
    applied, *faults = out.split()
    return applied, [int(f) for f in faults]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_reuse_freed_memory_removes_the_page_faults_of_large_tensors():
    _, default_faults = _faults("default")
    applied, reuse_faults = _faults("reuse")
    assert applied == "True"
    # By default every 64 MiB tensor is a fresh mmap: 16,384 faults of 4 KiB pages each time.
    assert min(default_faults) > 16_384 * 0.9, default_faults
    # Reused, the heap first grows until a freed block fits an aligned 64 MiB request (a few tensors, how many depends
    # on the small allocations in between, which vary with the hash seed); after that no tensor faults.
    assert sum(reuse_faults[-10:]) <= 1_000, reuse_faults
    assert sum(reuse_faults) < sum(default_faults) / 2, (reuse_faults, default_faults)
