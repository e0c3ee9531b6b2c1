// The vocabulary of a rank file that the writer and the reader share: attribute names, how each
// dtype is stored, opening a file, naming an entry in messages (docs/checkpoint-format.md).
// Private to checkpoint/: it includes <hdf5.h>.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "checkpoint/hdf5_handles.h"
#include "checkpoint/state_registry.h"

namespace memento::checkpoint::h5 {

inline constexpr char kChecksumAttr[] = "crc32c";       // every dataset
inline constexpr char kDTypeAttr[] = "dtype";           // every tensor
inline constexpr char kFullShapeAttr[] = "full_shape";  // a slice: the whole tensor's shape
inline constexpr char kOffsetAttr[] = "offset";         // a flat slice: its first element
inline constexpr char kBoxStartAttr[] = "box_start";    // a box slice: its first index

// The HDF5 type a dtype is stored as (the narrow floats as unsigned integers, bit for bit).
hid_t storage_type(DType dtype);
// "float32", "uint16", "string", ... for messages.
std::string describe_type(hid_t type);
// "[4, 8]"
std::string dims_str(const std::vector<int64_t>& dims);
// A shape's dimensions (or an index's entries) as an attribute stores them.
std::vector<int64_t> dims_of(const Shape& shape);
// The dimensions of a dataset ({} for a scalar dataspace).
std::vector<int64_t> dataset_dims(hid_t dataset, const std::string& where);
// "<path>: tensor model/w", the prefix of every message about one entry of one file.
std::string entry_where(const std::string& path, const StateEntry& entry);
// CRC-32C of an entry's bytes as the writer stores them.
uint32_t checksum(const StateEntry& entry);
// Throws unless a tensor entry is in host memory.
void expect_host_tensor(const StateEntry& entry, const std::string& path);

// A checkpoint file opened for reading, whatever its format version; throws CheckpointError when
// it is missing, not HDF5 (e.g. truncated), or has no format_version attribute.
H5File open_hdf5_file(const std::string& path);
// The same, refused unless this build reads its format version.
H5File open_rank_file(const std::string& path);

}  // namespace memento::checkpoint::h5
