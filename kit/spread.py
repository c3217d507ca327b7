"""The seed spread: whether the gap between two rows of a table is larger than their run-to-run variation.

A row run over several seeds is an estimate (mean, sample std over seeds, number of seeds). Every comparison
sentence the kit prints (`python -m kit summary`, report.md, notebooks 05–07) asks `beyond_spread` whether the gap
between its two rows exceeds the seed spread, and says "one seed: no spread" when a side has a single seed: one
run says nothing about how far a rerun with another seed would land.
"""
from __future__ import annotations

NO_SPREAD = "one seed: no spread"
Estimate = tuple  # (mean, sample std over seeds, number of seeds)


def beyond_spread(a: Estimate, b: Estimate) -> bool | None:
    """Whether two rows' estimates (mean, std, seeds) differ by more than their seed spread: |mean_a − mean_b| >
    std_a + std_b, the sum of the two sample standard deviations over seeds. None when either side has fewer than
    two seeds (one seed: no spread). The sum, rather than a pooled or Welch standard error, keeps the rule
    conservative and readable in a table of mean ± std: a gap called beyond the spread is larger than both error
    bars laid end to end. With three seeds a side it is a screen, not a significance test."""
    if a[2] < 2 or b[2] < 2:
        return None
    return abs(a[0] - b[0]) > a[1] + b[1]


def spread_words(a: Estimate, b: Estimate, scale: float = 100.0) -> str:
    """`beyond_spread` in words: 'beyond the seed spread (std 1.41 + 0.50 = 1.91 points)', 'within the seed spread
    (…)', or 'one seed: no spread'; `scale` turns the estimates into points (100 for fractions, 1 for %)."""
    verdict = beyond_spread(a, b)
    if verdict is None:
        return NO_SPREAD
    spread = f"std {scale * a[1]:.2f} + {scale * b[1]:.2f} = {scale * (a[1] + b[1]):.2f} points"
    return f"{'beyond' if verdict else 'within'} the seed spread ({spread})"


def spread_over(pairs: dict[str, tuple[Estimate, Estimate]]) -> str:
    """`beyond_spread` over several γ ({γ label: (estimate a, estimate b)}), in words: 'beyond the seed spread at
    every γ', '… at γ = 0.25, 0.5; within it at γ = 0', '… at no γ', with the γ where a side has one seed named
    as such; 'one seed: no spread' when no γ has seeds on both sides."""
    verdicts = {g: beyond_spread(a, b) for g, (a, b) in pairs.items()}
    single = [g for g, v in verdicts.items() if v is None]
    if len(single) == len(verdicts):
        return NO_SPREAD
    above = [g for g, v in verdicts.items() if v]
    within = [g for g, v in verdicts.items() if v is False]
    if not within and not single:
        words = "beyond the seed spread at every γ"
    elif not above and not single:
        words = "within the seed spread at every γ"
    else:
        words = f"beyond the seed spread at γ = {', '.join(above)}" if above else "beyond the seed spread at no γ"
        words += f"; within it at γ = {', '.join(within)}" if above and within else ""
        words += f"; γ = {', '.join(single)}: {NO_SPREAD}" if single else ""
    return words + " (spread: the sum of the two rows' std over seeds)"


def average(estimates: list[Estimate]) -> Estimate:
    """One estimate for the average of several columns of a row (e.g. its accuracy over seen γ): the mean of the
    means, the mean of the stds (at least the sample std over seeds of the per-seed average, by the triangle
    inequality, so `beyond_spread` stays conservative) and the fewest seeds of any column."""
    n = len(estimates)
    return (sum(e[0] for e in estimates) / n, sum(e[1] for e in estimates) / n, min(e[2] for e in estimates))
