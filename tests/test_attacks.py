import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_mtvib as tm
from tf_mtvib import attacks
from tf_mtvib.attacks import gradients as g
from tf_mtvib.attacks import loop


@pytest.fixture(scope="module")
def trained(trained_mtvib):
    return trained_mtvib


ATTACK_CALLS = {
    "fgsm": lambda m, x, y, eps, norm: attacks.fast_gradient_method(
        m, x, y=y, eps=eps, norm=norm, clip_min=0.0, clip_max=1.0
    ),
    "pgd": lambda m, x, y, eps, norm: attacks.projected_gradient_descent(
        m, x, y=y, eps=eps, eps_iter=eps / 4, nb_iter=5, norm=norm, clip_min=0.0, clip_max=1.0, seed=1
    ),
    "mim": lambda m, x, y, eps, norm: attacks.momentum_iterative_method(
        m, x, y=y, eps=eps, eps_iter=eps / 5, nb_iter=5, norm=norm, clip_min=0.0, clip_max=1.0
    ),
}


@pytest.mark.parametrize("name", sorted(ATTACK_CALLS))
def test_attacks_stay_in_range_and_ball_leave_input_unchanged_and_eps0_is_identity(name, trained):
    model, x, y = trained
    x, y = x[:16], {k: v[:16] for k, v in y.items()}
    original = x.copy()
    for norm, eps in ((np.inf, 0.1), (2, 1.5)):
        adversarial = ATTACK_CALLS[name](model, x, y, eps, norm).numpy()
        assert adversarial.dtype == x.dtype and adversarial.shape == x.shape
        assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0
        delta = (adversarial - x).reshape(len(x), -1)
        size = np.abs(delta).max(1) if norm == np.inf else np.linalg.norm(delta, axis=1)
        assert np.all(size <= eps + 1e-5), size.max()
        assert size.max() > 0.5 * eps  # it did move
    np.testing.assert_array_equal(x, original)
    np.testing.assert_array_equal(ATTACK_CALLS[name](model, x, y, 0.0, np.inf).numpy(), x)


@pytest.mark.slow
def test_accuracy_falls_with_eps_pgd_beats_fgsm_and_large_eps_reaches_chance(trained):
    model, x, y = trained
    fgsm = [attacks.adversarial_accuracy(model, x, y, "fgsm", eps)["joint"] for eps in (0.0, 0.05, 0.1, 0.2)]
    assert fgsm[0] > 0.3, fgsm  # clean joint accuracy of the trained model
    assert all(later <= earlier + 0.01 for earlier, later in zip(fgsm, fgsm[1:])), fgsm
    assert fgsm[-1] < fgsm[0] - 0.2, fgsm
    for task in ("top_left", "bottom_right"):
        single = attacks.adversarial_accuracy(model, x, y, "fgsm", 0.1)[task]
        iterative = attacks.adversarial_accuracy(model, x, y, "pgd", 0.1, nb_iter=10)[task]
        momentum = attacks.adversarial_accuracy(model, x, y, "mim", 0.1, nb_iter=10)[task]
        assert iterative <= single + 0.01 and momentum <= single + 0.01, (single, iterative, momentum)
    strong = attacks.adversarial_accuracy(model, x, y, "pgd", 0.5, nb_iter=10)
    assert strong["top_left"] <= 0.15 and strong["bottom_right"] <= 0.15, strong


def test_single_task_attack_hurts_its_task_more_than_the_multitask_attack(trained):
    model, x, y = trained
    for task in ("top_left", "bottom_right"):
        alone = attacks.adversarial_accuracy(model, x, y, "fgsm", 0.1, tasks=[task])[task]
        joint = attacks.adversarial_accuracy(model, x, y, "fgsm", 0.1, tasks=["top_left", "bottom_right"])[task]
        assert alone < joint, (task, alone, joint)


def test_gradient_matches_finite_differences():
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(7, activation="tanh")(inputs)
    model = keras.Model(inputs, {"a": keras.layers.Dense(3)(hidden), "b": keras.layers.Dense(4)(hidden)})
    x = np.random.default_rng(0).normal(size=(3, 5)).astype("float32")
    labels = {"a": np.array([0, 2, 1]), "b": np.array([3, 0, 1])}
    gradient, _ = g.loss_gradient(model, tf.constant(x), labels, ("a", "b"), (0.7, 1.3))

    def objective(x64):
        return g.attack_objective(
            model(tf.constant(x64, tf.float32)), labels, ("a", "b"), (0.7, 1.3)
        ).numpy().astype("float64")

    step = 1e-2
    numeric = np.zeros_like(x, dtype="float64")
    for i in range(5):
        shift = np.zeros_like(x)
        shift[:, i] = step
        numeric[:, i] = (objective(x + shift) - objective(x - shift)) / (2 * step)
    np.testing.assert_allclose(gradient.numpy(), numeric, rtol=2e-2, atol=2e-4)


def test_eot_lowers_the_variance_of_the_sampled_gradient(sample_data):
    model = tm.build_mtvib(sample_data.tasks, seed=3)
    model.bottleneck.scale_dense.bias.assign(np.full(256, 5.0, "float32"))  # visible latent noise
    x = tf.constant(sample_data.x_test[:4])
    labels = {k: v[:4] for k, v in sample_data.y_test.items()}
    fn = g.model_callable(model, stochastic=True)
    tasks, weights = ("top_left", "bottom_right"), (1.0, 1.0)

    def spread(eot):
        draws = np.stack([g.loss_gradient(fn, x, labels, tasks, weights, eot_samples=eot)[0].numpy() for _ in range(8)])
        return draws.var(axis=0).mean()

    assert spread(8) < 0.4 * spread(1)


@pytest.mark.parametrize("name", ["pgd", "mim"])
def test_eot_over_a_deterministic_model_takes_the_same_steps_as_the_plain_attack(name, trained):
    # Every pass gives the same gradient, so nb_iter steps along their mean are
    # the plain attack's nb_iter steps: a miscounted loop (steps per pass, or
    # one step per EOT group too few) would end elsewhere.
    model, x, y = trained
    x, y = x[:16], {k: v[:16] for k, v in y.items()}
    attack = {"pgd": attacks.projected_gradient_descent, "mim": attacks.momentum_iterative_method}[name]
    run = lambda eot: attack(  # noqa: E731
        model, x, y=y, eps=0.1, eps_iter=0.02, nb_iter=4, clip_min=0.0, clip_max=1.0, eot_samples=eot,
        **({"seed": 3} if name == "pgd" else {}),
    ).numpy()
    plain, with_eot = run(1), run(3)
    assert np.abs(plain - x).max() > 0.05  # the attack moved
    np.testing.assert_allclose(with_eot, plain, atol=1e-6)


def test_compiled_eot_draws_anew_each_pass_and_its_graph_does_not_grow_with_the_passes(sample_data):
    model = tm.build_mtvib(sample_data.tasks, seed=3)
    model.bottleneck.scale_dense.bias.assign(np.full(256, 5.0, "float32"))
    x = tf.constant(sample_data.x_test[:4])
    labels = {k: v[:4] for k, v in sample_data.y_test.items()}
    fn = g.model_callable(model, stochastic=True)
    tasks, weights = ("top_left", "bottom_right"), (0.5, 0.5)
    compiled = {
        eot: tf.function(lambda x, eot=eot: g.loss_gradient(fn, x, labels, tasks, weights, eot_samples=eot)[0])
        for eot in (1, 2, 8)
    }

    def graph_nodes(eot):
        graph = compiled[eot].get_concrete_function(x).graph.as_graph_def()
        return len(graph.node) + sum(len(f.node_def) for f in graph.library.function)

    # The passes run in one loop: 8 passes trace no more than 2 (a Python loop would trace 4x as much).
    assert graph_nodes(8) < 1.1 * graph_nodes(2)

    def spread(eot):
        return np.stack([compiled[eot](x).numpy() for _ in range(8)]).var(axis=0).mean()

    # Each pass inside the loop draws its own latent sample: averaging 8 of them lowers the variance.
    assert spread(8) < 0.4 * spread(1)


def test_the_attack_loop_runs_its_gradient_pass_as_a_function_of_its_own(trained):
    # Inlined into the loop body, the pass's MaxPoolGrad mostly missed oneDNN's kernel
    # and ran Eigen's, 8x slower (benchmarks/RESULTS.md, "Attacks in a loop body").
    model, x, y = trained
    labels = {k: tf.constant(v[:4]) for k, v in y.items()}
    tasks, weights = ("top_left", "bottom_right"), (0.5, 0.5)
    threat = loop.Threat(0.1, np.inf, 0.0, 1.0)

    @tf.function
    def pgd(x):
        return loop.iterate(g.model_callable(model), x, labels, tasks, weights, {}, loop.Objective(), threat,
                            0.1, 0.05, 3, loop.GradientStep())

    library = pgd.get_concrete_function(tf.constant(x[:4])).graph.as_graph_def().library.function
    with_pool_gradient = [f for f in library if any(n.op == "MaxPoolGrad" for n in f.node_def)]
    assert len(with_pool_gradient) == 1
    assert with_pool_gradient[0].attr["_noinline"].b
    body = [f for f in library if "body" in f.signature.name]
    called = {n.attr["f"].func.name for f in body for n in f.node_def if n.op.endswith("PartitionedCall")}
    assert with_pool_gradient[0].signature.name in called


def test_same_seed_repeats_pgd_and_another_differs(trained):
    model, x, y = trained
    x, y = x[:8], {k: v[:8] for k, v in y.items()}
    run = lambda seed: attacks.projected_gradient_descent(  # noqa: E731
        model, x, y=y, eps=0.1, eps_iter=0.02, nb_iter=3, clip_min=0.0, clip_max=1.0, seed=seed
    ).numpy()
    np.testing.assert_array_equal(run(5), run(5))
    assert not np.array_equal(run(5), run(6))
    restarts = attacks.projected_gradient_descent(
        model, x, y=y, eps=0.1, eps_iter=0.02, nb_iter=3, clip_min=0.0, clip_max=1.0, seed=5, restarts=3
    )
    assert restarts.shape == x.shape


def test_bad_arguments_are_named(trained):
    model, x, y = trained
    x, y = x[:4], {k: v[:4] for k, v in y.items()}
    cases = [
        (lambda: attacks.fast_gradient_method(model, x, y=y, eps=-0.1), "eps"),
        (lambda: attacks.fast_gradient_method(model, x, y=y, eps=0.1, norm=1), "norm"),
        (lambda: attacks.projected_gradient_descent(model, x, y=y, eps=0.1, eps_iter=0.2), "eps_iter"),
        (lambda: attacks.fast_gradient_method(model, x, y=y, eps=0.1, tasks=["middle"]), "middle"),
        (lambda: attacks.fast_gradient_method(model, x + 2.0, y=y, eps=0.1, clip_min=0.0, clip_max=1.0), "clip_max"),
        (lambda: attacks.fast_gradient_method(model, x, y=y, eps=0.1, task_weights=[1.0]), "task_weights"),
        (lambda: attacks.momentum_iterative_method(model, x, y=y, eps=0.1, eps_iter=0.01, nb_iter=0), "nb_iter"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=name):
            call()


@pytest.mark.slow
def test_vulnerability_is_the_mean_per_example_norm_of_the_mean_task_gradient(trained, tmp_path):
    """MTRobust Eq. 5: by default lambda_c = 1/M, so the measured gradient is
    (1/M) sum_c grad L_c; explicit weights still give any other sum."""
    model, x, y = trained
    x, y = x[:32], {k: v[:32] for k, v in y.items()}
    both = ["top_left", "bottom_right"]
    norms = attacks.gradient_norms(model, x, y, tasks=both, batch_size=10)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        outputs = model(xt, training=False)
        loss = tf.add_n([
            tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y[t], logits=outputs[t])) for t in both
        ])
    summed = np.linalg.norm(tape.gradient(loss, xt).numpy().reshape(32, -1), axis=1)
    np.testing.assert_allclose(norms, summed / 2, rtol=1e-4)
    np.testing.assert_allclose(
        attacks.gradient_norms(model, x, y, tasks=both, task_weights=[0.5, 0.5]), norms, rtol=1e-6
    )
    np.testing.assert_allclose(
        attacks.gradient_norms(model, x, y, tasks=both, task_weights={"top_left": 1.0, "bottom_right": 1.0}),
        summed,
        rtol=1e-4,
    )
    measure = attacks.vulnerability(model, x, y, [["top_left"], ["bottom_right"], both])
    assert set(measure) == {"top_left", "bottom_right", "top_left+bottom_right"}
    np.testing.assert_allclose(measure["top_left+bottom_right"], norms.mean(), rtol=1e-5)
    # Fig. 4c's direction: the two-task attack is the less effective one.
    assert measure["top_left+bottom_right"] < (measure["top_left"] + measure["bottom_right"]) / 2, measure

    rows = attacks.robustness_sweep(
        model, x, y, eps_values=(0.0, 0.1), task_sets=[["top_left"]], mc_samples=4, eot_samples=2
    )
    assert {(r["mode"], r["eps"]) for r in rows} == {("mean", 0.0), ("mean", 0.1), ("sampled", 0.0), ("sampled", 0.1)}
    attacks.write_sweep(rows, tmp_path)
    assert (tmp_path / "robustness.png").stat().st_size > 1000
    assert (tmp_path / "robustness.csv").read_text().startswith("attack,tasks,mode,eps,accuracy_bottom_right")



def test_cleverhans_positional_call_binds_eps_and_norm(trained):
    model, x, y = trained
    x, y = x[:8], {k: v[:8] for k, v in y.items()}
    common = dict(y=y, clip_min=0.0, clip_max=1.0)
    positional = attacks.fast_gradient_method(model, x, 0.05, np.inf, **common).numpy()
    np.testing.assert_allclose(np.abs(positional - x).max(), 0.05, rtol=1e-5)
    l2 = attacks.fast_gradient_method(model, x, 0.5, 2, **common).numpy()
    np.testing.assert_array_equal(l2, attacks.fast_gradient_method(model, x, eps=0.5, norm=2, **common).numpy())
    pgd = attacks.projected_gradient_descent(model, x, 0.1, 0.02, 3, np.inf, seed=2, **common).numpy()
    keyword = attacks.projected_gradient_descent(
        model, x, eps=0.1, eps_iter=0.02, nb_iter=3, norm=np.inf, seed=2, **common
    )
    np.testing.assert_array_equal(pgd, keyword.numpy())
    with pytest.raises(TypeError):  # y is keyword-only: a third positional dict is not taken for labels
        attacks.fast_gradient_method(model, x, 0.1, np.inf, y)


@pytest.mark.slow
def test_mim_without_momentum_is_pgd_from_x_through_the_same_loop(trained):
    """With decay 0, MIM's direction is g / mean|g|, whose sign (L-inf) and
    L2 direction are those of g: the step rules differ only by the momentum."""
    model, x, y = trained
    x, y = x[:8], {k: v[:8] for k, v in y.items()}
    for norm, eps in ((np.inf, 0.1), (2, 1.5)):
        common = dict(y=y, norm=norm, clip_min=0.0, clip_max=1.0)
        mim = attacks.momentum_iterative_method(model, x, eps, eps / 4, 4, decay_factor=0.0, **common).numpy()
        pgd = attacks.projected_gradient_descent(model, x, eps, eps / 4, 4, rand_init=False, **common).numpy()
        np.testing.assert_allclose(mim, pgd, atol=1e-6)
        with_momentum = attacks.momentum_iterative_method(model, x, eps, eps / 4, 4, **common).numpy()
        assert np.abs(with_momentum - pgd).max() > 1e-3  # decay 1 does change the walk


def test_attack_cache_reuses_traces_across_eps_and_retraces_when_num_samples_changes(trained):
    model, x, y = trained
    x, y = x[:8], {k: v[:8] for k, v in y.items()}
    cache = attacks.AttackCache()
    run = lambda eps: attacks.fast_gradient_method(model, x, eps, y=y, clip_min=0.0, clip_max=1.0, cache=cache).numpy()  # noqa: E731
    mean_code = run(0.1)
    run(0.2)
    assert len(cache) == 1  # eps is an input of the compiled attack
    try:
        model.bottleneck.num_samples = 32  # inference now averages 32 latent samples
        averaged = run(0.1)
    finally:
        model.bottleneck.num_samples = 1
    assert len(cache) == 2
    assert not np.array_equal(averaged, mean_code)  # a stale trace would return the mean-code attack
    np.testing.assert_array_equal(run(0.1), mean_code)
    cache.clear()
    assert len(cache) == 0
