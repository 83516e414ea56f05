"""The dashboard: built from the committed results alone, self-contained, and every panel renders
with data in headless Chromium with no console errors (a screenshot is saved)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import require

REPO = Path(__file__).resolve().parents[1]
PANELS = ("fronts", "latency", "accuracy", "search", "noise", "carbon", "training", "uniform", "search_reference", "firmware")


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    require(found is not None, "Chromium", "apt-get install -y chromium")
    return found


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory, run_cli) -> Path:
    out = tmp_path_factory.mktemp("dashboard")
    done = run_cli("report", "--from-results", "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


def test_the_dashboard_is_self_contained_with_a_png_per_panel(dashboard):
    page = (dashboard / "index.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "nothing may load from the network"
    for key in PANELS:
        assert f'id="{key}"' in page
        png = (dashboard / f"{key}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_every_panel_renders_in_headless_chromium_without_console_errors(dashboard, tmp_path):
    browser = _chromium()
    url = (dashboard / "index.html").as_uri()
    common = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
              "--disable-extensions", "--disable-background-networking", f"--user-data-dir={tmp_path / 'profile'}",
              "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000"]
    done = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert f'data-panels="{len(PANELS)}"' in dom and f'data-rendered="{len(PANELS)}"' in dom, dom[-3000:]
    assert dom.count('data-rendered="yes"') == len(PANELS)
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    shot = tmp_path / "dashboard.png"
    done = subprocess.run([*common, f"--screenshot={shot}", "--window-size=1200,5200", url],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and shot.read_bytes()[:4] == b"\x89PNG", done.stderr[-2000:]
    print(f"screenshot: {shot}")


def test_the_results_behind_the_dashboard_name_their_machine_and_date():
    for path in sorted((REPO / "benchmarks" / "results").glob("*.json")):
        data = json.loads(path.read_text())
        assert {"benchmark", "machine", "settings", "figures"} <= set(data), path.name
        assert data["machine"]["date"] and data["machine"]["versions"], path.name


def test_the_carbon_ledger_adds_up():
    """The headline's totals are the sums of the recorded commands."""
    from ofa_edge.report.carbon import scenarios

    figures = json.loads((REPO / "benchmarks/results/carbon.json").read_text())["figures"]
    entries, s = figures["entries"], figures["scenarios"]
    for key in ("cpu_s", "energy_j", "co2e_g"):
        once = sum(e[key] for e in entries["once"])
        device = sum(e[key] for e in entries["per_device"])
        training = sum(e[key] for e in entries["per_training"]) / len(entries["per_training"])
        for i, n in enumerate(s["n"]):
            assert s["ofa"][key][i] == pytest.approx(once + n * device)
            assert s["separate"][key][i] == pytest.approx(n * training)
    again = scenarios(entries["once"], entries["per_device"], entries["per_training"])
    assert again["ofa"] == s["ofa"] and again["crossover_n"] == s["crossover_n"]
