"""Where VMTL's mixing weights end: the learned relatedness pi_ti of the z and w
priors (VMTL Eq. 10) after training on the offline domains, and the normalized
weights the prior uses. Shows why the prior ablations score alike (RESULTS.md).

    python benchmarks/vmtl_relatedness.py --data-dir ../shared/data
"""

import argparse

import tf_mtvib  # noqa: F401  (first: turns TensorFlow's oneDNN kernels on before keras loads it)

# isort: split
import keras
import numpy as np

from tf_mtvib.data.domains import load_domains, make_domain_dataset
from tf_mtvib.models.vmtl import build_vmtl_system
from tf_mtvib.training import TemperatureAnnealing


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=50)
    args = parser.parse_args()
    data = load_domains(train_fraction=args.fraction, data_dir=args.data_dir, seed=args.seed)
    for kl_weight, rate in ((1.0, 1e-6), (0.01, 0.0)):
        keras.utils.set_random_seed(args.seed)
        model = build_vmtl_system("vmtl", len(data.task_names), data.num_classes, data.input_shape, seed=args.seed,
                                  kl_weight=kl_weight, kl_anneal_rate=rate)
        model.compile(keras.optimizers.Adam(1e-3))
        model.fit(make_domain_dataset(data, "train", 32, seed=args.seed), epochs=args.epochs, verbose=0,
                  callbacks=[TemperatureAnnealing(1.0, 0.99, 0.5)])
        print(f"kl_weight {kl_weight}, anneal rate {rate}:")
        for name, prior in (("z", model.z_prior), ("w", model.w_prior)):
            print(f"  pi ({name}):", np.round(prior.relatedness().numpy(), 3).tolist())
            print(f"  normalized weights ({name}):", np.round(prior(training=False).numpy(), 3).tolist())


if __name__ == "__main__":
    main()
