"""The plain-language reading of a Lab result: what its numbers say about the article's claims (the seed
article's numbers, not ours), claim by claim, each marked `agrees`, `disagrees`, `mixed` or `not measured`.

    for c in read_claims(result): print(c["claim"], c["verdict"], c["measured"])

Comparing methods ("SFT then RFT is the strongest"), two means differ only when the gap is wider than both
spreads over seeds (plus a point), so one lucky seed does not make a verdict. The other claims use fixed margins:
a gain counts above 5 points, a difference in forgetting above 2. A method whose every arm failed is "not
measured", never a score of 0.
"""

from __future__ import annotations

CLAIMS = {
    "few_prompts": "RFT can work from 50-100 prompts with a grader and no labelled answers.",
    "sft_labels": "SFT needs thousands of labels and overfits small sets.",
    "cost": "RFT costs 100-700x more per example than SFT.",
    "both": "SFT then RFT is the strongest recipe.",
    "forgetting": "RFT forgets less of what the model knew than SFT.",
}


def _cell(table: dict, size, method: str) -> dict | None:
    return table.get(str(size), {}).get(method)


def _mean(cell) -> float | None:
    return cell["score"]["mean"] if cell and cell["score"]["n"] else None


def beats(a: dict, b: dict) -> bool | None:
    """True when a's mean score is above b's by more than both spreads (and a point); None if either is missing."""
    if _mean(a) is None or _mean(b) is None:
        return None
    margin = max(a["score"]["spread"] or 0.0, b["score"]["spread"] or 0.0) + 0.01
    return a["score"]["mean"] - b["score"]["mean"] > margin


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def read_claims(result: dict) -> list[dict]:
    table, base = result["table"], result.get("base_score")
    sizes = sorted(int(s) for s in table)
    if not sizes:
        return [{"key": k, "claim": c, "verdict": "not measured", "measured": "No arm finished."}
                for k, c in CLAIMS.items()]
    big = sizes[-1]
    out = []

    def add(key, verdict, measured):
        out.append({"key": key, "claim": CLAIMS[key], "verdict": verdict, "measured": measured})

    small = [n for n in sizes if n <= 100] or sizes[:1]
    rft_small = [(n, _mean(_cell(table, n, "rft"))) for n in small if _mean(_cell(table, n, "rft")) is not None]
    if not rft_small or base is None:
        add("few_prompts", "not measured", "No RFT arm at 100 rows or fewer, or no base-model score.")
    else:
        n, best = max(rft_small, key=lambda t: t[1] if t[1] is not None else -1)
        gain = (best or 0.0) - base
        add("few_prompts", "agrees" if gain > 0.05 else "disagrees",
            f"RFT from {n} prompts reached {_pct(best)} held-out against the base model's {_pct(base)} "
            f"({gain:+.1%}).")

    sft = [(n, _mean(_cell(table, n, "sft"))) for n in sizes if _mean(_cell(table, n, "sft")) is not None]
    if len(sft) < 2:
        add("sft_labels", "not measured", "SFT was not run at two data sizes.")
    else:
        (n0, s0), (n1, s1) = sft[0], sft[-1]
        grew = (s1 or 0) - (s0 or 0)
        verdict = "agrees" if grew > 0.05 else "disagrees"
        note = (" More labels helped, as the article says, though far fewer than thousands were needed to "
                "get this far." if grew > 0.05 else " More labels did not help much here.")
        l0, l1 = _cell(table, n0, "sft").get("sft_loss"), _cell(table, n1, "sft").get("sft_loss")
        if l0 is not None and l1 is not None:  # memorised: a lower training loss on fewer rows, a lower score
            note += (f" Its final training loss was {l0:.3f} on {n0} rows against {l1:.3f} on {n1}"
                     + (": the small set was learned by heart, not generalised." if l0 < l1 and (s0 or 0) < (s1 or 0)
                        else "."))
        add("sft_labels", verdict, f"SFT scored {_pct(s0)} with {n0} labelled rows and {_pct(s1)} with {n1}.{note}")

    cs, cr = _cell(table, big, "sft"), _cell(table, big, "rft")
    if cs and cr and cs["examples"] and cr["examples"] and cs["seconds"] and cr["seconds"]:
        ratio = (cr["seconds"] / cr["examples"]) / (cs["seconds"] / cs["examples"])
        tokens = (cr["tokens"] or 0) / cr["examples"]
        verdict = "agrees" if 100 <= ratio <= 700 else "mixed" if ratio > 10 else "disagrees"
        add("cost", verdict, f"Per training example, RFT took {ratio:.0f}x the seconds of SFT "
            f"({cr['seconds'] / cr['examples'] * 1000:.1f} ms against {cs['seconds'] / cs['examples'] * 1000:.2f} ms), "
            f"sampling {tokens:.0f} completion tokens per prompt where SFT samples none.")
    else:
        add("cost", "not measured", "SFT and RFT were not both run to the end at the largest size.")

    both = _cell(table, big, "sft+rft")
    both = both if _mean(both) is not None else None  # every SFT-then-RFT arm failed: nothing to compare
    others = [c for m, c in table.get(str(big), {}).items() if m != "sft+rft" and _mean(c) is not None]
    if both and others:
        best_other = max(others, key=lambda c: _mean(c) or -1)
        won = all(beats(both, c) for c in others)
        lost = any(beats(c, both) for c in others)
        verdict = "agrees" if won else "disagrees" if lost else "mixed"
        add("both", verdict, f"At {big} rows SFT then RFT scored {_pct(_mean(both))} against the best single method's "
            f"{_pct(_mean(best_other))}" + ("" if won or lost else " (a tie within the seeds' spread)") + ".")
    else:
        add("both", "not measured", "SFT then RFT was not compared with another method.")

    before = result.get("keep_before")
    ks = cs and cs["keep_score"]["mean"]
    kr = cr and cr["keep_score"]["mean"]
    if before is None or ks is None or kr is None:
        add("forgetting", "not measured", "No keep set, or SFT and RFT were not both scored on it.")
    else:
        drop_s, drop_r = before - ks, before - kr
        verdict = "agrees" if drop_r + 0.02 < drop_s else "disagrees" if drop_s + 0.02 < drop_r else "mixed"
        add("forgetting", verdict, f"On the keep set (base {_pct(before)}), SFT ended at {_pct(ks)} ({-drop_s:+.1%}) "
            f"and RFT at {_pct(kr)} ({-drop_r:+.1%}).")
    return out
