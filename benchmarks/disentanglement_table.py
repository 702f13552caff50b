"""The disentanglement rows of benchmarks/results/disentanglement.md from report.json files written by
`examples/evaluate.py` / `diti-hf evaluate`: DCI (disentanglement, completeness, informativeness), MIG, SAP and the
FactorVAE score per model, then, for partitioned models, the share of each factor's DCI importance held by each
time-step group.

    python benchmarks/disentanglement_table.py REPORT_DIR_OR_JSON [...]
"""

import json
import sys
from pathlib import Path


def main(paths: list[str]) -> None:
    print(
        "| report | model | DCI disentanglement | completeness | informativeness | MIG | SAP | FactorVAE | probe mean acc |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    groups = []
    for path in paths:
        path = Path(path)
        file = path / "report.json" if path.is_dir() else path
        report = json.loads(file.read_text())
        for name, model in report["models"].items():
            scores = model.get("disentanglement") or {}
            probe = (model.get("probe") or {}).get("mean_accuracy")
            if "dci_disentanglement" not in scores:
                cells = [scores.get("skipped", "—")] + ["—"] * 5
            else:
                keys = ("dci_disentanglement", "dci_completeness", "dci_informativeness", "mig", "sap", "factor_vae")
                cells = [f"{scores[k]:.3f}" for k in keys]
            print(
                f"| {file.parent.name} | {name} | "
                + " | ".join(cells)
                + f" | {'—' if probe is None else f'{probe:.3f}'} |"
            )
            if "by_timestep_group" in scores:
                groups.append((file.parent.name, name, scores["by_timestep_group"]))
    for report, name, table in groups:
        print(f"\n{report} / {name}: share of each factor's DCI importance per time-step group")
        print("| factor | " + " | ".join(f"[{lo}, {hi})" for lo, hi in table["groups"]) + " |")
        print("|---" * (len(table["groups"]) + 1) + "|")
        for f, factor in enumerate(table["factors"]):
            print(f"| {factor} | " + " | ".join(f"{row[f]:.2f}" for row in table["importance_share"]) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
