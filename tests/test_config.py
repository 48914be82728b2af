"""Settings: every bad input is a ConfigError naming where it is, never a traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from homewarden.config import load_settings, read_toml
from homewarden.errors import ConfigError


@pytest.fixture(autouse=True)
def no_homewarden_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees only the HOMEWARDEN_* variables it sets."""
    for key in list(os.environ):
        if key.upper().startswith("HOMEWARDEN_"):
            monkeypatch.delenv(key)


def camera(**extra: Any) -> dict[str, Any]:
    return {"url": "file:/footage.mp4", **extra}


def load(data: dict[str, Any], tmp_path: Path) -> None:
    """Write ``data`` as a TOML file and load it (tomllib has no writer: a tiny one here)."""
    lines: list[str] = []

    def value(v: Any) -> str:
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float):
            return {"inf": "inf", "-inf": "-inf", "nan": "nan"}.get(repr(v), repr(v))
        return json.dumps(v)

    for key, v in data.items():
        lines.append(f"{key} = {value(v)}")
    cfg = tmp_path / "hw.toml"
    cfg.write_text("\n".join(lines) + "\n")
    load_settings(cfg)


# -- the file and the environment -------------------------------------------------------------


def test_config_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    # Regression: printf '\xff\xfe[api]\n' > b.toml gave a UnicodeDecodeError traceback.
    cfg = tmp_path / "b.toml"
    cfg.write_bytes(b"\xff\xfe[api]\n")
    with pytest.raises(ConfigError, match=r"b\.toml is not UTF-8") as err:
        read_toml(cfg)
    assert "0xff" in str(err.value)
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(cfg)


@pytest.mark.parametrize(
    "variable",
    ["HOMEWARDEN_CAMERAS", "HOMEWARDEN_API", "HOMEWARDEN_CAMERAS__FRONT__ZONES"],
)
def test_malformed_env_value_is_a_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    # Regression: HOMEWARDEN_CAMERAS=notjson raised pydantic_settings' SettingsError.
    monkeypatch.setenv(variable, "notjson")
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert variable in message
    assert "JSON" in message


def test_malformed_env_value_names_only_the_bad_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOMEWARDEN_CAMERAS__FRONT__URL", "file:/x.mp4")
    monkeypatch.setenv("HOMEWARDEN_CAMERAS__FRONT__ZONES", "{not json")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "HOMEWARDEN_CAMERAS__FRONT__ZONES" in str(err.value)
    assert "HOMEWARDEN_CAMERAS__FRONT__URL" not in str(err.value)


def test_well_formed_env_values_still_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOMEWARDEN_CAMERAS", '{"front": {"url": "file:/x.mp4"}}')
    monkeypatch.setenv("HOMEWARDEN_API__PORT", "9999")
    s = load_settings()
    assert s.cameras["front"].url == "file:/x.mp4"
    assert s.api.port == 9999


# -- zones, masks, numbers ---------------------------------------------------------------------

SQUARE = [[0.0, 0.0], [0.5, 0.0], [0.5, 0.5], [0.0, 0.5]]


@pytest.mark.parametrize("name", ["", "../x", "a,b", "a b", "a/b", "x.y"])
def test_zone_names_follow_the_camera_name_rule(tmp_path: Path, name: str) -> None:
    # Regression: "", "../x" and "a,b" were accepted as zone names.
    with pytest.raises(ConfigError, match=r"cameras\.front\.zones: zone name .* may hold only"):
        load({"cameras": {"front": camera(zones={name: SQUARE})}}, tmp_path)


def test_good_zone_names_load(tmp_path: Path) -> None:
    load({"cameras": {"front": camera(zones={"porch": SQUARE, "Drive-way_2": SQUARE})}}, tmp_path)


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("retention", "continuous_days"),
        ("retention", "event_days"),
        ("motion", "detect_fps"),
        ("motion", "post_capture"),
    ],
)
@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_floats_must_be_finite(tmp_path: Path, section: str, key: str, bad: float) -> None:
    # Regression: retention days of inf (keep forever by accident) or nan were accepted.
    with pytest.raises(ConfigError, match=rf"cameras\.front\.{section}\.{key}: .*finite"):
        load({"cameras": {"front": camera(**{section: {key: bad}})}}, tmp_path)


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_storage_interval_must_be_finite(tmp_path: Path, bad: float) -> None:
    with pytest.raises(ConfigError, match=r"storage\.retention_interval: .*finite"):
        load({"storage": {"retention_interval": bad}}, tmp_path)


def test_polygon_errors_name_their_zone(tmp_path: Path) -> None:
    zones = {"porch": SQUARE, "gate": [[0.0, 0.0], [1.0, 1.0]]}
    with pytest.raises(ConfigError) as err:
        load({"cameras": {"front": camera(zones=zones)}}, tmp_path)
    assert "cameras.front.zones.gate: a polygon needs at least 3 points" in str(err.value)
    assert "porch" not in str(err.value)


def test_polygon_errors_name_their_mask(tmp_path: Path) -> None:
    masks = [SQUARE, [[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]]]
    with pytest.raises(ConfigError) as err:
        load({"cameras": {"front": camera(motion={"masks": masks})}}, tmp_path)
    assert (
        "cameras.front.motion.masks.1: polygon point (2.0, 0.0) is outside normalised 0..1"
        in str(err.value)
    )


@pytest.mark.parametrize(
    "polygon",
    [
        [[0.1, 0.1], [0.5, 0.5], [0.9, 0.9]],  # on one line
        [[0.2, 0.3], [0.2, 0.3], [0.2, 0.3], [0.2, 0.3]],  # one point four times
        [[0.0, 0.5], [0.5, 0.5], [1.0, 0.5], [0.25, 0.5]],  # back and forth on a line
    ],
)
def test_zero_area_polygon_is_refused(tmp_path: Path, polygon: list[list[float]]) -> None:
    with pytest.raises(ConfigError, match=r"cameras\.front\.zones\.flat: .*zero area"):
        load({"cameras": {"front": camera(zones={"flat": polygon})}}, tmp_path)
    with pytest.raises(ConfigError, match=r"cameras\.front\.motion\.masks\.0: .*zero area"):
        load({"cameras": {"front": camera(motion={"masks": [polygon]})}}, tmp_path)


def test_a_thin_but_real_polygon_is_kept(tmp_path: Path) -> None:
    load({"cameras": {"front": camera(zones={"strip": [[0, 0], [1, 0], [1, 0.01]]})}}, tmp_path)
