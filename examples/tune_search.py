"""A keras-tuner search over MTVIB's beta, latent size, learning rate and weighting,
maximizing the validation joint accuracy under FGSM (eps 0.1).

    python examples/tune_search.py --max-trials 3 --epochs 1
"""

import argparse

import tf_mtvib  # noqa: F401
from tf_mtvib import tuning
from tf_mtvib.data.pipeline import load_task_data
from tf_mtvib.export import export_savedmodel

parser = argparse.ArgumentParser()
parser.add_argument("--max-trials", type=int, default=3)
parser.add_argument("--epochs", type=int, default=1)
parser.add_argument("--directory", default="runs/tune-example")
args = parser.parse_args()

data = load_task_data("sample")
n_val = 500
x_train, x_val = data.x_train[:-n_val], data.x_train[-n_val:]
y_train = {k: v[:-n_val] for k, v in data.y_train.items()}
y_val = {k: v[-n_val:] for k, v in data.y_train.items()}

hypermodel = tuning.MTVIBHyperModel(data.tasks, data.input_shape, objective="robust", robust_eps=0.1)
# Started again with the same directory, the search resumes where it stopped.
tuner = tuning.make_tuner(hypermodel, "bayesian", max_trials=args.max_trials, directory=args.directory)
tuner.search(x_train, y_train, validation_data=(x_val, y_val), epochs=args.epochs, batch_size=100, verbose=0)

tuner.results_summary(num_trials=3)
best = tuner.get_best_models(1)[0]
print("SavedModel:", export_savedmodel(best, f"{args.directory}/savedmodel"))
