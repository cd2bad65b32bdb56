# The kernel family (FRePo, ISA): ISA's analyses. The tables isa_t6 / isa_t7 go through rule table (their rows
# name protocols frepo and krr); the distillations and evaluations through rules distill / evaluate.
