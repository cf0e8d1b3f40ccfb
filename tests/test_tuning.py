import json

import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

from tf_mtvib import cli, tuning


@pytest.mark.slow
def test_three_trial_mtvib_search_resumes_and_exports_the_best_model(tmp_path, capsys):
    out = tmp_path / "search"
    argv = ["tune", "--max-trials", "3", "--epochs", "1", "--num-train", "300", "--num-test", "100",
            "--batch-size", "50", "--out", str(out)]
    assert cli.main(argv) == 0
    summary = json.loads((out / "tuning.json").read_text())
    trials = summary["best"]
    assert len(trials) == 3
    scores = [t["score"] for t in trials]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    for t in trials:
        hp = t["hyperparameters"]
        assert 1e-5 <= hp["beta"] <= 1e-1 and 1e-5 <= hp["learning_rate"] <= 1e-3
        assert hp["latent_dim"] in (64, 128, 256) and hp["weighting"] in ("uncertainty", "fixed")
    assert len({json.dumps(t["hyperparameters"], sort_keys=True) for t in trials}) == 3
    assert "Best trial" in capsys.readouterr().out

    # The exported best model predicts what the saved Keras best model predicts.
    import keras

    from tf_mtvib.data.pipeline import load_task_data

    best = keras.models.load_model(out / "model.keras")
    x = load_task_data("sample", num_train=1, num_test=20).x_test
    loaded = tf.saved_model.load(str(out / "savedmodel" / "1"))
    served = loaded.signatures["serving_default"](images=tf.constant(x))
    expected = tf.nn.softmax(best(x, training=False)["top_left"]).numpy()
    np.testing.assert_allclose(served["top_left_probabilities"].numpy(), expected, atol=1e-5)

    # Same command again: the finished search is reloaded, no trial runs twice.
    assert cli.main(argv) == 0
    again = json.loads((out / "tuning.json").read_text())["best"]
    assert sorted(again, key=lambda t: t["trial_id"]) == sorted(trials, key=lambda t: t["trial_id"])
    assert len(list((out / "search").glob("trial_*"))) == 3


@pytest.mark.slow
def test_gs_grid_search_visits_every_fixed_weight_pair_with_a_robust_objective(sample_data, tmp_path):
    x, y = sample_data.x_train[:200], {k: v[:200] for k, v in sample_data.y_train.items()}
    xv, yv = sample_data.x_test[:100], {k: v[:100] for k, v in sample_data.y_test.items()}
    hypermodel = tuning.GSHyperModel(sample_data.tasks, (36, 36, 1), objective="robust", robust_eps=0.1,
                                     grid=(0.2, 0.5, 0.8), learning_rate=1e-3)
    tuner = tuning.make_tuner(hypermodel, "grid", max_trials=10, directory=str(tmp_path), project_name="gs")
    tuner.search(x, y, validation_data=(xv, yv), epochs=1, batch_size=50, verbose=0)
    trials = list(tuner.oracle.trials.values())
    assert sorted(t.hyperparameters.get("weight_top_left") for t in trials) == [0.2, 0.5, 0.8]
    for trial in trials:
        weights = tuner.hypermodel.build(trial.hyperparameters).weighting.task_weights
        w = trial.hyperparameters.get("weight_top_left")
        np.testing.assert_allclose(weights, [w, 1.0 - w])
        robust = trial.metrics.get_last_value("val_robust_joint_accuracy")
        clean = trial.metrics.get_last_value("val_joint_accuracy")
        assert trial.score == robust and 0.0 <= robust <= clean + 1e-6
    np.testing.assert_allclose(hypermodel.all_weights(), [[0.2, 0.8], [0.5, 0.5], [0.8, 0.2]])


def test_bad_search_settings_are_named(sample_data):
    with pytest.raises(ValueError, match="objective"):
        tuning.MTVIBHyperModel(sample_data.tasks, (36, 36, 1), objective="loss")
    with pytest.raises(ValueError, match="grid"):
        tuning.GSHyperModel(sample_data.tasks, (36, 36, 1), grid=(0.0, 0.5))
    with pytest.raises(ValueError, match="tuner"):
        tuning.make_tuner(tuning.GSHyperModel(sample_data.tasks, (36, 36, 1)), "annealing")
    hypermodel = tuning.GSHyperModel(sample_data.tasks, (36, 36, 1), objective="robust")
    model = hypermodel.build(keras_tuner.HyperParameters())
    with pytest.raises(ValueError, match="validation_data"):
        hypermodel.fit(None, model, sample_data.x_train[:10], epochs=1)


def test_search_role_reads_keras_tuner_variables_and_names_a_missing_one(monkeypatch):
    for name in ("KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID"):
        monkeypatch.delenv(name, raising=False)
    assert tuning.search_role() is None
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner0")
    with pytest.raises(ValueError, match="KERASTUNER_ORACLE_PORT"):
        tuning.search_role()
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "8000")
    assert tuning.search_role() == "worker"
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    assert tuning.search_role() == "chief"
