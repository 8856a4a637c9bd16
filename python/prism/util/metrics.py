"""Application metrics, as Ray's ``ray.util.metrics``: Counter, Gauge and Histogram.

Metrics are kept in-process now, exported when a metrics exporter exists. Each process (driver,
task worker, actor) holds one registry of the metrics recorded in it; ``_registry_snapshot()``
reads it, so that an exporter (Prometheus, say) can publish the values without the metric
classes changing. A metric object that travels to a task is rebuilt there by name, and what the
task records lands in that worker's registry.

    from prism.util.metrics import Counter, Histogram

    requests = Counter("requests", description="Requests served.", tag_keys=("route",))
    requests.inc(tags={"route": "/predict"})
    latency = Histogram("latency_s", boundaries=[0.01, 0.1, 1.0], tag_keys=("route",))
    latency.set_default_tags({"route": "/predict"}).observe(0.05)

Metrics of one name share their values: defining the same metric again (same kind, tag keys
and boundaries), as a task does each time it rebuilds one, adds to the same series. Defining a
metric of another kind, tag keys or boundaries under a name in use raises ValueError.

The registry is thread-safe.
"""

import bisect
import copy
import numbers
import re
import threading
import warnings

# Prometheus' rule for metric names: metrics named otherwise are not collected (as in Ray, they
# are accepted with a warning and what they record is dropped).
_VALID_METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


class _Registry:
    """The metrics recorded in this process: name -> definition and values per tag set.

    A series is named by its tags as a tuple of (key, value) pairs sorted by key. Its value is
    a float for counters (the sum of increments) and gauges (the last value set); for
    histograms a dict {"buckets": [count per bucket], "sum": float, "count": int}, where bucket
    i counts the values <= boundaries[i] (and > boundaries[i-1]) and the last bucket the values
    above every boundary (Prometheus' "le" buckets, not yet made cumulative)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._metrics = {}  # name -> entry dict; guarded by _lock

    def define(self, kind, name, description, tag_keys, boundaries=None):
        with self._lock:
            entry = self._metrics.get(name)
            if entry is None:
                self._metrics[name] = {
                    "kind": kind, "description": description, "tag_keys": tag_keys,
                    "boundaries": list(boundaries) if boundaries is not None else None, "series": {},
                }
                return
            if entry["kind"] != kind or entry["tag_keys"] != tag_keys:
                raise ValueError(f"metric '{name}' is already defined as a {entry['kind']} with tag keys "
                                 f"{entry['tag_keys']}; it cannot also be a {kind} with tag keys {tag_keys}")
            if boundaries is not None and entry["boundaries"] != list(boundaries):
                raise ValueError(f"histogram '{name}' is already defined with boundaries {entry['boundaries']}, "
                                 f"not {list(boundaries)}")

    def add(self, name, series, value):
        with self._lock:
            values = self._metrics[name]["series"]
            values[series] = values.get(series, 0.0) + value

    def set(self, name, series, value):
        with self._lock:
            self._metrics[name]["series"][series] = float(value)

    def observe(self, name, series, value):
        with self._lock:
            entry = self._metrics[name]
            histogram = entry["series"].get(series)
            if histogram is None:
                histogram = {"buckets": [0] * (len(entry["boundaries"]) + 1), "sum": 0.0, "count": 0}
                entry["series"][series] = histogram
            histogram["buckets"][bisect.bisect_left(entry["boundaries"], value)] += 1
            histogram["sum"] += value
            histogram["count"] += 1

    def snapshot(self):
        with self._lock:
            return copy.deepcopy(self._metrics)


_registry = _Registry()


def _registry_snapshot():
    """A copy of this process's metrics, for an exporter: {name: {"kind": "counter" | "gauge" |
    "histogram", "description": str, "tag_keys": tuple of str, "boundaries": list of float
    (histograms; None otherwise), "series": {tags: value}}}, where tags is a tuple of (key,
    value) pairs sorted by key and value is as ``_Registry`` describes. Series appear once
    something was recorded with those tags."""
    return _registry.snapshot()


def _check_value(value):
    # Any real number (numpy's too); a bool is more likely a mistake than a count.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"value must be int or float, got {type(value)}.")


class Metric:
    """What Counter, Gauge and Histogram share: a name, a description, the tag keys every
    recorded value is labelled with, and default values for those tags."""

    _kind = None

    def __init__(self, name, description="", tag_keys=None):
        if not isinstance(name, str):
            raise TypeError(f"Metric name must be a str, got {type(name)}.")
        if len(name) == 0:
            raise ValueError("Empty name is not allowed. Please provide a metric name.")
        if not isinstance(description, str):
            raise TypeError(f"description must be a str, got {type(description)}.")
        tag_keys = tag_keys or tuple()
        if not isinstance(tag_keys, tuple):
            raise TypeError(f"tag_keys should be a tuple type, got: {type(tag_keys)}")
        for key in tag_keys:
            if not isinstance(key, str):
                raise TypeError(f"Tag keys must be str, got {type(key)}.")
        if len(set(tag_keys)) != len(tag_keys):
            raise ValueError(f"tag_keys must not repeat a key, got {tag_keys}")
        self._name = name
        self._description = description
        self._tag_keys = tag_keys
        self._default_tags = {}
        self._discard_metric = not _VALID_METRIC_NAME_RE.match(name)
        if self._discard_metric:
            warnings.warn(f"Invalid metric name: {name}. Metric will be discarded and data will not be collected "
                          "or published. Metric names can only contain letters, numbers, _, and :. Metric names "
                          "cannot start with numbers.", UserWarning, stacklevel=3)

    def _define(self, boundaries=None):
        if not self._discard_metric:
            _registry.define(self._kind, self._name, self._description, self._tag_keys, boundaries)

    def set_default_tags(self, default_tags):
        """Sets the tag values used when a record call does not give them; returns the metric
        itself, so that ``Counter("n", tag_keys=("a",)).set_default_tags({"a": "b"})`` works."""
        if not isinstance(default_tags, dict):
            raise TypeError(f"default_tags must be a dict, got {type(default_tags)}.")
        for key, val in default_tags.items():
            if key not in self._tag_keys:
                raise ValueError(f"Unrecognized tag key {key}.")
            if not isinstance(val, str):
                raise TypeError(f"Tag values must be str, got {type(val)}.")
        self._default_tags = dict(default_tags)
        return self

    def _series(self, tags):
        """The series a record call with these tags goes to; the call's tags take precedence
        over the defaults, and together they must give exactly the declared tag keys."""
        if tags is not None and not isinstance(tags, dict):
            raise TypeError(f"tags must be a dict, got {type(tags)}.")
        final = dict(self._default_tags)
        for key, val in (tags or {}).items():
            if not isinstance(val, str):
                raise TypeError(f"Tag values must be str, got {type(val)}.")
            final[key] = val
        unknown = [k for k in final if k not in self._tag_keys]
        if unknown:
            raise ValueError(f"Unrecognized tag key(s): {','.join(map(str, unknown))}. "
                             f"The metric {self._name} has tag keys {self._tag_keys}.")
        missing = [k for k in self._tag_keys if k not in final]
        if missing:
            raise ValueError(f"Missing value for tag key(s): {','.join(missing)}.")
        return tuple(sorted(final.items()))

    @property
    def info(self):
        """The metric's definition: name, description, tag keys and default tags."""
        return {"name": self._name, "description": self._description, "tag_keys": self._tag_keys,
                "default_tags": self._default_tags}

    def __reduce__(self):
        # Rebuilt where it lands (a task, an actor), in that process's registry.
        return _rebuild, (type(self), self._constructor_args(), self._default_tags)

    def _constructor_args(self):
        return (self._name, self._description, self._tag_keys)


def _rebuild(cls, args, default_tags):
    return cls(*args).set_default_tags(default_tags)


class Counter(Metric):
    """A count that only goes up (Prometheus' counter): ``inc(value)`` adds to it."""

    _kind = "counter"

    def __init__(self, name, description="", tag_keys=None):
        super().__init__(name, description, tag_keys)
        self._define()

    def inc(self, value=1.0, tags=None):
        """Adds ``value`` (> 0, default 1) to the count of the series these tags (and the
        default tags) name."""
        _check_value(value)
        if value <= 0:
            raise ValueError(f"value must be >0, got {value}")
        series = self._series(tags)
        if not self._discard_metric:
            _registry.add(self._name, series, float(value))


class Gauge(Metric):
    """A value that goes up and down (Prometheus' gauge): ``set(value)`` replaces it."""

    _kind = "gauge"

    def __init__(self, name, description="", tag_keys=None):
        super().__init__(name, description, tag_keys)
        self._define()

    def set(self, value, tags=None):
        """Sets the series these tags (and the default tags) name to ``value``; None does
        nothing."""
        if value is None:
            return
        _check_value(value)
        series = self._series(tags)
        if not self._discard_metric:
            _registry.set(self._name, series, value)


class Histogram(Metric):
    """The distribution of observed values over buckets (Prometheus' histogram).

    ``boundaries``: the buckets' upper bounds, positive and increasing; values above the last
    one fall in a final, unbounded bucket."""

    _kind = "histogram"

    def __init__(self, name, description="", boundaries=None, tag_keys=None):
        super().__init__(name, description, tag_keys)
        if boundaries is None or len(boundaries) == 0:
            raise ValueError("boundaries argument should be provided when using the Histogram class. e.g., "
                             'Histogram("name", boundaries=[1.0, 2.0])')
        for i, boundary in enumerate(boundaries):
            if isinstance(boundary, bool) or not isinstance(boundary, numbers.Real):
                raise TypeError(f"Invalid `boundaries` argument at index {i}, {boundaries}. "
                                f"Boundaries must be numbers, got {type(boundary)}.")
            if boundary <= 0:
                raise ValueError(f"Invalid `boundaries` argument at index {i}, {boundaries}. "
                                 "Use positive values for the arguments.")
            if i > 0 and boundary <= boundaries[i - 1]:
                raise ValueError(f"Invalid `boundaries` argument at index {i}, {boundaries}. "
                                 "Boundaries must be strictly increasing.")
        self.boundaries = [float(b) for b in boundaries]
        self._define(self.boundaries)

    def observe(self, value, tags=None):
        """Counts ``value`` in its bucket of the series these tags (and the default tags)
        name."""
        _check_value(value)
        series = self._series(tags)
        if not self._discard_metric:
            _registry.observe(self._name, series, float(value))

    def _constructor_args(self):
        return (self._name, self._description, self.boundaries, self._tag_keys)

    @property
    def info(self):
        """The metric's definition, with its boundaries."""
        info = super().info
        info["boundaries"] = self.boundaries
        return info


__all__ = ["Counter", "Gauge", "Histogram"]
