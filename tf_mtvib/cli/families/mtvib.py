"""The MTVIB paper's family: one image, one label per task."""

from typing import ClassVar

from tf_mtvib.cli.arguments import require_in_unit_interval, require_non_negative
from tf_mtvib.cli.errors import CommandError
from tf_mtvib.cli.families.base import Evaluation, ModelFamily

# The MTVIB paper's training settings (Tables I-II).
PAPER_SETTINGS = {"latent_dim": 256, "beta": 1e-3, "lr": 1e-4, "batch_size": 200}


def check_task_names(names, known, flag, known_as="the model's tasks"):
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise CommandError(f"{flag} names unknown task(s) {unknown}; {known_as} are {known}.")


class MTVIBFamily(ModelFamily):
    """STL, STVIB, GS, UWL and MTVIB on MultiMNIST, MultiFashion, MTFL or the
    embedded sample: `MultiTaskVIB` models with one output per task, which
    `attack` and `robustness` attack per task set, and adversarial training."""

    models = ("mtvib", "uwl", "gs", "stl", "stvib")
    datasets = ("sample", "multimnist", "multifashion", "mtfl")
    defaults: ClassVar[dict] = {"model": "mtvib", "epochs": 1, **PAPER_SETTINGS}
    # Flags that say where and how a run is made, not what it is: left out of
    # config.json, so that a resumed run may change them.
    UNRECORDED = ("command", "out", "overwrite", "verbose", "strategy")

    def unknown_model_message(self, model):
        return f"--model {model} needs --dataset domains."

    def check_train_args(self, args):
        super().check_train_args(args)
        require_non_negative(args, "beta")
        require_in_unit_interval(args, "adv_fraction", "the share of each batch attacked")

    def recorded_settings(self, args):
        return [name for name in vars(args) if name not in self.UNRECORDED]

    def load_data(self, config):
        from tf_mtvib.data.pipeline import load_task_data

        return load_task_data(
            config["dataset"], data_dir=config.get("data_dir"), cache_dir=config.get("cache_dir"),
            num_train=config.get("num_train"), num_test=config.get("num_test"), seed=config["seed"],
        )

    def check_data(self, args, data):
        if args.adv_tasks:
            check_task_names(args.adv_tasks, [t.name for t in data.tasks], "--adv-tasks", "the tasks")

    def unscoped_parts(self, args):
        if not args.adversarial:
            return {"adversarial": None}
        from tf_mtvib.training import AdversarialTraining

        # Its random state is a variable: made under a mirrored strategy it would be copied per replica.
        return {"adversarial": AdversarialTraining(
            args.adversarial, eps=args.adv_eps, nb_iter=args.adv_steps, fraction=args.adv_fraction,
            tasks=args.adv_tasks, seed=args.seed,
        )}

    def build(self, args, data, adversarial=None):
        from tf_mtvib.models import build_model

        return build_model(
            args.model, data.tasks, input_shape=data.input_shape, latent_dim=args.latent_dim, beta=args.beta,
            task_weights=args.task_weights, seed=args.seed, adversarial=adversarial,
        )

    def training_dataset(self, args, data):
        from tf_mtvib.data.pipeline import make_dataset

        return make_dataset(data.x_train, data.y_train, args.batch_size, shuffle=True, seed=args.seed)

    def validation_dataset(self, data):
        from tf_mtvib.data.pipeline import make_dataset

        return make_dataset(data.x_test, data.y_test, 500)

    def batch_description(self, args):
        return f"global batch {args.batch_size}"

    def data_sizes(self, data):
        return {"train_examples": len(data.x_train), "test_examples": len(data.x_test)}

    def train_title(self, args, data):
        return f"{args.model} on {args.dataset} test split ({len(data.x_test)} images):"

    def evaluate(self, model, data, batch_size=500):
        from tf_mtvib.evaluation import task_accuracies

        return task_accuracies(model, data.x_test, data.y_test, batch_size=batch_size)

    def evaluation(self, model, config, data, args):
        for bottleneck in getattr(model, "bottlenecks", []):
            bottleneck.num_samples = args.mc_samples
        accuracies = self.evaluate(model, data, args.batch_size)
        mode = "mean code" if args.mc_samples == 1 else f"{args.mc_samples} latent samples"
        return Evaluation(self.test_split_title(config, mode), accuracies, f"eval-mc{args.mc_samples}.json",
                          {"test_accuracy": accuracies, "mc_samples": args.mc_samples})

    @staticmethod
    def _check_variational(model, config, flag):
        if not model.bottlenecks:
            raise CommandError(f"{flag} needs a variational model; {config['model']} has no bottleneck.")

    @staticmethod
    def _test_split(data, num_test):
        x, y = data.x_test, data.y_test
        if num_test:
            x, y = x[:num_test], {k: v[:num_test] for k, v in y.items()}
        return x, y

    def check_attack(self, model, config, args):
        if args.tasks:
            check_task_names(args.tasks, model.task_names, "--tasks")
        if args.sampled:
            self._check_variational(model, config, "--sampled")

    def attack(self, model, data, args):
        from tf_mtvib.attacks import adversarial_accuracy

        x, y = self._test_split(data, args.num_test)
        accuracies = adversarial_accuracy(
            model, x, y, args.attack, args.eps, tasks=args.tasks, batch_size=args.batch_size,
            sampled=args.sampled, nb_iter=args.nb_iter,
        )
        attacked = ", ".join(args.tasks or model.task_names)
        mode = "sampled model" if args.sampled else "mean code"
        return f"{args.attack.upper()} eps={args.eps} on {attacked} ({mode}, {len(x)} test images):", accuracies

    def check_robustness(self, model, config, args):
        for task_set in self._task_sets(args) or []:
            check_task_names(task_set, model.task_names, "--task-sets")
        if args.modes and "sampled" in args.modes:
            self._check_variational(model, config, "--modes sampled")

    @staticmethod
    def _task_sets(args):
        return [s.split(",") for s in args.task_sets] if args.task_sets else None

    def robustness(self, model, config, data, args):
        from tf_mtvib.attacks import robustness_sweep, vulnerability

        task_sets = self._task_sets(args)
        modes = [m == "sampled" for m in args.modes] if args.modes else None
        x, y = self._test_split(data, args.num_test)
        rows = robustness_sweep(
            model, x, y, eps_values=args.eps, attacks=args.attacks, task_sets=task_sets, sampled=modes,
            batch_size=args.batch_size, nb_iter=args.nb_iter,
        )
        sets = task_sets or [[t] for t in model.task_names] + [model.task_names]
        return rows, {"vulnerability.json": vulnerability(model, x, y, sets, batch_size=args.batch_size)}

    def sweep_row_scope(self, row):
        return f" on {row['tasks']:<24s} {row['mode']:<7s}"
