"""``backtester data download``: archives made here, served from 127.0.0.1 (no network)."""

from __future__ import annotations

import hashlib
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest

from backtester.cli import main
from backtester.data import load_market

H = 3_600_000_000_000


def kline_csv(start: str, opens: list[float]) -> str:
    """Archive klines (ms, header row): high = open+2, low = open-1, close = open+0.5."""
    t0 = pd.Timestamp(start, tz="UTC").value // 1_000_000
    rows = ["open_time,open,high,low,close,volume,close_time,quote_volume,count,"
            "taker_buy_volume,taker_buy_quote_volume,ignore"]
    for i, o in enumerate(opens):
        t = t0 + i * 3_600_000
        rows.append(f"{t},{o},{o + 2},{o - 1},{o + 0.5},3,{t + 3_599_999},0,1,0,0,0")
    return "\n".join(rows) + "\n"


def publish(root, rel: str, text: str) -> None:
    """A zip holding one CSV, and its .CHECKSUM, as the archive publishes them."""
    path = root / "data" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(path.name.replace(".zip", ".csv"), text)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_name(path.name + ".CHECKSUM").write_text(f"{digest}  {path.name}\n")


@pytest.fixture
def archive(tmp_path):
    """January monthly files, and only 2024-02-01 of February (daily files)."""
    root = tmp_path / "srv"
    um = "futures/um"
    publish(root, f"{um}/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2024-01.zip",
            kline_csv("2024-01-31 15:00", [100, 101, 102]))
    publish(root, f"{um}/monthly/markPriceKlines/BTCUSDT/1h/BTCUSDT-1h-2024-01.zip",
            kline_csv("2024-01-31 15:00", [200, 201, 202]))
    publish(root, f"{um}/monthly/fundingRate/BTCUSDT/BTCUSDT-fundingRate-2024-01.zip",
            "calc_time,funding_interval_hours,last_funding_rate\n"
            "1706716800002,8,0.00030000\n")  # 2024-01-31 16:00:00.002
    publish(root, f"{um}/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2024-02-01.zip",
            kline_csv("2024-02-01", [103, 104]))
    publish(root, f"{um}/daily/markPriceKlines/BTCUSDT/1h/BTCUSDT-1h-2024-02-01.zip",
            kline_csv("2024-02-01", [203, 204]))
    publish(root, f"{um}/monthly/klines/ETHUSDT/1h/ETHUSDT-1h-2024-01.zip",
            kline_csv("2024-01-31 16:00", [10, 11]))
    return root


@pytest.fixture
def server(archive):
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args):  # quiet; remember the paths asked for
            requests.append(self.path)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(archive)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", requests, archive
    httpd.shutdown()
    httpd.server_close()


def download(url, out, *extra):
    return main(["data", "download", "--venue", "binance", "--symbols", "BTCUSDT,ETHUSDT",
                 "--start", "2024-01-01", "--end", "2024-02-03", "--out", str(out),
                 "--base-url", url, *extra])


def test_download_writes_the_parquet_layout_and_resumes(server, tmp_path, capsys):
    url, requests, _ = server
    out = tmp_path / "data"
    assert download(url, out) == 0
    err = capsys.readouterr().err
    assert "BTCUSDT-1h-2024-01.zip: " in err and "sha256 verified" in err
    assert "note: BTC_USDT: fundingRate 2024-02: not in the archive" in err
    assert "note: BTC_USDT: klines 2024-02: 1 of 2 day(s) not in the archive" in err
    zips = [r for r in requests if r.endswith(".zip")]
    assert len(zips) == 6  # BTC: 2 klines, 2 mark, 1 funding; ETH: 1 klines
    assert sorted(p.name for p in out.glob("*.parquet")) == [
        "BTC_USDT-1h.parquet", "BTC_USDT_funding.parquet", "BTC_USDT_mark-1h.parquet",
        "ETH_USDT-1h.parquet"]

    m = load_market(out)
    t = pd.Timestamp("2024-01-31 15:00", tz="UTC").value
    np.testing.assert_array_equal(m.index, [t, t + H, t + 2 * H, t + 9 * H, t + 10 * H])
    np.testing.assert_array_equal(m.open[:, 0], [100, 101, 102, 103, 104])
    np.testing.assert_array_equal(m.low[:, 0], [99, 100, 101, 102, 103])
    np.testing.assert_array_equal(m.mark_close[:, 0], [200.5, 201.5, 202.5, 203.5, 204.5])
    np.testing.assert_array_equal(m.funding_rate[:, 0], [np.nan, 0.0003, np.nan, np.nan,
                                                         np.nan])
    np.testing.assert_array_equal(m.open[:, 1], [np.nan, 10, 11, np.nan, np.nan])
    assert m.has_mark == (True, False)

    requests.clear()
    assert download(url, out) == 2  # the files exist: refused before any download
    assert "already holds BTC_USDT-1h.parquet" in capsys.readouterr().err
    assert requests == []
    assert download(url, out, "--overwrite") == 0
    assert "already downloaded and verified" in capsys.readouterr().err
    assert not [r for r in requests if r.endswith(".zip")]  # verified files are not fetched
    np.testing.assert_array_equal(load_market(out).open[:, 0], [100, 101, 102, 103, 104])


def test_a_corrupt_file_is_refused_by_name(server, tmp_path, capsys):
    url, _, archive = server
    bad = archive / "data/futures/um/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2024-02-01.zip"
    bad.write_bytes(bad.read_bytes()[:-5] + b"XXXXX")  # its .CHECKSUM no longer matches
    out = tmp_path / "data"
    assert download(url, out) == 2
    err = capsys.readouterr().err
    assert "BTCUSDT-1h-2024-02-01.zip: checksum mismatch" in err
    assert not list(out.glob("*.parquet"))
    assert not (out / ".binance-archive/futures/um/daily/klines/BTCUSDT/1h/"
                      "BTCUSDT-1h-2024-02-01.zip").exists()


def test_unknown_symbol_and_bad_dates_speak_cli(server, tmp_path, capsys):
    url, _, _ = server
    out = tmp_path / "data"
    rc = main(["data", "download", "--venue", "binance", "--symbols", "XYZUSDT", "--start",
               "2024-01-01", "--end", "2024-01-02", "--out", str(out), "--base-url", url])
    assert rc == 2
    assert "--symbols XYZUSDT: the archive at" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "download", "--venue", "binance", "--symbols", "BTCUSDT", "--start",
              "01/01/2024", "--end", "2024-02-01", "--out", str(out)])
    assert "YYYY-MM-DD" in capsys.readouterr().err
