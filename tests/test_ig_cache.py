"""Tests of the precomputed IG cache (speechbrain_imlkd/ig_cache/).

A tiny ECAPA teacher (C=16) on a toy corpus of 1 s chunks, with the plan
0.25 / 0.5 / 1.0 s (4 + 2 + 1 segments per chunk) and 4 IG steps.
"""

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechbrain_imlkd.ig_cache import precompute as ig_precompute
from speechbrain_imlkd.attribution import (
    embedding_cosine_target,
    integrated_gradients,
    speaker_logit_target,
)
from speechbrain_imlkd.distillers import IMLKD, DistillationBatch
from speechbrain_imlkd.ig_cache import (
    CacheError,
    CacheKeyError,
    CachedSaliency,
    IGSettings,
    SegmentPlan,
    cache_key,
    precompute_ig_cache,
    prepare_ig_cache,
    select_saliency_source,
)
from speechbrain_imlkd.integrated_inputs import (
    integrated_inputs,
    normalised_saliency,
    pool_saliency,
)
from speechbrain_imlkd.models import build_ecapa, features_pipeline
from speechbrain_imlkd.teacher import Teacher

SR = 16000
SPEAKERS = ["id00001", "id00002", "id00003"]
PLAN = SegmentPlan(durations=(0.25, 0.5, 1.0), chunk_seconds=1.0)
SETTINGS = IGSettings(target="speaker_logit", steps=4, method="gauss_legendre")
F16 = dict(atol=2e-2, rtol=2e-3)  # float16 storage of values up to ~30


def make_teacher(seed=0):
    """A deterministic tiny teacher with centroid logits over SPEAKERS."""
    torch.manual_seed(seed)
    teacher = Teacher(*features_pipeline(80), build_ecapa(16, 8, attention_channels=8))
    g = torch.Generator().manual_seed(seed + 100)
    cents = {s: torch.randn(8, generator=g) for s in SPEAKERS}
    teacher.set_training_speakers(SPEAKERS, mode="centroid", centroid_data=cents)
    return teacher


def write_corpus(folder, n_per_speaker=2, seconds=1.0, short=None):
    """Writes 1 s wavs (one file per speaker, chunks of it) and train.csv."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n = int(seconds * SR)
    rows = []
    for k, spk in enumerate(SPEAKERS):
        t = np.arange(n * n_per_speaker) / SR
        sig = 0.1 * np.sin(2 * np.pi * 150 * (k + 1) * t) + 0.02 * rng.standard_normal(t.size)
        wav = folder / f"{spk}.wav"
        sf.write(wav, sig.astype(np.float32), SR)
        for c in range(n_per_speaker):
            start, stop = c * n, (c + 1) * n
            rows.append([f"{spk}_{start}_{stop}", seconds, str(wav), start, stop, spk])
    if short is not None:
        rows.append([short, 0.5, str(folder / f"{SPEAKERS[0]}.wav"), 0, n // 2, SPEAKERS[0]])
    path = folder / "train.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["ID", "duration", "wav", "start", "stop", "spk_id"])
        writer.writerows(rows)
    return path


def chunk_feats(teacher, csv_path):
    """IDs, normalised features and labels of every chunk of the CSV."""
    ids, wavs, labels = [], [], []
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            start, stop = int(row["start"]), int(row["stop"])
            sig, _ = sf.read(row["wav"], dtype="float32", start=start, stop=stop)
            ids.append(row["ID"])
            wavs.append(torch.from_numpy(sig))
            labels.append(SPEAKERS.index(row["spk_id"]))
    return ids, teacher.features(torch.stack(wavs)), torch.tensor(labels)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a shared CPU, tiny models run many times faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def teacher():
    return make_teacher()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def full_cache(teacher, corpus, tmp_path_factory):
    """A complete full-storage cache in 3 shards of 2 chunks."""
    cache = tmp_path_factory.mktemp("full") / "cache"
    report = precompute_ig_cache(
        teacher, corpus, cache, PLAN, SETTINGS, storage="full", shard_size=2, batch_size=2
    )
    assert report.complete and report.computed == [0, 1, 2]
    return cache


def shard_tensors(cache):
    """Every shard's tensors by file name, and the index's chunk map."""
    out = {}
    for path in sorted(Path(cache).glob("shard_*.pt")):
        out[path.name] = torch.load(path, weights_only=True)
    index = json.loads((Path(cache) / "index.json").read_text())
    return out, index["chunks"]


def assert_same_cache(a, b, exact=True):
    shards_a, chunks_a = shard_tensors(a)
    shards_b, chunks_b = shard_tensors(b)
    assert chunks_a == chunks_b
    assert sorted(shards_a) == sorted(shards_b)
    for name, da in shards_a.items():
        db = shards_b[name]
        assert da["ids"] == db["ids"]
        assert torch.equal(da["n_frames"], db["n_frames"])
        for field in ("saliency", "emb", "logits"):
            for ta, tb in zip(da[field], db[field]):
                if exact:
                    assert torch.equal(ta, tb), (name, field)
                else:
                    torch.testing.assert_close(ta.float(), tb.float(), **F16)


# ---------------------------------------------------------------------- #
# Segment plan
# ---------------------------------------------------------------------- #
def test_default_plan_for_3s_chunks():
    plan = SegmentPlan()
    assert plan.counts == (3, 2, 1)
    # 3 s at 16 kHz with a 10 ms hop (center=True) gives 301 frames.
    assert plan.offsets(301) == [[0, 100, 201], [0, 101], [0]]
    assert SegmentPlan(offsets_per_duration=1).offsets(301) == [[0], [0], [0]]
    assert SegmentPlan(offsets_per_duration=[5, 3, 2]).offsets(301) == [
        [0, 50, 100, 150, 201],
        [0, 50, 101],
        [0, 1],
    ]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(durations=[]), "at least one duration"),
        (dict(durations=[4.0]), "longer than chunk_seconds"),
        (dict(durations=[-1.0]), "must be positive"),
        (dict(offsets_per_duration=[1, 2]), "2 counts for 3 durations"),
        (dict(offsets_per_duration=0), "positive integers"),
        (dict(chunk_seconds=0), "chunk_seconds"),
    ],
)
def test_bad_plan(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SegmentPlan(**kwargs)


def test_short_chunk_errors(teacher, tmp_path):
    csv_path = write_corpus(tmp_path, n_per_speaker=1, short="tiny_chunk")
    match = "chunk 'tiny_chunk' has 51 feature frames.*longest planned segment"
    with pytest.raises(ValueError, match=match):
        precompute_ig_cache(teacher, csv_path, tmp_path / "c", PLAN, SETTINGS)
    with pytest.raises(ValueError, match="chunk 'x' has 99 feature frames"):
        PLAN.offsets(99, chunk_id="x")


# ---------------------------------------------------------------------- #
# Cached targets equal online ones
# ---------------------------------------------------------------------- #
def online_targets(teacher, feats, labels, choices, target="speaker_logit"):
    """IG, saliency, integrated inputs and teacher outputs computed online."""
    out = []
    embed = lambda x: teacher.embed(x)  # noqa: E731
    for j, n_seg in enumerate(PLAN.segment_frames):
        starts = [PLAN.offsets(feats.shape[1])[j][int(c)] for c in choices[j]]
        seg = torch.stack([feats[b, s : s + n_seg] for b, s in enumerate(starts)])
        if target == "speaker_logit":
            fn = speaker_logit_target(embed, teacher.logits, labels)
        else:
            fn = embedding_cosine_target(embed, teacher.embed(feats).detach())
        ig = integrated_gradients(fn, seg, steps=SETTINGS.steps, method=SETTINGS.method)
        sal = normalised_saliency(ig)
        x = integrated_inputs(seg, sal, "saliency_scale", 1.0)
        with torch.no_grad():
            emb = teacher.embed(x)
            out.append((seg, sal, x, emb, teacher.logits(emb)))
    return out


def test_cached_targets_equal_online(teacher, corpus, full_cache):
    ids, feats, labels = chunk_feats(teacher, corpus)
    # Every planned segment of every duration appears among the rows.
    choices = [torch.arange(len(ids)) % c for c in PLAN.counts]
    cached = CachedSaliency(full_cache, PLAN).segment_targets(feats, ids, choices)
    online = online_targets(teacher, feats, labels, choices)
    for got, (seg, sal, x, emb, logits) in zip(cached, online):
        torch.testing.assert_close(got.inputs, x, atol=1e-3 * x.abs().max().item(), rtol=1e-3)
        torch.testing.assert_close(got.teacher_emb, emb, **F16)
        torch.testing.assert_close(got.teacher_logits, logits, **F16)


@pytest.mark.parametrize("storage", ["full", "bands", "time"])
def test_storage_variants_round_trip(teacher, corpus, tmp_path, storage):
    settings = IGSettings(target="embedding_cosine", steps=4)
    n_bands = 4
    precompute_ig_cache(
        teacher, corpus, tmp_path / "c", PLAN, settings, storage=storage, n_bands=n_bands,
        shard_size=6, batch_size=6,
    )
    ids, feats, labels = chunk_feats(teacher, corpus)
    shard = torch.load(tmp_path / "c" / "shard_00000.pt", weights_only=True)
    tail = {"full": (80,), "bands": (n_bands,), "time": ()}[storage]
    choices = [torch.arange(len(ids)) % c for c in PLAN.counts]
    online = online_targets(teacher, feats, labels, choices, target="embedding_cosine")
    for j, (c, n_seg) in enumerate(zip(PLAN.counts, PLAN.segment_frames)):
        assert shard["saliency"][j].shape == (len(ids), c, n_seg, *tail)
        assert shard["saliency"][j].dtype == torch.float16
        stored = shard["saliency"][j][torch.arange(len(ids)), choices[j]].float()
        sal = online[j][1]
        expected = {
            "full": sal, "bands": pool_saliency(sal, n_bands), "time": pool_saliency(sal)
        }[storage]
        torch.testing.assert_close(stored, expected, atol=1e-3, rtol=1e-3)
    targets = CachedSaliency(tmp_path / "c").open().segment_targets(feats, ids, choices)
    assert [tuple(t.inputs.shape) for t in targets] == [
        (len(ids), n, 80) for n in PLAN.segment_frames
    ]


def test_training_from_cache_runs_no_teacher_pass(teacher, corpus, full_cache):
    ids, feats, labels = chunk_feats(teacher, corpus)

    def forbidden(*args, **kwargs):
        raise AssertionError("the teacher must not run when training from the cache")

    student = torch.nn.Linear(80, 8)
    def run_student(x, lengths=None):
        emb = student(x.mean(1))
        return emb, emb[:, :3]

    s_emb, s_logits = run_student(feats)
    batch = DistillationBatch(
        feats=feats,
        lengths=torch.ones(len(ids)),
        labels=labels,
        student_emb=s_emb,
        student_logits=s_logits,
        student=run_student,
        teacher_embed=forbidden,
        teacher_logits=forbidden,
        projection=torch.nn.Linear(8, 8),
        ids=ids,
        generator=torch.Generator().manual_seed(0),
    )
    distiller = IMLKD(
        saliency_source=CachedSaliency(full_cache, PLAN),
        durations=PLAN.durations,
        temperatures=[1.0, 2.0],
    )
    loss, terms = distiller(batch)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert student.weight.grad is not None
    # Augmenter-style batches (clean + augmented copies) reuse the IDs.
    doubled = CachedSaliency(full_cache, PLAN)(
        DistillationBatch(
            **{
                **batch.__dict__,
                "feats": torch.cat([feats, feats]),
                "lengths": torch.ones(2 * len(ids)),
            }
        ),
        PLAN.durations,
    )
    assert doubled[0].inputs.shape[0] == 2 * len(ids)


def test_draw_uses_the_generator(full_cache):
    src = CachedSaliency(full_cache, PLAN)
    a = src.draw(64, torch.Generator().manual_seed(3))
    b = src.draw(64, torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert [int(x.max()) for x in a] == [c - 1 for c in PLAN.counts]
    assert [int(x.min()) for x in a] == [0, 0, 0]


def test_batch_cache_mismatches(teacher, corpus, full_cache):
    ids, feats, _ = chunk_feats(teacher, corpus)
    src = CachedSaliency(full_cache, PLAN)
    choices = src.draw(len(ids))
    with pytest.raises(CacheError, match="chunk 'nope' is not in IG cache"):
        src.segment_targets(feats, ["nope"] + ids[1:], choices)
    with pytest.raises(CacheError, match="has 90 frames but IG cache .* has 101"):
        src.segment_targets(feats[:, :90], ids, choices)
    with pytest.raises(CacheError, match="7 rows for 6 chunk IDs"):
        src.segment_targets(torch.cat([feats, feats[:1]]), ids, src.draw(7))
    batch = DistillationBatch.toy(batch_size=len(ids), n_feats=80)
    batch.ids = ids
    with pytest.raises(CacheKeyError, match="durations \\[0.5\\] differ"):
        src(batch, [0.5])
    with pytest.raises(CacheKeyError, match="segment plan"):
        CachedSaliency(full_cache, SegmentPlan(durations=[1.0], chunk_seconds=1.0)).open()


# ---------------------------------------------------------------------- #
# Safe cache: key, resume, torn shards
# ---------------------------------------------------------------------- #
def test_changed_teacher_invalidates(teacher, corpus, tmp_path):
    cache = tmp_path / "c"
    hp = {
        "train_csv": corpus,
        "ig_cache_folder": cache,
        "ig_plan": PLAN,
        "ig_settings": SETTINGS,
        "integration_rule": "saliency_scale",
        "integration_alpha": 1.0,
        "ig_cache_storage": "time",
        "ig_cache_shard_size": 3,
    }
    key = prepare_ig_cache(hp, teacher)
    assert prepare_ig_cache(hp, teacher, rebuild=False) == key
    other = make_teacher(seed=1)
    with pytest.raises(CacheKeyError, match="built with another teacher"):
        prepare_ig_cache(hp, other, rebuild=False)
    with pytest.raises(CacheKeyError, match="expected"):
        CachedSaliency(cache, expected_key="0" * 64).open()
    kwargs = dict(storage="time", shard_size=3)
    report = precompute_ig_cache(other, corpus, cache, PLAN, SETTINGS, **kwargs)
    assert report.computed == [0, 1] and report.reused == []
    assert prepare_ig_cache(hp, other, rebuild=False) != key
    # A changed integration strength is a changed key too.
    with pytest.raises(CacheKeyError, match="integration"):
        prepare_ig_cache({**hp, "integration_alpha": 0.5}, other, rebuild=False)


def test_changed_csv_invalidates(teacher, tmp_path):
    csv_path = write_corpus(tmp_path / "data")
    kwargs = dict(plan=PLAN, ig_settings=SETTINGS, storage="time", shard_size=3)
    precompute_ig_cache(teacher, csv_path, tmp_path / "c", **kwargs)
    old_key = cache_key(teacher, csv_path, PLAN, SETTINGS, storage="time", shard_size=3)
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join(lines[:-1]) + "\n")  # drop the last chunk
    new_key = cache_key(teacher, csv_path, PLAN, SETTINGS, storage="time", shard_size=3)
    with pytest.raises(CacheKeyError, match="train_csv"):
        CachedSaliency(tmp_path / "c", expected_key=new_key).open()
    report = precompute_ig_cache(teacher, csv_path, tmp_path / "c", **kwargs)
    # Shard 0 holds the same chunks but was built under the old key: redone.
    assert report.computed == [0, 1] and report.complete
    CachedSaliency(tmp_path / "c", expected_key=new_key).open()
    with pytest.raises(CacheKeyError, match="train_csv"):
        CachedSaliency(tmp_path / "c", expected_key=old_key).open()


def test_interrupted_precompute_resumes(teacher, corpus, full_cache, tmp_path, monkeypatch):
    cache = tmp_path / "c"
    kwargs = dict(plan=PLAN, ig_settings=SETTINGS, storage="full", shard_size=2, batch_size=2)
    report = precompute_ig_cache(teacher, corpus, cache, max_new_shards=1, **kwargs)
    assert report.computed == [0] and not report.complete
    assert not (cache / "index.json").exists()
    with pytest.raises(CacheError, match="incomplete"):
        CachedSaliency(cache).open()

    # A crash in the middle of shard 2, after shard 1 was written.
    real = ig_precompute._compute_shard
    calls = []

    def crash_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            (cache / "shard_00002.pt.rank0.tmp").write_bytes(b"half a shard")
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ig_precompute, "_compute_shard", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        precompute_ig_cache(teacher, corpus, cache, **kwargs)
    monkeypatch.setattr(ig_precompute, "_compute_shard", real)

    report = precompute_ig_cache(teacher, corpus, cache, **kwargs)
    assert report.reused == [0, 1] and report.computed == [2] and report.complete
    assert not list(cache.glob("*.tmp"))
    assert_same_cache(cache, full_cache)


def test_torn_shard_is_detected_and_redone(teacher, corpus, full_cache, tmp_path):
    import shutil

    cache = tmp_path / "c"
    shutil.copytree(full_cache, cache)
    ids, feats, _ = chunk_feats(teacher, corpus)
    shard = cache / "shard_00001.pt"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(CacheError, match="shard_00001.pt is torn or corrupt"):
        src = CachedSaliency(cache, PLAN)
        src.segment_targets(feats, ids, src.draw(len(ids)))
    # Same size, flipped byte: only the checksum can tell.
    shard.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(CacheError, match="torn or corrupt"):
        src = CachedSaliency(cache, PLAN)
        src.segment_targets(feats, ids, src.draw(len(ids)))
    kwargs = dict(plan=PLAN, ig_settings=SETTINGS, storage="full", shard_size=2, batch_size=2)
    report = precompute_ig_cache(teacher, corpus, cache, **kwargs)
    assert report.computed == [1] and report.reused == [0, 2] and report.complete
    assert_same_cache(cache, full_cache)
    (cache / "shard_00002.pt").unlink()
    report = precompute_ig_cache(teacher, corpus, cache, **kwargs)
    assert report.computed == [2]


# ---------------------------------------------------------------------- #
# Shared work
# ---------------------------------------------------------------------- #
def test_direct_rank_split_equals_one_process(teacher, corpus, full_cache, tmp_path):
    cache = tmp_path / "c"
    kwargs = dict(plan=PLAN, ig_settings=SETTINGS, storage="full", shard_size=2, batch_size=2)
    r1 = precompute_ig_cache(teacher, corpus, cache, rank=1, world_size=2, **kwargs)
    assert r1.computed == [1] and not r1.complete
    r0 = precompute_ig_cache(teacher, corpus, cache, rank=0, world_size=2, **kwargs)
    assert r0.computed == [0, 2] and r0.complete
    assert_same_cache(cache, full_cache)
    with pytest.raises(ValueError, match="rank=2 must be in"):
        precompute_ig_cache(teacher, corpus, cache, rank=2, world_size=2, **kwargs)


WORKER = """
import json
import sys
import torch.distributed as dist
sys.path.insert(0, {tests!r})
from test_ig_cache import PLAN, SETTINGS, make_teacher
from speechbrain_imlkd.ig_cache import precompute_ig_cache
dist.init_process_group("gloo")
report = precompute_ig_cache(make_teacher(), {csv!r}, {cache!r}, PLAN, SETTINGS,
                             storage="full", shard_size=2, batch_size=2)
# One file per rank: printed lines of two processes may interleave.
with open({cache!r} + f".rank{{dist.get_rank()}}.json", "w") as f:
    json.dump({{"computed": report.computed, "complete": report.complete}}, f)
dist.destroy_process_group()
"""


def test_two_process_precompute_equals_one_process(corpus, full_cache, tmp_path):
    cache = tmp_path / "c"
    script = tmp_path / "worker.py"
    here = str(Path(__file__).resolve().parent)
    script.write_text(WORKER.format(tests=here, csv=str(corpus), cache=str(cache)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(script)],
        capture_output=True, text=True, timeout=240, env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    reports = [json.loads(Path(f"{cache}.rank{r}.json").read_text()) for r in (0, 1)]
    assert reports == [
        {"computed": [0, 2], "complete": True},
        {"computed": [1], "complete": True},
    ]
    # Other thread counts may reorder float sums: equal within float16.
    assert_same_cache(cache, full_cache, exact=False)


# ---------------------------------------------------------------------- #
# Bad input and recipe glue
# ---------------------------------------------------------------------- #
def test_bad_precompute_input(teacher, corpus, tmp_path):
    run = lambda csv_path=corpus, t=teacher, **kw: precompute_ig_cache(  # noqa: E731
        t, csv_path, tmp_path / "c", PLAN, SETTINGS, **kw
    )
    with pytest.raises(ValueError, match="storage='half'"):
        run(storage="half")
    with pytest.raises(ValueError, match="n_bands=7 does not divide the teacher's 80"):
        run(storage="bands", n_bands=7)
    with pytest.raises(ValueError, match="shard_size=0"):
        run(shard_size=0)
    with pytest.raises(FileNotFoundError, match="training CSV not found: .*missing.csv"):
        run(csv_path=tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("ID,wav,start,stop\nx,a.wav,0,10\n")
    with pytest.raises(ValueError, match="bad.csv: missing column\\(s\\) \\['spk_id'\\]"):
        run(csv_path=bad)
    lines = corpus.read_text().splitlines()
    dup = tmp_path / "dup.csv"
    dup.write_text("\n".join(lines + [lines[1]]) + "\n")
    with pytest.raises(ValueError, match="dup.csv:8: duplicate chunk ID 'id00001_0_16000'"):
        run(csv_path=dup)
    stranger = tmp_path / "stranger.csv"
    unknown = lines[1].replace("id00001_0", "z_0").replace(",id00001", ",id09999")
    stranger.write_text("\n".join(lines + [unknown]) + "\n")
    with pytest.raises(ValueError, match="chunk 'z_0_16000': speaker 'id09999' is not among"):
        run(csv_path=stranger)
    untrained = Teacher(*features_pipeline(80), build_ecapa(16, 8, attention_channels=8))
    with pytest.raises(ValueError, match="set_training_speakers"):
        run(t=untrained)
    with pytest.raises(ValueError, match="IG target must be one of"):
        IGSettings(target="cosine")
    with pytest.raises(ValueError, match="steps must be at least 2"):
        IGSettings(steps=1)


def test_yaml_wiring(tmp_path):
    from hyperpyyaml import load_hyperpyyaml

    text = textwrap.dedent(
        f"""
        durations: [0.25, 0.5, 1.0]
        seg_dur: 1.0
        ig_target: speaker_logit
        ig_steps: 4
        ig_method: null
        ig_internal_batch_size: 64
        ig_mode: cached
        ig_cache_folder: {tmp_path}/ig_cache
        ig_plan_offsets: null
        ig_plan: !new:speechbrain_imlkd.ig_cache.SegmentPlan
            durations: !ref <durations>
            chunk_seconds: !ref <seg_dur>
            offsets_per_duration: !ref <ig_plan_offsets>
        ig_settings: !new:speechbrain_imlkd.ig_cache.IGSettings
            target: !ref <ig_target>
            steps: !ref <ig_steps>
            method: !ref <ig_method>
            internal_batch_size: !ref <ig_internal_batch_size>
        online_saliency: !new:speechbrain_imlkd.distillers.OnlineSaliency
            target: !ref <ig_target>
            steps: !ref <ig_steps>
            method: !ref <ig_method>
            internal_batch_size: !ref <ig_internal_batch_size>
        cached_saliency: !new:speechbrain_imlkd.ig_cache.CachedSaliency
            cache_dir: !ref <ig_cache_folder>
            plan: !ref <ig_plan>
        saliency_source: !apply:speechbrain_imlkd.ig_cache.select_saliency_source
            - !ref <ig_mode>
            - !ref <online_saliency>
            - !ref <cached_saliency>
        """
    )
    hp = load_hyperpyyaml(text)
    assert isinstance(hp["saliency_source"], CachedSaliency)
    assert hp["ig_plan"] == PLAN and hp["ig_settings"].steps == 4
    hp = load_hyperpyyaml(text, {"ig_mode": "online"})
    assert hp["saliency_source"] is hp["online_saliency"]
    with pytest.raises(ValueError, match="ig_mode='offline'"):
        select_saliency_source("offline", None, None)


def test_compute_ig_recipe(tmp_path):
    """compute_ig.py builds the cache from the recipe YAML; a rerun reuses it."""
    from speechbrain.dataio.encoder import CategoricalEncoder

    from speechbrain_imlkd.data.synthetic import generate_corpus
    from speechbrain_imlkd.export import export_model
    from speechbrain_imlkd.models import build_classifier

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "VoxCeleb1" / "imlkd"
    sys.path.insert(0, str(recipe))
    import compute_ig

    root = tmp_path / "corpus"
    meta = generate_corpus(
        root, n_train_speakers=3, n_test_speakers=2, sessions_per_speaker=2,
        utterances_per_session=2, min_duration=2.2, max_duration=2.5, n_trials=4, seed=1,
    )
    torch.manual_seed(0)
    encoder = CategoricalEncoder()
    encoder.update_from_iterable(meta["speakers"]["train"])
    export_model(
        tmp_path / "teacher",
        build_ecapa(16, lin_neurons=16, attention_channels=8),
        classifier=build_classifier(len(meta["speakers"]["train"]), lin_neurons=16),
        label_encoder=encoder,
    )
    argv = [
        str(recipe / "hparams" / "imlkd_ecapa.yaml"),
        f"--data_folder={root}",
        f"--teacher_source={tmp_path / 'teacher'}",
        f"--output_root={tmp_path / 'out'}",
        "--seg_dur=2.0",
        "--durations=[1.0, 2.0]",
        "--ig_steps=2",
    ]
    key = compute_ig.main(argv)
    cache = tmp_path / "out" / "ig_cache"
    src = CachedSaliency(cache, SegmentPlan(durations=[1.0, 2.0], chunk_seconds=2.0)).open(key)
    with open(tmp_path / "out" / "prepared" / "train.csv") as f:
        n_rows = sum(1 for _ in f) - 1
    assert src._index["n_chunks"] == n_rows > 0
    assert key["ig"] == {"target": "speaker_logit", "steps": 2, "method": "gauss_legendre"}
    stamps = {p: p.stat().st_mtime_ns for p in cache.glob("shard_*.pt")}
    assert compute_ig.main(argv) == key
    assert stamps == {p: p.stat().st_mtime_ns for p in cache.glob("shard_*.pt")}
