"""Teacher files under torchrun: only the main process collects them.

Two gloo processes (spawned here, no torchrun) run the helper behind
``load_teacher``'s collection step: the other rank must get the main
process's result without running the step itself, and an error on the main
process must reach both ranks instead of leaving one waiting forever.
"""

import datetime
import json
import multiprocessing
import os

import pytest

from speechbrain_imlkd.teacher import hub

WORLD_SIZE = 2
# Generous for a loaded machine; a rank left waiting would exceed it.
JOIN_SECONDS = 120
GLOO_TIMEOUT_SECONDS = 60


def _collect(folder, fail):
    """The collection step: writes a marker naming the rank that ran it."""
    import torch.distributed as dist

    if fail:
        raise ValueError(f"{folder}: broken checkpoint")
    (folder / f"ran_on_rank{dist.get_rank()}").touch()
    return {"embedding_model": str(folder / "embedding_model.ckpt")}


def _worker(rank, folder, fail):
    """One rank: joins the group, runs hub._on_main, records the outcome."""
    import torch.distributed as dist

    # SpeechBrain reads the rank from the environment, as torchrun sets it.
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE))
    dist.init_process_group(
        "gloo",
        init_method=f"file://{folder / 'store'}",
        rank=rank,
        world_size=WORLD_SIZE,
        timeout=datetime.timedelta(seconds=GLOO_TIMEOUT_SECONDS),
    )
    try:
        outcome = {"result": hub._on_main(_collect, folder=folder, fail=fail)}
    except Exception as e:
        outcome = {"error": type(e).__name__, "message": str(e)}
    finally:
        dist.destroy_process_group()
    (folder / f"outcome{rank}.json").write_text(json.dumps(outcome))


def _run_two_ranks(folder, fail):
    """Runs both ranks; returns their outcomes (fails on a hang or a crash)."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(r, folder, fail)) for r in range(WORLD_SIZE)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(JOIN_SECONDS)
    hung = [p.pid for p in procs if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    assert not hung, f"ranks still waiting after {JOIN_SECONDS} s: {hung}"
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return [json.loads((folder / f"outcome{r}.json").read_text()) for r in range(WORLD_SIZE)]


@pytest.mark.parametrize("fail", [False, True], ids=["collects", "fails"])
def test_only_the_main_process_collects(tmp_path, fail):
    outcomes = _run_two_ranks(tmp_path, fail)
    if not fail:
        expected = {"embedding_model": str(tmp_path / "embedding_model.ckpt")}
        assert outcomes == [{"result": expected}] * WORLD_SIZE
        assert sorted(p.name for p in tmp_path.glob("ran_on_rank*")) == ["ran_on_rank0"]
        return
    main, other = outcomes
    assert main == {"error": "ValueError", "message": f"{tmp_path}: broken checkpoint"}
    assert other["error"] == "RuntimeError"
    assert f"ValueError: {tmp_path}: broken checkpoint" in other["message"]
    assert not list(tmp_path.glob("ran_on_rank*"))
