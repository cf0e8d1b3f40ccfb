"""What the commands print."""


def print_accuracies(title, accuracies):
    print(title)
    for name, value in accuracies.items():
        print(f"  {name:>14s}: {100 * value:6.2f} %")


def print_sweep(rows, family, out):
    """One line per robustness row; `family` words the attacked task set and mode."""
    for row in rows:
        accuracy = "  ".join(f"{k} {100 * v:5.1f}" for k, v in row["accuracy"].items())
        print(f"{row['attack']:>4s}{family.sweep_row_scope(row)} eps {row['eps']:.2f}: {accuracy}")
    print(f"Table and plot: {out}/robustness.{{json,csv,png}}")


def print_run_folder(path, strategy, model):
    """Where the run went and, in a cluster, this worker's role and a weights
    fingerprint that must be the same on every worker."""
    from tf_mtvib import distribute

    task_type, task_id = distribute.worker_role(strategy)
    if task_type is not None:
        role = "chief" if distribute.is_chief(strategy) else "not the chief: its files go to a temporary folder"
        print(f"Worker {task_type}:{task_id} ({role}); weights fingerprint {distribute.weights_fingerprint(model)}")
    print(f"Run folder: {path}")
