from tf_mtvib.attacks.evaluate import (
    adversarial_accuracy,
    gradient_norms,
    robustness_sweep,
    run_attack,
    task_indexed_sweep,
    vulnerability,
    write_sweep,
)
from tf_mtvib.attacks.fgsm import fast_gradient_method
from tf_mtvib.attacks.gradients import attack_objective, loss_gradient
from tf_mtvib.attacks.loop import AttackCache, GradientStep, MomentumStep, Objective, Threat
from tf_mtvib.attacks.mim import momentum_iterative_method
from tf_mtvib.attacks.pgd import projected_gradient_descent
