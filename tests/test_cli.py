import json
import os

import pytest

from tf_mtvib import cli

SMALL = ["--num-train", "100", "--num-test", "50", "--batch-size", "50", "--latent-dim", "16", "--verbose", "0"]


@pytest.mark.slow
def test_train_writes_run_folder_evaluate_reads_it_and_resume_continues(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "--epochs", "1", "--out", str(run), "--lr", "1e-3", *SMALL]) == 0
    for name in ("config.json", "metrics.json", "model.keras", "checkpoint/model.keras", "checkpoint/state.json"):
        assert (run / name).is_file(), name
    assert any((run / "logs").rglob("events.out.tfevents*"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["test_accuracy"]) == {"top_left", "bottom_right", "joint"}
    assert metrics["test_examples"] == 50 and len(metrics["history"]["loss"]) == 1
    sample = json.loads((run / "config.json").read_text())["data_sources"]["sample"]
    assert sample["origin"] == "tf_mtvib package" and len(sample["sha256"]["multimnist_sample.npz"]) == 64
    assert metrics["data_sources"]["sample"] == sample
    assert "bottleneck_kl" in metrics["history"] and "top_left_sigma" in metrics["history"]
    out = capsys.readouterr().out
    assert "top_left" in out and "joint" in out

    assert cli.main(["evaluate", str(run), "--mc-samples", "4"]) == 0
    assert "4 latent samples" in capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    changed = json.loads(json.dumps(config))
    changed["data_sources"]["sample"]["sha256"]["multimnist_sample.npz"] = "0" * 64
    (run / "config.json").write_text(json.dumps(changed))
    assert cli.main(["evaluate", str(run)]) == 2
    assert "other files than those found now" in capsys.readouterr().err
    (run / "config.json").write_text(json.dumps(config))
    assert (run / "eval-mc4.json").is_file()
    base = tmp_path / "savedmodels" / "quick"
    for version in ("1", "2"):
        assert cli.main(["export", str(run), "--out", str(base), "--mc-samples", "4"]) == 0
        assert (base / version / "saved_model.pb").is_file()
    assert sorted(os.listdir(base)) == ["1", "2"]

    # A run interrupted after its first epoch: the checkpoint is there, the final model is not.
    os.remove(run / "model.keras")
    os.remove(run / "metrics.json")
    assert cli.main(["train", "--epochs", "2", "--out", str(run), "--lr", "1e-3", *SMALL]) == 0
    assert "Resuming" in capsys.readouterr().out
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert len(history["loss"]) == 2
    assert not [p for p in run.rglob(".tmp-*")]

    assert cli.main(["train", "--out", str(run), *SMALL]) == 2
    assert capsys.readouterr().err.startswith(f"tf-mtvib: {run} already holds a trained model")


@pytest.mark.slow
def test_changed_settings_do_not_resume_silently(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "--epochs", "1", "--model", "gs", "--out", str(run), *SMALL]) == 0
    os.remove(run / "model.keras")
    capsys.readouterr()
    assert cli.main(["train", "--epochs", "2", "--model", "uwl", "--out", str(run), *SMALL]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tf-mtvib: {run} holds an interrupted run with other settings (model)"), err


def test_given_data_dir_is_the_only_source_and_nothing_is_written(data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TF_MTVIB_DATA", data_dir)  # real files elsewhere must not be used silently
    run = tmp_path / "run"
    code = cli.main(
        ["train", "--dataset", "multimnist", "--data-dir", str(tmp_path / "nowhere"),
         "--cache-dir", str(tmp_path / "c"), "--out", str(run), *SMALL]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "only source tried" in err and "train-images-idx3-ubyte" in err
    assert not run.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--epochs", "0"], "--epochs must be positive"),
        (["train", "--beta", "-1"], "--beta must be >= 0"),
        (["train", "--dataset", "domains", "--model", "vmtl", "--temperature-floor", "1.5"],
         "--temperature-floor must lie in (0, 1]"),
        (["evaluate", "/nonexistent-run"], "/nonexistent-run is not a finished run"),
    ],
)
def test_bad_arguments_are_named(argv, message, capsys):
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.startswith(f"tf-mtvib: {message}")


def test_contradicting_precision_flags_are_named(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--mixed-precision", "--precision", "bfloat16"]) == 2
    assert "--mixed-precision means --precision float16" in capsys.readouterr().err


@pytest.mark.slow
def test_attack_robustness_and_adversarial_training_commands(tmp_path, capsys):
    run = tmp_path / "adv"
    args = ["train", "--epochs", "1", "--out", str(run), "--adversarial", "pgd", "--adv-steps", "2",
            "--adv-tasks", "top_left", *SMALL]
    assert cli.main(args) == 0
    assert json.loads((run / "config.json").read_text())["adversarial"] == "pgd"
    capsys.readouterr()
    attack = ["attack", str(run), "--attack", "pgd", "--eps", "0.1", "--nb-iter", "3", "--tasks", "top_left"]
    assert cli.main(attack) == 0
    assert "PGD eps=0.1 on top_left" in capsys.readouterr().out
    out = tmp_path / "sweep"
    assert cli.main(
        ["robustness", str(run), "--eps", "0", "0.1", "--task-sets", "top_left", "top_left,bottom_right",
         "--modes", "mean", "--num-test", "20", "--out", str(out)]
    ) == 0
    rows = json.loads((out / "robustness.json").read_text())
    assert len(rows) == 4 and {r["tasks"] for r in rows} == {"top_left", "top_left+bottom_right"}
    assert (out / "robustness.png").is_file() and (out / "robustness.csv").is_file()
    assert set(json.loads((out / "vulnerability.json").read_text())) == {"top_left", "top_left+bottom_right"}
    assert cli.main(["attack", str(run), "--tasks", "middle"]) == 2
    assert "middle" in capsys.readouterr().err


@pytest.mark.slow
def test_vmtl_on_domains_trains_evaluates_and_is_attacked(data_dir, tmp_path, capsys):
    run = tmp_path / "vmtl"
    # Only the flags a user must give: the VMTL family's defaults (epochs, learning rate, latent size,
    # the paper's KL annealing) have to train a useful model.
    argv = ["train", "--model", "vmtl", "--dataset", "domains", "--data-dir", data_dir, "--verbose", "0",
            "--out", str(run)]
    assert cli.main(argv) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["test_accuracy"]) == {"mnist", "rotated", "digits", "average"}
    assert metrics["test_accuracy"]["average"] > 0.75, metrics["test_accuracy"]  # chance 0.1; benchmark ~0.9
    assert len(metrics["history"]["kl_weight"]) == 50 and "temperature" in metrics["history"]
    assert 0 < metrics["history"]["kl_weight"][-1] < 1e-3  # 1e-6 per step
    assert cli.main(["evaluate", str(run)]) == 0
    assert json.loads((run / "eval.json").read_text())["test_accuracy"] == metrics["test_accuracy"]
    assert cli.main(["robustness", str(run), "--eps", "0", "0.2"]) == 0
    rows = json.loads((run / "robustness" / "robustness.json").read_text())
    assert [r["eps"] for r in rows] == [0.0, 0.2]
    assert rows[0]["accuracy"]["average"] == pytest.approx(metrics["test_accuracy"]["average"], abs=1e-6)
    assert rows[1]["accuracy"]["average"] <= rows[0]["accuracy"]["average"]
    capsys.readouterr()
    assert cli.main(["robustness", str(run), "--eps", "0", "--num-test", "20", "--out", str(tmp_path / "few")]) == 0
    few = json.loads((tmp_path / "few" / "robustness.json").read_text())
    assert set(few[0]["accuracy"]) == {"mnist", "rotated", "digits", "average"}  # 20 of each task
    # Flags that would do nothing on a domains run are refused, naming the flag.
    for refused, name in ((["robustness", str(run), "--modes", "sampled"], "--modes"),
                          (["robustness", str(run), "--task-sets", "mnist"], "--task-sets"),
                          (["evaluate", str(run), "--mc-samples", "4"], "--mc-samples")):
        assert cli.main(refused) == 2
        assert capsys.readouterr().err.startswith(f"tf-mtvib: {name}")
    # Interrupted after its last checkpoint: the same command with more epochs continues the schedules.
    os.remove(run / "model.keras")
    os.remove(run / "metrics.json")
    assert cli.main([*argv, "--epochs", "51"]) == 0
    assert "Resuming" in capsys.readouterr().out
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert len(history["kl_weight"]) == 51 and history["kl_weight"][50] > history["kl_weight"][49]
    assert history["temperature"][50] < history["temperature"][49] or history["temperature"][50] == 0.5
    assert cli.main(["train", "--model", "vmtl", "--dataset", "sample", "--out", str(tmp_path / "x")]) == 2
    assert "needs --dataset domains" in capsys.readouterr().err


def test_each_family_fills_in_its_own_defaults_for_flags_left_out():
    from tf_mtvib.cli import families

    expected = {
        "sample": {"model": "mtvib", "epochs": 1, "latent_dim": 256, "lr": 1e-4, "beta": 1e-3, "batch_size": 200},
        "domains": {"model": "vmtl", "epochs": 50, "latent_dim": 128, "lr": 1e-3},
    }
    for dataset, defaults in expected.items():
        args = cli.build_parser().parse_args(["train", "--dataset", dataset])
        families.for_dataset(dataset).fill_defaults(args)
        assert {k: getattr(args, k) for k in defaults} == defaults
    given = cli.build_parser().parse_args(["train", "--dataset", "domains", "--model", "vstl", "--epochs", "3"])
    families.for_dataset("domains").fill_defaults(given)
    assert (given.model, given.epochs) == ("vstl", 3)
