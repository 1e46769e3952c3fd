"""The run folder helpers GRPO and SFT share: metrics history, checkpoint folders, pruning."""

from __future__ import annotations

from pathlib import Path

from agentlightning_grpo.run_log import MetricsLog, checkpoint_dir, latest_checkpoint, prune_checkpoints


def _complete(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "state.json").write_text("{}")
    return path


def test_latest_checkpoint_is_the_highest_complete_one_of_its_unit(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path / "missing") is None
    _complete(checkpoint_dir(tmp_path, 2, "round"))
    newest = _complete(checkpoint_dir(tmp_path, 10, "round"))
    checkpoint_dir(tmp_path, 11, "round").mkdir()  # no state.json: a checkpoint cut by a kill
    _complete(checkpoint_dir(tmp_path, 30, "step"))  # another unit's folder is not a round
    assert newest.name == "round-000010"
    assert latest_checkpoint(tmp_path, "round") == newest
    assert latest_checkpoint(tmp_path) == tmp_path / "step-000030"


def test_prune_keeps_the_newest_and_ignores_staging_folders(tmp_path: Path) -> None:
    for index in (1, 2, 3):
        _complete(checkpoint_dir(tmp_path, index))
    (tmp_path / ".step-000004.tmp-1").mkdir()
    prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".step-000004.tmp-1", "step-000002", "step-000003"]


def test_metrics_log_truncates_by_its_unit_and_survives_a_cut_line(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path, unit="round")
    for index in (0, 1, 2):
        log.append({"kind": "round", "round": index})
    with (tmp_path / "metrics.jsonl").open("a") as handle:
        handle.write('{"kind": "rou')  # a write cut by a kill
    reloaded = MetricsLog(tmp_path, unit="round")
    assert [r["round"] for r in reloaded.records] == [0, 1, 2]
    reloaded.truncate_after(1)
    assert [r["round"] for r in MetricsLog(tmp_path, unit="round").records] == [0, 1]
