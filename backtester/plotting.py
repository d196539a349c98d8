"""Minimal figures for the command line: equity curves with liquidation markers."""

from __future__ import annotations

from pathlib import Path


def plot_equity(results: dict, path, title: str = "Equity") -> Path:
    """Overlay the equity curves of several runs, marking each liquidation; save a PNG.

    ``results`` maps a label (e.g. ``"cross"``) to a ``Result``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=110)
    for label, result in results.items():
        equity = result.equity
        (line,) = ax.plot(equity.index, equity.to_numpy(), lw=1.2, label=label)
        liq = result.liquidations
        if len(liq):
            at = equity.reindex(liq["timestamp"]).to_numpy()
            ax.scatter(liq["timestamp"], at, marker="v", s=36, color=line.get_color(),
                       edgecolor="black", linewidth=0.5, zorder=3,
                       label=f"{label}: {len(liq)} liquidated position(s)")
    ax.set_title(title)
    ax.set_ylabel("equity (quote)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
