#include "checkpoint/hdf5_slices.h"

#include <algorithm>
#include <vector>

#include "checkpoint/crc32c.h"

namespace memento::checkpoint::h5 {
namespace {

// Elements outside the wanted range are checksummed through a buffer of at most this size.
constexpr size_t kStagingBytes = size_t{16} << 20;

// Reads elements `range` of the dataset into `dest`.
void read_flat(hid_t dataset, hid_t type, ElementRange range, void* dest,
               const std::string& where) {
  if (range.empty()) return;
  const auto n = static_cast<hsize_t>(range.size());
  H5Space memory(HDF5_CHECK(H5Screate_simple(1, &n, nullptr), where));
  H5Space file(HDF5_CHECK(H5Dget_space(dataset), where));
  select_flat_range(file.get(), range, where);
  HDF5_CHECK(H5Dread(dataset, type, memory.get(), file.get(), H5P_DEFAULT, dest), where);
}

}  // namespace

void select_flat_range(hid_t space, ElementRange range, const std::string& where) {
  const int ndim = HDF5_CHECK(H5Sget_simple_extent_ndims(space), where);
  std::vector<hsize_t> dims(ndim);
  HDF5_CHECK(H5Sget_simple_extent_dims(space, dims.data(), nullptr), where);
  HDF5_CHECK(H5Sselect_none(space), where);
  const Shape full(std::vector<int64_t>(dims.begin(), dims.end()));
  // The range as the union of at most 2 * ndim - 1 boxes (slice_plan.h), one hyperslab each.
  std::vector<hsize_t> start(ndim), count(ndim);
  for (const TensorBox& box : TensorRegion::flat(full, range).boxes()) {
    for (int d = 0; d < ndim; ++d) {
      start[d] = static_cast<hsize_t>(box.start[d]);
      count[d] = static_cast<hsize_t>(box.count[d]);
    }
    HDF5_CHECK(
        H5Sselect_hyperslab(space, H5S_SELECT_OR, start.data(), nullptr, count.data(), nullptr),
        where);
  }
}

namespace {

// Continues `crc` over elements `range` of the dataset, read through `staging` in bounded parts.
uint32_t checksum_range(hid_t dataset, hid_t type, size_t element_size, ElementRange range,
                        uint32_t crc, std::vector<unsigned char>& staging,
                        const std::string& where) {
  const int64_t chunk = static_cast<int64_t>(std::max<size_t>(1, kStagingBytes / element_size));
  for (int64_t at = range.begin; at < range.end; at += chunk) {
    const ElementRange part{at, std::min(range.end, at + chunk)};
    staging.resize(static_cast<size_t>(part.size()) * element_size);
    read_flat(dataset, type, part, staging.data(), where);
    crc = crc32c(staging.data(), staging.size(), crc);
  }
  return crc;
}

// A dataspace for an array laid out as `region`, with nothing selected.
H5Space region_space(const TensorRegion& region, const std::string& where) {
  std::vector<hsize_t> dims;
  if (region.is_flat) {
    dims.push_back(static_cast<hsize_t>(region.range.size()));
  } else {
    for (int d = 0; d < region.box.ndim(); ++d)
      dims.push_back(static_cast<hsize_t>(region.box.count[d]));
  }
  H5Space space(dims.empty() ? HDF5_CHECK(H5Screate(H5S_SCALAR), where)
                             : HDF5_CHECK(H5Screate_simple(static_cast<int>(dims.size()),
                                                           dims.data(), nullptr),
                                          where));
  HDF5_CHECK(H5Sselect_none(space.get()), where);
  return space;
}

// CRC-32C of the elements of `stored` in its own order, taken from `dest` (laid out as
// `dest_region`, which holds all of them): runs that follow each other in `dest` are one call.
uint32_t checksum_from_dest(const TensorRegion& stored, const TensorRegion& dest_region,
                            const void* dest, size_t element_size) {
  const auto* base = static_cast<const unsigned char*>(dest);
  uint32_t crc = 0;
  const unsigned char* pending = nullptr;
  size_t pending_bytes = 0;
  stored.for_each_run([&](const Shape& index, int64_t length) {
    const unsigned char* at =
        base + static_cast<size_t>(dest_region.position(index)) * element_size;
    const size_t bytes = static_cast<size_t>(length) * element_size;
    if (pending != nullptr && pending + pending_bytes == at) {
      pending_bytes += bytes;
      return;
    }
    if (pending != nullptr) crc = crc32c(pending, pending_bytes, crc);
    pending = at;
    pending_bytes = bytes;
  });
  if (pending != nullptr) crc = crc32c(pending, pending_bytes, crc);
  return crc;
}

}  // namespace

void select_box(hid_t space, const TensorRegion& region, const TensorBox& box,
                const std::string& where) {
  const Shape& full = region.full;
  const int n = full.ndim();
  if (n == 0) {
    HDF5_CHECK(H5Sselect_all(space), where);
    return;
  }
  if (!region.is_flat) {
    std::vector<hsize_t> start(n), count(n);
    for (int d = 0; d < n; ++d) {
      start[d] = static_cast<hsize_t>(box.start[d] - region.box.start[d]);
      count[d] = static_cast<hsize_t>(box.count[d]);
    }
    HDF5_CHECK(
        H5Sselect_hyperslab(space, H5S_SELECT_OR, start.data(), nullptr, count.data(), nullptr),
        where);
    return;
  }
  // In a flat layout, the box's last two dimensions are one strided hyperslab (rows of
  // count[n - 1] elements, full[n - 1] apart); each index of the dimensions before adds one.
  const int rows_dim = std::max(0, n - 2);
  const hsize_t rows = n >= 2 ? static_cast<hsize_t>(box.count[n - 2]) : 1;
  const hsize_t block = static_cast<hsize_t>(box.count[n - 1]);
  const hsize_t stride = static_cast<hsize_t>(full[n - 1]);
  Shape index = box.start;
  do {
    const hsize_t start = static_cast<hsize_t>(flat_index(full, index) - region.range.begin);
    HDF5_CHECK(H5Sselect_hyperslab(space, H5S_SELECT_OR, &start, &stride, &rows, &block), where);
  } while (box.next_index(index, rows_dim));
}

uint32_t read_range_checksummed(hid_t dataset, hid_t type, size_t element_size, ElementRange wanted,
                                void* dest, const std::string& where) {
  const H5Space space(HDF5_CHECK(H5Dget_space(dataset), where));
  const hssize_t numel = HDF5_CHECK(H5Sget_simple_extent_npoints(space.get()), where);
  const int ndim = HDF5_CHECK(H5Sget_simple_extent_ndims(space.get()), where);
  if (wanted.begin == 0 && wanted.end == numel) {  // the whole dataset: one plain read
    if (numel > 0) HDF5_CHECK(H5Dread(dataset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, dest), where);
    return crc32c(dest, static_cast<size_t>(numel) * element_size);
  }
  MEMENTO_CHECK(ndim > 0 && 0 <= wanted.begin && wanted.begin <= wanted.end && wanted.end <= numel,
                where, ": elements [", wanted.begin, ", ", wanted.end, ") of ", numel);
  std::vector<unsigned char> staging;
  uint32_t crc = checksum_range(dataset, type, element_size, {0, wanted.begin}, 0, staging, where);
  read_flat(dataset, type, wanted, dest, where);
  crc = crc32c(dest, static_cast<size_t>(wanted.size()) * element_size, crc);
  return checksum_range(dataset, type, element_size, {wanted.end, numel}, crc, staging, where);
}

uint32_t read_pieces_checksummed(hid_t dataset, hid_t type, size_t element_size,
                                 const TensorRegion& stored, const std::vector<TensorBox>& pieces,
                                 const TensorRegion& dest_region, void* dest,
                                 const std::string& where) {
  int64_t wanted = 0;
  for (const TensorBox& piece : pieces) wanted += piece.numel();
  auto* out = static_cast<unsigned char*>(dest);
  if (stored == dest_region && wanted == stored.numel()) {  // the very slice: one plain read
    return read_range_checksummed(dataset, type, element_size, {0, wanted}, dest, where);
  }
  if (stored.is_flat && dest_region.is_flat) {
    // Both flat: the pieces are the overlap of two ranges, contiguous in both arrays.
    const ElementRange common{std::max(stored.range.begin, dest_region.range.begin),
                              std::min(stored.range.end, dest_region.range.end)};
    if (common.size() == wanted) {
      return read_range_checksummed(
          dataset, type, element_size,
          {common.begin - stored.range.begin, common.end - stored.range.begin},
          out + static_cast<size_t>(common.begin - dest_region.range.begin) * element_size, where);
    }
  }
  // HDF5 walks both selections in the tensor's row-major order, so one read pairs them up.
  H5Space file(HDF5_CHECK(H5Dget_space(dataset), where));
  HDF5_CHECK(H5Sselect_none(file.get()), where);
  H5Space memory = region_space(dest_region, where);
  for (const TensorBox& piece : pieces) {
    select_box(file.get(), stored, piece, where);
    select_box(memory.get(), dest_region, piece, where);
  }
  if (wanted > 0) {
    HDF5_CHECK(H5Dread(dataset, type, memory.get(), file.get(), H5P_DEFAULT, dest), where);
  }
  if (wanted == stored.numel()) return checksum_from_dest(stored, dest_region, dest, element_size);
  std::vector<unsigned char> staging;
  return checksum_range(dataset, type, element_size, {0, stored.numel()}, 0, staging, where);
}

}  // namespace memento::checkpoint::h5
