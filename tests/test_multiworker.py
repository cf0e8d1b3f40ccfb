"""Two `tf-mtvib train --strategy multiworker` processes on loopback ports."""

import json
import os
import re
import socket
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(argv, tmp_path, count=2, env=None):
    """Starts `count` CLI processes forming one TF_CONFIG cluster on 127.0.0.1."""
    ports = free_ports(count)
    temporary = tmp_path / "tmp"
    temporary.mkdir(exist_ok=True)
    processes = []
    for index in range(count):
        tf_config = {
            "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}
        }
        worker_env = {
            **os.environ, **(env or {}), "PYTHONPATH": REPO, "TF_CONFIG": json.dumps(tf_config),
            "TMPDIR": str(temporary), "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "tf_mtvib", *argv], env=worker_env, cwd=tmp_path,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    return processes


def wait_all(processes, timeout):
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=timeout))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return outputs


@pytest.mark.slow
def test_two_workers_train_in_step_and_only_the_chief_writes(tmp_path):
    run = tmp_path / "run"
    argv = ["train", "--strategy", "multiworker", "--out", str(run), "--num-train", "100", "--num-test", "50",
            "--batch-size", "50", "--latent-dim", "16", "--lr", "1e-3", "--verbose", "0"]
    processes = start_workers(argv, tmp_path)
    outputs = wait_all(processes, timeout=150)
    for process, (_out, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
    for name in ("config.json", "metrics.json", "model.keras", "checkpoint/model.keras", "checkpoint/state.json"):
        assert (run / name).is_file(), name
    assert len(list((run / "logs" / "train").iterdir())) == 1  # one writer: the chief
    assert json.loads((run / "metrics.json").read_text())["train_examples"] == 100
    fingerprints = [re.search(r"weights fingerprint (\w+)", out).group(1) for out, _ in outputs]
    assert fingerprints[0] == fingerprints[1]
    assert "(chief)" in outputs[0][0] and "not the chief" in outputs[1][0]
    assert os.listdir(tmp_path / "tmp") == []  # the other worker removed its temporary folder

    # A worker died after epoch 1: the job is started again with the same
    # command, and every worker resumes from the chief's checkpoint.
    os.remove(run / "model.keras")
    os.remove(run / "metrics.json")
    processes = start_workers([*argv, "--epochs", "2"], tmp_path)
    outputs = wait_all(processes, timeout=150)
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
        assert "Resuming" in out and "after epoch 1" in out, out
    assert len(json.loads((run / "metrics.json").read_text())["history"]["loss"]) == 2
    resumed = [re.search(r"weights fingerprint (\w+)", out).group(1) for out, _ in outputs]
    assert resumed[0] == resumed[1] != fingerprints[0]


@pytest.mark.slow
def test_two_workers_train_a_vmtl_run_and_only_the_chief_writes(tmp_path, data_dir):
    run = tmp_path / "vmtl"
    argv = ["train", "--strategy", "multiworker", "--model", "vmtl", "--dataset", "domains", "--data-dir", data_dir,
            "--examples-per-task", "100", "--train-fraction", "0.5", "--epochs", "1", "--latent-dim", "8",
            "--out", str(run), "--verbose", "0"]
    processes = start_workers(argv, tmp_path)
    outputs = wait_all(processes, timeout=150)
    for process, (_out, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
    for name in ("config.json", "metrics.json", "model.keras", "checkpoint/state.json"):
        assert (run / name).is_file(), name
    assert set(json.loads((run / "metrics.json").read_text())["test_accuracy"]) >= {"mnist", "rotated", "digits"}
    fingerprints = [re.search(r"weights fingerprint (\w+)", out).group(1) for out, _ in outputs]
    assert fingerprints[0] == fingerprints[1]
    assert os.listdir(tmp_path / "tmp") == []


@pytest.mark.slow
def test_distributed_search_chief_serves_the_oracle_and_a_worker_runs_the_trials(tmp_path):
    search = tmp_path / "search"
    port = free_ports(1)[0]
    argv = [sys.executable, "-m", "tf_mtvib", "tune", "--hypermodel", "gs", "--tuner", "grid", "--max-trials", "2",
            "--epochs", "1", "--num-train", "100", "--num-test", "50", "--batch-size", "50", "--out", str(search)]
    processes = []
    for tuner_id in ("chief", "tuner0"):
        env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2", "KERASTUNER_TUNER_ID": tuner_id,
               "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port)}
        processes.append(subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
    outputs = wait_all(processes, timeout=150)
    for process, (_out, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
    summary = json.loads((search / "tuning.json").read_text())
    assert len(summary["best"]) == 2 and all(t["score"] is not None for t in summary["best"])
    assert {t["hyperparameters"]["weight_top_left"] for t in summary["best"]} == {0.1, 0.3}  # the grid's first two
    trials = [json.loads(p.read_text()) for p in (search / "search").glob("trial_*/trial.json")]
    assert len(trials) == 2 and all(t["status"] == "COMPLETED" for t in trials)
    assert (search / "model.keras").is_file() and (search / "savedmodel" / "1" / "saved_model.pb").is_file()
    assert "no trials left" in outputs[1][0] and "Best trial" in outputs[0][0]
