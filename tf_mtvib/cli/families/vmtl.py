"""The VMTL paper's family: related tasks, each with its own images."""

from typing import ClassVar

from tf_mtvib.cli.arguments import require_in_unit_interval, require_non_negative, require_positive
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
        accuracies = self.evaluate(model, data, args.batch_size)
        return Evaluation(self.test_split_title(config), accuracies, "eval.json", {"test_accuracy": accuracies})

    def check_attack(self, model, config, args):
        raise CommandError("runs on --dataset domains are attacked with `tf-mtvib robustness RUN_DIR --eps ...`.")

    def robustness(self, model, config, data, args):
        from tf_mtvib.attacks import task_indexed_sweep

        rows = []
        for attack in args.attacks:
            rows += task_indexed_sweep(model, data.x_test, data.task_test, data.y_test, args.eps, attack=attack,
                                       batch_size=args.batch_size, nb_iter=args.nb_iter)
        return rows, {}
