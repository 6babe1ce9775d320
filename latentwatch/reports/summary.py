"""The plain-words summary of a BiasReport that heads the JSON and the HTML, and the number
formats both use.

Each sentence says what was measured (latent findings: where a group's rows sit; share findings:
how many rows it has against an even split), with its interval and test.
"""

from __future__ import annotations

import math

import numpy as np

from latentwatch.bias.accumulator import DISPARITY_BAND, BiasReport, GroupStats

# Flagged groups named one by one in the summary (more of the group in the sparse regions, then
# less); the rest are counted.
MAX_SPARSE_GROUPS_NAMED, MAX_DENSE_GROUPS_NAMED = 3, 1
# Groups flagged for their row counts named one by one (fewer rows than an even split, then more).
MAX_FEWER_GROUPS_NAMED, MAX_MORE_GROUPS_NAMED = 3, 1
# What the share findings compare a group's rows with, said wherever they are shown.
SHARE_BASELINE = "an even split of each column's values, not the population's shares"
# A dimension's share of rows outside the training range worth a sentence.
OUT_OF_RANGE_NOTE = 0.01

def group_label(group: GroupStats) -> str:
    return f"{group.column}={group.value}"


def sparse_weight_share(report: BiasReport) -> tuple[int, float]:
    """(rows in the sparsest `sparse_fraction` of the data, their share of the total weight)."""
    # The same count the group statistics use (latentwatch.bias.accumulator).
    n_sparse = max(1, int(round(report.options.sparse_fraction * report.n_rows)))
    order = np.argsort(report.log_density, kind="stable")  # lowest density first
    total = float(report.weight.sum())
    share = float(report.weight[order[:n_sparse]].sum()) / total if total > 0 else float("nan")
    return n_sparse, share


# --- words ---------------------------------------------------------------------------------------


def fmt_count(n: float) -> str:
    """A row count with thousands separators; fractional counts (an ESS) are rounded."""
    return f"{round(n):,}" if math.isfinite(n) else "n/a"


def fmt_percent(fraction: float) -> str:
    if not math.isfinite(fraction):
        return "n/a"
    value = 100 * fraction
    if value != 0 and abs(value) < 1:
        return f"{value:.1f}%"
    return f"{value:.0f}%"


def fmt_num(value: float) -> str:
    """Three significant digits; thousands to billions in full (1,234 rather than 1.23e+03)."""
    if not math.isfinite(value):
        return "n/a"
    if 999.5 <= abs(value) < 1e9:  # 999.7 would print as 1e+03
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _weight_sentence(report: BiasReport) -> str:
    n_sparse, share = sparse_weight_share(report)
    fraction = n_sparse / report.n_rows
    sentence = (
        f"The {fmt_percent(fraction)} of rows in the sparsest latent regions "
        f"({fmt_count(n_sparse)} rows) get {fmt_percent(share)} of the resampling weight"
    )
    if math.isfinite(share) and share > 2 * fraction:
        return sentence + ": resampling by these weights would draw them far more often."
    return sentence + "."


def _ess_sentence(report: BiasReport) -> str:
    ess = report.effective_sample_size
    fraction = report.effective_sample_fraction
    head = (
        f"Effective sample size is {fmt_count(ess)} of {fmt_count(report.n_rows)} rows "
        f"({fmt_percent(fraction)})"
    )
    if not math.isfinite(fraction):
        return head + "."
    if fraction < 0.1:
        return head + (
            ": the weight is concentrated on few rows, so the data has large regions it covers "
            "thinly."
        )
    if fraction < 0.5:
        return head + ": some latent regions are covered much more thinly than others."
    return head + ": the weights are close to uniform, so the latent density is fairly even."


def fmt_p(p: float) -> str:
    """A p-value: three significant digits; one that underflowed as a bound."""
    if not math.isfinite(p):
        return "n/a"
    return "p < 1e-300" if p < 1e-300 else f"p = {p:.2g}"


def _test_words(report: BiasReport, group: GroupStats) -> str:
    """The ratio with its interval and test, in brackets' words."""
    level = report.options.significance_level
    verdict = "significant" if group.significant else "not significant"
    return (
        f"ratio {fmt_num(group.representation_ratio)}, "
        f"{100 * (1 - level):g}% interval {fmt_num(group.ratio_low)} to "
        f"{fmt_num(group.ratio_high)}, {fmt_p(group.p_value)}, {verdict} at {level:g} after "
        f"Benjamini-Hochberg over {len(report.groups)} groups"
    )


def group_finding(report: BiasReport, group: GroupStats) -> str:
    """What was measured for one group: its rows' share in the sparse regions against all rows'."""
    n_sparse, _ = sparse_weight_share(report)
    overall = n_sparse / report.n_rows
    own = group.n_sparse_rows / group.n_rows if group.n_rows else float("nan")
    side = "larger" if group.representation_ratio > 1 else "smaller"
    return (
        f"A {side} share of group {group_label(group)} lies in the sparsest latent regions "
        f"({fmt_percent(own)} of its {fmt_count(group.n_rows)} rows) than of the data overall "
        f"({fmt_percent(overall)}): {_test_words(report, group)}."
    )


def _group_sentences(report: BiasReport) -> list[str]:
    low, high = DISPARITY_BAND
    if not report.groups:
        return ["No group labels were given, so there are no per-group figures."]
    level = report.options.significance_level
    flagged = [g for g in report.groups if g.flagged]
    if not flagged:
        worst = max(
            report.groups, key=lambda g: abs(math.log(max(g.representation_ratio, 1e-12)))
        )
        loose = sum(g.outside_band for g in report.groups)
        sentences = [
            f"No group's share of the sparsest latent regions differs from the data's with "
            f"significance at {level:g} and a ratio outside [{low:g}, {high:g}] (farthest from "
            f"1: {group_label(worst)}, {_test_words(report, worst)})."
        ]
        if loose:
            sentences.append(
                f"{loose} group{'s have ratios' if loose > 1 else ' has a ratio'} outside "
                f"[{low:g}, {high:g}] that the test does not tell apart from chance."
            )
        return sentences
    # More of the group in the sparse regions leads, as the data covers those regions thinly;
    # then the groups with the least there.
    sparse_side = sorted((g for g in flagged if g.representation_ratio > high),
                         key=lambda g: -g.representation_ratio)
    dense_side = sorted((g for g in flagged if g.representation_ratio < low),
                        key=lambda g: g.representation_ratio)
    named = sparse_side[:MAX_SPARSE_GROUPS_NAMED] + dense_side[:MAX_DENSE_GROUPS_NAMED]
    sentences = [group_finding(report, group) for group in named]
    if len(flagged) > len(named):
        rest = len(flagged) - len(named)
        sentences.append(
            f"{rest} more group{'s' if rest > 1 else ''} {'are' if rest > 1 else 'is'} flagged "
            f"(significant at {level:g} and a ratio outside [{low:g}, {high:g}])."
        )
    return sentences


def _share_words(report: BiasReport, group: GroupStats) -> str:
    """A group's rows against an even split of its column, with the interval and test."""
    level = report.options.significance_level
    verdict = "significant" if group.share_significant else "not significant"
    n_values = sum(g.column == group.column for g in report.groups)
    return (
        f"{100 * group.share:.1f}% of the rows ({fmt_count(group.n_rows)} of "
        f"{fmt_count(report.n_rows)}), against {100 * group.even_share:.1f}% for an even split of "
        f"the {n_values} groups of {group.column}: ratio {group.share_ratio:.2f}, "
        f"{100 * (1 - level):g}% interval [{group.share_ratio_low:.2f}, "
        f"{group.share_ratio_high:.2f}], {fmt_p(group.share_p_value)}, {verdict} at {level:g} "
        f"after Benjamini-Hochberg over {len(report.groups)} groups"
    )


def share_finding(report: BiasReport, group: GroupStats) -> str:
    """What was measured of one group's row count: against an even split, not the population."""
    side = "fewer" if group.share_ratio < 1 else "more"
    return (f"Group {group_label(group)} has {side} rows than an even split: it holds "
            f"{_share_words(report, group)}.")


def _share_sentences(report: BiasReport) -> list[str]:
    # A server from before the share tests sends none (0 on the wire): nothing to say then.
    if not report.groups or not all(g.even_share > 0 for g in report.groups):
        return []
    low, high = DISPARITY_BAND
    level = report.options.significance_level
    baseline = f"Row counts are compared with {SHARE_BASELINE}."
    flagged = [g for g in report.groups if g.share_flagged]
    if not flagged:
        worst = max(report.groups, key=lambda g: abs(math.log(max(g.share_ratio, 1e-12)))
                    if math.isfinite(g.share_ratio) else -1.0)
        return [baseline, (
            f"No group has fewer or more rows than an even split of its column with "
            f"significance at {level:g} and a ratio outside [{low:g}, {high:g}] (farthest from "
            f"even: {group_label(worst)} holds {_share_words(report, worst)})."
        )]
    fewer = sorted((g for g in flagged if g.fewer_rows), key=lambda g: g.share_ratio)
    more = sorted((g for g in flagged if g.more_rows), key=lambda g: -g.share_ratio)
    named = fewer[:MAX_FEWER_GROUPS_NAMED] + more[:MAX_MORE_GROUPS_NAMED]
    sentences = [baseline, *(share_finding(report, g) for g in named)]
    if len(flagged) > len(named):
        rest = len(flagged) - len(named)
        sentences.append(
            f"{rest} more group{'s' if rest > 1 else ''} {'have' if rest > 1 else 'has'} fewer or "
            f"more rows than an even split (significant at {level:g} and a ratio outside "
            f"[{low:g}, {high:g}])."
        )
    return sentences


def _drift_sentences(report: BiasReport) -> list[str]:
    drift = report.drift
    if drift is None:
        return ["The model has no stored training reference, so drift was not measured."]
    n_active = int(np.count_nonzero(drift.active))
    over = (
        f"{n_active} active latent dimension{'s' if n_active != 1 else ''}"
        if n_active
        else f"all {report.latent_dim} latent dimensions (none is active)"
    )
    figures = (
        f"PSI {fmt_num(drift.overall)} averaged over {over}; largest in dimension "
        f"{drift.max_psi_dimension}, PSI {fmt_num(drift.max_psi)}"
    )
    words = {"none": "No drift", "moderate": "Moderate drift", "significant": "Significant drift"}
    sentences = [f"{words.get(drift.level, drift.level)} against the training data ({figures})."]
    if report.reference is not None:
        # Only dimensions the drift figure counts: inactive ones barely move in training, so
        # their range is narrow and says little.
        used = drift.active if n_active else np.ones(report.latent_dim, dtype=bool)
        outside = np.where(used, report.reference.below + report.reference.above, -1.0)  # (Z,)
        dimension = int(np.argmax(outside))
        if outside[dimension] >= OUT_OF_RANGE_NOTE:
            sentences.append(
                f"{fmt_percent(float(outside[dimension]))} of rows fall outside the training range "
                f"of dimension {dimension}."
            )
    return sentences


def _kl_sentence(report: BiasReport) -> str:
    total = report.kl_to_prior_total
    sentence = (
        f"The aggregate posterior is {fmt_num(total)} nats from the prior N(0, I) "
        f"(KL summed over {report.latent_dim} dimensions"
    )
    if report.reference_kl_to_prior is not None:
        reference = float(np.sum(report.reference_kl_to_prior))
        return sentence + f"; the training data's: {fmt_num(reference)} nats)."
    return sentence + ")."


def summary(report: BiasReport) -> list[str]:
    """Plain-words sentences, most important first."""
    return [
        _weight_sentence(report),
        _ess_sentence(report),
        *_group_sentences(report),
        *_share_sentences(report),
        *_drift_sentences(report),
        _kl_sentence(report),
    ]
