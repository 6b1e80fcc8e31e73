"""Print the parity tables: accuracy of kvpress and kvbench per press x ratio x protocol (overall
and per task), and the per-cell difference with a 95% paired bootstrap interval (same samples on
both sides, resampled together).

Usage: python3 compare.py KVPRESS.json KVBENCH_RESULTS.jsonl [--seed 0] [--resamples 2000]
"""
import argparse, collections, json, random


def kvbench_rows(path):
    for line in open(path):
        r = json.loads(line)
        budget = r.get("budget") or {}
        yield {"id": r["sample_id"], "task": r["task"], "method": r["method"],
               "ratio": float(budget.get("compression_ratio", 0.0)),
               "query_aware": bool(r["query_aware"]), "score": float(r["score"])}


def cells(rows):
    out = collections.defaultdict(dict)
    for r in rows:
        out[(r["method"], round(r["ratio"], 3), r["query_aware"])][r["id"]] = (r["task"], r["score"])
    return out


def interval(diffs, rng, resamples):
    n = len(diffs)
    means = sorted(sum(rng.choice(diffs) for _ in range(n)) / n for _ in range(resamples))
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kvpress")
    ap.add_argument("kvbench")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resamples", type=int, default=2000)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    theirs = cells(json.load(open(a.kvpress)))
    ours = cells(kvbench_rows(a.kvbench))
    tasks = sorted({t for c in theirs.values() for t, _ in c.values()})
    print("protocol  method              ratio  task          n   kvpress  kvbench   diff  95% CI")
    for key in sorted(set(theirs) | set(ours), key=lambda k: (k[2], k[0], k[1])):
        method, ratio, aware = key
        t, o = theirs.get(key, {}), ours.get(key, {})
        shared = sorted(set(t) & set(o))
        if not shared:
            print(f"{'aware' if aware else 'agnostic':9s} {method:19s} {ratio:5.3f}  only in {'kvpress' if t else 'kvbench'}")
            continue
        for task in ["all"] + tasks:
            ids = [i for i in shared if task == "all" or t[i][0] == task]
            if not ids:
                continue
            a_t = sum(t[i][1] for i in ids) / len(ids)
            a_o = sum(o[i][1] for i in ids) / len(ids)
            lo, hi = interval([o[i][1] - t[i][1] for i in ids], rng, a.resamples)
            print(f"{'aware' if aware else 'agnostic':9s} {method:19s} {ratio:5.3f}  {task:12s} {len(ids):3d}"
                  f"   {a_t:6.3f}   {a_o:6.3f} {a_o - a_t:+6.3f}  [{lo:+.3f}, {hi:+.3f}]")


if __name__ == "__main__":
    main()
