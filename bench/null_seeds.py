"""Does the stated finding set move with the null's seed? (issue 21)

Trains one model (a config as shipped, unless ``--overrides`` cuts it), then explains the same
checkpoints once per null seed (``explain.null_seed`` = 0, 1, ...; everything else, including
the prototypes and the causal check's random cells, keeps the run's seed). A finding is what
the report states: a label that beats the permutation null and passes the causal check
(:func:`i2x.reporting.claims.named_prototypes`). Printed: each seed's findings and the null's
replicates, the labels stated under every seed and under only some, and the agreement (the
share of seeds whose set equals the most common one; the mean pairwise Jaccard).

    I2X_DATA_DIR=../shared/datasets python bench/null_seeds.py --config mnist --seeds 5
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections import Counter
from pathlib import Path

from _pipeline import train_and_explain

from i2x.explanation.document import explain
from i2x.platform.config_io import apply_overrides
from i2x.reporting.claims import named_prototypes, shortcut_checks
from i2x.training.checkpoints import model_from_checkpoint


def stated(doc: dict) -> frozenset:
    """The report's findings as (role, class or pair, prototype), and its shortcut checks."""
    rows = named_prototypes(doc)["findings"]
    found = {(r["role"], r.get("class") or "/".join(r["pair"]), r["prototype"]) for r in rows}
    return frozenset(found | {("shortcut check", r["class"], r["prototype"]) for r in shortcut_checks(doc)})


def _name(label: tuple) -> str:
    return f"P{label[2]} {label[0]} {label[1]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="mnist")
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    ap.add_argument("--overrides", default="")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", default="bench/out/null-seeds")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    first = f"explain.null_seed=0{',' + args.overrides if args.overrides else ''}"
    run = train_and_explain(args.config, args.data_dir, first)
    names = [f"ckpt-{i}" for i in range(len(run.payloads))]
    docs, seconds = [run.doc], [run.times["explain"]]
    for seed in range(1, args.seeds):
        config = apply_overrides(run.config, {"explain.null_seed": seed})
        t0 = time.perf_counter()
        _, doc = explain(len(run.payloads), lambda t: model_from_checkpoint(run.payloads[t], names[t]), run.infos, run.data, config,
                         run.device, target_layer=run.payloads[-1]["target_layer"], progress=False)
        seconds.append(time.perf_counter() - t0)
        docs.append(doc)
        print(f"null seed {seed}: explained in {seconds[-1]:.0f} s; ETA {(args.seeds - seed - 1) * seconds[-1] / 60:.1f} min", flush=True)
    sets = [stated(d) for d in docs]
    for seed, (doc, found, s) in enumerate(zip(docs, sets, seconds, strict=True)):
        null = doc["null"]
        print(f"null seed {seed}: {len(found)} stated, null replicates {null.get('n_permutations')}, {s:.0f} s: "
              f"{', '.join(sorted(map(_name, found))) or 'none'}")
    every = frozenset.intersection(*sets)
    some = frozenset.union(*sets) - every
    _, count = Counter(sets).most_common(1)[0]
    pairs = list(itertools.combinations(sets, 2))
    jaccard = sum(len(a & b) / len(a | b) if a | b else 1.0 for a, b in pairs) / len(pairs) if pairs else 1.0
    print(f"\nstated under every seed ({len(every)}): {', '.join(sorted(map(_name, every))) or 'none'}")
    print(f"stated under some seeds only ({len(some)}): "
          f"{', '.join(f'{_name(x)} ({sum(x in s for s in sets)} of {len(sets)})' for x in sorted(some)) or 'none'}")
    print(f"agreement: {count} of {len(sets)} seeds state the same set; mean pairwise Jaccard {jaccard:.2f}")
    summary = {"config": args.config, "overrides": args.overrides, "seeds": args.seeds, "explain_s": [round(s, 1) for s in seconds],
               "sets": [sorted(map(_name, s)) for s in sets], "every": sorted(map(_name, every)), "some": sorted(map(_name, some)),
               "agreement": count / len(sets), "jaccard": round(jaccard, 3)}
    (out / f"{args.config}.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
