from tf_mtvib.training.callbacks import EpochCheckpoint
