"""The launcher's command line: fast --help without TensorFlow, and one sentence per bad input.

Every bad input exits 2 with one `error: ...` line on stderr, no traceback, and creates nothing:
not even sweep.json. Also: sweep.json recording (idempotent union, conflicts, concurrent
writers) and the refine proposal.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
import yaml

from common import layout, storage
from common.cli import UserError, run_main
from launcher import record, refine
from launcher.cli import main
from launcher.spec import SweepSpec
from tests.trainer_testdata import REPO, write_dataset


def launcher(*argv: str) -> tuple[int, str, str]:
    """Run the launcher in this process: (exit code, stdout, stderr)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = run_main(main, list(argv))
        except SystemExit as exc:  # argparse's one-line errors
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("launcher-data") / "colours")
    write_dataset(path, train_per_class=2, val_per_class=1, train_shards=1, size=32)
    return path


def test_help_is_fast_and_never_imports_tensorflow() -> None:
    probe = (
        "import sys, time\n"
        "from launcher.cli import main\n"
        "for argv in ([], ['sweep'], ['status'], ['refine'], ['delete'], ['preprocess']):\n"
        "    try:\n"
        "        main([*argv, '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'kubernetes', 'google.cloud.storage')\n"
        "         if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert "HEAVY []" in done.stdout, done.stdout + done.stderr
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "launcher", "--help"], capture_output=True, text=True, cwd=REPO
    )
    elapsed = time.perf_counter() - started
    assert done.returncode == 0 and "sweep" in done.stdout
    assert elapsed < 3.0, f"python -m launcher --help took {elapsed:.2f} s"


BAD_SWEEPS = [
    (["--lrs", "0.1,abc"], "'abc' is not a number"),
    (["--lrs", "0.1,0.01,0.1"], "given twice"),
    (["--lrs", "0.01,1e-2"], "given twice"),
    (["--lrs", "0.1,0"], "above 0"),
    (["--lrs", "-0.1"], "above 0"),
    (["--lrs", "nan"], "finite"),
    (["--lrs", "0.1,,0.2"], "empty item"),
    (["--lrs", "0.1", "--name", "Flowers_1"], "cannot be a Kubernetes name"),
    (["--lrs", "0.1", "--name", "a" * 41], "at most 40"),
    (["--lrs", "0.1", "--stepz", "5"], "unrecognized arguments: --stepz"),
    (["--lrs", "0.1", "--steps", "0"], "--steps"),
    (["--lrs", "0.1", "--steps", "5", "--epochs", "2"], "--steps or --epochs"),
    (["--lrs", "0.1", "--weights", "s3://b/w.h5"], "s3:// is not supported"),
    (["--lrs", "0.1", "--backend", "kubernetes"], "pods cannot see"),
    (["--lrs", "0.1", "--workers", "0"], "from 1 to 256"),
    (["--lrs", "0.1", "--workers", "257"], "from 1 to 256"),
    (["--lrs", "0.1", "--workers", "two"], "expected a whole number"),
    (["--lrs", "0.1", "--worker-hosts", "a:1"], "unrecognized arguments: --worker-hosts"),
    # The trainer's own bounds (common.trainer_args), refused before sweep.json is written.
    (["--lrs", "0.1", "--image-size", "100000"], "--image-size: expected a whole number from 75"),
    (["--lrs", "0.1", "--batch-size", "100000"], "--batch-size: expected a whole number from 1"),
    (["--lrs", "0.1", "--seed", "-1"], "--seed: expected a whole number from 0 to 4294967295"),
]


@pytest.mark.parametrize(("extra", "message"), BAD_SWEEPS)
def test_bad_sweep_input_is_one_sentence_and_creates_nothing(
    tmp_path,
    dataset,
    extra,
    message,  # noqa: ANN001
) -> None:
    out = tmp_path / "sweeps" / "s1"
    code, stdout, stderr = launcher("sweep", "--data", dataset, "--out", str(out), *extra)
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert message in lines[0]
    assert not out.exists()


def test_data_without_manifest_creates_nothing(tmp_path) -> None:  # noqa: ANN001
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "sweeps" / "s1"
    code, _, stderr = launcher("sweep", "--data", str(empty), "--out", str(out), "--lrs", "0.1")
    assert code == 2
    assert stderr.startswith("error: no dataset.json in") and stderr.count("\n") == 1
    assert not out.exists()


def test_missing_and_bad_settings(tmp_path, dataset) -> None:  # noqa: ANN001
    out = str(tmp_path / "s2")
    code, _, stderr = launcher("sweep", "--data", dataset, "--out", out)
    assert (code, stderr) == (2, "error: --lrs is required (or `lrs` in a values file).\n")
    values = tmp_path / "v.yaml"
    values.write_text(yaml.safe_dump({"trainerArgs": ["--lr", "0.5"]}))
    code, _, stderr = launcher(
        "sweep", "--data", dataset, "--out", out, "--lrs", "1", "-f", str(values)
    )
    assert code == 2 and "trainerArgs" in stderr and "--lr" in stderr
    values.write_text("trainer: [unclosed\n")
    code, _, stderr = launcher(
        "sweep", "--data", dataset, "--out", out, "--lrs", "1", "-f", str(values)
    )
    assert code == 2 and "is not valid YAML" in stderr
    code, _, stderr = launcher(
        "sweep", "--backend", "kubernetes", "--dry-run", "--data", "gs://bucket-x/d",
        "--out", "gs://bucket-x/o", "--lrs", "1", "-f", str(tmp_path / "missing.yaml"),
    )  # fmt: skip
    assert code == 2 and "does not exist" in stderr
    values.write_text(yaml.safe_dump({"trainer": {"gpus": -1}}))
    code, _, stderr = launcher(
        "sweep", "--backend", "kubernetes", "--dry-run", "--data", "gs://bucket-x/d",
        "--out", "gs://bucket-x/o", "--lrs", "1", "-f", str(values),
    )  # fmt: skip
    assert code == 2 and stderr.startswith(f"error: values file {values}: trainer.gpus:"), stderr
    assert not os.path.exists(out)


def test_values_file_supplies_the_sweep(tmp_path, capsys) -> None:  # noqa: ANN001
    values = tmp_path / "v.yaml"
    values.write_text(
        yaml.safe_dump(
            {"data": "gs://bucket-x/d", "out": "gs://bucket-x/sweeps/My_Run", "lrs": [0.1, 0.001]}
        )
    )
    code, stdout, stderr = launcher(
        "sweep", "--backend", "kubernetes", "--dry-run", "-f", str(values)
    )
    assert code == 0, stderr
    jobs = [d["metadata"]["name"] for d in yaml.safe_load_all(stdout) if d and d["kind"] == "Job"]
    assert jobs == ["my-run-lr-0-1", "my-run-lr-0-001"]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ({"earlystop": {"rule": "asha"}}, "unknown key earlystop"),
        ({"earlyStop": {"rul": "asha"}}, "unknown key earlyStop.rul"),
        ({"trainer": {"gpus": "two"}}, "trainer.gpus: 'two' is not of type 'integer'"),
    ],
)
@pytest.mark.parametrize("backend", ["local", "kubernetes"])
def test_a_values_file_is_checked_against_the_charts_schema_on_every_backend(
    tmp_path,
    dataset,
    content,
    says,
    backend,  # noqa: ANN001
) -> None:
    """The chart refuses a mistyped key; so does the launcher, even where no chart renders."""
    values = tmp_path / "v.yaml"
    values.write_text(yaml.safe_dump(content))
    out = tmp_path / "s"
    where = ["--data", dataset, "--out", str(out)]
    if backend == "kubernetes":
        where = ["--data", "gs://bucket-x/d", "--out", "gs://bucket-x/o", "--dry-run"]
    code, _, stderr = launcher(
        "sweep", "--backend", backend, *where, "--lrs", "0.1", "-f", str(values)
    )
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert stderr.startswith(f"error: values file {values}: ") and says in stderr
    assert not out.exists()


def test_a_partial_values_file_with_local_paths_and_nulls_is_fine(tmp_path, dataset) -> None:  # noqa: ANN001
    """A file alone need not hold the required keys, may null a key and, for a local sweep,
    give local paths: only unknown keys and wrong types are refused."""
    values = tmp_path / "v.yaml"
    content = {"data": dataset, "image": {"cpu": {"tag": "x"}}, "trainer": {"gpus": None}}
    values.write_text(yaml.safe_dump(content))
    out = tmp_path / "s"
    code, _, stderr = launcher(
        "sweep", "--out", str(out), "--lrs", "0.1", "--dry-run", "-f", str(values)
    )
    assert code == 0, stderr


def test_local_dry_run_prints_commands_and_writes_nothing(tmp_path, dataset) -> None:  # noqa: ANN001
    out = tmp_path / "s3"
    code, stdout, _ = launcher(
        "sweep", "--data", dataset, "--out", str(out), "--lrs", "0.1,0.01", "--dry-run",
        "--steps", "3",
    )  # fmt: skip
    assert code == 0
    lines = stdout.splitlines()
    assert len(lines) == 3
    assert f"-m trainer --data {dataset} --run-dir {out}/runs/lr-0.1 --lr 0.1 --steps 3" in lines[0]
    assert "-m evaluator --sweep-dir" in lines[2]
    assert not out.exists()


def test_eval_interval_slows_the_evaluator_on_either_backend(tmp_path, dataset) -> None:  # noqa: ANN001
    out = str(tmp_path / "s5")
    code, stdout, stderr = launcher(
        "sweep", "--data", dataset, "--out", out, "--lrs", "0.1", "--dry-run", "--eval-interval",
        "120",
    )  # fmt: skip
    assert code == 0, stderr
    assert stdout.splitlines()[-1].endswith(f"-m evaluator --sweep-dir {out} --interval 120")
    code, stdout, _ = launcher(
        "sweep", "--backend", "kubernetes", "--dry-run", "--data", "gs://bucket-x/d", "--out",
        "gs://bucket-x/o", "--lrs", "0.1", "--eval-interval", "90",
    )  # fmt: skip
    assert code == 0
    assert "- --interval\n        - '90'\n" in stdout  # the evaluator Deployment's args
    code, _, stderr = launcher("sweep", "--data", dataset, "--out", out, "--lrs", "0.1",
                               "--eval-interval", "0")  # fmt: skip
    assert code == 2 and "--eval-interval: expected a number greater than 0" in stderr


def test_local_dry_run_with_several_workers(tmp_path, dataset) -> None:  # noqa: ANN001
    """--workers 2, local: two trainer processes per run on 127.0.0.1, each run on its own
    free ports, each worker with its index; the commands parse with the trainer's parser."""
    config = pytest.importorskip("trainer.config")
    out = tmp_path / "s4"
    code, stdout, stderr = launcher(
        "sweep", "--data", dataset, "--out", str(out), "--lrs", "0.1,0.01", "--dry-run",
        "--workers", "2", "--steps", "3",
    )  # fmt: skip
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert len(lines) == 5 and "-m evaluator" in lines[4]
    hosts = []
    for i, line in enumerate(lines[:4]):
        argv = line.split()
        assert argv[1:3] == ["-m", "trainer"]
        parsed, _ = config.parse_args(argv[3:], {})
        assert parsed.run_dir == f"{out}/runs/{['lr-0.1', 'lr-0.01'][i // 2]}"
        assert (parsed.workers, parsed.worker_index, parsed.steps) == (2, i % 2, 3)
        addresses = parsed.worker_addresses()
        assert all(a.startswith("127.0.0.1:") for a in addresses)
        hosts.append(tuple(addresses))
    assert hosts[0] == hosts[1] and hosts[2] == hosts[3]  # one run's workers agree
    assert len({*hosts[0], *hosts[2]}) == 4  # each run has ports of its own
    assert not out.exists()


def test_worker_commands_logs_and_ports() -> None:
    from launcher import local

    one = SweepSpec("s", "/d", "/o", (0.1,), ("--steps", "3"))
    assert local.trainer_commands(one, 0.1) == [local.trainer_command(one, 0.1)]
    two = SweepSpec("s", "/d", "/o", (0.1,), ("--steps", "3"), workers=2)
    commands = local.trainer_commands(two, 0.1, ports=[5001, 5002])
    assert [c[-6:] for c in commands] == [
        [
            "--workers",
            "2",
            "--worker-hosts",
            "127.0.0.1:5001,127.0.0.1:5002",
            "--worker-index",
            str(i),
        ]
        for i in range(2)
    ]
    assert commands[0][:-6] == local.trainer_command(two, 0.1)
    assert local.worker_log("/l", "lr-0.1", 0) == "/l/lr-0.1.log"  # the chief keeps the name
    assert local.worker_log("/l", "lr-0.1", 1) == "/l/lr-0.1.worker-1.log"
    ports = local.free_ports(8)
    assert len(set(ports)) == 8 and all(0 < p < 65536 for p in ports)
    assert two.to_sweep().to_dict() == {
        **one.to_sweep().to_dict(),
        "created": two.to_sweep().created,
    }


def test_bad_worker_settings_are_one_sentence(tmp_path, dataset) -> None:  # noqa: ANN001
    out = str(tmp_path / "s5")
    values = tmp_path / "v.yaml"
    for content, message in (
        # The chart's schema, checked on the values file itself (its name in the sentence).
        ({"trainer": {"workers": 0}}, "v.yaml: trainer.workers: 0 is less than the minimum of 1"),
        ({"trainer": {"workers": "2"}}, "v.yaml: trainer.workers: '2' is not of type 'integer'"),
        ({"trainerArgs": ["--workers", "2"]}, "trainerArgs may not contain --workers"),
        ({"trainerArgs": ["--worker-hosts", "a:1"]}, "trainerArgs may not contain --worker-hosts"),
    ):
        values.write_text(yaml.safe_dump(content))
        code, _, stderr = launcher(
            "sweep", "--data", dataset, "--out", out, "--lrs", "1", "-f", str(values)
        )
        assert code == 2 and stderr.count("\n") == 1 and message in stderr, stderr
    assert not os.path.exists(out)


# ---------------------------------------------------------------- sweep.json


def spec(out: str, lrs: tuple[float, ...], data: str = "gs://b/d", args: tuple = ()) -> SweepSpec:
    return SweepSpec("s", data, out, lrs, args)


def test_record_is_an_idempotent_union(bucket_root: str) -> None:
    out = storage.join(bucket_root, "sweep")
    first = record.record(spec(out, (0.1, 0.01), args=("--steps", "5", "--xla")))
    assert first.run_names() == ["lr-0.1", "lr-0.01"]
    again = record.record(spec(out, (0.01, 0.1), args=("--xla", "--steps", "5")))
    assert again.to_dict() == first.to_dict()  # same content: nothing written
    more = record.record(spec(out, (0.001, 0.1), args=("--steps", "5", "--xla")))
    assert more.run_names() == ["lr-0.1", "lr-0.01", "lr-0.001"]
    assert layout.SweepDir(out).load().run_names() == more.run_names()
    with pytest.raises(UserError, match="dataset 'gs://b/d', not 'gs://b/other'"):
        record.record(spec(out, (0.1,), data="gs://b/other", args=("--steps", "5", "--xla")))
    with pytest.raises(UserError, match="trainer flags"):
        record.record(spec(out, (0.1,), args=("--steps", "6", "--xla")))


def test_concurrent_records_lose_no_candidate(tmp_path) -> None:  # noqa: ANN001
    out = str(tmp_path / "sweep")
    lrs = [10.0**-k for k in range(1, 9)]
    threads = [threading.Thread(target=record.record, args=(spec(out, (lr,)),)) for lr in lrs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = set(layout.SweepDir(out).load().run_names())
    assert names == {layout.run_name_for_lr(lr) for lr in lrs}


def test_record_sweep_command(tmp_path) -> None:  # noqa: ANN001
    out = str(tmp_path / "sweep")
    argv = ["record-sweep", "--out", out, "--data", "gs://b/d", "--name", "s", "--lrs", "0.5"]
    assert launcher(*argv, "--steps", "4")[0] == 0
    assert launcher(*argv, "--steps", "4")[0] == 0
    code, _, stderr = launcher(*argv, "--steps", "9")
    assert code == 2 and "already records a sweep with trainer flags --steps 4" in stderr


def test_refine_proposal() -> None:
    assert refine.propose(0.01, {"lr-0.1", "lr-0.01", "lr-0.001"}) == [0.05, 0.02, 0.005, 0.002]
    assert refine.propose(0.1, {"lr-0.1", "lr-0.5", "lr-0.2"}) == [0.05, 0.02]
    assert refine.propose(3e-05, set()) == [0.00015, 6e-05, 3e-05, 1.5e-05, 6e-06]


def test_refine_never_proposes_an_lr_a_trainer_refuses() -> None:
    """5 * 1e308 is inf and 0.2 * 5e-324 is 0: neither is proposed."""
    assert refine.propose(1e308, set()) == [1e308, 5e307, 2e307]
    for best in (1e308, 5e-324, 1e-323):
        proposed = refine.propose(best, set())
        assert proposed and all(0 < lr < float("inf") for lr in proposed), (best, proposed)


@pytest.mark.parametrize("lr", [float("inf"), 0, -0.1, "0.1", True])
def test_refine_refuses_a_best_run_whose_lr_is_not_finite_and_positive(tmp_path, lr) -> None:  # noqa: ANN001
    sweep_dir = layout.SweepDir.at(str(tmp_path / "sweep"))
    sweep_dir.save(layout.Sweep("s", "/d", [layout.Candidate("lr-0.1", 0.1)]))
    row = {"run": "other", "rank": 1, "best_top1": 0.9, "hparams": {"lr": lr}}
    storage.write_json(sweep_dir.leaderboard_uri, {"runs": [row]})
    code, _, stderr = launcher("refine", "--sweep", sweep_dir.uri)
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert "not a finite number above 0" in stderr
