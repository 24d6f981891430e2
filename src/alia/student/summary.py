"""The comparison across variants: one Markdown table per question set (mcqa_summary.md)."""

from __future__ import annotations

from typing import Any

SCORER_LABELS = {
    "letter": "letter",
    "loglikelihood": "LL acc",
    "loglikelihood_norm": "LL acc_norm",
    "generative": "generative",
    "leaderboard": "leaderboard",
}


def _cell(value: float | None, interval: list[float] | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" + (" [{:.2f}, {:.2f}]".format(*interval) if interval else "")


def _paired(paired: dict[str, Any] | None) -> str:
    if not paired:
        return "-"
    return f"{paired['delta']:+.3f} [{paired['ci95'][0]:+.3f}, {paired['ci95'][1]:+.3f}]"


def teacher_table(name: str, summary: dict[str, Any]) -> list[str]:
    """The teacher against each student, paired on the same questions (teacher - student)."""
    lines = [
        f"### {name} vs each student: teacher - student on the same questions",
        "",
        "| student | scorer | Δ Acc_All [95% CI] | p (McNemar) | MDE | Δ Acc_Sel | Δ Acc_El |",
        "|---" * 7 + "|",
    ]
    for student, scorers in summary["vs_students"].items():
        for scorer, paired in scorers.items():
            all_ = paired["all"]
            lines.append(
                f"| {student} | {SCORER_LABELS[scorer]} | {_paired(all_)} | {all_['p_mcnemar']:.3g} | "
                f"{all_['mde']:.3f} | {_paired(paired.get('sel'))} | {_paired(paired.get('el'))} |"
            )
    return lines + [""]


# Long because it is one table's layout, row by row as it appears on the page.
def summary_table(results: dict[str, dict[str, Any]]) -> str:
    """A Markdown table per question set: every model's Acc_All / Acc_Sel / Acc_El per scorer, and
    for a trained variant its paired difference from its base, with the interval, McNemar's p and
    the smallest difference the set can detect. Positive controls (leaks) get their own table."""
    sets = sorted({k for r in results.values() for k, v in r.items() if isinstance(v, dict) and "of" in v})
    lines = ["# MCQA: students before and after training, and the teacher they learn from", ""]
    for question_set in sets:
        rows = {name: r for name, r in results.items() if question_set in r}
        first = next(iter(rows.values()))[question_set]
        lines += [
            f"## {question_set}: {first['questions']} of {first['of']} questions",
            "",
        ]
        for title, members in (
            ("", {n: r for n, r in rows.items() if not r.get("leak")}),
            (
                "Positive controls: trained on D_eval itself (a deliberate leak; never a result)",
                {n: r for n, r in rows.items() if r.get("leak")},
            ),
        ):
            if not members:
                continue
            if title:
                lines += [f"### {title}", ""]
            lines += [
                "| model | scorer | Acc_All | Acc_Sel | Acc_El | Sel, both directions | El, both directions "
                "| Δ vs base [95% CI] | p (McNemar) | MDE | Acc_Perturb | Consistency |",
                "|---" * 12 + "|",
            ]
            for name, r in sorted(members.items(), key=lambda kv: ("base" in kv[1], kv[0])):
                summary = r[question_set]
                label = f"{name} (from {r['base']})" if "base" in r else name
                if "endpoint" in r:
                    label = f"{name} ({r['model']} at {r['endpoint']})"
                for scorer, text in SCORER_LABELS.items():
                    if scorer not in summary:
                        continue
                    s = summary[scorer]
                    paired = summary.get("vs_base", {}).get(scorer, {}).get("all")
                    acc_all = _cell(s.get("acc_all"), s.get("acc_all_ci95"))
                    if "f1" in s:
                        acc_all += f" (F1 {s['f1']:.3f})"
                    compared = (
                        f"{_paired(paired)} | {paired['p_mcnemar']:.3g} | {paired['mde']:.3f}"
                        if paired
                        else f"- | - | {s['mde_all']:.3f}"
                        if "mde_all" in s
                        else "- | - | -"
                    )
                    cells = [
                        label,
                        text,
                        acc_all,
                        _cell(s.get("acc_sel"), s.get("acc_sel_ci95")),
                        _cell(s.get("acc_el"), s.get("acc_el_ci95")),
                        _cell(s.get("acc_sel_pooled"), s.get("acc_sel_pooled_ci95")),
                        _cell(s.get("acc_el_pooled"), s.get("acc_el_pooled_ci95")),
                        compared,
                        _cell(s.get("acc_perturb")),
                        _cell(s.get("consistency")),
                    ]
                    lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
        for name, r in rows.items():
            if r[question_set].get("vs_students"):
                lines += teacher_table(name, r[question_set])
    lines += [
        "Acc_All: all questions; Acc_Sel / Acc_El as FailureSensorIQ's run_eval.py: the failure mode ->",
        "sensor selection / elimination questions; both directions: every selection / elimination",
        "question. 95% intervals from a bootstrap over clusters of questions about the same asset and",
        "failure mode. Δ: the paired",
        "difference from the untuned model on the same questions; MDE: the smallest difference detected",
        "with 80% power at 5%: for a variant 2.8 standard errors of its Δ, for an untuned model the set's",
        "own (2.8 x sqrt 2 standard errors of its accuracy: two models scored independently).",
        "letter: each option's letter as the next token; LL: option log-likelihood (blind to NOT by",
        "construction); generative: the letter in the model's answer; leaderboard: FailureSensorIQ's",
        "protocol (step by step, a JSON answer, 3 asks, the exact set). The teacher: its endpoint, the",
        "same questions and words as the instruct students. Acc_Perturb / Consistency: on a",
        "copy with options reordered and relabelled, and right on both copies.",
        "Multi-correct questions: the exact set of letters, and per-option F1.",
    ]
    return "\n".join(lines) + "\n"
