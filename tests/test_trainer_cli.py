"""The trainer's command line: --help, and every bad input is one sentence and exit code 2,
found before any model is built (these tests never start TensorFlow's training)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.trainer_testdata import REPO, error_lines, one_error, write_dataset
from trainer.__main__ import main


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = str(tmp_path_factory.mktemp("cli") / "data")
    write_dataset(uri, train_per_class=2, val_per_class=1)
    return uri


def _fails(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    return one_error(capsys, main, argv)


def test_help_lists_the_contract_flags(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--data", "--run-dir", "--lr", "--batch-size", "--steps", "--epochs", "--image-size",
        "--fine-tune", "--weights", "--checkpoint-every", "--metrics-port", "--force",
    ):  # fmt: skip
        assert flag in out


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--lr", "-1"], "argument --lr: expected a number greater than 0, got '-1'"),
        (["--lr", "fast"], "argument --lr: expected a number, got 'fast'"),
        (["--lr", "nan"], "argument --lr: expected a number greater than 0, got 'nan'"),
        (["--batch-size", "0"], "argument --batch-size: expected a whole number from 1 to 8192"),
        (["--batch-size", "100000000"], "expected a whole number from 1 to 8192 (a global batch"),
        (["--steps", "10", "--epochs", "2"], "--epochs: not allowed with argument --steps"),
        (["--fine-tune", "some"], "argument --fine-tune: invalid choice: 'some'"),
        (["--image-size", "64"], "argument --image-size: expected a whole number from 75 to 1024"),
        (["--image-size", "100000"], "from 75 to 1024 (the network needs 75; more only costs"),
        (["--metrics-port", "70000"], "expected a whole number from 0 to 65535 (a TCP port"),
        (["--label-smoothing", "1"], "argument --label-smoothing: expected a number in [0, 1)"),
        (["--exit-code-on-stop", "300"], "expected a whole number from 0 to 255"),
        (["--seed", "-1"], "argument --seed: expected a whole number from 0 to 4294967295"),
        (["--seed", str(2**32)], "from 0 to 4294967295 (numpy's seed range)"),
        (["--run-dir", "s3://bucket/run"], "s3:// is not supported; use a local path or gs://"),
        (["--fine-tune", "head", "--head-warmup-steps", "5"], "only applies with --fine-tune all"),
        (["--weights", "backbone.bin"], "expected imagenet, none, or a Keras weights file"),
        (["--weights", "/nonexistent/backbone.h5"], "/nonexistent/backbone.h5 does not exist"),
    ],
)  # fmt: skip
def test_bad_flag_values(
    capsys: pytest.CaptureFixture,
    dataset: str,
    tmp_path,
    flags: list[str],
    says: str,  # noqa: ANN001
) -> None:
    line = _fails(capsys, ["--data", dataset, "--run-dir", str(tmp_path / "run"), *flags])
    assert says in line
    assert not os.path.exists(tmp_path / "run")  # nothing written for a rejected start


def test_missing_required_flag(capsys: pytest.CaptureFixture, dataset: str) -> None:
    assert "--run-dir" in _fails(capsys, ["--data", dataset])


def test_missing_dataset(capsys: pytest.CaptureFixture, tmp_path) -> None:  # noqa: ANN001
    line = _fails(capsys, ["--data", str(tmp_path / "nothing"), "--run-dir", str(tmp_path / "r")])
    assert f"no dataset.json in {tmp_path / 'nothing'}" in line


def test_data_that_is_a_file(capsys: pytest.CaptureFixture, tmp_path) -> None:  # noqa: ANN001
    (tmp_path / "train-00000-of-00001").write_bytes(b"shard")
    data = str(tmp_path / "train-00000-of-00001")
    line = _fails(capsys, ["--data", data, "--run-dir", str(tmp_path / "r")])
    assert f"no dataset.json in {data}" in line


def test_run_dir_that_cannot_be_written(
    capsys: pytest.CaptureFixture, dataset: str, tmp_path
) -> None:  # noqa: ANN001, E501
    (tmp_path / "a-file").write_text("")
    line = _fails(capsys, ["--data", dataset, "--run-dir", str(tmp_path / "a-file" / "run")])
    assert "cannot write under" in line


def test_metrics_port_in_use(capsys: pytest.CaptureFixture, dataset: str, tmp_path) -> None:  # noqa: ANN001
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = ["--data", dataset, "--run-dir", str(tmp_path / "run"), "--weights", "none"]
        line = _fails(capsys, [*argv, "--metrics-port", str(port)])
    assert f"cannot serve metrics on port {port}" in line


def test_the_real_process_exits_2_without_a_traceback(tmp_path) -> None:  # noqa: ANN001
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            "--data",
            str(tmp_path),
            "--run-dir",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert len(error_lines(result.stderr)) == 1
    assert "Traceback" not in result.stderr


def test_dataset_missing_a_shard(capsys: pytest.CaptureFixture, tmp_path) -> None:  # noqa: ANN001
    data = str(tmp_path / "data")
    write_dataset(data, train_per_class=2, val_per_class=1, train_shards=2)
    os.remove(os.path.join(data, "train-00001-of-00002"))
    line = _fails(capsys, ["--data", data, "--run-dir", str(tmp_path / "run")])
    assert "lacks 1 of its 2 training shards (first: train-00001-of-00002)" in line


def test_dataset_with_a_shard_cut_short(capsys: pytest.CaptureFixture, tmp_path) -> None:  # noqa: ANN001
    data = str(tmp_path / "data")
    write_dataset(data, train_per_class=2, val_per_class=1, train_shards=2)
    shard = os.path.join(data, "train-00001-of-00002")
    size = os.path.getsize(shard)
    with open(shard, "r+b") as f:
        f.truncate(size - 7)  # a copy that stopped early
    line = _fails(capsys, ["--data", data, "--run-dir", str(tmp_path / "run")])
    assert f"the shard train-00001-of-00002 of {data} is {size - 7} bytes but dataset.json " in line
    assert f"says {size}: it is truncated or was replaced" in line
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize(
    ("flags", "lr"),
    [
        ([], 1e-4),  # fine-tune all from ImageNet: the second stage's low lr
        (["--weights", "gs://b/weights.h5"], 1e-4),  # any pretrained file
        (["--fine-tune", "head"], 1e-3),
        (["--weights", "none"], 1e-3),  # from random weights every layer has to learn
        (["--lr", "0.01"], 0.01),  # given: always as given
    ],
)
def test_the_default_lr_depends_on_what_is_trained(flags: list[str], lr: float) -> None:
    from trainer.config import parse_args

    config, given = parse_args(["--data", "d", "--run-dir", "r", *flags], env={})
    assert config.lr == lr
    assert ("lr" in given) == ("--lr" in flags)  # a resumed run keeps its saved lr otherwise
