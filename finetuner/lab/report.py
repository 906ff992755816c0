"""The Lab's report: charts (PNG, matplotlib), the table, the setup and the plain-language reading, written as
`report.md` (with `charts/*.png` beside it) and one self-contained `report.html` (the charts inlined).

    write_report(lab, result)   # lab: LabFolder; result: runner.collect's results.json
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from finetuner.lab.reading import read_claims

COLOURS = {"sft": "#1f77b4", "rft": "#d62728", "sft+rft": "#2ca02c"}
LABELS = {"sft": "SFT", "rft": "RFT", "sft+rft": "SFT then RFT"}


def _fmt(x, pct: bool = True) -> str:
    if x is None:
        return "–"
    return f"{x:.1%}" if pct else f"{x:g}"


def table_rows(result: dict) -> list[dict]:
    """One row per data size and method: what the report's and the Lab tab's tables show."""
    rows = []
    for size, methods in sorted(result["table"].items(), key=lambda kv: int(kv[0])):
        for method, c in methods.items():
            s = c["score"]
            per = c["seconds"] / c["examples"] if c["seconds"] and c["examples"] else None
            rows.append({
                "rows": int(size), "method": LABELS.get(method, method),
                "held-out score": _fmt(s["mean"]) + (f" ± {s['spread']:.1%}" if s["n"] > 1 else ""),
                "min–max": f"{_fmt(s['min'])}–{_fmt(s['max'])}" if s["n"] else "–",
                "seeds": f"{s['n']}/{len(c['runs'])}",
                "keep score": _fmt(c["keep_score"]["mean"]),
                "train s": _fmt(round(c["seconds"], 1) if c["seconds"] else None, pct=False),
                "examples": _fmt(round(c["examples"]) if c["examples"] else None, pct=False),
                "tokens sampled": _fmt(round(c["tokens"]) if c["tokens"] is not None else None, pct=False),
                "ms / example": f"{per * 1000:.2f}" if per else "–"})
    return rows


def sweep_rows(result: dict) -> list[dict]:
    """The data-size sweep as one row per method: its mean held-out score (± spread) at each size."""
    sizes = sorted(result["table"], key=int)
    methods = list(dict.fromkeys(m for size in sizes for m in result["table"][size]))
    rows = []
    for m in methods:
        row = {"method": LABELS.get(m, m)}
        for size in sizes:
            s = (result["table"][size].get(m) or {}).get("score") or {}
            row[f"{size} rows"] = (_fmt(s.get("mean")) + (f" ± {s['spread']:.1%}" if s.get("n", 0) > 1 else "")
                                   if s.get("n") else "–")
        rows.append(row)
    return rows


def _markdown_table(rows: list[dict]) -> str:
    if not rows:
        return "(no arm finished)"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def charts(result: dict, folder: Path) -> dict[str, Path]:
    """The report's charts as PNG files in `folder`: {name: path}."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a server; and never a window from a web app's thread
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    table = result["table"]
    sizes = sorted(int(s) for s in table)
    out = {}
    if not sizes:
        return out
    big = str(sizes[-1])
    methods = list(table[big])
    base, before = result.get("base_score"), result.get("keep_before")

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, m in enumerate(methods):
        s = table[big][m]["score"]
        if s["mean"] is None:
            continue
        ax.bar(i, s["mean"], yerr=s["spread"] or 0, color=COLOURS.get(m), capsize=6, alpha=0.85)
        seeds = [a["score"] for a in result["arms"] if a["method"] == m and str(a["size"]) == big and a["score"] is not None]
        ax.scatter([i] * len(seeds), seeds, color="black", s=12, zorder=3)
    if base is not None:
        ax.axhline(base, color="grey", ls="--", lw=1, label=f"base model {base:.0%}")
        ax.legend(loc="upper left", fontsize=8)
    ax.set_xticks(range(len(methods)), [LABELS.get(m, m) for m in methods])
    ax.set_ylabel("held-out score")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Held-out score at {big} rows (bars: mean ± spread; dots: seeds)", fontsize=10)
    out["scores"] = _save(fig, folder / "scores.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for a in result["arms"]:
        if str(a["size"]) != big or not a["curve"]:
            continue
        xs = [p["seconds"] for p in a["curve"]], [max(p["examples"], 1) for p in a["curve"]]
        ys = [p["score"] for p in a["curve"]]
        for ax, x in zip(axes, xs):
            ax.plot(x, ys, color=COLOURS.get(a["method"]), alpha=0.8, marker=".", lw=1.2,
                    label=f"{LABELS.get(a['method'], a['method'])} seed {a['seed']}")
    axes[0].set_xlabel("training seconds")
    axes[1].set_xlabel("examples seen (rows for SFT, prompts for RFT)")
    axes[1].set_xscale("log")
    axes[0].set_ylabel("held-out score")
    if axes[0].get_lines():
        axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"Held-out score while training ({big} rows), every arm and seed", fontsize=10)
    out["curves"] = _save(fig, folder / "curves.png")

    if len(sizes) > 1:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for m in methods:
            pts = [(n, table[str(n)][m]["score"]) for n in sizes if m in table[str(n)]]
            pts = [(n, s) for n, s in pts if s["mean"] is not None]
            if pts:
                ax.errorbar([n for n, _ in pts], [s["mean"] for _, s in pts], yerr=[s["spread"] or 0 for _, s in pts],
                            color=COLOURS.get(m), marker="o", capsize=4, label=LABELS.get(m, m))
        if base is not None:
            ax.axhline(base, color="grey", ls="--", lw=1, label="base model")
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()  # a log axis labels its minor ticks (3x10^1, ...) over the sizes' own labels
        ax.set_xlabel("training rows")
        ax.set_ylabel("held-out score")
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=8)
        ax.set_title("Data-size sweep: held-out score against rows (mean ± spread over seeds)", fontsize=10)
        out["sweep"] = _save(fig, folder / "sweep.png")

    if before is not None:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        vals = [table[big][m]["keep_score"]["mean"] for m in methods]
        ax.bar(range(len(methods)), [v or 0 for v in vals], color=[COLOURS.get(m) for m in methods], alpha=0.85)
        ax.axhline(before, color="black", ls="--", lw=1, label=f"before training {before:.0%}")
        ax.set_xticks(range(len(methods)), [LABELS.get(m, m) for m in methods])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("keep-set score")
        ax.legend(fontsize=8)
        ax.set_title(f"Forgetting: the keep set before and after each method ({big} rows)", fontsize=10)
        out["forgetting"] = _save(fig, folder / "forgetting.png")
    return out


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def setup_lines(result: dict) -> list[str]:
    spec = result["spec"]
    kind, value = next(iter(spec["budget"].items()))
    budget = f"{value:g} s of training steps per arm" if kind == "seconds" else f"{value:g} training examples per arm"
    lines = [f"Model: `{result['model']}`; base run file: `{Path(spec['base']).name}`.",
             f"Methods: {', '.join(LABELS.get(m, m) for m in spec['methods'])}; seeds: {spec['seeds']}; "
             f"data sizes: {spec['sizes'] or 'all rows'}.",
             f"Budget: {budget} (SFT then RFT splits it evenly between its stages)"
             + ("; constant learning rate (a time budget has no step count to schedule over)." if kind == "seconds"
                else "."),
             f"Held-out score: greedy answers to {spec['eval_rows']} held-out rows, the run's graders' weighted score "
             f"over their total weight, every {spec['eval_every']} steps and at each stage's end."]
    if result.get("keep_before") is not None:
        lines.append("Keep set: scored greedily before training and after each arm, by the keep graders.")
    return lines + list(result.get("notes") or [])


def write_report(lab, result: dict) -> dict[str, Path]:
    """report.md, charts/*.png and report.html in the Lab folder; returns their paths."""
    folder = Path(lab.path)
    pngs = charts(result, folder / "charts")
    claims = read_claims(result)
    rows = table_rows(result)
    title = f"Lab: {result['name']} — SFT vs RFT vs both"
    md = [f"# {title}", "", "## Setup", ""] + [f"- {line}" for line in setup_lines(result)]
    md += ["", "## Results", "", _markdown_table(rows), ""]
    if len(result["table"]) > 1:
        md += ["Held-out score by data size (the sweep):", "", _markdown_table(sweep_rows(result)), ""]
    md += [f"![{name}](charts/{p.name})" for name, p in pngs.items()]
    md += ["", "## What the numbers say", "", "| the article's claim | verdict here | measured |", "|---|---|---|"]
    md += [f"| {c['claim']} | **{c['verdict']}** | {c['measured']} |" for c in claims]
    failed = [a["run_id"] for a in result["arms"] if a["score"] is None]
    if failed:
        md += ["", f"Arms that did not finish (left out of the means): {', '.join(failed)}."]
    (folder / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    (folder / "report.html").write_text(_html(title, result, rows, pngs, claims), encoding="utf-8")
    return {"md": folder / "report.md", "html": folder / "report.html", **pngs}


def _html_table(rows: list[dict]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(k)}</th>" for k in (rows[0] if rows else {}))
    body = "".join("<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in r.values()) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _html(title, result, rows, pngs, claims) -> str:
    esc = html.escape
    sweep = (f"<p>Held-out score by data size (the sweep):</p>{_html_table(sweep_rows(result))}"
             if len(result["table"]) > 1 else "")
    imgs = "".join(f'<p><img alt="{esc(n)}" style="max-width:100%" src="data:image/png;base64,'
                   f'{base64.b64encode(p.read_bytes()).decode()}"></p>' for n, p in pngs.items())
    reading = "".join(f"<tr><td>{esc(c['claim'])}</td><td><b>{esc(c['verdict'])}</b></td><td>{esc(c['measured'])}"
                      f"</td></tr>" for c in claims)
    setup = "".join(f"<li>{esc(line)}</li>" for line in setup_lines(result))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>"
            "body{font-family:sans-serif;max-width:1000px;margin:auto;padding:1em}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;font-size:0.9em}"
            f"</style></head><body><h1>{esc(title)}</h1><h2>Setup</h2><ul>{setup}</ul><h2>Results</h2>"
            f"{_html_table(rows)}{sweep}{imgs}<h2>What the numbers say</h2><table><tr><th>the "
            f"article's claim</th><th>verdict here</th><th>measured</th></tr>{reading}</table></body></html>")
