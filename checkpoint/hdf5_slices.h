// Reading a flat range of a dataset's elements, whatever the dataset's shape, while verifying the
// checksum of the whole dataset: how a rank assembles its slice of a tensor that other ranks (or
// another world size) saved. Private to checkpoint/: it includes <hdf5.h>.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "checkpoint/hdf5_handles.h"
#include "checkpoint/slice_plan.h"

namespace memento::checkpoint::h5 {

// Replaces the selection of the simple dataspace `space` with elements `range` of its row-major
// flattening: a union of at most 2 * ndim - 1 boxes, which HDF5 walks in row-major order.
void select_flat_range(hid_t space, ElementRange range, const std::string& where);

// Reads elements `wanted` of `dataset` (counted from its first element in row-major order) into
// `dest` and returns the CRC-32C of all the dataset's bytes. Elements outside `wanted` are read
// through a bounded staging buffer only to be checksummed. `type` is the dataset's own type, of
// `element_size` bytes: bytes are copied, never converted.
uint32_t read_range_checksummed(hid_t dataset, hid_t type, size_t element_size, ElementRange wanted,
                                void* dest, const std::string& where);

}  // namespace memento::checkpoint::h5
