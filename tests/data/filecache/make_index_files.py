"""Write one old-format cache file per pandas structure yfinance returns, with the running pandas.

The companion of make_cache_files.py for what its real-data files lack: every index kind
(RangeIndex, naive and tz-aware DatetimeIndex, Index of int/float/uint/str/object,
MultiIndex, CategoricalIndex, PeriodIndex, TimedeltaIndex), frames with MultiIndex columns
and mixed column dtypes, Series, Timestamps (pytz zones when pytz is installed, as pandas
before 3 used them), NaT, NA, Period, numpy scalars. Values are small and made up.

usage: python make_index_files.py OUT_DIR      (objects() also builds them, for comparison)
"""

import datetime
import decimal
import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def zones():
    try:
        import pytz
    except ImportError:
        return "America/New_York", "UTC"
    return pytz.timezone("America/New_York"), pytz.utc


def objects():
    ny, utc = zones()
    columns = pd.MultiIndex.from_product(
        [["Close", "Open"], ["AAPL", "MSFT"]], names=["Price", "Ticker"]
    )
    return {
        "range": pd.RangeIndex(0, 5, name="r"),
        "dti_naive": pd.date_range("2024-01-01", periods=3, name="Date"),
        "dti_ny": pd.date_range("2024-01-01 09:30", periods=3, tz=ny),
        "dti_utc": pd.date_range("2024-01-01", periods=3, tz=utc),
        "idx_obj": pd.Index(["a", "b", None], dtype=object),
        "idx_int": pd.Index([1, 2, 3]),
        "idx_float": pd.Index([1.5, 2.5]),
        "idx_uint": pd.Index(np.array([1, 2], dtype="uint64")),
        "multi": columns,
        "frame_multi": pd.DataFrame(
            np.arange(8.0).reshape(2, 4),
            index=pd.date_range("2024-01-01", periods=2),
            columns=columns,
        ),
        "frame_mixed": pd.DataFrame(
            {
                "a": [1, 2],
                "b": ["x", "y"],
                "c": [True, False],
                "d": [1.5, None],
                "e": pd.array([1, None], dtype="Int64"),
                "f": pd.Categorical(["u", "v"]),
                "g": pd.to_timedelta([1, 2], unit="D"),
                "h": pd.to_datetime(["2024-01-01", None]),
                "i": pd.array(["s", None], dtype="string"),
                "j": pd.date_range("2024-01-01", periods=2, tz=ny),
            }
        ),
        "series_tz": pd.Series(
            [1.0, 2.0], index=pd.date_range("2024-01-01", periods=2, tz=utc), name="Close"
        ),
        "ts_ny": pd.Timestamp("2024-01-02 09:30", tz=ny),
        "ts_utc": pd.Timestamp("2024-01-01", tz=utc),
        "td": pd.Timedelta("1D"),
        "nat": pd.NaT,
        "period": pd.Period("2024Q1"),
        "pidx": pd.period_range("2024-01", periods=3, freq="M"),
        "tdi": pd.timedelta_range("1D", periods=2),
        "cidx": pd.CategoricalIndex(["a", "b"]),
        "np_scalars": [np.float64(1.5), np.int64(3), np.bool_(True), np.float32(2.5)],
        "python": [
            decimal.Decimal("1.5"),
            datetime.datetime(2024, 1, 1),
            {"x": (1, 2)},
            {1, 2},
            b"ab",
        ],
    }


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, value in objects().items():
        payload = {"data": value, "timestamp": 1.7e9, "expiration": 100 * 365 * 86400}
        (out / f"{name}.cache").write_bytes(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
    (out / "VERSIONS.txt").write_text(
        f"python {sys.version.split()[0]}, pandas {pd.__version__}, numpy {np.__version__}\n"
    )
    print(f"{len(objects())} files in {out}: pandas {pd.__version__}, numpy {np.__version__}")
