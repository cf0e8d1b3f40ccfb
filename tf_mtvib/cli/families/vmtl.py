"""The VMTL paper's family: related tasks, each with its own images."""

from typing import ClassVar

from tf_mtvib.cli.arguments import flag, require_in_unit_interval, require_non_negative, require_positive
from tf_mtvib.cli.errors import CommandError
from tf_mtvib.cli.families.base import Evaluation, ModelFamily


class VMTLFamily(ModelFamily):
    """STL, bMTL, VSTL, VMTL and its ablations on `--dataset domains`: one
    task-indexed model whose input is `{"images", "task"}`, trained with KL
    and Gumbel-softmax temperature schedules; attacked by `robustness` only."""

    models = ("stl", "bmtl", "vstl", "vmtl", "vmtl-ac", "vmtl-mean", "vmtl-learned-weights")
    datasets = ("domains",)
    # benchmarks/vmtl_domains.py's settings (RESULTS.md), under which every system of the family trains well.
    defaults: ClassVar[dict] = {"model": "vmtl", "epochs": 50, "latent_dim": 128, "lr": 1e-3}
    # Its epochs last about a second, and saving a model takes a fraction of one.
    checkpoint_interval = 10.0
    # Systems without variational priors: no KL weight or temperature to schedule.
    PLAIN_MODELS = ("stl", "bmtl")
    RECORDED = (
        "model", "dataset", "domains", "train_fraction", "examples_per_task", "batch_per_task", "epochs",
        "latent_dim", "lr", "seed", "kl_weight", "kl_anneal_rate", "mixture_kl", "temperature_decay",
        "temperature_floor",
    )

    def unknown_model_message(self, model):
        return f"--dataset domains trains {self.models}, received --model {model}."

    def check_train_args(self, args):
        super().check_train_args(args)
        if args.adversarial:
            raise CommandError("--adversarial trains MTVIB-paper systems; --dataset domains does not support it.")
        require_positive(args, "train_fraction", "examples_per_task", "batch_per_task")
        require_non_negative(args, "kl_weight", "kl_anneal_rate")
        require_in_unit_interval(args, "temperature_decay", "the factor the temperature is multiplied by each step")
        require_in_unit_interval(args, "temperature_floor", "the temperature starts at 1 and decays to the floor")

    def recorded_settings(self, args):
        return self.RECORDED

    def load_data(self, config):
        from tf_mtvib.data.domains import load_domains

        return load_domains(
            config["domains"], train_fraction=config["train_fraction"],
            examples_per_task=config["examples_per_task"], data_dir=config.get("data_dir"), seed=config["seed"],
        )

    def build(self, args, data):
        from tf_mtvib.models.vmtl import build_vmtl_system

        schedules = {} if args.model in self.PLAIN_MODELS else {
            "kl_weight": args.kl_weight, "kl_anneal_rate": args.kl_anneal_rate, "mixture_kl": args.mixture_kl}
        return build_vmtl_system(
            args.model, len(data.task_names), data.num_classes, data.input_shape, dataset_sizes=data.train_sizes,
            latent_dim=args.latent_dim, seed=args.seed, task_names=data.task_names, **schedules,
        )

    def training_dataset(self, args, data):
        from tf_mtvib.data.domains import make_domain_dataset

        return make_domain_dataset(data, "train", args.batch_per_task, seed=args.seed)

    def callbacks(self, args):
        if args.model in self.PLAIN_MODELS:
            return []
        from tf_mtvib.training import TemperatureAnnealing

        return [TemperatureAnnealing(1.0, rate=args.temperature_decay, floor=args.temperature_floor)]

    def batch_description(self, args):
        return f"global batch {args.batch_per_task} per task"

    def data_sizes(self, data):
        return {"train_examples": data.train_sizes}

    def train_title(self, args, data):
        return f"{args.model} on {', '.join(data.task_names)} ({args.train_fraction:.0%} for training):"

    def evaluate(self, model, data, batch_size=500):
        from tf_mtvib.evaluation import domain_accuracies

        return domain_accuracies(model, data, batch_size=batch_size)

    def evaluation(self, model, config, data, args):
        if args.mc_samples != 1:
            raise CommandError(
                f"--mc-samples averages the latent samples of MTVIB-family runs; {config['model']} on domains "
                f"predicts from its posterior means, received --mc-samples {args.mc_samples}."
            )
        accuracies = self.evaluate(model, data, args.batch_size)
        return Evaluation(self.test_split_title(config), accuracies, "eval.json", {"test_accuracy": accuracies})

    def check_attack(self, model, config, args):
        raise CommandError("runs on --dataset domains are attacked with `tf-mtvib robustness RUN_DIR --eps ...`.")

    def check_robustness(self, model, config, args):
        # Each example is attacked through its own task's classifier (VMTL Appendix B.5): there are
        # no task sets to choose, and the sweep scores the posterior means only.
        for name in ("task_sets", "modes"):
            if getattr(args, name) is not None:
                raise CommandError(f"{flag(name)} applies to MTVIB-family runs; runs on --dataset domains attack "
                                   f"each example through its own task, received {flag(name)} {getattr(args, name)}.")

    def robustness(self, model, config, data, args):
        import numpy as np

        from tf_mtvib.attacks import task_indexed_sweep

        # The test split is stored task after task: --num-test keeps the first examples of each task.
        keep = np.concatenate([np.flatnonzero(data.task_test == t)[: args.num_test]
                               for t in range(len(data.task_names))])
        rows = []
        for attack in args.attacks:
            rows += task_indexed_sweep(model, data.x_test[keep], data.task_test[keep], data.y_test[keep],
                                       args.eps, attack=attack, batch_size=args.batch_size, nb_iter=args.nb_iter)
        return rows, {}
