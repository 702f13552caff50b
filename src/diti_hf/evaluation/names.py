"""The names of the evaluation's protocols, without torch: the command line's `--help` lists them as choices."""

from __future__ import annotations

PROTOCOLS = ("shapes", "celeba", "lfw")
"""The benchmarks of [`~diti_hf.evaluation.run_benchmark`]: the procedural shapes (or any dataset with factor
`ClassLabel` columns) and the paper's real-data protocols (docs/method.md §9)."""

# Starting points of a swap: the source's inverted x_T (the official protocol), the target's inverted x_T, one
# random x_T shared by the pair, or the source noised by the forward process to the top of the swapped range.
SWAP_PROTOCOLS = ("source_inverted", "target_inverted", "shared_random", "stochastic")

__all__ = ["PROTOCOLS", "SWAP_PROTOCOLS"]
