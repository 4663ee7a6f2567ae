# An optional package missing (matplotlib for plots, pyarrow for parquet) ends in one message naming the extra.
import sys

import pytest

from scaledown.errors import ConfigError


def _without(monkeypatch, *modules):
    for name in modules:   # None in sys.modules: importing it raises ImportError, as on a machine without it
        monkeypatch.setitem(sys.modules, name, None)


def test_parquet_without_pyarrow_names_the_data_extra(tmp_path, monkeypatch):
    from scaledown.data.validation import read_rows
    path = tmp_path / "rows.parquet"
    path.write_bytes(b"PAR1")
    _without(monkeypatch, "pyarrow", "pyarrow.parquet")
    with pytest.raises(ConfigError, match=r"pyarrow.*\.\[data\]"):
        read_rows(str(path))


def test_plot_without_matplotlib_names_the_eval_extra(monkeypatch):
    from scaledown.evaluation.plots import _pyplot
    _without(monkeypatch, "matplotlib", "matplotlib.pyplot")
    with pytest.raises(ConfigError, match=r"matplotlib.*\.\[eval\]"):
        _pyplot()
