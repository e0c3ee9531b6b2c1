// Thread count of the CPU backend: OpenMP loops and OpenBLAS GEMMs.
#pragma once

namespace memento {

// n <= 0 means every core. Returns the count in use afterwards.
int set_num_threads(int n);
int num_threads();

}  // namespace memento
