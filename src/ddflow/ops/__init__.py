"""Building blocks shared by methods, protocols and analyses, one role a module: losses, optim (LAMB, schedules),
krr (kernel ridge regression, ISA's loss), gradient_distance (per-class gradients and gradient-matching distances),
real_batches (random or DREAM's representative real batches), kmeans, multiformation (IDC's decode / tile),
unrolled_student (the student unroll, the trajectory loss, TESLA's constant-memory gradient, ISA's module on a step),
standardize (HaBa's per-batch standardisation)."""
