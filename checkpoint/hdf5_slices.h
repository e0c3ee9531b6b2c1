// Reading parts of a stored slice of a tensor (a flat range of a dataset's elements, or boxes of
// the tensor) straight into a buffer through hyperslab selections, while verifying the checksum
// of the whole stored slice: how a rank assembles its part of a tensor that other ranks (or
// another layout) saved. Private to checkpoint/: it includes <hdf5.h>.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

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

// Adds to the selection of `space`, the dataspace of an array laid out as `region` (1-D for a
// flat range, the box's shape for a box), the elements of `box`, which lies inside the region.
void select_box(hid_t space, const TensorRegion& region, const TensorBox& box,
                const std::string& where);

// Reads `pieces` (disjoint boxes of the tensor, inside both regions) of `dataset`, which stores
// `stored`, into `dest`, laid out as `dest_region`, and returns the CRC-32C of all the dataset's
// bytes. One H5Dread for all the pieces; the checksum comes from `dest` when the pieces are all
// of the stored slice, else the dataset is read once more through a bounded staging buffer (a
// flat range from a flat slice is read as read_range_checksummed does, once).
uint32_t read_pieces_checksummed(hid_t dataset, hid_t type, size_t element_size,
                                 const TensorRegion& stored, const std::vector<TensorBox>& pieces,
                                 const TensorRegion& dest_region, void* dest,
                                 const std::string& where);

}  // namespace memento::checkpoint::h5
