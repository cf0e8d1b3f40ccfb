"""Time and disk of preparing MultiMNIST (default: 120,000 / 10,000, seed 0)
through the TFDS builder against the package's .npz path, the time to read
each back into arrays, and whether the two agree pixel for pixel.

    python benchmarks/data_preparation.py --data-dir ../shared/data --work /tmp/prep

Both start from empty folders under --work (removed first).
"""

import argparse
import os
import shutil
import time

import numpy as np


def folder_bytes(folder):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True, help="folder with the MNIST IDX files")
    parser.add_argument("--work", required=True, help="scratch folder (emptied)")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)

    import tensorflow_datasets as tfds

    import tf_mtvib.datasets  # noqa: F401  (registers the builders)
    from tf_mtvib.data import multimnist

    npz_dir = os.path.join(args.work, "npz")
    start = time.perf_counter()
    multimnist.load_multi("multimnist", args.data_dir, npz_dir, allow_download=False)
    npz_prepare = time.perf_counter() - start
    start = time.perf_counter()
    arrays, _ = multimnist.load_multi("multimnist", args.data_dir, npz_dir, allow_download=False)
    npz_read = time.perf_counter() - start

    tfds_dir = os.path.join(args.work, "tfds")
    builder = tfds.builder("multi_mnist", data_dir=tfds_dir)
    start = time.perf_counter()
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=args.data_dir))
    tfds_prepare = time.perf_counter() - start
    start = time.perf_counter()
    splits = {s: tfds.as_numpy(builder.as_dataset(split=s, batch_size=-1)) for s in ("train", "test")}
    tfds_read = time.perf_counter() - start

    equal = all(
        np.array_equal(splits[s]["image"][..., 0], arrays[s][0])
        and np.array_equal(np.stack([splits[s]["top_left"], splits[s]["bottom_right"]], 1), arrays[s][1])
        for s in ("train", "test")
    )
    print(f"{'path':<6s} {'prepare s':>10s} {'read s':>8s} {'disk MB':>8s}")
    print(f"{'npz':<6s} {npz_prepare:10.1f} {npz_read:8.2f} {folder_bytes(npz_dir) / 1e6:8.1f}")
    print(f"{'tfds':<6s} {tfds_prepare:10.1f} {tfds_read:8.2f} {folder_bytes(tfds_dir) / 1e6:8.1f}")
    print(f"default config equals load_multi('multimnist') pixel for pixel and label for label: {equal}")


if __name__ == "__main__":
    main()
