"""Comparison verdicts on hand-made cases, and the HTML / Markdown reports they produce.

Verdict numbers are worked out by hand next to each test; the report tests check
that files are produced, parse, embed their figures and carry the verdict and
the liquidation table.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from helpers import flat, market, units

from backtester import Comparison, Result, compare, load_market, run
from backtester.cli import main
from backtester.report import (
    drawdown_figure,
    equity_figure,
    heatmap_figure,
    margin_figure,
    run_report,
    sweep_report,
)
from backtester.report.interactive import (
    MAX_POINTS,
    decimate,
    drawdown_plot,
    equity_plot,
    heatmap_plot,
    margin_plot,
)
from backtester.report.render import Plot, plotly_script, write


def both(m, targets, **options):
    return Comparison({mode: run(m, targets, margin_mode=mode, **options)
                       for mode in ("cross", "isolated")})


# Long 1 A @ 10,000 and short 100 B @ 100 from a 10,000 balance at 10x; bar 2 A crashes to
# 500 while B rises to 106 (bars start 2024-01-01 00:00, hourly: bar 2 is 02:00).
CRASH = market(
    ["A", "B"],
    [
        [(10000,) * 4, (100,) * 4],
        [(10000,) * 4, (100,) * 4],
        [(10000, 10000, 500, 500), (100, 106, 100, 106)],
        [(500,) * 4, (106,) * 4],
    ],
)


def test_verdict_when_cross_is_wiped_out_and_isolated_keeps_one_leg():
    v = both(CRASH, units(4, [1, -100]), leverage=10, **flat()).verdict
    # Cross: on the segment (A 10,000 -> 500, B 100 -> 106) the margin balance
    # 10,000 - 9,500 s - 600 s meets MM 0.005 (A(s) + 100 B(s)) = 0.005 (20,000 - 8,900 s)
    # at s = 9,900 / 10,055.5 = 0.984536: A = 646.91, B = 105.907, MM = 56.19 = what is left
    s = 9900 / 10055.5
    a, b = 10000 - 9500 * s, 100 + 6 * s
    cross_final = 0.005 * (a + 100 * b)
    assert round(cross_final, 2) == 56.19
    # Isolated: A's long liquidates at 9,000 / 0.995 = 9,045.23 and loses 1,000 - 0.5% of
    # that = 954.77; B (liquidation price 100 * 1.1 / 1.005 = 109.45) lives on at -600:
    # 10,000 - 954.77 - 600 = 8,445.23
    iso_final = 10000 - (1000 - 0.005 * 9000 / 0.995) - 600
    assert "Cross ended at 56.19 (-99.4%), isolated at 8,445 (-15.5%)" in v
    assert f"isolated ended {iso_final - cross_final:,.0f} higher" in v  # 8,389
    assert "Isolated lost 1 position to liquidation (A 1), 955 of margin" in v
    # cross loses A's 10,000 - 646.91 = 9,353.09 and B's 100 * 5.907 = 590.72 together
    assert "cross was liquidated 1 time, closing 2 positions (A 1, B 1) and losing 9,944" in v
    assert ("On 2024-01-01 02:00 UTC cross's margin balance fell to its maintenance margin: "
            "A long was at -9,353 against its entry price, and every cross position was closed "
            "with it (B short -591).") in v
    assert "Isolated never lost B" in v
    assert "profit" not in v  # nothing was carried by a winning leg here


# Long 1 BTC @ 30,000 / short 10 ETH @ 2,000 at 10x. Bar 2: BTC -4,000, ETH short +4,000;
# bar 3: both back where they started.
REVERT = market(
    ["BTC", "ETH"],
    [
        [(30000,) * 4, (2000,) * 4],
        [(30000,) * 4, (2000,) * 4],
        [(30000, 30000, 26000, 26000), (2000, 2000, 1600, 1600)],
        [(26000, 30000, 26000, 30000), (1600, 2000, 1600, 2000)],
        [(30000,) * 4, (2000,) * 4],
    ],
)


def test_verdict_when_isolated_loses_the_losing_leg_and_cross_carries_it():
    v = both(REVERT, units(5, [1, -10]), leverage=10, **flat()).verdict
    # isolated BTC liquidates at 27,000 / 0.995 = 27,135.68 losing 3,000 - 135.68 = 2,864.32;
    # ETH returns to 2,000: isolated ends at 7,135.68; cross ends where it began
    assert "Cross ended at 10,000 (+0.0%), isolated at 7,136 (-28.6%)" in v
    assert "cross ended 2,864 higher" in v
    assert "Isolated lost 1 position to liquidation (BTC 1), 2,864 of margin" in v
    assert "cross lost no position to liquidation" in v
    # at bar 2's close under cross: BTC 26,000 - 30,000 = -4,000, ETH -10 * (1,600 - 2,000)
    # = +4,000; margin ratio 0.5% * (26,000 + 16,000) / 10,000 = 2.1%; at bar 1 it was
    # 0.5% * 50,000 / 10,000 = 2.5%, the peak
    assert ("When isolated first lost a position (BTC long, 2024-01-01 02:00 UTC), cross held "
            "the same legs: its BTC leg stood at -4,000 since the start and its ETH leg at "
            "+4,000.") in v
    assert "kept the account's margin ratio at 2.1% that bar" in v
    assert "cross's margin ratio peaked at 2.5%" in v


def test_verdict_claims_no_carrying_leg_when_the_other_leg_did_not_profit():
    # BTC long falls 12% while ETH does not move: isolated loses BTC, cross (1,200 down on
    # 10,000) survives, but no other leg was in profit to carry it
    m = market(["BTC", "ETH"], [
        [(30000,) * 4, (2000,) * 4],
        [(30000,) * 4, (2000,) * 4],
        [(30000, 30000, 26400, 26400), (2000,) * 4],
    ])
    v = both(m, units(3, [1, -10]), leverage=10, **flat()).verdict
    assert "profit" not in v
    # peak ratio at bar 2: MM 0.5% * (26,400 + 20,000) = 232 over 10,000 - 3,600 = 6,400
    assert ("Cross's shared margin balance never fell to its maintenance margin: its margin "
            "ratio peaked at 3.6% (liquidation at 100%).") in v


def test_verdict_without_liquidations_names_fees_and_rejections():
    v = both(REVERT, units(5, [0.5, -5]), leverage=2, **flat(taker=0.001)).verdict
    # 0.5 BTC = 15,000 notional (7,500 margin) and 5 ETH = 10,000 (5,000 margin): cross needs
    # 12,500 of a 10,000 balance -> the ETH order (after BTC's 7,515 only 2,485 is left) is
    # rejected in both modes; fees 0.1% of the 15,000 filled = 15.00. No liquidation: the
    # BTC long at 2x would need a fall to 15,000 / 0.995
    assert "lost no position to liquidation" in v
    assert "Cross paid 15.00 in fees and 0 in funding, 1 order rejected (insufficient margin 1)" \
        in v


def test_verdict_ranks_several_leverages_and_pairs_each():
    comparison = compare(REVERT, units(5, [1, -10]), leverage=[5, 10], **flat())
    assert list(comparison.results) == ["cross 5x", "isolated 5x", "cross 10x", "isolated 10x"]
    first, *pairs = comparison.verdict.split("\n\n")
    # at 5x isolated BTC (margin 6,000, liquidation price 24,000 / 0.995 = 24,120.60) survives
    # the slide to 26,000: three runs end at 10,000; isolated 10x at 7,136 (as above)
    assert first.startswith("Of 4 runs, cross 5x, isolated 5x and cross 10x ended highest at "
                            "10,000 (+0.0%) and isolated 10x lowest at 7,136 (-28.6%).")
    assert len(pairs) == 2
    assert pairs[0].startswith("Cross 5x ended at 10,000")
    assert pairs[1].startswith("Cross 10x ended at 10,000 (+0.0%), isolated 10x at 7,136")


# --- the files ----------------------------------------------------------------------------


class Page(HTMLParser):
    """Collects images, paragraphs and tables, and any mis-nested tag."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.images, self.links = [], [], [], []
        self.plots, self.scripts = [], []
        self.paragraphs, self.tables, self.headings, self.text = [], [], [], ""
        self._text = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag == "script" and "src" in attrs:
            self.scripts.append(attrs["src"])
        elif tag == "div" and "plot" in attrs.get("class", "").split():
            self.plots.append(attrs["id"])
        for key in ("href", "src"):
            if key in attrs and tag not in ("img", "script"):
                self.links.append(attrs[key])
        if tag in self.VOID:
            return
        self.stack.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        if tag in ("p", "td", "th", "h2"):
            self._text = []

    def handle_data(self, data):
        self.text += data
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
            return
        self.stack.pop()
        text = "".join(self._text or [])
        if tag == "p":
            self.paragraphs.append(text)
        elif tag == "h2":
            self.headings.append(text)
        elif tag in ("td", "th") and "table" in self.stack:
            self.tables[-1][-1].append(text)
        if tag in ("p", "td", "th", "h2"):
            self._text = None


def parse(path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    assert not page.errors and not page.stack
    return page


def assert_interactive_figures(page: Page, count: int, script: str = "plotly.min.js"):
    """``count`` figures drawn by plotly.js, which the page loads from the file beside it."""
    assert len(page.plots) == count
    assert page.scripts == [script]
    assert not page.images


@pytest.fixture(scope="module")
def crash_comparison():
    return both(CRASH, units(4, [1, -100]), leverage=10, **flat())


def test_comparison_html_opens_offline_with_verdict_and_liquidations(crash_comparison,
                                                                       tmp_path):
    path = crash_comparison.to_html(tmp_path / "compare.html")
    text = path.read_text()
    # no address to fetch anything from: plotly.js is the file beside the report
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"<script[^>]*src=[\"']?(https?:)?//", text)
    assert (tmp_path / "plotly.min.js").read_bytes() == plotly_script()
    page = parse(path)
    assert_interactive_figures(page, 4)  # equity, drawdown, margin, per-position PnL
    assert not page.links
    assert crash_comparison.verdict.split("\n\n")[0] in page.paragraphs
    # the liquidation table: isolated A, then cross A and B
    liq = next(t for t in page.tables if "liquidation price" in t[0])
    header, rows = liq[0], liq[1:]
    assert [r[header.index("run")] for r in rows] == ["cross", "cross", "isolated"]
    assert [r[header.index("symbol")] for r in rows] == ["A", "B", "A"]
    assert rows[0][header.index("liquidation price")] == "646.91"
    assert rows[2][header.index("margin lost")] == "954.77"
    metrics_table = next(t for t in page.tables if t[0][:3] == ["metric", "cross", "isolated"])
    final = next(r for r in metrics_table if r[0] == "final equity")
    assert final[1:] == ["56.19", "8,445.23"]


def test_comparison_markdown_links_its_figures(crash_comparison, tmp_path):
    path = crash_comparison.to_markdown(tmp_path / "compare.md")
    text = path.read_text()
    assert "> " + crash_comparison.verdict.split("\n\n")[0] in text
    assert "| run | time (UTC) | symbol |" in text
    assert "| isolated | 2024-01-01 02:00 | A |" in text
    images = [line[line.index("](") + 2:-1] for line in text.splitlines()
              if line.startswith("![")]
    assert len(images) == 4
    for name in images:
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_reports_in_one_folder_share_one_plotly_script_written_once(crash_comparison,
                                                                    tmp_path):
    crash_comparison.to_html(tmp_path / "compare.html")
    script = tmp_path / "plotly.min.js"
    written = script.stat().st_mtime_ns
    run_report(crash_comparison.results["isolated"], tmp_path / "isolated.html")
    crash_comparison.to_html(tmp_path / "compare.html")
    assert script.stat().st_mtime_ns == written  # the same file: left alone
    assert [p.name for p in tmp_path.glob("*.js")] == ["plotly.min.js"]
    for name in ("compare.html", "isolated.html"):
        assert parse(tmp_path / name).scripts == ["plotly.min.js"]
    script.write_text("an older plotly")  # a different file is replaced
    crash_comparison.to_html(tmp_path / "compare.html")
    assert script.read_bytes() == plotly_script()


def test_a_liquidation_marker_hovers_with_symbol_price_and_margin_lost(crash_comparison,
                                                                       tmp_path):
    runs = crash_comparison.results
    markers = {t.name: t for t in equity_plot(runs).data if t.mode == "markers"}
    assert set(markers) == {"cross: 2 liquidated position(s)",
                            "isolated: 1 liquidated position(s)"}
    for label, result in runs.items():
        liq = result.liquidations
        trace = markers[f"{label}: {len(liq)} liquidated position(s)"]
        bars = sorted(set(liq["bar"]))
        # one marker per liquidation bar, on the curve: the equity at that bar's close
        assert list(trace.y) == [result.equity.iloc[b] for b in bars]
        assert list(trace.x) == [result.equity.index[b].value / 1e6 for b in bars]
        for text, bar in zip(trace.text, bars, strict=True):
            for row in liq[liq["bar"] == bar].itertuples():
                side = "long" if row.qty > 0 else "short"
                assert (f"{row.symbol} {side} {abs(row.qty):g} liquidated at {row.price:,.2f}, "
                        f"margin lost {row.margin_lost:,.2f}") in text
    # isolated's A long: liquidated at 9,000 / 0.995 = 9,045.23, losing 1,000 - 0.5% of
    # 9,045.23 = 954.77; cross's one event closes A and B together
    assert markers["isolated: 1 liquidated position(s)"].text == (
        "A long 1 liquidated at 9,045.23, margin lost 954.77",)
    cross = markers["cross: 2 liquidated position(s)"].text[0].split("<br>")
    assert [line.split()[:2] for line in cross] == [["A", "long"], ["B", "short"]]
    # the hover text is in the page
    text = crash_comparison.to_html(tmp_path / "compare.html").read_text()
    assert "A long 1 liquidated at 9,045.23, margin lost 954.77" in text


def test_a_million_bar_curve_is_drawn_from_each_span_s_extremes_and_says_so(tmp_path):
    n = 1_000_000
    y = np.sin(np.arange(n) / 5000.0)
    y[123_457], y[777_777] = 50.0, -50.0  # one-bar spikes
    y[500_000:500_010] = np.nan  # a gap
    at = decimate(y)
    assert len(at) <= MAX_POINTS + 10 and at[0] == 0 and at[-1] == n - 1
    assert (np.diff(at) > 0).all()
    assert {123_457, 777_777} <= set(at) and np.isnan(y[at]).any()
    # each span of bars keeps its lowest and highest value
    size = -(-n // (MAX_POINTS // 2))
    for start in range(0, n, size * 997):
        span, kept = y[start:start + size], y[at[(at >= start) & (at < start + size)]]
        assert np.nanmax(kept) == np.nanmax(span) and np.nanmin(kept) == np.nanmin(span)
    # a report of a 1M-bar run stays small, and its caption says what was left out
    times = pd.date_range("2024-01-01", periods=n, freq="min", tz="UTC")
    stub = SimpleNamespace(equity=pd.Series(10_000 + y, index=times),
                           liquidations=pd.DataFrame({"bar": []}))
    path = write("big", [Plot("equity", None, "Equity.", lambda: equity_plot({"run": stub}))],
                 tmp_path / "big.html")
    assert path.stat().st_size < 1_000_000
    assert f"(here up to {n:,})" in path.read_text()


BROWSER = next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                                "google-chrome"))), None)


class Tags(HTMLParser):
    """Every start tag's attributes, by id."""

    def __init__(self, text: str):
        super().__init__()
        self.by_id: dict[str, dict] = {}
        self.svg_classes: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.by_id[attrs["id"]] = attrs
        if tag == "svg":
            self.svg_classes.append(attrs.get("class", ""))


def in_browser(path, profile) -> tuple[Tags, str]:
    """The page's DOM after its scripts ran in headless Chromium, with every host name
    unresolvable (offline), and Chromium's log (console errors included)."""
    done = subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom",
         path.resolve().as_uri()], capture_output=True, text=True, timeout=180)
    return Tags(done.stdout), done.stderr


@pytest.mark.skipif(BROWSER is None, reason="no Chromium to open the report in")
def test_a_report_draws_its_figures_in_a_browser_offline(crash_comparison, tmp_path):
    path = crash_comparison.to_html(tmp_path / "report.html")
    figures = parse(path).plots
    assert len(figures) == 4
    dom, log = in_browser(path, tmp_path / "profile")
    # plotly.js, loaded from plotly.min.js beside the page, drew every figure: its div
    # became a plot holding plotly's SVG layers
    for figure in figures:
        assert "js-plotly-plot" in dom.by_id[figure]["class"].split()
    assert dom.svg_classes.count("main-svg") >= 2 * len(figures)
    assert "hidden" in dom.by_id["no-plotly"]  # the missing-script warning stays hidden
    assert "Uncaught" not in log and "is not defined" not in log
    # without the script beside it nothing is drawn, and the page says why
    (tmp_path / "plotly.min.js").unlink()
    dom, _ = in_browser(path, tmp_path / "profile2")
    assert "main-svg" not in dom.svg_classes
    assert "hidden" not in dom.by_id["no-plotly"]
    assert not any("js-plotly-plot" in dom.by_id[f].get("class", "") for f in figures)


def test_single_run_report_in_both_formats(tmp_path):
    r = run(CRASH, units(4, [1, -100]), margin_mode="isolated", leverage=10, **flat())
    page = parse(run_report(r, tmp_path / "run.html", title="isolated crash"))
    assert_interactive_figures(page, 4)
    assert "Liquidations" in page.headings
    per_position = next(t for t in page.tables if "net PnL" in t[0])
    assert [row[0] for row in per_position[1:]] == ["A", "B"]
    md = run_report(r, tmp_path / "run.md").read_text()
    assert "| 2024-01-01 02:00 | A | isolated | long |" in md


# --- the figures ---------------------------------------------------------------------------


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_runs_with_the_same_equity_share_one_line_named_for_all_of_them():
    # REVERT, 0.2 BTC long (6,000) and 2 ETH short (4,000), under cross at 2x, 5x and 10x:
    # no order refused (5,000 of margin at 2x), no liquidation, the same equity at every
    # bar (leverage sets only the margin an order needs); isolated 10x loses its BTC leg
    # (liquidation price 27,135.68, as above) and draws its own line
    runs = {f"cross {lev}x": run(REVERT, units(5, [0.2, -2]), margin_mode="cross",
                                 leverage=lev, **flat()) for lev in (2, 5, 10)}
    runs["isolated 10x"] = run(REVERT, units(5, [0.2, -2]), margin_mode="isolated",
                               leverage=10, **flat())
    ax = equity_figure(runs).axes[0]
    assert [line.get_label() for line in ax.get_lines()] == [
        "cross 2x = cross 5x = cross 10x", "isolated 10x"]
    assert legend_texts(ax)[:2] == ["cross 2x = cross 5x = cross 10x", "isolated 10x"]
    assert "isolated 10x: 1 liquidated position(s)" in legend_texts(ax)
    drawdown = drawdown_figure(runs).axes[0]
    assert [t.split(" (max")[0] for t in legend_texts(drawdown)] == [
        "cross 2x = cross 5x = cross 10x", "isolated 10x"]
    ratio, distance = margin_figure(runs).axes
    assert legend_texts(ratio)[0] == "cross 2x = cross 5x = cross 10x"
    assert legend_texts(distance)[0].startswith("cross 2x = cross 5x = cross 10x (closest")
    # the interactive figures alike
    lines = [t.name for t in equity_plot(runs).data if t.mode == "lines"]
    assert lines == ["cross 2x = cross 5x = cross 10x", "isolated 10x"]
    lines = [t.name for t in margin_plot(runs).data if t.mode == "lines"]
    assert lines[0] == "cross 2x = cross 5x = cross 10x"
    assert lines[1].startswith("cross 2x = cross 5x = cross 10x (closest")


def test_an_isolated_run_has_no_empty_cross_margin_panel(tmp_path):
    r = run(CRASH, units(4, [1, -100]), margin_mode="isolated", leverage=10, **flat())
    fig = margin_figure({"isolated": r})
    (ax,) = fig.axes  # the distance to liquidation alone
    assert ax.get_ylabel() == "distance to liquidation (%)"
    assert "cross" not in ax.get_title()
    page = parse(run_report(r, tmp_path / "run.html"))
    assert "maintenance / margin balance" not in page.text  # the ratio panel's title
    assert "no cross positions" not in page.text
    assert [a.text for a in margin_plot({"isolated": r}).layout.annotations] == []
    # a comparison with a cross run keeps the panel, for the cross run only
    c = run(CRASH, units(4, [1, -100]), margin_mode="cross", leverage=10, **flat())
    top, bottom = margin_figure({"cross": c, "isolated": r}).axes
    assert legend_texts(top) == ["cross"] and top.get_ylabel() == "cross margin ratio (%)"


def test_twelve_runs_differ_in_colour_or_line_style():
    runs = {f"run {k}": run(REVERT, units(5, [0.05 * (k + 1), 0]), margin_mode="isolated",
                            leverage=2, **flat()) for k in range(12)}
    for fig in (equity_figure(runs), drawdown_figure(runs)):
        lines = fig.axes[0].get_lines()
        assert len(lines) == 12
        styles = {(line.get_color(), line.get_linestyle()) for line in lines}
        assert len(styles) == 12
    for fig in (equity_plot(runs), drawdown_plot(runs)):
        lines = [t.line for t in fig.data if t.mode == "lines"]
        assert len(lines) == 12 and len({(line.color, line.dash) for line in lines}) == 12


def test_heatmap_colour_bar_is_in_percent_for_a_percentage_metric():
    fig = heatmap_figure(sweep_frame(), "leverage", "exposure", "total_return")
    fig.draw_without_rendering()
    bar = fig.axes[-1]
    assert bar.get_ylabel() == "total_return (%)"
    # returns from -50% to +20%, ticked on both sides of zero, as the cells show them
    labels = bar.get_yticklabels()
    assert [t.get_text() for t in labels] == [
        "\N{MINUS SIGN}45%", "\N{MINUS SIGN}30%", "\N{MINUS SIGN}15%", "0%", "15%"]
    assert [t.get_position()[1] for t in labels] == pytest.approx([-0.45, -0.3, -0.15, 0, 0.15])
    # a count keeps its plain numbers
    fig = heatmap_figure(sweep_frame(), "leverage", "exposure", "liquidations")
    fig.draw_without_rendering()
    assert fig.axes[-1].get_ylabel() == "liquidations"
    assert [t.get_text() for t in fig.axes[-1].get_yticklabels()] == [
        "0", "2", "4", "6", "8"]  # (0 to 9 liquidations)
    # the interactive heatmap: one colour bar, in % for a return, its zero the middle colour
    plot = heatmap_plot(sweep_frame(), "leverage", "exposure", "total_return")
    bars = [t.colorbar for t in plot.data if t.showscale]
    assert len(bars) == 1 and bars[0].title.text == "total_return (%)"
    assert bars[0].tickformat == ".0%"
    assert [[list(row) for row in t.text] for t in plot.data] == [
        [["10.0%", "20.0%"], ["5.0%", "-30.0%"]], [["4.0%", "-50.0%"], ["8.0%", "1.0%"]]]
    scale = plot.data[0].colorscale
    assert scale[5][0] == pytest.approx(0.5 / 0.7)  # -50% to +20%: zero at 5/7
    plot = heatmap_plot(sweep_frame(), "leverage", "exposure", "liquidations")
    assert plot.data[0].colorbar.title.text == "liquidations"
    assert plot.data[0].colorbar.tickformat is None


# --- the sweep summary ------------------------------------------------------------------


def sweep_frame() -> pd.DataFrame:
    rows = []
    for mode, returns, liqs in (("cross", [0.10, 0.20, 0.05, -0.30], [0, 0, 0, 1]),
                                ("isolated", [0.04, -0.50, 0.08, 0.01], [2, 9, 1, 4])):
        for (lev, exposure), ret, n in zip([(5, 1), (10, 1), (5, 2), (10, 2)], returns, liqs,
                                           strict=True):
            rows.append(dict(leverage=lev, exposure=exposure, margin_mode=mode,
                             total_return=ret, sharpe=ret * 3, max_drawdown=-abs(ret),
                             liquidations=n))
    return pd.DataFrame(rows)


def test_sweep_heatmap_places_each_run_in_its_cell():
    fig = heatmap_figure(sweep_frame(), "leverage", "exposure", "total_return")
    cross, isolated = fig.axes[0].images[0], fig.axes[1].images[0]
    # rows: exposure 1, 2; columns: leverage 5, 10
    assert np.asarray(cross.get_array()).tolist() == [[0.10, 0.20], [0.05, -0.30]]
    assert np.asarray(isolated.get_array()).tolist() == [[0.04, -0.50], [0.08, 0.01]]


def test_sweep_heatmap_averages_runs_that_share_a_cell():
    frame = sweep_frame()
    extra = frame.iloc[[0]].assign(total_return=0.30)  # a second cross run at (5, 1)
    fig = heatmap_figure(pd.concat([frame, extra]), "leverage", "exposure", "total_return")
    assert np.asarray(fig.axes[0].images[0].get_array())[0, 0] == pytest.approx(0.20)


def test_sweep_report_names_the_best_cell_of_each_mode(tmp_path):
    page = parse(sweep_report(sweep_frame().assign(venue="flat"), "leverage", "exposure",
                              "total_return", tmp_path / "sweep.html"))
    assert_interactive_figures(page, 2)  # total_return and liquidations heatmaps
    assert ("Highest total_return under cross: 20.00% at leverage=10, exposure=1; highest "
            "total_return under isolated: 8.00% at leverage=5, exposure=2.") in page.paragraphs
    assert ("Lowest liquidations under cross: 0 at leverage=5, exposure=1; lowest liquidations "
            "under isolated: 1 at leverage=5, exposure=2.") in page.paragraphs
    runs = page.tables[-1]
    assert len(runs) == 1 + 8 and runs[1][runs[0].index("total_return")] == "20.00%"
    # a column with one value in every run is stated once, not repeated in the table
    assert "venue" not in runs[0]
    assert "8 runs, best total_return first; the same in every run: venue=flat" in page.text
    md = sweep_report(sweep_frame(), "leverage", "exposure", "total_return",
                      tmp_path / "sweep.md").read_text()
    assert "![heatmap_total_return](sweep_files/heatmap_total_return.png)" in md


def test_cli_sweep_writes_its_report_beside_the_runs(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", "--start", "2024-01-01", "--end", "2024-01-15", "-p",
                 "leverage=5,10", "-p", "exposure=1,2", "-p", "margin_mode=cross,isolated",
                 "--no-progress", "--out", str(out)]) == 0
    assert f"report: {out / '_report.html'}" in capsys.readouterr().out
    rows = pd.read_parquet(out)  # the report's files are not read as parquet parts
    assert len(rows) == 8
    page = parse(out / "_report.html")
    # heatmaps of the return, Sharpe, drawdown and liquidations, per margin mode
    # its script named with "_" too, so that the parquet readers pass over it
    assert_interactive_figures(page, 4, script="_plotly.min.js")
    assert (out / "_plotly.min.js").is_file() and not (out / "plotly.min.js").exists()
    assert page.headings == ["total_return", "sharpe", "max_drawdown", "liquidations", "Runs"]
    assert any(p.startswith("Highest total_return under cross: ") and "under isolated" in p
               for p in page.paragraphs)
    runs = page.tables[-1]
    header = runs[0]
    assert {"leverage", "exposure", "margin_mode", "total_return", "sharpe"} <= set(header)
    assert "error" not in header
    assert sorted(r[header.index("run_id")] for r in runs[1:]) == sorted(rows["run_id"])
    best = rows.loc[rows["total_return"].idxmax()]
    assert runs[1][header.index("total_return")] == f"{best['total_return']:.2%}"
    md = (out / "_report.md").read_text()
    assert "![heatmap_total_return](_report_files/heatmap_total_return.png)" in md
    assert (out / "_report_files" / "heatmap_total_return.png").read_bytes()[:4] == b"\x89PNG"
    assert "| run_id |" in md

    # one parameter swept: its values by margin mode
    one = tmp_path / "one"
    assert main(["sweep", "--start", "2024-01-01", "--end", "2024-01-15", "-p",
                 "leverage=5,10", "--no-progress", "--no-report", "--out", str(one)]) == 0
    assert not (one / "_report.html").exists()
    assert main(["sweep", "--start", "2024-01-01", "--end", "2024-01-15", "-p",
                 "leverage=5,10", "--no-progress", "--out", str(one)]) == 0
    page = parse(one / "_report.html")
    assert_interactive_figures(page, 4, script="_plotly.min.js")
    assert page.paragraphs[0] == "2 runs over leverage (5.0, 10.0) and margin_mode (cross)."


def test_sweep_report_names_a_missing_column(tmp_path):
    with pytest.raises(ValueError, match="no column 'sharp'.*total_return"):
        sweep_report(sweep_frame(), "leverage", "exposure", "sharp", tmp_path / "x.html")


# --- saved runs and the command line ---------------------------------------------------------


def test_a_saved_run_loads_back_with_the_same_frames_and_metrics(tmp_path):
    r = run(CRASH, units(4, [1, -100]), margin_mode="isolated", leverage=10, **flat())
    r.save(tmp_path / "iso")
    loaded = Result.load(tmp_path / "iso")
    for name in ("account", "fills", "liquidations", "funding", "rejections", "positions",
                 "liquidation_prices"):
        pd.testing.assert_frame_equal(getattr(loaded, name), getattr(r, name))
    assert loaded.summary() == pytest.approx(r.summary(), nan_ok=True)
    # the saved closes bring the mark-based figures back without the data...
    assert loaded.metrics()["min_distance_to_liquidation"] == \
        r.metrics()["min_distance_to_liquidation"]
    # ...and without prices.parquet they are unknown
    (tmp_path / "iso" / "prices.parquet").unlink()
    assert np.isnan(Result.load(tmp_path / "iso").metrics()["min_distance_to_liquidation"])
    again = Result.load(tmp_path / "iso", market=CRASH)
    assert again.metrics()["min_distance_to_liquidation"] == \
        r.metrics()["min_distance_to_liquidation"]
    with pytest.raises(ValueError, match="holds A, B but the market given holds BTC, ETH"):
        Result.load(tmp_path / "iso", market=REVERT)


def test_cli_compare_writes_both_reports(tmp_path, capsys):
    code = main(["compare", "--start", "2024-01-01", "--end", "2024-02-01", "--leverage",
                 "10,20", "--exposure", "2", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "cross 10x" in out and "isolated 20x" in out and "Of 4 runs" in out
    page = parse(tmp_path / "report.html")
    assert_interactive_figures(page, 4)
    assert (tmp_path / "report.md").read_text().startswith("# Hedged pair long BTC_USDT")


def test_cli_compare_of_twelve_runs_prints_no_line_over_100_columns(tmp_path, capsys):
    assert main(["compare", "--leverage", "1,2,3,5,10,20", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert max(len(line) for line in lines if str(tmp_path) not in line) <= 100  # (paths aside)
    # the table in blocks of runs, each under the metric names; every run in one of them
    heads = [line.split() for line in lines if line.lstrip().startswith("metric ")]
    assert len(heads) >= 2
    labels = [f"{mode} {lev}x" for lev in (1, 2, 3, 5, 10, 20) for mode in ("cross", "isolated")]
    shown = " ".join(" ".join(head[1:]) for head in heads)
    assert shown == " ".join(labels)
    assert sum(line.lstrip().startswith("final equity ") for line in lines) == len(heads)
    # the verdict whole, wrapped: as the report gives it, run labels never split
    verdict = [line[2:] for line in (tmp_path / "report.md").read_text().splitlines()
               if line.startswith("> ")]
    assert len(verdict) == 7  # the ranking, then one paragraph per leverage
    flat_out = " ".join(out.split())
    assert all(" ".join(paragraph.split()) in flat_out for paragraph in verdict)
    assert not any(re.match(r"\d+x\b", line) for line in lines)  # ("cross\n2x held...")


def test_cli_report_renders_saved_runs(tmp_path, capsys):
    assert main(["run", "--start", "2024-03-01", "--end", "2024-04-01", "--leverage", "20",
                 "--exposure", "2", "--out", str(tmp_path), "--no-plot"]) == 0
    assert main(["report", str(tmp_path)]) == 0  # cross/ and isolated/: a comparison
    page = parse(tmp_path / "report.html")
    lost = sum(json.loads((tmp_path / mode / "run.json").read_text())["summary"][
        "liquidated_positions"] for mode in ("cross", "isolated"))
    liq = [t for t in page.tables if "liquidation price" in t[0]]
    if lost:
        assert len(liq[0]) - 1 == min(lost, 200)
    else:
        assert "No position was liquidated." in page.paragraphs
    # without --data the saved closes still give all four figures (equity, drawdown,
    # margin ratio and distance to liquidation, per-position PnL)
    assert_interactive_figures(page, 4)
    assert main(["report", str(tmp_path / "cross"), "--data", "embedded"]) == 0
    assert_interactive_figures(parse(tmp_path / "cross" / "report.html"), 4)
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "holds no saved run" in capsys.readouterr().err
    # the reports' files, plotly.min.js with them, count as the run's: --overwrite replaces
    # them with the rest
    assert (tmp_path / "plotly.min.js").is_file()
    assert (tmp_path / "cross" / "plotly.min.js").is_file()
    assert main(["run", "--start", "2024-03-01", "--end", "2024-03-08", "--out", str(tmp_path),
                 "--no-plot", "--overwrite"]) == 0
    assert not (tmp_path / "plotly.min.js").exists()


def test_cli_report_reads_the_run_bars_from_data_at_a_timeframe(tmp_path, capsys):
    from backtester.cli_report import _load_runs
    from backtester.data import embedded_data_dir

    out = tmp_path / "runs"
    assert main(["run", "--start", "2024-03-01", "--end", "2024-04-01", "--out", str(out),
                 "--no-plot"]) == 0
    data = str(embedded_data_dir())
    assert main(["report", str(out), "--data", data, "--timeframe", "1h"]) == 0
    assert_interactive_figures(parse(out / "report.html"), 4)
    # the report's runs carry the data's full bars, not only the saved closes
    runs = _load_runs(out, data, "1h")
    assert list(runs) == ["cross", "isolated"]
    for result in runs.values():
        assert result.market.n_bars == 31 * 24
        assert np.isfinite(result.market.open).all() and np.isfinite(result.market.mark_low).all()
        assert np.isfinite(result.market.funding_rate).any()
    capsys.readouterr()
    assert main(["report", str(out), "--data", data, "--timeframe", "4h"]) == 2
    assert "no '4h' bars" in capsys.readouterr().err
    assert main(["report", str(out), "--timeframe", "1h"]) == 2
    assert "give --data too" in capsys.readouterr().err


def test_cli_report_data_with_several_timeframes_reads_the_run_s(tmp_path, capsys):
    # a data directory holding 1h and 2h bars of both symbols: the run chose 1h; the
    # report finds the run's 1h bars without being told
    from backtester.data import embedded_data_dir

    data = tmp_path / "data"
    data.mkdir()
    for symbol in ("BTC_USDT", "ETH_USDT"):
        for name in (f"{symbol}-1h", f"{symbol}_mark-1h", f"{symbol}_funding"):
            (data / f"{name}.parquet").write_bytes(
                (embedded_data_dir() / f"{name}.parquet").read_bytes())
        bars = pd.read_parquet(data / f"{symbol}-1h.parquet")
        bars.iloc[::2].to_parquet(data / f"{symbol}-2h.parquet")
    out = tmp_path / "runs"
    window = ["--start", "2024-03-01", "--end", "2024-03-15"]
    assert main(["run", "--data", str(data), "--timeframe", "1h", *window, "--out", str(out),
                 "--no-plot"]) == 0
    assert main(["report", str(out), "--data", str(data)]) == 0
    assert_interactive_figures(parse(out / "report.html"), 4)
    capsys.readouterr()
    # the other timeframe is not the run's: said so
    assert main(["report", str(out / "cross"), "--data", str(data), "--timeframe", "2h"]) == 2
    assert "its bars are 2h long but the run's are 1h" in capsys.readouterr().err


def test_cli_report_reads_a_funding_carry_run_from_data(tmp_path):
    # the carry's columns are BTC_USDT and BTC_USDT_SPOT; the spot bars are in DATA/spot/
    out = tmp_path / "carry"
    assert main(["run", "--strategy", "funding_carry", "--start", "2024-03-01", "--end",
                 "2024-04-01", "--out", str(out), "--no-plot"]) == 0
    assert main(["report", str(out), "--data", "embedded"]) == 0
    assert main(["report", str(out / "cross"), "--data", "embedded", "--timeframe",
                 "1h"]) == 0
    assert_interactive_figures(parse(out / "cross" / "report.html"), 4)


def test_compare_on_the_embedded_data_says_which_mode_ended_higher():
    m = load_market(start="2024-01-01", end="2024-03-01")
    from strategies import hedged_pair

    comparison = compare(m, hedged_pair(m, exposure=2.0), target_kind="equity", leverage=20)
    cross, iso = (comparison.table.loc["final_equity", k] for k in ("cross", "isolated"))
    higher = "cross" if cross > iso else "isolated"
    gap = abs(cross - iso)
    gap_text = f"{gap:,.0f}" if gap >= 100 else f"{gap:,.2f}"
    assert f"; {higher} ended {gap_text} higher." in comparison.verdict


def test_compare_across_venues_runs_spot_margin_cross_only():
    m = load_market(start="2024-01-01", end="2024-02-01")
    from strategies import hedged_pair

    comparison = compare(m, hedged_pair(m, exposure=1.0), target_kind="equity", leverage=3,
                         venue=["bybit_linear", "kraken_spot"], stand_in={"ETH_USDT": "BTC_USDT"})
    assert list(comparison.results) == ["cross bybit_linear", "isolated bybit_linear",
                                        "cross kraken_spot"]
    kraken = comparison.results["cross kraken_spot"]
    assert kraken.summary()["borrowing_fees"] > 0 and kraken.summary()["funding_paid"] == 0
