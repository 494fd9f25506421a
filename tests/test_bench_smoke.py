"""The benchmark harness in smoke mode: correctness of its output, never its timings."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

import anyio
import pytest

from bench._cli import main
from bench._measure import NotAvailable
from bench._report import render_plain
from bench.workloads import SUITE, WORKLOADS
from bench.workloads._log import deposit_amount
from bench.workloads.rebuild import require_read_side
from runtime import DEFAULT_GC_THRESHOLD

# Cases every workload must report in smoke mode, with their units.
EXPECTED = {
    "append": {
        "c=1 throughput": "events/s",
        "c=1 append p50": "ms",
        "c=1 append p99": "ms",
        "c=1 mean batch": "appends/txn",
        "c=4 throughput": "events/s",
    },
    "write": {
        "c=1 throughput": "commands/s",
        "c=4 ask p50": "ms",
        "c=4 ask p99": "ms",
        "c=4 throughput (gc_threshold=None)": "commands/s",
        "c=4 ask p50 (gc_threshold=None)": "ms",
        "c=4 ask p99 (gc_threshold=None)": "ms",
    },
    "latency": {
        "ask p50": "ms",
        "ask p95": "ms",
        "ask p99": "ms",
        "ask max": "ms",
        "achieved load": "commands/s",
    },
    "activate": {
        "200 events, no snapshot": "ms",
        "snapshot + 9 events": "ms",
        "read + decode 200 events (store.read_stream)": "ms",
    },
    "memory": {"per idle actor (runtime)": "bytes", "Account state alone": "bytes"},
    "floor": {
        "fsync rate": "fsyncs/s",
        "sqlite3 executemany, 100 rows/txn": "rows/s",
        "1-row commit p50, on the loop's thread": "ms",
        "1-row commit p50, via a worker thread": "ms",
        "worker thread round trip p50": "ms",
    },
    "eventsourcing": {
        "deposits: ours c=1 | theirs": "commands/s",
        "deposits: ours c=1 | theirs cached": "commands/s",
        "cold load 200 events": "ms",
        "cold load snapshot + 9": "ms",
        "follower over 25 events": "events/s",
    },
    "rebuild": {
        "rebuild from 0": "events/s",
        "rebuild time": "s",
        "catch-up from 0 (live projector)": "events/s",
        "read + decode (store.iter_all)": "events/s",
    },
    "lag": {
        "c=10 lag p50": "ms",
        "c=10 lag p99": "ms",
        "c=10 lag max": "ms",
        "c=10 lag to read-model commit p50": "ms",
        "c=10 lag to read-model commit p99": "ms",
        "c=10 write load": "commands/s",
        "c=10 lag p99 (gc_threshold=None)": "ms",
        "c=10 lag to read-model commit p50 (gc_threshold=None)": "ms",
        "c=10 lag to read-model commit p99 (gc_threshold=None)": "ms",
        "c=10 write load (gc_threshold=None)": "commands/s",
    },
}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One smoke run of every workload (suite + floor + comparison), with JSON and report."""
    root = tmp_path_factory.mktemp("bench")
    scratch = root / "scratch"
    scratch.mkdir()
    argv = ["--smoke", "--quiet", "--floor", "--compare", "eventsourcing"]
    argv += [
        "--json",
        str(root / "out.json"),
        "--report",
        str(root / "report"),
        "--dir",
        str(scratch),
    ]
    status = main(argv)
    return {
        "status": status,
        "root": root,
        "scratch": scratch,
        "doc": json.loads((root / "out.json").read_text()),
    }


def _results(smoke_run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["workload"]: r for r in smoke_run["doc"]["results"]}


def test_smoke_run_exits_zero_and_cleans_its_scratch_dir(smoke_run: dict[str, Any]) -> None:
    """Nothing failed, and the scratch directory is removed afterwards."""
    assert smoke_run["status"] == 0
    assert list(smoke_run["scratch"].iterdir()) == []


def test_json_records_the_run_settings(smoke_run: dict[str, Any]) -> None:
    """The JSON names durability, versions, CPU count, date, mode and repeats."""
    meta = smoke_run["doc"]["meta"]
    assert meta["event_loop_class"] == "asyncio.unix_events._UnixSelectorEventLoop"
    for key in ("durability", "python", "sqlite", "cpu_count", "date", "mode", "repeat"):
        assert meta[key], key
    assert meta["mode"] == "smoke"
    assert meta["repeat"] == 1
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and "\nmodel name" in "\n" + cpuinfo.read_text():  # x86 Linux
        name = meta["cpu_model"].split(" (family")[0]
        assert name
        assert f": {name}\n" in cpuinfo.read_text()
    assert "synchronous=FULL" in meta["durability"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_workload_reports_expected_cases_and_units(smoke_run: dict[str, Any], name: str) -> None:
    """Each workload ran, with the expected cases in the expected units and its sizes."""
    result = _results(smoke_run)[name]
    assert result["status"] == "ok", result["reason"]
    got = {f["case"]: f for f in result["figures"]}
    for case, unit in EXPECTED[name].items():
        assert got[case]["unit"] == unit, case
        assert got[case]["samples"]
        assert got[case]["min"] <= got[case]["median"] <= got[case]["max"]
    assert {k: v for k, v in result["sizes"].items() if k != "store"} == dict(
        WORKLOADS[name].sizes["smoke"]
    )


def test_append_reports_the_raw_floor_and_ratio(smoke_run: dict[str, Any]) -> None:
    """Append throughput carries the sqlite3 floor of the same run and the ratio."""
    figs = {f["case"]: f for f in _results(smoke_run)["append"]["figures"]}
    for case in ("c=1 throughput", "c=4 throughput"):
        assert figs[case]["reference"]["kind"] == "floor"
        assert figs[case]["ratio"]["median"] > 0
        assert figs[case]["params"]["events"] in (10, 40)


def test_single_appender_latency_has_a_commit_floor(smoke_run: dict[str, Any]) -> None:
    """The c=1 p50s (append, ask) carry one-row commits through a worker thread as their floor."""
    result = _results(smoke_run)["append"]
    figs = {f["case"]: f for f in result["figures"]}
    assert figs["c=1 append p50"]["reference"]["kind"] == "floor"
    assert figs["c=1 append p50"]["reference"]["median"] > 0
    assert figs["c=4 append p50"].get("reference") is None
    assert "worker thread" in result["info"]["c=1"]["p50 floor"]
    write = {f["case"]: f for f in _results(smoke_run)["write"]["figures"]}
    assert write["c=1 ask p50"]["reference"]["kind"] == "floor"
    assert write["c=4 ask p50"]["reference"]["kind"] == "bare"


def test_write_reports_the_bare_loop_beside_the_runtime(smoke_run: dict[str, Any]) -> None:
    """Every concurrent level of the default rows carries the bare group-commit loop's figure
    and the ratio; the gc_threshold=None rows (a different GC setting) carry none."""
    figs = {f["case"]: f for f in _results(smoke_run)["write"]["figures"]}
    for case in ("c=4 throughput", "c=4 ask p50", "c=4 ask p99"):
        assert figs[case]["reference"]["kind"] == "bare", case
        assert figs[case]["reference"]["median"] > 0
        assert figs[case]["ratio"]["median"] > 0
    assert figs["c=1 throughput"].get("reference") is None
    assert figs["c=4 throughput (gc_threshold=None)"].get("reference") is None


def test_append_warms_up_and_reports_gc_threshold_rows(smoke_run: dict[str, Any]) -> None:
    """Each level's warm-up is reported apart from its timed appends; the store built with
    gc_threshold=None has rows of its own."""
    figs = {f["case"]: f for f in _results(smoke_run)["append"]["figures"]}
    default, untouched = figs["c=4 throughput"], figs["c=4 throughput (gc_threshold=None)"]
    assert default["params"]["gc_threshold"] == "default"
    assert untouched["params"]["gc_threshold"] is None
    assert untouched["reference"]["kind"] == "floor"
    for fig in (default, untouched):
        assert fig["params"]["warmup_events"] > 0
        assert fig["params"]["events"] == 40


def test_append_floor_uses_the_store_writer_pragmas(smoke_run: dict[str, Any]) -> None:
    """The floor ran with the pragmas read from the store's writer connection, not defaults."""
    info = _results(smoke_run)["append"]["info"]
    pragmas = info["c=1"]["floor_pragmas"]
    assert (pragmas["journal_mode"], pragmas["synchronous"]) == ("wal", 2)  # 2 = FULL
    assert pragmas["cache_size"] != -2000  # SQLite's default page cache (2 MB)
    assert "new streams rows" in info["c=1"]["floor"]


def test_write_reports_gc_threshold_rows_beside_the_defaults(smoke_run: dict[str, Any]) -> None:
    """The gc_threshold=None rows carry None; the default rows carry the runtime's default."""
    figs = {f["case"]: f for f in _results(smoke_run)["write"]["figures"]}
    assert figs["c=4 throughput (gc_threshold=None)"]["params"]["gc_threshold"] is None
    assert figs["c=4 throughput"]["params"]["gc_threshold"] == DEFAULT_GC_THRESHOLD


def test_activation_is_beside_read_stream_of_the_same_run(smoke_run: dict[str, Any]) -> None:
    """The no-snapshot activation carries the same run's read_stream time and the ratio."""
    figs = {f["case"]: f for f in _results(smoke_run)["activate"]["figures"]}
    row = figs["200 events, no snapshot"]
    read = figs["read + decode 200 events (store.read_stream)"]["samples"]
    assert row["reference"]["kind"] == "read"
    assert row["reference"]["samples"] == read
    assert row["ratio"]["median"] > 0
    # The replay read path is timed wherever the store has it.
    from stores import SQLiteStore

    payloads = "read + decode 200 events (store.read_stream_payloads)" in figs
    assert payloads == hasattr(SQLiteStore, "read_stream_payloads")


def test_comparison_puts_theirs_beside_ours(smoke_run: dict[str, Any]) -> None:
    """The eventsourcing rows carry their figure as the reference and the ratio."""
    figs = {f["case"]: f for f in _results(smoke_run)["eventsourcing"]["figures"]}
    row = figs["deposits: ours c=1 | theirs"]
    assert row["reference"]["kind"] == "theirs"
    assert row["ratio"]["median"] > 0


def test_require_read_side_says_not_available_without_projectors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without runtime.Projector the read-side workloads report 'not available'."""
    import runtime

    monkeypatch.delattr(runtime, "Projector")
    with pytest.raises(NotAvailable, match="read side"):
        require_read_side()


def test_rebuild_read_model_adds_up_to_the_deposits_written(smoke_run: dict[str, Any]) -> None:
    """After the rebuild the read model holds every account, event and cent seeded."""
    result = _results(smoke_run)["rebuild"]
    sizes = WORKLOADS["rebuild"].sizes["smoke"]
    per_account = sizes["events"] // sizes["accounts"]  # smoke sizes divide evenly
    # Each account: one opening, then deposits 1..per_account-1 (see deposit_amount).
    total = sizes["accounts"] * sum(deposit_amount(k) for k in range(1, per_account))
    expected = {"accounts": sizes["accounts"], "events": sizes["events"], "total": total}
    assert result["info"]["read_model_after_rebuild"] == expected
    assert result["info"]["seeded"]["total"] == total


def test_rebuild_is_beside_the_read_decode_rate_of_the_same_run(
    smoke_run: dict[str, Any],
) -> None:
    """Rebuild and catch-up rates carry the same run's read + decode rate and the ratio."""
    figs = {f["case"]: f for f in _results(smoke_run)["rebuild"]["figures"]}
    read = figs["read + decode (store.iter_all)"]["samples"]
    for case in ("rebuild from 0", "catch-up from 0 (live projector)"):
        assert figs[case]["reference"]["kind"] == "read"
        assert figs[case]["reference"]["samples"] == read
        assert figs[case]["ratio"]["median"] > 0


def test_rebuild_progress_series_climbs_to_the_head(smoke_run: dict[str, Any]) -> None:
    """The progress series starts at 0, never goes back, and ends at the log's head."""
    points = _results(smoke_run)["rebuild"]["series"]["rebuild progress"]
    assert points[0] == [0.0, 0.0]
    assert len(points) >= 2
    for (t0, p0), (t1, p1) in itertools.pairwise(points):
        assert t1 >= t0
        assert p1 >= p0
    assert points[-1][1] == WORKLOADS["rebuild"].sizes["smoke"]["events"]


def test_lag_has_one_sample_per_deposit_and_an_exact_read_model(
    smoke_run: dict[str, Any],
) -> None:
    """Both lags are recorded once per deposit event; the read model saw each exactly once."""
    result = _results(smoke_run)["lag"]
    sizes = WORKLOADS["lag"].sizes["smoke"]
    runs = [(f"c={c}", total) for c, total in sizes["levels"]]
    runs += [(f"c={c} (gc_threshold=None)", total) for c, total in sizes["gc_levels"]]
    for key, total in runs:
        counts = result["info"][key]
        assert counts["samples"] == total
        assert counts["read_model_commit_samples"] == total
        assert counts["store_commits"] >= 1
        assert counts["read_model_commits"] >= 1
    deposits = sum(total for _c, total in sizes["levels"])
    accounts = sizes["accounts"]
    expected = {"accounts": accounts, "events": accounts + deposits, "total": 5 * deposits}
    assert result["info"]["read_model"] == expected
    gc_deposits = sum(total for _c, total in sizes["gc_levels"])
    gc_expected = {"accounts": accounts, "events": accounts + gc_deposits, "total": 5 * gc_deposits}
    assert result["info"]["read_model (gc_threshold=None)"] == gc_expected


def test_follower_comparison_puts_theirs_beside_ours(smoke_run: dict[str, Any]) -> None:
    """Our deposit-counting projector is compared with their follower in the same run."""
    figs = {f["case"]: f for f in _results(smoke_run)["eventsourcing"]["figures"]}
    row = figs["follower over 25 events"]
    assert row["reference"]["kind"] == "theirs"
    assert row["ratio"]["median"] > 0


def test_report_has_markdown_and_plots(smoke_run: dict[str, Any]) -> None:
    """--report writes report.md and the throughput, latency and rebuild PNGs it links."""
    report = smoke_run["root"] / "report"
    text = (report / "report.md").read_text()
    for png in ("throughput.png", "latency.png", "rebuild.png"):
        assert (report / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({png})" in text


def test_plain_table_lists_every_workload(smoke_run: dict[str, Any]) -> None:
    """The plain table has one aligned header and a row for every workload run."""
    from bench._measure import Figure, WorkloadResult

    results = [
        WorkloadResult(
            r["workload"],
            r["status"],
            r["sizes"],
            reason=r["reason"],
            figures=[
                Figure(r["workload"], f["case"], f["unit"], tuple(f["samples"]), {})
                for f in r["figures"]
            ],
        )
        for r in smoke_run["doc"]["results"]
    ]
    lines = render_plain(results).splitlines()
    assert lines[0].split()[:3] == ["workload", "case", "median"]
    for name in (*SUITE, "floor", "eventsourcing"):
        assert any(line.startswith(name) for line in lines[1:]), name


def test_loop_option_runs_the_harness_on_uvloop(tmp_path: Path) -> None:
    """--loop uvloop runs the workloads on uvloop's loop, and the metadata says which ran."""
    pytest.importorskip("uvloop")
    out = tmp_path / "u.json"
    argv = ["--smoke", "--quiet", "--loop", "uvloop", "--dir", str(tmp_path), "--json", str(out)]
    assert main([*argv, "write"]) == 0
    meta = json.loads(out.read_text())["meta"]
    assert meta["event_loop"] == "uvloop"
    assert meta["event_loop_class"].startswith("uvloop")


def test_memory_store_runs_the_store_workloads(tmp_path: Path) -> None:
    """--store memory runs append and write on the in-memory backend."""
    out = tmp_path / "m.json"
    argv = ["--smoke", "--quiet", "--store", "memory", "--dir", str(tmp_path), "--json", str(out)]
    assert main([*argv, "append", "write"]) == 0
    doc = json.loads(out.read_text())
    assert [r["sizes"]["store"] for r in doc["results"]] == ["memory", "memory"]
    assert all(r["status"] == "ok" for r in doc["results"])


@pytest.mark.postgres
def test_postgres_store_runs_append_and_drops_its_schema(tmp_path: Path) -> None:
    """--store postgres runs append in a throwaway schema that is gone afterwards."""
    from tests import pg

    anyio.run(pg.require_server)
    out = tmp_path / "p.json"
    argv = ["--smoke", "--quiet", "--store", "postgres", "--dsn", pg.DSN]
    assert main([*argv, "--dir", str(tmp_path), "--json", str(out), "append"]) == 0
    assert json.loads(out.read_text())["results"][0]["status"] == "ok"

    async def leftover() -> list[Any]:
        import asyncpg

        conn = await asyncpg.connect(pg.DSN)
        try:
            # Schemas are named bench_<pid>_...: only this process's count.
            pattern = f"bench\\_{os.getpid()}\\_%"
            sql = "SELECT nspname FROM pg_namespace WHERE nspname LIKE $1"
            return list(await conn.fetch(sql, pattern))
        finally:
            await conn.close()

    assert anyio.run(leftover) == []


def test_library_logs_stay_out_of_the_table_and_config_is_restored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Library info logs (rebuild progress) never reach stdout; structlog's config comes back."""
    import structlog

    before = structlog.get_config()
    assert main(["--smoke", "--quiet", "--dir", str(tmp_path), "rebuild"]) == 0
    out = capsys.readouterr().out
    assert "rebuild from 0" in out
    assert "rebuild progress" not in out
    assert structlog.get_config() == before
