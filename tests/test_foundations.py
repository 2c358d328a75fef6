"""The foundations: layers, lean import, typed API, one contract, and the API's traps fixed."""

from __future__ import annotations

import pkgutil
import shutil
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import connguard as cg
from connguard import _core_py, _spec
from connguard._core import on_core

ROOT = Path(__file__).resolve().parents[1]
Make = Callable[..., Any]

OPTIONAL = ("connguard.metrics", "prometheus_client", "connguard.fleet", "redis",
            "connguard.integrations", "connguard.replay", "connguard.report", "connguard.cli")


def modules() -> list[str]:
    names = ["connguard"]
    for info in pkgutil.walk_packages(cg.__path__, "connguard."):
        if not info.name.endswith("__main__"):
            names.append(info.name)
    return names


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run code in a fresh, isolated interpreter that turns every warning into an error."""
    return subprocess.run([sys.executable, "-I", "-W", "error", "-c", code],
                          capture_output=True, text=True, timeout=60)


# --- layers --------------------------------------------------------------------

def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    names = modules()
    assert {"connguard._spec", "connguard._netblock", "connguard._core_py.sources",
            "connguard.cli", "connguard.guard"} <= set(names)
    code = textwrap.dedent(f"""
        import importlib, subprocess, sys
        failed = []
        for name in {names!r}:
            r = subprocess.run([sys.executable, "-I", "-W", "error", "-c", "import " + name],
                               capture_output=True, text=True)
            if r.returncode:
                failed.append((name, r.stderr.strip().splitlines()[-1:]))
        print(failed)
    """)
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_import_connguard_stays_lean() -> None:
    result = run_python("import connguard, sys; print(sorted(m for m in sys.modules))")
    assert result.returncode == 0, result.stderr
    loaded = set(eval(result.stdout))
    assert not {m for m in loaded for opt in OPTIONAL if m == opt or m.startswith(opt + ".")}


def test_python_dash_m_runs_the_command() -> None:
    result = subprocess.run([sys.executable, "-m", "connguard", "--version"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == f"connguard {cg.__version__}"


def test_layers_contract_is_kept() -> None:
    if not (ROOT / "pyproject.toml").exists():
        pytest.skip("not a source checkout")
    lint_imports = shutil.which("lint-imports") or shutil.which(
        "lint-imports", path=str(Path(sys.executable).parent))
    if lint_imports is None:
        pytest.skip("import-linter is not installed (pip install '.[test]')")
    result = subprocess.run([lint_imports], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


# --- typed API -------------------------------------------------------------------

GOOD = """
    import connguard as cg

    t = cg.Tracker(capacity=1000, window=30.0)
    counted: bool = t.accept("192.0.2.1:5555", "mail.example:25", now=1.0)
    closed: bool = t.close("192.0.2.1", now=2.0)
    stats: cg.SourceStats | None = t.stats("192.0.2.1")
    if stats is not None:
        name: str = stats.source
        share: dict[str, int] = stats.by_class
    top: list[cg.SourceStats] = t.top(5, by="rate")
    bans = cg.BanManager(ban_score=10)
    infraction: cg.Infraction = bans.report("192.0.2.1", "malformed_message")
    banned: bool = bans.is_banned("192.0.2.1")
    current: list[cg.Ban] = bans.banned()
    limiter = cg.RateLimiter(rate=100.0, burst=200.0)
    decision: cg.RateDecision = limiter.check("peer-1")
    kind: str | None = decision.infraction
    g = cg.Guard(tracker=t, bans=bans, limiter=limiter, enforce=True)
    verdict: cg.Verdict = g.accept("192.0.2.1", "mail.example:25")
    reason: str | None = verdict.reason
    if verdict:
        g.close("192.0.2.1")
    totals: int = sum(g.verdict_totals().values())
    found: list[cg.Finding] = g.findings()
    evidence: dict[str, object] = found[0].evidence if found else {}
    closed_bytes: bool = t.close("192.0.2.1", sent=0, received=0, destination="mail.example:25")
    scans = cg.Tracker(port_scan=cg.PortScan(ports=50, window=7200.0), spam_relay=None,
                       on_finding=lambda f: print(f.source, f.pattern))
"""

BAD = {
    "t.no_such_method()": '"Tracker" has no attribute "no_such_method"',
    "t.accept(5)": 'Argument 1 to "accept" of "SourceTable" has incompatible type "int"',
    "s: str = g.accept('192.0.2.1')": 'expression has type "Verdict", variable has type "str"',
    "bans.is_banned(b'192.0.2.1')": 'incompatible type "bytes"',
    "limiter.allow(peer=1)": 'Unexpected keyword argument "peer"',
}


def mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("mypy")
    path = tmp_path / "user_code.py"
    path.write_text(textwrap.dedent(source))
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir",
         str(tmp_path / "cache"), str(path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)


def test_user_code_type_checks_with_mypy_strict(tmp_path: Path) -> None:
    good = mypy(tmp_path, GOOD)
    assert good.returncode == 0, good.stdout
    lines = ["import connguard as cg", "t = cg.Tracker()", "g = cg.Guard()",
             "bans = cg.BanManager()", "limiter = cg.RateLimiter()", *BAD]
    bad = mypy(tmp_path, "\n".join(lines) + "\n")
    assert bad.returncode == 1
    errors = [line for line in bad.stdout.splitlines() if ": error:" in line]
    for n, (code, message) in enumerate(BAD.items(), start=6):
        assert any(f"user_code.py:{n}:" in e and message in e for e in errors), (code, bad.stdout)
    assert len(errors) == len(BAD), bad.stdout


# --- one contract ---------------------------------------------------------------------

def test_pattern_names_are_the_documented_strings() -> None:
    assert cg.PATTERNS == ("conn_flood", "conn_rate", "spam_relay", "port_scan",
                           "credential_stuffing", "dns_tunnel")
    assert _spec.pattern_names(_spec.Pattern.CONN_FLOOD | _spec.Pattern.DNS_TUNNEL) == {
        "conn_flood", "dns_tunnel"}


def test_verdict_codes_cover_every_reason_once() -> None:
    from connguard.guard import _VERDICTS

    assert len(_VERDICTS) == _spec.VERDICT_CODES
    assert {(v.allowed, v.reason) for v in _VERDICTS} == {
        (allowed, reason) for allowed in (True, False)
        for reason in (None, "banned", "overflow", "limit", "flood")}


def test_consistency_check_finds_a_broken_counter() -> None:
    """The pure twin's tables can be corrupted from Python: the check must notice."""
    t = on_core(cg.Tracker, _core_py)(capacity=10, shards=1, seed=1, clock=lambda: 0.0)
    t.accept("192.0.2.1")
    t.check_consistency()
    t._tables[0].active_sources += 1
    with pytest.raises(AssertionError, match="shard 0: active sources invariant broken"):
        t.check_consistency()
    t._tables[0].active_sources -= 1
    t._tables[0].index[(0, 1)] = 0
    with pytest.raises(AssertionError, match="index invariant broken"):
        t.check_consistency()


@pytest.mark.c_extension
def test_compiled_core_checks_its_constants_against_the_spec(
        compiled_core: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    compiled_core._check_spec()                 # what runs at import: all agree
    monkeypatch.setattr(_spec, "MAX_CLASSES", 9)
    monkeypatch.setattr(_spec, "FMIX_C2", 1)
    with pytest.raises(ImportError, match=r"MAX_CLASSES: C 8 != _spec 9; FMIX_C2: C"):
        compiled_core._check_spec()


# --- traps a new user fell into ---------------------------------------------------------

def test_a_guard_is_a_listener(make_guard: Make) -> None:
    g = make_guard(limiter=False)
    cg.set_listener(g)
    try:
        cg.notify_accept("198.51.100.1:4000", "mx.example:25")
        with cg.connection("198.51.100.2", "a:443"):
            assert g.tracker.active_connections == 2
        cg.notify_close("198.51.100.1")
        cg.notify_accept("not an address")
    finally:
        cg.set_listener(None)
    assert g.tracker.active_connections == 0
    assert g.tracker.stats("198.51.100.1").total == 1
    assert g.tracker.unattributed == 1


def test_a_refused_accept_by_event_does_not_close_another_connection(make_guard: Make) -> None:
    g = make_guard(limiter=False, enforce=True)
    g.accept("198.51.100.7")                                  # open before the ban
    g.bans.ban("198.51.100.7", 60.0)
    g(cg.Event(cg.ACCEPT, "198.51.100.7:1000"))               # refused: not counted
    g(cg.Event(cg.CLOSE, "198.51.100.7:1000"))                # its close is absorbed
    assert g.tracker.stats("198.51.100.7").active == 1
    g(cg.Event(cg.CLOSE, "198.51.100.7"))
    assert g.tracker.active_connections == 0


def test_thresholds_are_read_only(make_tracker: Make) -> None:
    t = make_tracker(concurrent_threshold=3)
    with pytest.raises(TypeError):
        t.thresholds["conn_flood"] = 1
    assert t.thresholds["conn_flood"] == 3.0


def test_guard_does_not_change_the_callers_ban_manager(make_bans: Make, core: ModuleType) -> None:
    bans = make_bans()
    with pytest.raises(ValueError, match="give the pseudonymizer to the BanManager"):
        on_core(cg.Guard, core)(bans=bans, pseudonymizer=cg.Pseudonymizer(b"k" * 16))
    assert bans.pseudonymizer is None
    with pytest.raises(AttributeError):
        bans.pseudonymizer = None


def test_the_guards_limiter_sees_the_guards_buckets(make_guard: Make) -> None:
    g = make_guard(limiter={"rate": 1.0, "burst": 2.0}, enforce=True)
    verdicts = [g.accept("203.0.113.9:4000") for _ in range(3)]
    assert [v.reason for v in verdicts] == [None, None, "limit"]
    assert g.limiter.state("203.0.113.9") == g.limiter.state("203.0.113.9:5555")
    assert g.limiter.state("203.0.113.9")[1] == 1
    assert not g.limiter.allow("203.0.113.9")                 # the same empty bucket
    assert g.limiter.state("peer-id-203") is None             # other text: its own key


def test_public_read_only_properties(make_guard: Make) -> None:
    g = make_guard(tracker={"ipv4_prefix": 24, "ipv6_prefix": 48},
                   bans={"ipv4_prefix": 24, "ipv6_prefix": 48},
                   limiter={"ipv4_prefix": 24, "ipv6_prefix": 48})
    for part in (g.tracker, g.bans, g.limiter):
        assert (part.ipv4_prefix, part.ipv6_prefix) == (24, 48)
    assert g.tracker.window == 60.0


def test_deprecated_names_warn_and_still_work(make_guard: Make, core: ModuleType,
                                              clock: Any) -> None:
    g = make_guard(limiter=False)
    g.accept("192.0.2.1")
    stats = g.tracker.stats("192.0.2.1")
    assert stats is not None
    with pytest.warns(DeprecationWarning, match="SourceStats.source"):
        assert stats.key == "192.0.2.1"
    with pytest.warns(DeprecationWarning, match="Event.direction"):
        assert cg.Event(cg.CLOSE, "192.0.2.1").state == cg.CLOSE
    g.bans.ban("192.0.2.1", 10.0)
    with pytest.warns(DeprecationWarning, match="banned"):
        assert g.bans.bans() == g.bans.banned()
    Guard = on_core(cg.Guard, core)
    tracker = on_core(cg.Tracker, core)(clock=clock)
    with pytest.warns(DeprecationWarning, match="keyword-only"):
        positional = Guard(tracker, None, False, True)
    assert positional.tracker is tracker and positional.limiter is None and positional.enforce
    with pytest.raises(TypeError, match="multiple values for argument 'tracker'"):
        Guard(tracker, tracker=tracker)
    with pytest.warns(DeprecationWarning, match="limiter=True"):
        assert Guard(limiter=True).limiter is not None


def test_no_deprecation_on_the_documented_paths(make_guard: Make) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = make_guard()
        g.accept("192.0.2.1", "a:443")
        g.close("192.0.2.1")
        g.findings()
        g.verdict_totals()


def test_no_source_comment_cites_another_project_as_the_spec() -> None:
    src = ROOT / "src" / "connguard"
    if not src.exists():
        pytest.skip("not a source checkout")
    # (uvloop is not here: the proxy imports it, as an optional event loop)
    cited = ("tatanka", "ngit", "lantern", "fail2ban", "bisoncraft", "propcache")
    offenders = [f"{path.relative_to(src)}: {word}" for path in src.rglob("*")
                 if path.suffix in {".py", ".pyx", ".pxi", ".pyi"}
                 for word in cited if word in path.read_text().lower()]
    assert offenders == [], "state the behaviour; provenance lives in docs/PROVENANCE.md"

